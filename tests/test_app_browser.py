"""The page in a real browser: Playwright drives Debian's Chromium (never a downloaded one).

Uploads an image, checks that the numbers the browser computes at several lambdas equal the
head's logits_from_maps, drags the sliders, types out-of-range values, checks the heatmap
tiles' layout on a desktop and a 390 px phone, clicks a tile, uses an 80-class model, and
holds an upload's request back to see the page while the network runs. No timing is asserted. Screenshots go to test-artifacts/. Skips only where Chromium is not
installed (tests/conftest.py).
"""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
    # the answer said "nothing new" (None) for the close-up and the status: both stay
    assert page.locator("#csra-closeup img").count() == 4
    assert "cat.jpg" in page.locator("#csra-status").inner_text()

    type_value(page, "csra-lambda", 0.3)            # typed: no release event, the page asks
    page.wait_for_function(
        "() => document.querySelector('#csra-weights').innerText.includes('λ = 0.30')",
        timeout=60_000)
    type_value(page, "csra-lambda", 5)              # clamped, with a short message
    page.wait_for_function("() => csraExplorer.state.last.lam === 1")
    assert "λ is between 0 and 1: using 1.00" in page.locator("#csra-scores").inner_text()
    page.wait_for_function(                         # and the server's pictures: refused
        "() => document.querySelector('#csra-status').innerText"
        ".includes('λ must be between 0 and 1, got 5')", timeout=60_000)
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


def clipboard_page(browser, app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app.url.rstrip("/"))
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(app.url, wait_until="domcontentloaded")
    page.get_by_text("Paste an image or use the camera").click()     # the folded box
    page.wait_for_selector("#csra-image")
    return context, page


def paste(page, width, height, source=None):
    """Put a PNG on the clipboard (the photo `source` drawn at width x height) and press the
    image box's 'Paste from clipboard' button, as a user does."""
    page.evaluate("""async ([bytes, w, h]) => {
        const canvas = document.createElement('canvas');
        canvas.width = w; canvas.height = h;
        const ctx = canvas.getContext('2d');
        if (bytes) ctx.drawImage(await createImageBitmap(new Blob([new Uint8Array(bytes)])), 0, 0, w, h);
        else { ctx.fillStyle = '#4060a0'; ctx.fillRect(0, 0, w, h); }
        const png = await new Promise((done) => canvas.toBlob(done, 'image/png'));
        await navigator.clipboard.write([new ClipboardItem({'image/png': png})]);
    }""", [list(source.read_bytes()) if source else None, width, height])
    page.locator("#csra-image button[aria-label='Paste from clipboard']").click()


def test_paste_works_and_a_refused_paste_empties_the_image_box(app, browser):
    """Gradio's image box uploads a paste as a file, clipboard.png. A refused picture (here
    over the pixel limit) gets its one line, and the box is emptied by the page's script
    (the server no longer outputs the box: see app/ui.py, Memory)."""
    context, page = clipboard_page(browser, app)
    uploads = []
    page.on("request", lambda r: uploads.append(r.url) if "/gradio_api/upload" in r.url else None)
    paste(page, 320, 240, CAT)
    page.wait_for_function("() => csraExplorer.state.data?.name === 'clipboard.png'", timeout=60_000)
    assert uploads                                                # it went up as a file
    assert "clipboard.png" in page.locator("#csra-status").inner_text()
    assert page.locator("#csra-image img").count() == 1           # the box shows the paste
    paste(page, 7200, 7200)                                       # 51.8 megapixels
    page.wait_for_function("() => document.querySelector('#csra-status').innerText"
                           ".includes('more than the limit')", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('#csra-image img')", timeout=60_000)
    assert page.locator("#csra-status .csra-message").count() == 1
    assert not page.errors, page.errors
    context.close()


HOSTILE_NAMES = ["![t](http://127.0.0.1:9/track.png).png", "[clickme](javascript:alert(1)) *b*.png",
                 "<img src=http://127.0.0.1:9/x.png>.png", "www.example.com $$x$$ `c`.png"]


def test_file_names_are_plain_text(app, browser):
    """A name was once rendered as Markdown: ![t](http://127.0.0.1:9/track.png).jpg made the
    browser fetch that URL, [clickme](javascript:...) showed as a link. In the status line,
    for a picture and for a refused file, a name is text: nothing fetched, no link or image."""
    page = open_page(browser, app)
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if "127.0.0.1:9/" in r.url else None)
    picture = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 20, 20)).save(picture, "PNG")
    box = page.locator("#csra-upload input[type=file]")
    status = page.locator("#csra-status .csra-status-line")
    for name in HOSTILE_NAMES:
        box.set_input_files(files=[{"name": name, "mimeType": "image/png",
                                    "buffer": picture.getvalue()}])
        page.wait_for_function("(n) => csraExplorer.state.data?.name === n", arg=name,
                               timeout=60_000)
        assert status.inner_text().startswith(f"{name} — 30×20 px"), status.inner_html()
        box.set_input_files(files=[{"name": name, "mimeType": "image/png",
                                    "buffer": b"not a picture"}])
        page.wait_for_function("(n) => document.querySelector('#csra-status').innerText"
                               ".includes(n + ': not an image')", arg=name, timeout=60_000)
        assert status.locator("a, img, em, i, code, strong").count() == 0, status.inner_html()
    page.wait_for_timeout(500)
    assert fetched == []
    assert not page.errors, page.errors
    page.close()
