"""Videos through python -m csra.predict and csra.video.predict_video: a short clip written here
with cv2.VideoWriter (mp4v in .mp4, the codec OpenCV's pip wheels write and read back) from the
photos in assets/, 96x64 pixels, and a tiny random ResNet-18 CSRA model at 64 px.

mp4v is lossy, so a frame is compared with the frame as decoded (cv2 gives BGR; the model and
csra.load_image see RGB), never with the photo it was made from.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import csra
from csra import predict, video
from csra.video import VideoError, predict_video
from csra.visualize import overlay, value_range

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["cat", "coffee", "rocket", "astronaut"]
SIZE = (96, 64)  # width, height
FPS = 12.0
PER_PHOTO = 3  # frames per photo: 12 frames, 1 s


def write_clip(path, fps=FPS, fourcc="mp4v", photos=PHOTOS, per_photo=PER_PHOTO):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened()
    for name in photos:
        rgb = np.asarray(Image.open(ROOT / "assets" / f"{name}.jpg").convert("RGB").resize(SIZE, Image.BILINEAR))
        for k in range(per_photo):
            shifted = np.roll(rgb, 4 * k, axis=1)  # a little motion, so no two frames are the same
            writer.write(cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded_frames(path):
    """The frames as OpenCV decodes them, RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def video_props(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    props = (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), capture.get(cv2.CAP_PROP_FPS),
             (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))))
    capture.release()
    return props


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    torch.manual_seed(0)
    model = csra.build_model("resnet18", num_classes=20, lam=0.1, image_size=64).eval()
    weights = csra.save_checkpoint(root / "tiny.pth", model)
    path = write_clip(root / "clip.mp4")
    return SimpleNamespace(root=root, weights=weights, path=path, model=csra.load_checkpoint(weights),
                           frames=decoded_frames(path))


def run(capsys, *args):
    code = predict.main([str(a) for a in args] + ["--no-progress", "--workers", "0"])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def frame_scores_and_maps(model, rgb, lam=None):
    """One frame's sigmoid scores and class maps (summed over heads), alone (batch of one)."""
    x = model.preprocessing(Image.fromarray(rgb))[None]
    with torch.no_grad():
        maps = model.head.score_maps(model.forward_features(x))
        return torch.sigmoid(model.head.logits_from_maps(maps, lam=lam))[0].numpy(), maps[0].sum(0).numpy()


def test_the_clip_round_trips_through_mp4v(clip):
    assert video_props(clip.path) == (12, FPS, SIZE)
    assert len(clip.frames) == 12 and clip.frames[0].shape == (SIZE[1], SIZE[0], 3)


def test_csv_has_a_row_per_frame_with_its_time_and_the_overlay_has_the_inputs_count_size_and_rate(clip, capsys):
    out, overlay_path = clip.root / "scores.csv", clip.root / "overlay.mp4"
    code, _, err = run(capsys, clip.path, "--weights", clip.weights, "--out", out, "--heatmaps", overlay_path,
                       "--batch-size", "5")
    assert code == 0, err
    header, rows = read_csv(out)
    assert header == ["image", "frame", "time_s", "labels", *csra.VOC_CLASSES]
    assert [int(r[1]) for r in rows] == list(range(12))
    np.testing.assert_allclose([float(r[2]) for r in rows], np.arange(12) / FPS, rtol=0, atol=1e-6)
    assert {r[0] for r in rows} == {str(clip.path)}
    assert "1 of 1 videos predicted (12 frames)" in err
    assert video_props(overlay_path) == (12, FPS, SIZE)
    # each overlay frame is the decoded frame under the heat map of its top 3 classes, coloured by
    # csra.visualize on the frame's global range, their names and scores in the corner (mp4v is
    # lossy: compare mean differences)
    drawn = decoded_frames(overlay_path)
    for k in (0, 7):
        scores, maps = frame_scores_and_maps(clip.model, clip.frames[k])
        top = np.argsort(-scores)[:3]
        vmin, vmax = value_range(maps, "global")
        expected = overlay(clip.frames[k], maps[top].max(0), vmin[0], vmax[0])
        video.draw_labels(expected, [f"{csra.VOC_CLASSES[c]} {scores[c]:.2f}" for c in top])
        to_expected = np.abs(drawn[k].astype(int) - expected.astype(int)).mean()
        to_plain = np.abs(drawn[k].astype(int) - clip.frames[k].astype(int)).mean()
        assert to_expected < 0.3 * to_plain, (k, to_expected, to_plain)


def test_a_frames_scores_are_those_of_the_decoded_frame_predicted_as_an_image(clip, capsys):
    out = clip.root / "frames.csv"
    code, _, err = run(capsys, clip.path, "--weights", clip.weights, "--out", out, "--batch-size", "4")
    assert code == 0, err
    _, rows = read_csv(out)
    stills = clip.root / "stills"
    stills.mkdir()
    for k, rgb in enumerate(clip.frames):
        Image.fromarray(rgb).save(stills / f"frame{k:02d}.png")  # lossless: exactly the decoded frame
    Image.fromarray(np.ascontiguousarray(clip.frames[5][..., ::-1])).save(clip.root / "bgr05.png")
    code, _, err = run(capsys, stills, clip.root / "bgr05.png", "--weights", clip.weights,
                       "--out", clip.root / "stills.csv")
    assert code == 0, err
    header, image_rows = read_csv(clip.root / "stills.csv")
    assert header == ["image", "labels", *csra.VOC_CLASSES]  # no frame columns without a video
    by_name = {Path(r[0]).name: np.array(r[2:], float) for r in image_rows}
    for k, row in enumerate(rows):
        np.testing.assert_allclose(np.array(row[4:], float), by_name[f"frame{k:02d}.png"], rtol=0, atol=2e-6)
        assert row[3] == next(r[1] for r in image_rows if Path(r[0]).name == f"frame{k:02d}.png")
    # the colour order matters: the same frame read as BGR scores differently
    assert np.abs(np.array(rows[5][4:], float) - by_name["bgr05.png"]).max() > 1e-3


def test_every_n_predicts_every_nth_frame_and_the_overlay_keeps_every_frame(clip, capsys):
    out, overlay_path = clip.root / "every.json", clip.root / "every.avi"
    code, _, err = run(capsys, clip.path, "--weights", clip.weights, "--out", out, "--every", "5",
                       "--heatmaps", overlay_path)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert [p["frame"] for p in data["predictions"]] == [0, 5, 10]
    assert [p["time_s"] for p in data["predictions"]] == [round(f / FPS, 6) for f in (0, 5, 10)]
    for p in data["predictions"]:
        expected, _ = frame_scores_and_maps(clip.model, clip.frames[p["frame"]])
        np.testing.assert_allclose([p["scores"][c] for c in csra.VOC_CLASSES], expected, rtol=0, atol=1e-5)
    assert video_props(overlay_path) == (12, FPS, SIZE)  # MJPG in .avi


def test_a_folder_of_mixed_images_and_videos(clip, capsys):
    folder = clip.root / "mixed"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(clip.path, folder / "clip.mp4")
    write_clip(folder / "sub" / "other.avi", fps=8.0, fourcc="MJPG", photos=["coffee", "cat"], per_photo=2)
    Image.fromarray(clip.frames[0]).save(folder / "still.png")
    shutil.copy(ROOT / "assets" / "rocket.jpg", folder / "sub" / "rocket.jpg")
    (folder / "notes.txt").write_text("neither")
    out, heat = clip.root / "mixed.csv", clip.root / "mixed-heat"
    code, _, err = run(capsys, folder, "--weights", clip.weights, "--out", out, "--heatmaps", heat,
                       "--threshold", "0.5")
    assert code == 0, err
    header, rows = read_csv(out)
    assert header[:4] == ["image", "frame", "time_s", "labels"]
    images = [r for r in rows if r[1] == ""]
    assert sorted(Path(r[0]).name for r in images) == ["rocket.jpg", "still.png"]
    assert all(r[2] == "" for r in images)
    frames = {}
    for r in rows:
        if r[1] != "":
            frames.setdefault(Path(r[0]).name, []).append((int(r[1]), float(r[2])))
    assert frames["clip.mp4"] == [(k, pytest.approx(k / FPS, abs=1e-6)) for k in range(12)]
    assert frames["other.avi"] == [(k, pytest.approx(k / 8.0, abs=1e-6)) for k in range(4)]
    assert video_props(heat / "clip_overlay.mp4") == (12, FPS, SIZE)
    assert video_props(heat / "other_overlay.mp4") == (4, 8.0, SIZE)
    # the image rows are what the images alone give
    still, _ = frame_scores_and_maps(clip.model, clip.frames[0])
    row = next(r for r in images if r[0].endswith("still.png"))
    np.testing.assert_allclose(np.array(row[4:], float), still, rtol=0, atol=2e-6)
    assert "2 images predicted, 2 of 2 videos predicted (16 frames)" in err
    pngs = sorted(p.name for p in heat.glob("*.png"))
    assert len(pngs) == sum(len(r[3].split(";")) for r in images if r[3])


@pytest.fixture(scope="module")
def bad(clip):
    """One file for each kind of bad video input."""
    root = clip.root / "bad"
    root.mkdir()
    files = SimpleNamespace(root=root)
    files.corrupt = root / "corrupt.mp4"
    files.corrupt.write_bytes(clip.path.read_bytes()[: clip.path.stat().st_size // 2])  # cut in half
    files.zero = root / "zero.mp4"
    cv2.VideoWriter(str(files.zero), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE).release()  # no frame written
    files.zero_avi = root / "zero.avi"  # this one opens, with no frame in it
    cv2.VideoWriter(str(files.zero_avi), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE).release()
    assert files.zero.exists() and cv2.VideoCapture(str(files.zero_avi)).isOpened()
    avi = write_clip(root / "mjpg.avi", fourcc="MJPG", photos=["cat"], per_photo=2).read_bytes()
    assert avi.count(b"MJPG") >= 1
    files.codec = root / "codec.avi"  # a codec tag FFmpeg has no decoder for
    files.codec.write_bytes(avi.replace(b"MJPG", b"QQQQ"))
    files.still = root / "still.mp4"  # a JPEG with a video's name
    shutil.copy(ROOT / "assets" / "cat.jpg", files.still)
    files.moving = root / "moving.jpg"  # an MP4 with a still image's name
    shutil.copy(clip.path, files.moving)
    files.long = clip.path  # 1 s: over a limit of 0.5 s
    files.odd_name = root / os.fsdecode(b"odd-\xff-name.mp4")  # not UTF-8: OpenCV 5.0 crashes on it
    shutil.copy(clip.path, files.odd_name)
    return files


BAD_MESSAGES = {  # file -> what its one line says
    "corrupt": "cannot open as a video",
    "zero": "cannot open as a video",
    "zero_avi": "no frame could be decoded",
    "codec": "cannot open as a video",
    "still": "a still image (JPEG), not a video",
    "moving": "a video (MP4), not a still image",
}


def test_each_bad_video_is_one_line_naming_it_and_exit_2(clip, bad, capsys):
    for name, words in BAD_MESSAGES.items():
        path = getattr(bad, name)
        code, stdout, err = run(capsys, path, "--weights", clip.weights, "--out", bad.root / f"{name}.csv")
        assert code == 2, (name, err)
        lines = [line for line in err.splitlines() if line.startswith("skipped")]
        assert lines == [f"skipped {path}: " + lines[0].split(": ", 1)[1]] and words in lines[0], (name, err)
        assert "Traceback" not in err
    code, _, err = run(capsys, bad.long, "--weights", clip.weights, "--max-seconds", "0.5")
    assert code == 2
    assert f"{bad.long}: 1.0 s long, over the limit of 0.5 s (raise it with --max-seconds" in err
    code, _, err = run(capsys, bad.long, "--weights", clip.weights, "--max-seconds", "1.5",
                       "--out", bad.root / "long.csv")
    assert code == 0, err


def test_bad_videos_among_good_files_are_skipped_and_stderr_holds_only_our_lines(clip, bad):
    """A real process, so that anything FFmpeg or OpenCV print on the stderr file is seen too."""
    out = bad.root / "all.csv"
    names = list(BAD_MESSAGES) + ["odd_name"]  # odd_name only here: a crash would end the test run
    proc = subprocess.run([sys.executable, "-m", "csra.predict", *(str(getattr(bad, n)) for n in names),
                           str(clip.path), "--weights", str(clip.weights), "--out", str(out), "--every", "4",
                           "--heatmaps", str(bad.root / "heat"), "--no-progress", "--workers", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(names) + 2, proc.stderr  # one per bad file, "wrote ...", the summary
    for name in names:
        # stderr writes the odd byte as an escape: match the name around it
        parts = str(getattr(bad, name)).encode("utf-8", "surrogateescape").decode("utf-8", "replace").split("\ufffd")
        assert sum(all(part in line for part in parts) for line in lines) == 1, (name, proc.stderr)
    assert "not valid UTF-8; rename it" in proc.stderr
    assert lines[-2] == f"wrote 3 rows to {out}"
    assert lines[-1] == f"1 of 6 videos predicted (3 frames), {len(names)} skipped or incomplete " \
                        "(see the messages above)"
    assert video_props(bad.root / "heat" / "clip_overlay.mp4")[0] == 12


def test_heatmaps_naming_a_video_takes_exactly_one_input_video(clip, bad, capsys):
    code, _, err = run(capsys, ROOT / "assets" / "cat.jpg", "--weights", clip.weights,
                       "--heatmaps", clip.root / "cat.mp4")
    assert code == 2 and "cat.jpg is a still image" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, clip.path, ROOT / "assets" / "cat.jpg", "--weights", clip.weights,
                       "--heatmaps", clip.root / "two.mp4")
    assert code == 2 and "one overlay video, for one input video" in err
    assert not (clip.root / "two.mp4").exists() and not (clip.root / "cat.mp4").exists()
    with pytest.raises(SystemExit) as info:  # a container OpenCV cannot write: a usage error
        predict.main([str(clip.path), "--weights", str(clip.weights), "--heatmaps", str(clip.root / "o.flv")])
    assert info.value.code == 2 and "--heatmaps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        predict.main([str(clip.path), "--weights", str(clip.weights), "--every", "0"])
    assert info.value.code == 2


# ---------------------------------------------------------------- the library

def test_predict_video_returns_frames_times_scores_and_writes_its_csv(clip):
    calls = []
    result = predict_video(clip.model, clip.path, out_csv=clip.root / "lib.csv", every=2, batch_size=4,
                           lam=0.8, progress=lambda done, total: calls.append((done, total)))
    assert result.info.fps == FPS and (result.info.width, result.info.height) == SIZE
    assert result.info.frame_count == 12 and result.frames_read == 12
    assert [f.frame for f in result.frames] == list(range(0, 12, 2))
    np.testing.assert_allclose(result.times, np.arange(0, 12, 2) / FPS)
    assert result.scores.shape == (6, 20) and result.class_names == list(csra.VOC_CLASSES)
    assert calls == [(4, 6), (6, 6)] and not result.stopped and result.incomplete is None
    for f in result.frames:
        expected, _ = frame_scores_and_maps(clip.model, clip.frames[f.frame], lam=0.8)
        np.testing.assert_allclose(f.scores, expected, rtol=0, atol=1e-5)
    header, rows = read_csv(clip.root / "lib.csv")
    assert header == ["frame", "time_s", *csra.VOC_CLASSES]
    np.testing.assert_allclose(np.array(rows, float)[:, 2:], result.scores, atol=1e-6)


def test_a_percent_sign_in_a_name_is_a_file_name_not_an_image_sequence_pattern(clip):
    odd = clip.root / "take%03d.mp4"
    shutil.copy(clip.path, odd)
    result = predict_video(clip.model, odd, out_video=clip.root / "out%d.mp4")
    assert len(result.frames) == 12 and video_props(clip.root / "out%d.mp4")[0] == 12


def test_should_stop_ends_the_run_and_keeps_the_frames_so_far(clip):
    out = clip.root / "stopped.mp4"
    result = predict_video(clip.model, clip.path, out_video=out, batch_size=3, should_stop=lambda: True)
    assert result.stopped and [f.frame for f in result.frames] == [0, 1, 2]
    assert video_props(out)[0] == 3
    assert not list(clip.root.glob(".stopped.*"))  # no temporary file left


def test_closing_a_video_run_early_keeps_the_overlay_of_the_frames_so_far(clip):
    out = clip.root / "closed.mp4"
    run = video.VideoRun(clip.model, clip.path, out_video=out, batch_size=4)
    assert (run.info.frame_count, run.info.fps) == (12, FPS)
    frames = iter(run)
    assert [next(frames).frame for _ in range(2)] == [0, 1]
    frames.close()  # what a caller's break or Ctrl-C does to the generator
    assert video_props(out)[0] == 2
    with pytest.raises(RuntimeError, match="runs once"):
        next(iter(run))


def test_a_run_uses_one_opencv_thread_and_gives_the_setting_back(clip):
    """OpenCV's thread pool beside torch's oversubscribed 2 cores (bench/predict_throughput.py)."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        seen = [cv2.getNumThreads() for _ in video.VideoRun(clip.model, clip.path, batch_size=4,
                                                            out_video=clip.root / "threads.mp4")]
        assert seen == [1] * 12 and cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


def test_library_errors_are_video_errors_of_one_line_naming_the_file(clip, bad):
    for name in ("corrupt", "zero", "zero_avi", "codec", "still"):
        path = getattr(bad, name)
        with pytest.raises(VideoError) as info:
            predict_video(clip.model, path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message and BAD_MESSAGES[name] in message
    with pytest.raises(VideoError, match=r"over the limit of 0.5 s \(raise it with --max-seconds, "
                                         r"or max_seconds= in Python\)"):
        predict_video(clip.model, clip.path, max_seconds=0.5)
    with pytest.raises(VideoError, match="no such file"):
        predict_video(clip.model, clip.root / "absent.mp4")
    with pytest.raises(VideoError, match="cannot write this kind of video"):
        predict_video(clip.model, clip.path, out_video=clip.root / "x.flv")
    with pytest.raises(VideoError, match="OpenCV cannot write a video there"):
        predict_video(clip.model, clip.path, out_video=clip.root / "no-such-folder" / "x.mp4")
    # the reverse: a video where a still image is expected
    with pytest.raises(csra.ImageError, match=r"moving.jpg: a video \(MP4\), not a still image"):
        csra.load_image(bad.moving)
    with pytest.raises(csra.ImageError, match=r"clip.mp4: a video \(MP4\), not a still image"):
        csra.load_image(clip.path)
    with pytest.raises(ValueError, match="every"):
        predict_video(clip.model, clip.path, every=0)


def test_sort_inputs_goes_by_extension_and_flags_the_other_kind(clip, bad):
    plain = clip.root / "no-extension"
    shutil.copy(clip.path, plain)
    images, videos, problems = video.sort_inputs([bad.still, bad.moving, clip.path, plain,
                                                  ROOT / "assets" / "cat.jpg"])
    assert images == [ROOT / "assets" / "cat.jpg"] and videos == [clip.path, plain]
    assert [p for p, _ in problems] == [bad.still, bad.moving]
