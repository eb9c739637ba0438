"""Every control is checked on every event, as a client that skips the page sends it (raw
queue/join): a bad value gets one line naming the control, never Gradio's error, a
traceback or a cut event stream (issue 19: scale=[] gave "unhashable type: 'list'",
top_k=1e308 cut the analysis's stream with an orjson overflow)."""
import uuid

import httpx
import pytest

from tests.conftest import CAT
from tests.app_api import fn_index, raw_event, scores_of

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")
VOC_LABEL = "VOC model (20 classes)"
GOOD = {"lam": 0.1, "threshold": 0.5, "top_k": 20, "alpha": 0.5, "scale": "global", "picked": []}
BAD_CONTROLS = [
    ("lam", float("nan"), "λ must be between 0 and 1"),
    ("lam", "a lot", "λ must be a number between 0 and 1"),
    ("lam", [0.1], "λ must be a number between 0 and 1"),
    ("threshold", 7, "threshold must be between 0 and 1"),
    ("threshold", True, "threshold must be a number between 0 and 1"),
    ("top_k", 1e308, "table rows (top-k) must be between 1 and 1000"),
    ("top_k", "1" * 400, "table rows (top-k) must be between 1 and 1000"),
    ("top_k", [], "table rows (top-k) must be a whole number between 1 and 1000"),
    ("alpha", 2.5, "heatmap opacity must be between 0 and 1"),
    ("alpha", None, "heatmap opacity must be a number between 0 and 1"),
    ("scale", [], "colour scale must be one of global, per-map"),
    ("scale", {"x": [1]}, "colour scale must be one of global, per-map"),
    ("picked", [[1], 2], "also show these classes must be class names"),
    ("picked", {"dog": 1}, "also show these classes must be class names"),
]


def uploaded(app, path):
    """The path Gradio's upload route gives a file."""
    with open(path, "rb") as f:
        r = httpx.post(app.url + "gradio_api/upload", timeout=60, files={"files": f})
    r.raise_for_status()
    return r.json()[0]


def controls_with(control, value):
    return list({**GOOD, control: value}.values())


def assert_one_line(text, start, where):
    assert isinstance(text, str) and text.startswith(f"⚠️ {start}"), (where, text)
    assert "\n" not in text and "Traceback" not in text and "internal error" not in text, where
    assert len(text) < 200, (where, text)      # a long value is quoted cut short


@pytest.mark.parametrize("control, value, start", BAD_CONTROLS,
                         ids=[f"{c}={v!r}"[:30] for c, v, _ in BAD_CONTROLS])
def test_every_control_is_checked_on_every_event(app, control, value, start):
    """The analysis, /refresh, /downloads, the chained close-up and the tile click (private),
    /choose_model, /check_map and /analyse_video, each with one bad value."""
    session = f"controls-{uuid.uuid4()}"
    bad, good = controls_with(control, value), controls_with("lam", 0.1)
    cat = {"path": str(CAT), "orig_name": "cat.jpg"}                   # an example: open to all
    out = raw_event(app, fn_index(app, "on_image"), [cat, VOC_LABEL, *bad, None], session)
    assert_one_line(out[0], start, "analyse")
    assert out[1] is None                                              # no scores
    out = raw_event(app, fn_index(app, "on_image"), [cat, VOC_LABEL, *good, None], session)
    assert scores_of(out)["names"], out[0]                             # the session has an image
    for fn in ("on_changes", "on_downloads"):                          # /refresh, chained, files
        out = raw_event(app, fn_index(app, fn), [*bad, "dog"], session)
        assert_one_line(out[0 if fn == "on_changes" else 1], start, fn)
    out = raw_event(app, fn_index(app, "on_tile_select"), [*bad, "dog"], session,
                    event_data={"index": 11, "value": "dog", "selected": True})
    assert_one_line(out[0], start, "tile click")
    out = raw_event(app, fn_index(app, "on_model"), [VOC_LABEL, *[
        dict(zip(GOOD, bad))[k] for k in ("top_k", "alpha", "scale", "lam", "threshold", "picked")],
        "dog"], session)
    assert out[0] == VOC_LABEL
    assert_one_line(out[7], start, "choose_model")
    if control == "lam":
        out = raw_event(app, fn_index(app, "on_check"), [value, "dog"], session)
        assert_one_line(out[1], start, "check_map")
    if control in ("lam", "threshold", "alpha"):
        c = dict(zip(GOOD, bad))
        out = raw_event(app, fn_index(app, "on_video"),
                        [{"path": uploaded(app, CAT), "meta": {"_type": "gradio.FileData"}},
                         VOC_LABEL, c["lam"], c["threshold"], c["alpha"]], session)
        assert start in out[0] and "internal error" not in out[0], out[0]
    out = raw_event(app, fn_index(app, "on_changes"), [*good, "dog"], session)
    assert out[0] is None or not out[0].startswith("⚠️"), out[0]       # a good value clears it


@pytest.mark.parametrize("label", ["no such model", [], {"a": 1}, None])
def test_an_unknown_model_gets_a_message(app, label):
    cat = {"path": str(CAT), "orig_name": "cat.jpg"}
    session = f"model-label-{uuid.uuid4()}"
    out = raw_event(app, fn_index(app, "on_image"), [cat, label, *GOOD.values(), None], session)
    assert_one_line(out[0], "model must be one of: VOC model (20 classes)", "analyse")
    out = raw_event(app, fn_index(app, "on_model"),
                    [label, 20, 0.5, "global", 0.1, 0.5, [], None], session)
    assert out[0] == VOC_LABEL                                         # stays where it was
    assert_one_line(out[7], "model must be one of", "choose_model")


def test_only_the_page_events_meant_for_clients_are_in_the_api(client):
    """The chained close-up, the tile click and the browser-only events are the page's own:
    hidden from the API docs and from gradio_client (Gradio still answers a raw queue/join
    for them, so their handlers check every value: the tests above)."""
    info = client.view_api(print_info=False, return_format="dict")
    assert sorted(info["named_endpoints"]) == ["/analyse", "/analyse_video", "/check_map",
                                               "/choose_model", "/downloads", "/refresh"]
    assert info["unnamed_endpoints"] == {}
    with pytest.raises(ValueError):
        client.predict(api_name="/on_changes")
