"""Images per second of `python -m csra.predict`, batch 8 against batch 1; video frames per second.

    python bench/predict_throughput.py [--images 24] [--batch-sizes 1 8] [--image-size 448]
    python bench/predict_throughput.py --parts video [--video-models embedded resnet101]

resnet101-csra at 448 px with random weights, saved as a checkpoint and loaded
the way the CLI loads --weights; the timed loop is csra.predict.predict_images,
the CLI's own loop (decoding workers, preprocessing, forward, scores, labels),
over generated 640x480 JPEG photos. Model loading is not timed; one warm-up
batch runs before each timed run. The batch sizes are timed in turn, --repeats
rounds; the table gives the best round (least disturbed by other work on a
shared machine) and every round's figure.

The video rows time csra.video.predict_video (the CLI's video path: a decoding thread, the
batches through the inference loop, an encoding thread) on a generated 640x480 mp4v clip at 24
frames/s, at --video-batch-size, with and without the overlay video, against the forward pass
alone (backbone + score maps, channels-last as predict runs it) over the same frames,
preprocessed beforehand, at the same batch size. "CPU ms/frame" is the process's CPU time per
frame (forward/video/+overlay, least of the rounds): what the threads cost, whatever else runs; a second line
the median of the rounds. Models: the embedded EfficientNet-Lite0 + CSRA
at 224 px (what a user gets offline) and resnet101-csra at 448 px (random weights).
"""
import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.benchmark import Timer

import csra
from csra import predict
from csra.inference import score_map_batches
from csra.video import predict_video

import cv2  # noqa: E402  (after csra.video, which quiets FFmpeg's console messages)

DEFAULT_WORKERS = min(4, max(0, (os.cpu_count() or 1) - 1))  # the CLI's default


def make_photos(folder, count, size=(640, 480), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        a = np.zeros((h, w, 3))
        for _ in range(5):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120)
            a += rng.uniform(0, 255, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        a += rng.normal(0, 12, a.shape)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"photo{i:03d}.jpg", quality=90)


def make_clip(path, frames, size=(640, 480), fps=24.0, seed=0):
    """Soft coloured blobs drifting over noise, written with mp4v."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    blobs = [(rng.uniform(0, h), rng.uniform(0, w), rng.uniform(30, 120), rng.uniform(0, 255, 3),
              rng.uniform(-6, 6, 2)) for _ in range(5)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for t in range(frames):
        a = np.zeros((h, w, 3))
        for cy, cx, r, colour, (vy, vx) in blobs:
            a += colour * np.exp(-((yy - cy - vy * t) ** 2 + (xx - cx - vx * t) ** 2) / (2 * r * r))[..., None]
        a += rng.normal(0, 12, a.shape)
        writer.write(np.clip(a, 0, 255).astype(np.uint8))
    writer.release()
    return path


def timed(fn):
    """(wall seconds, CPU seconds of the whole process) of one call, at the process's thread count
    (Timer's default is 1 thread)."""
    cpu = time.process_time()
    wall = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).timeit(1).mean
    return wall, time.process_time() - cpu


def video_rates(model, clip, frames, batch_size, device, repeats, tmp):
    """Frames/s of every round, and the least CPU ms per frame, of: the forward pass alone,
    predict_video (scores), predict_video + overlay."""
    model = csra.prepare_for_inference(model, device)
    capture, rgb = cv2.VideoCapture(str(clip)), []
    while len(rgb) < frames:
        ok, bgr = capture.read()
        assert ok, "the clip has the frames asked for"
        rgb.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    inputs = [model.preprocessing(Image.fromarray(a)) for a in rgb]
    batches = [(torch.stack(inputs[i:i + batch_size]),) for i in range(0, frames, batch_size)]

    warm = make_clip(tmp / "warm.mp4", batch_size)  # one batch, for the warm-up calls

    def forward(some=batches):
        for batch in score_map_batches(model, some, device):
            batch.maps.sum().item()  # waits for the device

    def scores(path=clip, count=frames):
        assert len(predict_video(model, path, batch_size=batch_size, device=device).frames) == count

    def with_overlay(path=clip, count=frames):
        result = predict_video(model, path, out_video=tmp / "overlay.mp4", batch_size=batch_size, device=device)
        assert len(result.frames) == count

    runs = {"forward": forward, "video": scores, "overlay": with_overlay}
    forward(batches[:1])  # warm-up: one batch each
    scores(warm, batch_size)
    with_overlay(warm, batch_size)
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    rates = {name: [frames / wall for wall, _ in ts] for name, ts in times.items()}
    cpu_ms = {name: min(cpu for _, cpu in ts) / frames * 1000 for name, ts in times.items()}
    return rates, cpu_ms


def time_run(model, files, batch_size, device, workers):
    """Seconds for the CLI's loop over all files (torch.utils.benchmark.Timer, CUDA synchronised),
    after one warm-up batch."""
    def predict_all(some):
        items = list(predict.predict_images(model, some, batch_size, device, workers, progress=False))
        assert sum(isinstance(i, predict.Prediction) for i in items) == len(some), "every photo predicted"

    predict_all(files[:batch_size])
    timer = Timer("predict_all(files)", globals={"predict_all": predict_all, "files": files},
                  num_threads=torch.get_num_threads())  # Timer's default is 1 thread
    return timer.timeit(1).mean


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="photos per timed run (default 16)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the batch sizes (default 2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--parts", nargs="+", choices=["images", "video"], default=["images", "video"])
    parser.add_argument("--video-models", nargs="+", choices=["embedded", "resnet101"],
                        default=["embedded", "resnet101"])
    parser.add_argument("--video-batch-size", type=int, default=8, help="(default 8, the CLI's)")
    parser.add_argument("--embedded-frames", type=int, default=96, help="clip frames timed, embedded model")
    parser.add_argument("--resnet-frames", type=int, default=16, help="clip frames timed, resnet101")
    args = parser.parse_args(argv)
    device = csra.pick_device(args.device)
    result = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "images" in args.parts:
            result += image_rows(args, device, tmp)
        if "video" in args.parts:
            result += video_table(args, device, tmp)
    print("RESULT " + " ".join(result))


def video_table(args, device, tmp):
    frames = {"embedded": args.embedded_frames, "resnet101": args.resnet_frames}
    cpu = platform.processor() or platform.machine()
    print(f"\nvideo: a 640x480 mp4v clip at 24 frames/s; batch {args.video_batch_size}; device {device}; "
          f"torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs ({cpu}); best of {args.repeats} "
          f"rounds; load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'model':<34}  {'frames':>6}  {'forward':>8}  {'video':>8}  {'+overlay':>8}  {'video/fwd':>9}  "
          f"{'overlay/fwd':>11}  {'CPU ms/frame':>17}  every round (frames/s: forward; video; +overlay)")
    result = []
    for name in args.video_models:
        torch.manual_seed(0)
        if name == "embedded":
            model, label = csra.from_classifier("efficientnet_lite0"), "embedded EfficientNet-Lite0, 224 px"
        else:
            model = csra.get_model("resnet101-csra_1xb16_voc07-448px", pretrained=False).eval()
            label = "resnet101-csra, 448 px (random)"
        clip = tmp / f"clip{frames[name]}.mp4"
        if not clip.exists():
            make_clip(clip, frames[name])
        rates, cpu_ms = video_rates(model, clip, frames[name], args.video_batch_size, device, args.repeats, tmp)
        best = {k: max(v) for k, v in rates.items()}
        ratio, overlay_ratio = best["video"] / best["forward"], best["overlay"] / best["forward"]
        # the median of the rounds too: on a machine whose speed drifts (this VM's forward-only
        # rounds spread by a quarter), best-of pairs a lucky forward round with the others
        median = {k: float(np.median(v)) for k, v in rates.items()}
        median_ratio = median["video"] / median["forward"]
        median_overlay_ratio = median["overlay"] / median["forward"]
        print(f"{'':<34}  {'median':>6}  {median['forward']:>8.2f}  {median['video']:>8.2f}  "
              f"{median['overlay']:>8.2f}  {median_ratio:>9.2f}  {median_overlay_ratio:>11.2f}")
        rounds = "; ".join(" ".join(f"{r:.2f}" for r in rates[k]) for k in ("forward", "video", "overlay"))
        cpu_text = "/".join(f"{cpu_ms[k]:.0f}" for k in ("forward", "video", "overlay"))
        print(f"{label:<34}  {frames[name]:>6}  {best['forward']:>8.2f}  {best['video']:>8.2f}  "
              f"{best['overlay']:>8.2f}  {ratio:>9.2f}  {overlay_ratio:>11.2f}  {cpu_text:>17}  {rounds}")
        key = "embedded" if name == "embedded" else "r101"
        result += [f"{key}_forward_fps={best['forward']:.2f}", f"{key}_video_fps={best['video']:.2f}",
                   f"{key}_overlay_fps={best['overlay']:.2f}", f"{key}_video_ratio={ratio:.2f}",
                   f"{key}_overlay_ratio={overlay_ratio:.2f}", f"{key}_median_video_ratio={median_ratio:.2f}",
                   f"{key}_median_overlay_ratio={median_overlay_ratio:.2f}"]
    return result


def image_rows(args, device, tmp):
    """The image table (resnet101-csra, batch sizes); its RESULT fields."""
    torch.manual_seed(0)
    built = csra.get_model("resnet101-csra_1xb16_voc07-448px", pretrained=False)
    csra.save_checkpoint(tmp / "resnet101-csra.pth", built)
    model = predict.load_model(weights=str(tmp / "resnet101-csra.pth"))
    if args.image_size != model.config.image_size:
        model.config.image_size = args.image_size
    (tmp / "photos").mkdir()
    make_photos(tmp / "photos", args.images)
    files, _ = predict.find_images([tmp / "photos"])
    cpu = platform.processor() or platform.machine()
    print(f"resnet101-csra, {model.config.image_size} px, random weights; {len(files)} JPEG photos 640x480; "
          f"device {device}; torch threads {torch.get_num_threads()}; decoding workers {args.workers}; "
          f"{os.cpu_count()} CPUs ({cpu}); torch {torch.__version__}")
    seconds = {b: [] for b in args.batch_sizes}
    for _ in range(args.repeats):
        for batch_size in args.batch_sizes:
            seconds[batch_size].append(time_run(model, files, batch_size, device, args.workers))
    print(f"{'batch':>5}  {'images':>6}  {'best s':>7}  {'images/s':>8}  every round (images/s)")
    rates = {}
    for batch_size, times in seconds.items():
        rates[batch_size] = len(files) / min(times)
        rounds = " ".join(f"{len(files) / t:.2f}" for t in times)
        print(f"{batch_size:>5}  {len(files):>6}  {min(times):>7.1f}  {rates[batch_size]:>8.2f}  {rounds}")
    if len(rates) > 1:
        first, last = args.batch_sizes[0], args.batch_sizes[-1]
        print(f"batch {last} vs batch {first}: {rates[last] / rates[first]:.2f}x")
    return [f"batch{b}_images_per_s={r:.2f}" for b, r in rates.items()]


if __name__ == "__main__":
    main()
