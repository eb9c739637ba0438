"""Images per second of `python -m csra.predict`, batch 8 against batch 1.

    python bench/predict_throughput.py [--images 24] [--batch-sizes 1 8] [--image-size 448]

resnet101-csra at 448 px with random weights, saved as a checkpoint and loaded
the way the CLI loads --weights; the timed loop is csra.predict.predict_images,
the CLI's own loop (decoding workers, preprocessing, forward, scores, labels),
over generated 640x480 JPEG photos. Model loading is not timed; one warm-up
batch runs before each timed run. The batch sizes are timed in turn, --repeats
rounds; the table gives the best round (least disturbed by other work on a
shared machine) and every round's figure.
"""
import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.benchmark import Timer

import csra
from csra import predict

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
    args = parser.parse_args(argv)
    device = csra.pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
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
        print("RESULT " + " ".join(f"batch{b}_images_per_s={r:.2f}" for b, r in rates.items()))


if __name__ == "__main__":
    main()
