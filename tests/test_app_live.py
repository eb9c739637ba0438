"""The live camera tab without a browser (app/live.py): the network lock's order and its
one-waiting-frame-per-session rule, the time limit, the overlay against csra.visualize, the
page's controls applied to every frame, and one-line answers for bad frames."""
import base64
import threading
import time

import cv2
import numpy as np
import pytest
import torch

import csra
from csra import visualize
from app import live, page, render
from app.inference import analysis_from_maps, score_maps, scores_at
from app.models import default_store
from tests.conftest import CAT

NAMES = ("cat", "dog", "car", "tree")


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    return csra.build_model("resnet18", num_classes=4, image_size=64, class_names=NAMES).eval()


@pytest.fixture
def frame():
    image = csra.load_image(CAT)
    image.thumbnail((160, 160))
    return image


def jpeg_data_url(image):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def wait_until(condition, what, limit=2000):
    """Poll condition() (bounded: limit x 5 ms); fail naming what never happened."""
    for _ in range(limit):
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def in_thread(fn, *args, **kwargs):
    """Start fn in a thread; returns (thread, box) where box["out"] is its result."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", fn(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, box


# --- the network lock -----------------------------------------------------------------------

def test_gate_hands_the_lock_to_the_longest_waiter():
    gate = live.FairGate(1)
    assert gate.acquire(key="camera")
    upload, box = in_thread(gate.acquire)                # an upload waits for the network
    wait_until(lambda: gate.waiting() == [None], "the upload waits")
    gate.release()                                       # the camera's frame is done ...
    again, box2 = in_thread(gate.acquire, key="camera")  # ... and its next frame comes at once
    upload.join(5)
    assert box["out"] is True                            # the upload got the network first
    wait_until(lambda: gate.waiting() == ["camera"], "the camera's next frame waits")
    gate.release()
    again.join(5)
    assert box2["out"] is True
    gate.release()
    assert gate.acquire(timeout=0) and gate.waiting() == []
    gate.release()


def test_gate_keeps_one_waiting_frame_per_session_the_newest_in_its_place():
    gate = live.FairGate(1)
    with gate:                                           # someone's upload holds the network
        old, old_box = in_thread(gate.acquire, key="s1")
        wait_until(lambda: gate.waiting() == ["s1"], "s1's frame waits")
        other, other_box = in_thread(gate.acquire)       # another session's upload
        wait_until(lambda: gate.waiting() == ["s1", None], "the upload waits behind it")
        new, new_box = in_thread(gate.acquire, key="s1")
        old.join(5)
        assert old_box["out"] is False                   # replaced by the newer frame ...
        assert gate.waiting() == ["s1", None]            # ... which keeps its place; one each
    new.join(5)
    assert new_box["out"] is True and "out" not in other_box
    gate.release()
    other.join(5)
    assert other_box["out"] is True
    gate.release()


def test_gate_timeout_leaves_the_line():
    gate = live.FairGate(1)
    with gate:
        assert gate.acquire(key="s", timeout=0.01) is False
        assert gate.waiting() == []
    assert gate.acquire(timeout=0)
    gate.release()


def test_frames_of_one_session_newest_replaces_the_waiting_one(model, frame):
    store = default_store(model, classifier=None)
    service = live.LiveService(store, live.FairGate(1))
    data = {"frame": jpeg_data_url(frame), "session": "s1", "stream": "a", "lam": 0.1,
            "threshold": 0.5}
    with service.gate:                                   # the network is busy
        first, first_box = in_thread(service.frame, data)
        wait_until(lambda: service.gate.waiting() == ["s1"], "the first frame waits")
        second, second_box = in_thread(service.frame, data)
        first.join(5)
        assert first_box["out"] == {"replaced": True}
        assert service.gate.waiting() == ["s1"]          # at most one waiting frame
    second.join(30)
    assert "overlay" in second_box["out"]


# --- the time limit -------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_streams_time_limit():
    clock = Clock()
    streams = live.Streams(limit=300, clock=clock)
    assert streams.left("s", "a") == 300
    clock.now += 299
    assert streams.left("s", "a") == pytest.approx(1)
    assert streams.left("s", "b") == 300                 # Start again: a new stream, a new clock
    clock.now += 1
    with pytest.raises(live.TimeUp, match="at most 5 minutes"):
        streams.left("s", "a")
    assert live.TIME_LIMIT_S == 300


def test_a_stream_past_its_time_gets_the_message(model, frame):
    clock = Clock()
    service = live.LiveService(default_store(model, classifier=None), live.FairGate(1), clock=clock)
    data = {"frame": jpeg_data_url(frame), "session": "s", "stream": "a", "lam": 0.1,
            "threshold": 0.5}
    assert service.frame(data)["left_s"] == 300
    clock.now += live.TIME_LIMIT_S
    assert service.frame(data) == {"stop": live.TIME_LIMIT_TEXT}
    assert "\n" not in live.TIME_LIMIT_TEXT


# --- the picture and the numbers ------------------------------------------------------------

def expected_maps(model, image):
    return analysis_from_maps(model, score_maps(model, image), np.asarray(image))


def test_overlay_is_visualize_blend_of_the_top_class(model, frame):
    c = page.Controls(lam=0.3, threshold=0.5, alpha=0.35).clean()
    picture, out = live.process_frame(model, frame, c)
    a = expected_maps(model, frame)
    scores = scores_at(a, 0.3)
    top = int(np.argmax(scores.probabilities))
    lo, hi = render.colour_ranges(a.class_maps, "global")
    expected = visualize.overlay(np.asarray(frame), a.class_maps[top], lo[top], hi[top], 0.35)
    np.testing.assert_array_equal(picture, expected)
    assert out["drawn"] == [NAMES[top]]
    assert out["top"] == [NAMES[top], round(float(scores.probabilities[top]), 4)]
    present = [NAMES[i] for i in np.argsort(-scores.probabilities, kind="stable")
               if scores.probabilities[i] >= 0.5]
    assert [name for name, _ in out["present"]] == present
    assert out["lam"] == 0.3 and out["threshold"] == 0.5 and out["forward_ms"] > 0


def test_picked_classes_are_drawn_and_the_controls_apply(model, frame):
    a = expected_maps(model, frame)
    top = int(np.argmax(scores_at(a, 0.1).probabilities))
    other = next(i for i in range(4) if i != top)
    # one picked class: its own map, on the per-map scale, at the page's opacity
    c = page.Controls(lam=0.1, threshold=0.0, alpha=0.8, scale="per-map",
                      picked=(NAMES[other],)).clean()
    picture, out = live.process_frame(model, frame, c)
    lo, hi = render.colour_ranges(a.class_maps, "per-map")
    np.testing.assert_array_equal(picture, visualize.overlay(
        np.asarray(frame), a.class_maps[other], lo[other], hi[other], 0.8))
    assert out["drawn"] == [NAMES[other]]
    assert len(out["present"]) == 4                      # threshold 0: every class present
    # two picked classes: both maps' colours, the hotter one at each position
    c = page.Controls(lam=0.1, threshold=0.5, alpha=0.5, picked=(NAMES[other], NAMES[top])).clean()
    picture, out = live.process_frame(model, frame, c)
    assert out["drawn"] == [NAMES[other], NAMES[top]]
    lo, hi = render.colour_ranges(a.class_maps, "global")
    index = np.maximum(visualize.colour_index(a.class_maps[other], lo[other], hi[other]),
                       visualize.colour_index(a.class_maps[top], lo[top], hi[top]))
    size = np.asarray(frame).shape[:2]
    heat = cv2.applyColorMap(cv2.convertScaleAbs(cv2.resize(index, size[::-1])), visualize.RGB_LUT)
    np.testing.assert_array_equal(picture, visualize.blend(np.asarray(frame), heat, 0.5))
    # lambda moves the scores the way the page's other views compute them
    for lam in (0.0, 1.0):
        _, out = live.process_frame(model, frame, page.Controls(lam=lam, threshold=0.0).clean())
        p = scores_at(a, lam).probabilities
        assert dict(out["present"]) == pytest.approx({NAMES[i]: round(float(p[i]), 4)
                                                      for i in range(4)}, abs=2e-4)


def test_service_answers_a_frame_and_one_line_errors(model, frame):
    service = live.LiveService(default_store(model, classifier=None), live.FairGate(1))
    good = {"frame": jpeg_data_url(frame), "session": "s", "stream": "a", "lam": 0.2,
            "threshold": 0.5, "alpha": 0.5, "scale": "global", "picked": ["dog"]}
    out = service.frame(good)
    assert out["overlay"].startswith("data:image/jpeg;base64,") and out["drawn"] == ["dog"]
    assert out["side"] == live.frame_side(model) == 320 and out["handler_ms"] >= out["forward_ms"]
    shown = cv2.imdecode(np.frombuffer(base64.b64decode(out["overlay"].partition(",")[2]), np.uint8),
                         cv2.IMREAD_COLOR)
    assert shown.shape[:2] == np.asarray(frame).shape[:2]
    for bad, text in [({**good, "frame": "data:image/jpeg;base64,bm90IGFuIGltYWdl"}, "not an image"),
                      ({**good, "frame": ""}, "no picture"),
                      ({**good, "lam": float("nan")}, "λ must be"),
                      ({**good, "threshold": 7}, "threshold must be"),
                      ({**good, "model": "nope"}, "unknown model"),
                      ({**good, "session": None}, "reload"),
                      ("not a dict", "reload")]:
        out = service.frame(bad)
        assert set(out) == {"error"} and text in out["error"] and "\n" not in out["error"], out


def test_frame_side_keeps_the_models_input_size():
    class Model:
        def __init__(self, size):
            self.config = type("Config", (), {"image_size": size})()
    assert live.frame_side(Model(224)) == 320                # 320 x 240: both sides >= 224
    assert live.frame_side(Model(448)) == 597                # 597 x 448
