"""What a new user meets (issue 18): one upload is one analysis with one first view, the
phone shows the results right after the image and the controls after them, the offline
banner is one sentence, the threshold starts where the model's kind of score needs it, and
axe finds no critical or serious accessibility problem at desktop or phone width."""
import gradio as gr
import pytest

import csra
from app import page as page_module
from app.models import default_store
from app.ui import build_demo
from tests.conftest import CAT, ROOT
from tests.test_app_browser import open_page, upload

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::gradio.queueing")]


def test_one_upload_is_one_analysis_and_one_first_view(app, browser, monkeypatch):
    first_views = []
    real_first_view = page_module.first_view
    monkeypatch.setattr(page_module, "first_view",
                        lambda *a, **k: first_views.append(a[0].name) or real_first_view(*a, **k))
    page = open_page(browser, app)
    page.wait_for_function("() => window.csraExplorer && document.querySelector('#csra-upload input')")
    joins, calls = [], []
    page.on("request", lambda r: joins.append(r.url) if "/queue/join" in r.url else None)
    page.on("request", lambda r: calls.append(r.url) if "/component_server" in r.url else None)
    before = app.calls["backbone"]
    upload(page, ROOT / "assets" / "coffee.jpg")
    page.locator("#csra-closeup img").first.wait_for(timeout=60_000)   # the follow-up is done
    page.wait_for_timeout(1000)                   # room for a repeated event, were there one
    assert app.calls["backbone"] == before + 1
    assert first_views == ["coffee.jpg"]
    assert len(calls) == 1                        # the upload call; no analysis through the queue
    assert len(joins) == 1                        # only the close-up request that follows it
    assert "coffee.jpg" in page.locator("#csra-status .csra-status-line").inner_text()
    assert not page.errors, page.errors
    page.close()


def top(page, selector):
    return page.locator(selector).first.bounding_box()["y"]


def test_phone_shows_results_right_after_the_image_and_a_one_sentence_banner(app80, browser):
    page = open_page(browser, app80, width=390, height=844)
    banner = page.locator("#csra-banner")
    banner.wait_for()
    upload(page)
    order = [top(page, s) for s in ("#csra-upload .csra-drop", "#csra-status",
                                    "#csra-scores .csra-summary", "#csra-scores .csra-chart",
                                    "#csra-heatmaps .csra-tile", "#csra-lambda", "#csra-model")]
    assert order == sorted(order), order
    box = banner.bounding_box()
    assert box["height"] < 150 and box["x"] + box["width"] <= 390
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390   # nothing runs out
    assert not page.errors, page.errors
    page.close()


def test_the_banner_folds_its_details(browser, tmp_path, one_thread):
    from tests.conftest import start_app
    running = start_app(tmp_path / "missing.pth", banner="Serving the embedded model, not VOC",
                        banner_details="Why: https://example.org/a/very/long/url/that/would/"
                                       "overflow/the/phone/screen/without/wrapping.pth")
    try:
        page = open_page(browser, running, width=390, height=844)
        banner = page.locator("#csra-banner")
        banner.wait_for()
        details = banner.locator("details")
        assert details.count() == 1 and details.get_attribute("open") is None
        assert "example.org" not in banner.inner_text()          # folded away
        banner.locator("summary").click()
        assert "example.org" in banner.inner_text()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        page.close()
    finally:
        running.demo.close()


def threshold_slider(demo):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "csra-threshold")


@pytest.mark.parametrize("variant", ["classifier", "csra"])
def test_the_threshold_starts_where_the_kind_of_score_needs_it(variant, one_thread):
    if variant == "classifier":
        model = csra.from_classifier("resnet18", pretrained=False, image_size=64)
    else:
        model = csra.build_model("resnet18", num_classes=20, image_size=64,
                                 class_names=csra.VOC_CLASSES)
    demo = build_demo(default_store(model.eval(), classifier=None), examples=[])
    slider = threshold_slider(demo)
    if variant == "classifier":      # softmax over 1000 classes: 0.5 would show nothing
        assert slider.value == 0.1 and "softmax" in slider.info
    else:
        assert slider.value == 0.5 and "sigmoid" in slider.info
    assert isinstance(demo, gr.Blocks)


@pytest.mark.parametrize("width,height", [(1400, 1000), (390, 844)])
def test_no_critical_or_serious_accessibility_problem(app, browser, width, height):
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    page = open_page(browser, app, width=width, height=height)
    upload(page, CAT)
    page.locator("#csra-closeup img").first.wait_for(timeout=60_000)
    results = axe.Axe().run(page).response
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:5])
           for v in results["violations"] if v["impact"] in ("critical", "serious")]
    assert not bad, bad
    names = page.evaluate("() => Array.from(document.querySelectorAll('.csra-example'))"
                          ".map(b => b.getAttribute('aria-label'))")
    assert names and all(n.startswith("Example: ") for n in names)
    assert page.locator("h1").count() == 1
    page.close()
