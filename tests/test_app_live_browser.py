"""The live camera tab in Chromium: a fake camera (a short Y4M clip made from assets/) streams,
the overlay changes from frame to frame, the frames/s counter rises above 0, the page's
controls apply while it streams, and the upload analysis stays the session's. The bad cases
(no camera, permission refused, no camera access at all, a camera that stops, the time
limit) each give one line in the tab, and uploads keep working after. No timing is asserted.
"""
import pytest

from bench.live_fps import fake_camera_args, pan_zoom_frames, write_y4m
from tests.conftest import CAT, CHROMIUM, CHROMIUM_ARGS, ROOT
from tests.test_app_browser import ARTIFACTS, type_value, upload

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::gradio.queueing")]

LINE = "#csra-live .csra-live-line"


@pytest.fixture(scope="module")
def chromiums(tmp_path_factory):
    """Two Chromiums from one Playwright (it runs one at a time per thread): a plain one, and
    one whose camera is a 2-second 160x120 clip of pans and zooms (looped)."""
    from pathlib import Path
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not installed ({CHROMIUM} missing)")
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = tmp_path_factory.mktemp("camera") / "camera.y4m"
    write_y4m(clip, pan_zoom_frames(60, (160, 120)), (160, 120), fps=30)
    with sync_api.sync_playwright() as p:
        plain = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        camera = p.chromium.launch(executable_path=CHROMIUM,
                                   args=CHROMIUM_ARGS + fake_camera_args(clip))
        yield plain, camera
        camera.close()
        plain.close()


@pytest.fixture(scope="module")
def browser(chromiums):
    """Chromium without a fake camera (this module's own; see chromiums)."""
    return chromiums[0]


@pytest.fixture(scope="module")
def camera_browser(chromiums):
    return chromiums[1]


def open_live(browser, app, script=None, width=1400, height=1000):
    """The page with the Live camera tab open; script runs before the page's own."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    if script:
        page.add_init_script(script)
    page.goto(app.url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.csraExplorer && document.querySelector('#csra-upload input')")
    page.get_by_role("tab", name="Live camera").click()
    page.locator("#csra-live .csra-live-start").wait_for()
    return page


def live(page, expression):
    return page.evaluate(f"() => {{ const L = csraExplorer.state.live; return {expression}; }}")


def wait_live(page, condition, timeout=60_000):
    page.wait_for_function(f"() => {{ const L = csraExplorer.state.live; return {condition}; }}",
                           timeout=timeout)


def one_line(page):
    """The tab's line: one line of text (a message starts with ⚠️)."""
    text = page.locator(LINE).inner_text()
    assert text and "\n" not in text.strip(), text
    return text


def record_frames(app):
    """Keep what the tab's server function receives (the controls sent with each frame)."""
    service = app.demo.csra_live
    received, real = [], service.frame
    service.frame = lambda data: received.append(data) or real(data)
    return received, lambda: setattr(service, "frame", real)


def test_camera_streams_overlays_with_the_pages_controls(app, camera_browser):
    received, restore = record_frames(app)
    try:
        page = open_live(camera_browser, app)
        upload(page, CAT)                               # the session's upload analysis
        session = page.evaluate("() => window.__gradio_session_hash__")
        before = app.calls["backbone"]
        page.locator("#csra-live .csra-live-start").click()
        wait_live(page, "L.frames >= 2")
        first = live(page, "L.lastAnswer.overlay")
        wait_live(page, f"L.lastAnswer.overlay !== {first!r} && L.frames >= 4")   # a new picture
        page.wait_for_function("() => parseFloat(document.querySelector('#csra-live .csra-live-fps')"
                               ".textContent) > 0", timeout=60_000)
        assert live(page, "L.fps") > 0
        assert page.locator("#csra-live .csra-live-overlay").is_visible()
        assert "Heatmap:" in page.locator("#csra-live .csra-live-scores").inner_text()
        assert app.calls["backbone"] > before           # the network runs on the frames

        # the page's controls apply while it streams: lambda, threshold, opacity, picked classes
        type_value(page, "csra-lambda", 0.9)
        wait_live(page, "L.lastAnswer.lam === 0.9")
        type_value(page, "csra-threshold", 0.2)
        wait_live(page, "L.lastAnswer.threshold === 0.2")
        page.get_by_text("Heatmap options").click()
        type_value(page, "csra-alpha", 0.85)
        chooser = page.locator("#csra-picked input")
        chooser.click()
        chooser.fill("dog")
        page.keyboard.press("Enter")
        wait_live(page, "L.lastAnswer.drawn.join() === 'dog'")
        frames = live(page, "L.frames")
        wait_live(page, f"L.frames >= {frames + 2}")
        last = received[-1]
        assert last["alpha"] == 0.85 and last["picked"] == ["dog"] and last["lam"] == 0.9
        assert last["session"] == session
        assert "Heatmap: dog." in page.locator("#csra-live .csra-live-scores").inner_text()

        # the upload analysis is still the session's, and still on the page
        assert app.demo.csra_sessions.get(session).name == "cat.jpg"
        assert page.evaluate("() => csraExplorer.state.data.name") == "cat.jpg"
        assert "cat.jpg" in page.locator("#csra-status").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#csra-live").screenshot(path=str(ARTIFACTS / "app-live-tab.png"))

        page.locator("#csra-live .csra-live-stop").click()
        assert "stopped" in one_line(page)
        frames = live(page, "L.frames")
        page.wait_for_timeout(500)
        assert live(page, "L.frames") <= frames + 1     # (an answer on its way may still land)
        upload(page, ROOT / "assets" / "astronaut.jpg")  # the upload path works after
        assert page.evaluate("() => csraExplorer.state.data.name") == "astronaut.jpg"
        assert not page.errors, page.errors
        page.close()
    finally:
        restore()


def test_the_time_limit_stops_the_stream_with_one_line(app, camera_browser):
    streams = app.demo.csra_live.streams
    limit, streams.limit = streams.limit, 1.0
    try:
        page = open_live(camera_browser, app)
        page.locator("#csra-live .csra-live-start").click()
        page.wait_for_function(f"() => document.querySelector({LINE!r}).textContent"
                               ".includes('at most 5 minutes')", timeout=60_000)
        assert one_line(page).startswith("⚠️ Live camera stopped: a stream runs at most 5 minutes")
        assert page.locator("#csra-live .csra-live-start").is_enabled()
        assert not page.errors, page.errors
        page.close()
    finally:
        streams.limit = limit


REFUSE = """navigator.mediaDevices.getUserMedia = () =>
    Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"""
NO_MEDIA = "Object.defineProperty(navigator, 'mediaDevices', {value: undefined});"


@pytest.mark.parametrize("case, script, expected", [
    ("no camera (Chromium without a fake device)", None, "⚠️ No camera found"),
    ("permission refused", REFUSE, "⚠️ Camera permission refused"),
    ("no camera access on this page", NO_MEDIA, "⚠️ No camera access on this page"),
])
def test_no_camera_gives_one_line_and_uploads_still_work(app, browser, case, script, expected):
    page = open_live(browser, app, script)
    status = page.locator("#csra-status").inner_text()
    page.locator("#csra-live .csra-live-start").click()
    page.wait_for_function(f"() => document.querySelector({LINE!r}).textContent.startsWith('⚠️')",
                           timeout=30_000)
    assert one_line(page).startswith(expected), case
    assert page.locator("#csra-live .csra-live-start").is_enabled()
    assert page.locator("#csra-status").inner_text() == status   # the page's status untouched
    upload(page, CAT)
    assert "cat.jpg" in page.locator("#csra-status").inner_text()
    assert not page.errors, page.errors
    page.close()


def test_a_camera_that_stops_gives_one_line(app, camera_browser):
    page = open_live(camera_browser, app)
    page.locator("#csra-live .csra-live-start").click()
    wait_live(page, "L.frames >= 1")
    live(page, "L.tracks[0].dispatchEvent(new Event('ended'))")   # what unplugging it fires
    page.wait_for_function(f"() => document.querySelector({LINE!r}).textContent.startsWith('⚠️')",
                           timeout=30_000)
    assert one_line(page).startswith("⚠️ The camera stopped")
    assert page.locator("#csra-live .csra-live-start").is_enabled()
    upload(page, CAT)
    assert "cat.jpg" in page.locator("#csra-status").inner_text()
    assert not page.errors, page.errors
    page.close()


def test_leaving_the_tab_stops_the_camera(app, camera_browser):
    page = open_live(camera_browser, app)
    page.locator("#csra-live .csra-live-start").click()
    wait_live(page, "L.frames >= 1")
    tracks = page.evaluate_handle("() => csraExplorer.state.live.tracks")
    page.get_by_role("tab", name="Downloads").click()
    page.wait_for_function("(tracks) => tracks.every(t => t.readyState === 'ended')", arg=tracks,
                           timeout=30_000)                  # nobody sees it: the camera is off
    frames = page.evaluate("(tracks) => csraExplorer.state.live.frames", tracks)
    page.wait_for_timeout(500)
    assert page.evaluate("() => csraExplorer.state.live.frames") <= frames + 1
    page.get_by_role("tab", name="Live camera").click()
    assert "tab was left" in one_line(page)
    assert not page.errors, page.errors
    page.close()


@pytest.mark.parametrize("width, height", [(1400, 1000), (390, 844)])
def test_live_tab_has_no_critical_or_serious_accessibility_problem(app, camera_browser, width, height):
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    page = camera_browser.new_page(viewport={"width": width, "height": height})
    page.goto(app.url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.csraExplorer")
    if width < 500:                                   # the tab is under the tab bar's menu
        page.get_by_role("button", name="More tabs").click()
        page.locator(".overflow-dropdown button", has_text="Live camera").click()
    else:
        page.get_by_role("tab", name="Live camera").click()
    page.locator("#csra-live .csra-live-start").click()
    wait_live(page, "L.frames >= 2")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width  # nothing runs out
    results = axe.Axe().run(page).response
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:5])
           for v in results["violations"] if v["impact"] in ("critical", "serious")]
    assert not bad, bad
    page.locator("#csra-live .csra-live-stop").click()
    page.close()
