"""The page in a real browser: Playwright drives Debian's Chromium (never a downloaded one).

Opens the page, uploads an image, waits for the heatmaps, drags the lambda
slider, checks that the scores changed, clicks an example, and saves a
screenshot to test-artifacts/app.png. Skips only where Chromium is not installed.
"""
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.test_app_server import start_app

CHROMIUM = os.environ.get("CSRA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"Chromium not installed ({CHROMIUM} missing; CI installs it with "
                              "apt-get install chromium)"),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    running = start_app(tmp_path_factory.mktemp("browser"), Path("/nonexistent/weights.pth"))
    yield running
    running.demo.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


ROWS_JS = ("Array.from(document.querySelectorAll('#csra-scores [role=row].virtual-row'))"
           ".map(r => r.innerText).join('|')")


def table_text(page):
    """The visible rows of the scores table (Gradio's table is virtual: rows are divs)."""
    return page.evaluate(f"() => {ROWS_JS}")


def test_upload_heatmaps_and_lambda_slider_in_chromium(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(app.url, wait_until="domcontentloaded")
    page.locator("#csra-image input[type=file]").set_input_files(str(ROOT / "assets" / "cat.jpg"))

    page.wait_for_selector("#csra-heatmaps img", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#csra-status')?.innerText.includes('cat.jpg')", timeout=60_000)
    assert "λ = 0.10" in page.locator("#csra-status").inner_text()
    before = table_text(page)
    assert "aeroplane" in before and re.search(r"0\.\d{3,4}", before)
    assert page.locator("#csra-chart svg g").count() == 20
    assert page.locator("#csra-heatmaps img").count() >= 1
    page.locator("#csra-weights").scroll_into_view_if_needed()       # its <img> loads lazily
    page.wait_for_selector("#csra-weights img", timeout=30_000)
    page.locator("#csra-lambda").scroll_into_view_if_needed()

    # drag the lambda slider's thumb from 0.10 to near the right end
    slider = page.locator("#csra-lambda input[type=range]")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.10 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.60 * box["width"], y, steps=5)
    page.mouse.move(box["x"] + 0.93 * box["width"], y, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "() => !document.querySelector('#csra-status')?.innerText.includes('λ = 0.10')",
        timeout=30_000)
    page.wait_for_function(f"(old) => {ROWS_JS} !== old", arg=before, timeout=30_000)
    lam = float(slider.input_value())
    assert lam > 0.6
    page.wait_for_function(
        f"() => document.querySelector('#csra-status')?.innerText.includes('λ = {lam:.2f}')",
        timeout=30_000)
    assert table_text(page) != before
    assert f"λ = {lam:.2f}" in page.locator("#csra-weights-text").inner_text()

    # an example from assets/ runs the model like an upload does
    page.locator("img[src*='cat_and_person']").first.click()
    page.wait_for_function(
        "() => document.querySelector('#csra-status')?.innerText.includes('cat_and_person.jpg')",
        timeout=30_000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    assert (ARTIFACTS / "app.png").stat().st_size > 50_000
    assert not errors, errors
    page.close()
