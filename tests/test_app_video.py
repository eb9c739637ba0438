"""The page's Video tab through the running app: a clip gives an overlay video the browser can
play (WebM, same size and frame count), a plot of the classes' scores over time, and one line
for what cannot be used; the server keeps serving."""
import html
from pathlib import Path

import cv2
import pytest
from PIL import Image

from app import ui
from tests.conftest import CAT
from tests.test_app_server import analyse, assert_serving
from tests.test_video import FPS, SIZE, video_props, write_clip

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")
VOC_LABEL = "VOC model (20 classes)"


def analyse_video(client, path, threshold=0.5):
    value = gradio_client.handle_file(str(path))
    status, overlay, plot = client.predict(value, VOC_LABEL, 0.1, threshold, 0.5,
                                           api_name="/analyse_video")
    return html.unescape(status), overlay, plot


def test_a_clip_gives_a_playable_overlay_and_scores_over_time(app, client, tmp_path):
    clip = write_clip(tmp_path / "clip & co.mp4")
    before = app.calls["backbone"]
    status, overlay, plot = analyse_video(client, clip, threshold=0.0)
    assert "clip & co.mp4: 12 frames analysed (every 1) of 12" in status, status
    assert str(tmp_path) not in status and "gradio" not in status     # no server paths
    overlay_path = overlay["video"] if isinstance(overlay, dict) else overlay
    assert Path(overlay_path).suffix == ".webm"
    frames, fps, size = video_props(overlay_path)
    assert (frames, size) == (12, SIZE) and abs(fps - FPS) < 0.01
    assert app.calls["backbone"] > before
    assert plot.count("<polyline") == ui.VIDEO_CLASSES                 # threshold 0: the top six
    points = plot.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 12                                           # one point per frame


def test_long_clips_sample_evenly(app, client, tmp_path, monkeypatch):
    monkeypatch.setattr(ui, "VIDEO_FRAMES", 4)      # read at call time: 12 frames -> every 3rd
    clip = write_clip(tmp_path / "clip.mp4")
    status, _, plot = analyse_video(client, clip)
    assert "4 frames analysed (every 3) of 12" in status, status


@pytest.mark.parametrize("case", ["still image", "zero frames", "too long", "text"])
def test_unusable_videos_get_one_line_and_the_app_keeps_serving(app, client, tmp_path, case):
    if case == "still image":
        path = tmp_path / "photo.mp4"
        Image.open(CAT).save(path, format="JPEG")
        expected = "photo.mp4: a still image (JPEG), not a video"
    elif case == "zero frames":
        path = tmp_path / "empty.mp4"
        cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE).release()
        expected = "empty.mp4: "
    elif case == "too long":
        path = write_clip(tmp_path / "long.mp4", fps=0.5, per_photo=16)   # 64 frames: 128 s
        expected = f"over the limit of {ui.MAX_VIDEO_SECONDS:g} s"
    else:
        path = tmp_path / "notes.mp4"
        path.write_text("not a video at all")
        expected = "notes.mp4: "
    status, overlay, plot = analyse_video(client, path)
    assert status.startswith("⚠️ ") and expected in status, status
    assert "\n" not in status and str(tmp_path) not in status and "/gradio/" not in status
    assert overlay is None and plot == ""
    assert_serving(client)


def test_a_video_given_as_an_image_says_so(client, tmp_path):
    clip = write_clip(tmp_path / "moving.mp4")
    out = analyse(client, clip)
    assert out["status"].startswith("⚠️") and "a video (MP4), not a still image" in out["status"]
