"""The page in a real browser: Playwright drives Debian's Chromium (never a downloaded one).

Uploads an image, checks that the numbers the browser computes at several lambdas equal the
head's logits_from_maps, drags the sliders, types out-of-range values, checks the heatmap
tiles' layout on a desktop and a 390 px phone, clicks a tile, uses an 80-class model, and
holds an upload's request back to see the page while the network runs. No timing is asserted. Screenshots go to test-artifacts/. Skips only where Chromium is not
installed (tests/conftest.py).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

import csra
from app.inference import analyse
from tests.conftest import CAT, ROOT

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::gradio.queueing")]


def open_page(browser, app, width=1400, height=1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(app.url, wait_until="domcontentloaded")
    return page


def upload(page, path=CAT):
    page.locator("#csra-upload input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#csra-heatmaps .csra-tile, #csra-heatmaps .csra-empty", timeout=60_000)
    page.wait_for_function(f"() => csraExplorer.state.data?.name === {Path(path).name!r}",
                           timeout=60_000)


def type_value(page, elem_id, value):
    """Type into a slider's number box and press Enter, as a user does."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def browser_numbers(page):
    return page.evaluate("""() => { const r = csraExplorer.compute();
        return {lam: r.lam, logits: Array.from(r.logits), probs: Array.from(r.probs),
                present: r.present}; }""")


def table_rows(page):
    return page.evaluate("""() => Array.from(document.querySelectorAll('#csra-scores .csra-table tbody tr'))
        .map(tr => Array.from(tr.cells).map(td => td.textContent))""")


def test_lambda_in_the_browser_equals_logits_from_maps(app, browser):
    page = open_page(browser, app)
    upload(page)
    analysis = analyse(app.model, csra.load_image(CAT))
    for lam in (0.0, 0.37, 0.8, 1.0):
        type_value(page, "csra-lambda", lam)
        page.wait_for_function(f"() => csraExplorer.state.last?.lam === {lam}", timeout=30_000)
        numbers = browser_numbers(page)
        with torch.no_grad():
            expected = app.model.head.logits_from_maps(analysis.maps[None], lam=lam)[0].double()
        np.testing.assert_allclose(numbers["logits"], expected.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(numbers["probs"], torch.sigmoid(expected).numpy(), atol=1e-6)
        # the table on screen: most probable first, the same numbers to its printed digits
        rows = table_rows(page)
        order = torch.argsort(-expected, stable=True).tolist()
        assert [r[0] for r in rows] == [analysis.class_names[i] for i in order]
        assert [float(r[2]) for r in rows] == pytest.approx(expected[order].tolist(), abs=6e-4)
        assert f"λ = {lam:.2f}" in page.locator("#csra-scores .csra-summary").inner_text()
        assert page.locator("#csra-scores svg g.bar").count() == 20
    assert not page.errors, page.errors
    page.close()


def test_sliders_drag_and_out_of_range_values(app, browser):
    page = open_page(browser, app)
    upload(page)
    before = table_rows(page)
    slider = page.locator("#csra-lambda input[type=range]")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.10 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.93 * box["width"], y, steps=8)
    page.mouse.up()
    lam = float(slider.input_value())
    assert lam > 0.6
    page.wait_for_function(f"() => Math.abs(csraExplorer.state.last.lam - {lam}) < 1e-9")
    assert table_rows(page) != before
    # the server's pooling weights follow on release, off the critical path
    page.locator("#csra-weights img").wait_for(timeout=60_000)
    page.wait_for_function(
        f"() => document.querySelector('#csra-weights').innerText.includes('λ = {lam:.2f}')",
        timeout=60_000)

    type_value(page, "csra-lambda", 5)              # clamped, with a short message
    page.wait_for_function("() => csraExplorer.state.last.lam === 1")
    assert "λ is between 0 and 1: using 1.00" in page.locator("#csra-scores").inner_text()
    type_value(page, "csra-threshold", 0.99)
    page.wait_for_function("() => csraExplorer.state.last.thr === 0.99")
    present = browser_numbers(page)["present"]
    assert page.locator("#csra-heatmaps .csra-tile").count() == len(present)
    if not present:
        assert "No class at p ≥ 0.99" in page.locator("#csra-heatmaps").inner_text()
    type_value(page, "csra-threshold", 0.0)         # every class present: the first 12 get tiles
    page.wait_for_function("() => csraExplorer.state.last.thr === 0")
    assert page.locator("#csra-heatmaps .csra-tile").count() == 12
    page.wait_for_function("() => document.querySelectorAll('#csra-heatmaps .csra-tile img').length === 12",
                           timeout=60_000)          # the newly present classes' tiles arrive
    assert not page.errors, page.errors
    page.close()


def pick(page, name):
    """Choose a class in the 'also show these classes' box (inside 'Heatmap options')."""
    chooser = page.locator("#csra-picked input")
    if not chooser.is_visible():
        page.get_by_text("Heatmap options").click()
    chooser.click()
    chooser.fill(name)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#csra-heatmaps .csra-tile img').length === 1",
                           timeout=60_000)


def tile_geometry(page):
    return page.evaluate("""() => { const t = document.querySelector('#csra-heatmaps .csra-tile');
        const i = t.querySelector('img, .csra-wait').getBoundingClientRect();
        const c = t.querySelector('.csra-caption').getBoundingClientRect();
        return {left: i.left, right: i.right, width: i.width, height: i.height,
                caption: [c.width, c.height, c.top - i.bottom], vw: window.innerWidth}; }""")


def overflowing(page):
    """Elements wider than their parent where the parent does not scroll."""
    return page.evaluate("""() => { const bad = [];
        for (const el of document.querySelectorAll('#csra-scores *, #csra-heatmaps *, .csra-banner')) {
            const p = el.parentElement; if (!p || el.closest('svg') && el.tagName !== 'svg') continue;
            const scrolls = ['auto', 'scroll'].includes(getComputedStyle(p).overflowX);
            if (!scrolls && el.getBoundingClientRect().right > p.getBoundingClientRect().right + 1)
                bad.push(el.tagName + '.' + el.className);
        }
        return {bad, page: document.documentElement.scrollWidth}; }""")


@pytest.mark.parametrize("width, height", [(1400, 1000), (390, 844)])
def test_one_heatmap_tile_is_whole_with_its_caption(app, browser, width, height):
    page = open_page(browser, app, width, height)
    type_value(page, "csra-threshold", 1.0)         # nothing present ...
    upload(page)
    pick(page, "cat")                               # ... and one class picked: one tile
    best = "cat"
    assert best in page.locator("#csra-heatmaps .csra-caption").inner_text()
    page.locator("#csra-heatmaps .csra-tile").scroll_into_view_if_needed()
    g = tile_geometry(page)
    assert 0 <= g["left"] and g["right"] <= g["vw"] and g["width"] > 100
    assert g["height"] <= 600
    assert g["caption"][0] > 50 and g["caption"][1] > 8 and g["caption"][2] >= 0  # under the picture
    page.locator("#csra-heatmaps .csra-caption").scroll_into_view_if_needed()
    assert page.locator("#csra-heatmaps .csra-caption").is_visible()
    result = overflowing(page)
    assert result["bad"] == [] and result["page"] <= width, result
    chart = page.locator("#csra-scores svg").bounding_box()
    column = page.locator("#csra-scores .csra-chart").bounding_box()
    assert chart["width"] <= column["width"] + 1 and chart["x"] + chart["width"] <= width
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"app-{width}.png"), full_page=True)
    assert not page.errors, page.errors
    page.close()


def test_click_a_tile_to_look_closer_and_bad_upload(app, browser, tmp_path):
    page = open_page(browser, app)
    upload(page)
    tile = page.locator("#csra-heatmaps .csra-tile").nth(1)
    name = tile.locator(".csra-caption b").inner_text()
    tile.click()
    page.wait_for_function(f"() => document.querySelector('#csra-focus input')?.value === {name!r}",
                           timeout=60_000)
    page.locator("#csra-closeup img").first.wait_for(timeout=60_000)
    assert page.locator("#csra-closeup img").count() == 4
    assert name in page.locator("#csra-closeup figcaption").first.inner_text()
    first = page.locator("#csra-heatmaps .csra-tile").first       # the keyboard works too
    other = first.locator(".csra-caption b").inner_text()
    first.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#csra-focus input')?.value === {other!r}",
                           timeout=60_000)

    notes = tmp_path / "notes.png"
    notes.write_text("<b>not</b> a picture")
    page.locator("#csra-upload input[type=file]").set_input_files(str(notes))
    page.wait_for_function(
        "() => document.querySelector('#csra-status')?.innerText.includes('not an image')",
        timeout=60_000)
    page.wait_for_timeout(500)
    assert "not an image" in page.locator("#csra-status").inner_text()
    assert page.locator(".csra-stale").count() == 0          # the previous results, undimmed
    # an example from assets/ runs the model like an upload does, once
    before = app.calls["backbone"]
    page.get_by_role("button", name="Example: cat_and_person.jpg").click()
    page.wait_for_function("() => csraExplorer.state.data?.name === 'cat_and_person.jpg'",
                           timeout=60_000)
    upload(page, ROOT / "assets" / "astronaut.jpg")          # replacing an image: one run too
    page.wait_for_timeout(1500)                              # room for a repeated change event
    assert app.calls["backbone"] == before + 2
    assert not page.errors, page.errors
    page.close()


def test_eighty_classes_sorted_table_chooser_and_banner(app80, browser):
    page = open_page(browser, app80)
    banner = page.locator("#csra-banner")
    assert banner.inner_text().strip() == "⚠️ Serving the embedded <demo> model: scores are not meaningful"
    type_value(page, "csra-threshold", 1.0)
    upload(page)
    rows = table_rows(page)
    assert len(rows) == 20                                    # > 50 classes: the top-k rows
    probs = [float(r[1]) for r in rows]
    assert probs == sorted(probs, reverse=True)
    assert page.locator("#csra-scores svg g.bar").count() == 30
    type_value(page, "csra-topk", 80)
    page.wait_for_function("() => document.querySelectorAll('#csra-scores .csra-table tbody tr').length === 80")
    assert "class <7> & co" in page.locator("#csra-scores table").text_content()
    # the chooser: a class that is not present gets a tile
    pick(page, "class <7>")
    assert "class <7> & co" in page.locator("#csra-heatmaps .csra-caption").inner_text()
    assert not page.errors, page.errors
    page.close()


def test_model_that_cannot_load_gives_an_escaped_message(app80, browser):
    from app.models import IMAGENET

    def offline():
        raise OSError("weights for resnet18 (<urlopen error [Errno -3] Temporary failure>)")

    app80.store.option(IMAGENET).load = offline
    page = open_page(browser, app80)
    page.get_by_text("ImageNet classifier + CSRA").click()
    page.wait_for_function(
        "() => document.querySelector('#csra-status')?.innerText.includes('urlopen')", timeout=60_000)
    status = page.locator("#csra-status").inner_text()
    assert "(<urlopen error [Errno -3] Temporary failure>)" in status
    assert "staying with the model that was loaded" in status
    toast = page.get_by_text("<urlopen error [Errno -3] Temporary failure>", exact=False).first
    toast.wait_for(timeout=30_000)
    assert page.locator("input[type=radio][value^='CSRA model']").is_checked()    # stayed
    assert not page.errors, page.errors
    page.close()


def test_upload_says_analysing_without_an_overlay_and_keeps_no_history(app, browser):
    """While the analysis request is held back, the summary says so, the old results are
    dimmed and no progress overlay moves (its animation slowed uploads); after it, nothing of
    the run is kept in the browser's storage (Gradio's run history rewrote every run's
    pictures there on every event)."""
    page = open_page(browser, app)
    upload(page)
    held, hold = [], [True]
    page.route("**/component_server**", lambda route: held.append(route) if hold[0] else route.continue_())
    page.locator("#csra-upload input[type=file]").set_input_files(str(ROOT / "assets" / "coffee.jpg"))
    page.wait_for_function("() => document.querySelector('#csra-scores .csra-summary')?.innerText"
                           " === 'Analysing the image…'", timeout=60_000)
    page.wait_for_timeout(300)                # room for an overlay to appear, were there one
    overlays = page.evaluate("""() => Array.from(document.querySelectorAll(
        '#csra-status .wrap, #csra-scores .wrap, #csra-heatmaps .wrap'))
        .filter(w => !w.classList.contains('hide') && w.getClientRects().length > 0).length""")
    assert overlays == 0
    assert page.locator(".csra-stale").count() == 2           # the scores and the tiles
    assert held                                               # the analysis was on its way
    hold[0] = False
    for route in held:
        route.continue_()
    page.wait_for_function("() => csraExplorer.state.data?.name === 'coffee.jpg'", timeout=60_000)
    assert page.locator(".csra-stale").count() == 0
    assert "Analysing" not in page.locator("#csra-scores .csra-summary").inner_text()
    assert "coffee.jpg" in page.locator("#csra-status").inner_text()
    page.wait_for_timeout(500)
    stored = page.evaluate("() => Object.keys(localStorage).concat(Object.keys(sessionStorage))")
    assert not [k for k in stored if "run-history" in k], stored
    assert not page.errors, page.errors
    page.close()
