"""Seconds from Ctrl-C (SIGINT) in the middle of a training epoch to the prompt coming back.

    python bench/ctrl_c_latency.py                        # resnet18 @ 448 px, batch 16, 2 loader workers
    python bench/ctrl_c_latency.py --backbone resnet101 --repeats 3

Makes a small synthetic VOC-layout set, starts `python -m training.train` on it, waits for the line
of the first finished epoch, lets the second epoch run for --delay seconds, sends SIGINT and times
until the process has exited (and its stdout/stderr have closed, as a shell prompt would wait for).
Checks that last.pth holds the finished epoch. Prints a table and, last,
`RESULT exit_s_median=... exit_s_max=...`.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from training.make_synthetic import make_synthetic


def one_run(args, data, out):
    cmd = [sys.executable, "-m", "training.train", "--data-root", str(data), "--out", str(out),
           "--backbone", args.backbone, "--pretrained", "none", "--img-size", str(args.img_size),
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--epochs", "1000",
           "--warmup-epochs", "0", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    for line in proc.stdout:
        if line.startswith("epoch 1/"):
            break
    else:
        raise SystemExit(f"training ended before its first epoch: {proc.stderr.read()[-2000:]}")
    time.sleep(args.delay)
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    epoch = torch.load(out / "last.pth", weights_only=True)["epoch"]
    return seconds, proc.returncode, epoch, err.strip().splitlines()[-1:] or [""]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=48, help="training images (the epoch is this / batch steps)")
    p.add_argument("--delay", type=float, default=3.0, help="seconds into the second epoch to send SIGINT")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "data", seed=0, num_train=args.images, num_test=8,
                              size=args.img_size, progress=False)
        for r in range(args.repeats):
            seconds, code, epoch, last = one_run(args, data, Path(tmp) / f"run{r}")
            rows.append(seconds)
            print(f"run {r + 1}: exit after {seconds:6.1f} s, code {code}, last.pth epoch {epoch}: {last[0]}")
    print(f"{args.backbone} @ {args.img_size} px, batch {args.batch_size}, {args.workers} workers, "
          f"torch threads {torch.get_num_threads()}")
    print(f"RESULT exit_s_median={statistics.median(rows):.1f} exit_s_max={max(rows):.1f}")


if __name__ == "__main__":
    main()
