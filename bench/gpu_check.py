"""The CUDA paths, measured: inference precisions and layouts, the app's upload handler, training speed.

    python bench/gpu_check.py          # on a CUDA machine: R101 @ 448 px, the full table
    python bench/gpu_check.py --cpu    # anywhere: the same code at tiny sizes on the CPU (a smoke run)

Without a CUDA GPU (and without --cpu) it prints one line saying so and exits 0.
Rows, all timed with torch.utils.benchmark.Timer (median of blocked runs, CUDA synchronised):
  forward  batch 1 and 32 x fp32 / fp16 / bf16 (autocast) x contiguous / channels-last x eager /
           torch.compile: images per second of forward_features + the CSRA head;
  app      app.page.upload, what the page's upload handler calls: decode a 1024x683 JPEG, run the
           network, draw scores and heatmaps (seconds per upload);
  live     app.live.LiveService.frame, the Live camera tab's server function: decode a camera
           frame as the page sends it (a JPEG at app.live.frame_side: 597x448 for 448 px), run
           the network, blend the top class's heatmap, encode the answer (frames per second;
           goal on CUDA with R101 @ 448 px: >= 25);
  train    training.engine.train_step (forward, BCE, backward, SGD) at batch 16: fp32 eager vs AMP
           (fp16 + GradScaler on CUDA, bf16 on the CPU) + channels-last, and the same compiled.
The last line is `RESULT key=value ...` with the headline figures.
"""
import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils import benchmark

import csra
from training.engine import Precision, train_step

ROOT = Path(__file__).resolve().parents[1]
FULL = dict(backbone="resnet101", img_size=448, batches=(1, 32), dtypes=("fp32", "fp16", "bf16"),
            compile=True, train_batch=16, min_run_time=2.0)
SMOKE = dict(backbone="resnet18", img_size=64, batches=(1, 2), dtypes=("fp32", "bf16"),
             compile=False, train_batch=2, min_run_time=0.05)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def seconds(fn, min_run_time):
    """Median seconds per call of fn() after two untimed calls (compilation, cuDNN autotuning)."""
    fn()
    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def forward_rows(cfg, device):
    torch.manual_seed(0)
    rows = []
    for channels_last in (False, True):
        model = csra.build_model(cfg["backbone"], num_classes=20, image_size=cfg["img_size"]).to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        for compiled in ((False, True) if cfg["compile"] else (False,)):
            run = torch.compile(model) if compiled else model
            for dtype in cfg["dtypes"]:
                for batch in cfg["batches"]:
                    x = torch.rand(batch, 3, cfg["img_size"], cfg["img_size"], device=device)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    autocast = (torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype in DTYPES
                                else contextlib.nullcontext())

                    def forward(run=run, x=x, autocast=autocast):
                        with torch.inference_mode(), autocast:
                            run(x)

                    s = seconds(forward, cfg["min_run_time"])
                    layout = "channels-last" if channels_last else "contiguous"
                    rows.append((f"forward b{batch} {dtype} {layout} {'compile' if compiled else 'eager'}",
                                 f"{batch / s:9.1f} img/s", f"{s * 1000:8.1f} ms"))
    return rows


def app_row(cfg, device):
    """app.page.upload on a 1024x683 JPEG, as the page's upload handler calls it."""
    from app import page
    torch.manual_seed(0)
    model = csra.prepare_for_inference(
        csra.build_model(cfg["backbone"], num_classes=20, image_size=cfg["img_size"],
                         class_names=csra.VOC_CLASSES), device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        Image.open(ROOT / "assets" / "cat.jpg").convert("RGB").resize((1024, 683)).save(path, quality=90)
        controls = page.Controls(lam=0.1, threshold=0.5)
        s = seconds(lambda: page.upload(model, path, controls), cfg["min_run_time"])
    return s


def live_row(cfg, device):
    """app.live.LiveService.frame on a 4:3 camera frame at the size the page sends it:
    seconds per frame, and the frame's size."""
    from app import live, render
    from app.models import default_store
    torch.manual_seed(0)
    model = csra.build_model(cfg["backbone"], num_classes=20, image_size=cfg["img_size"],
                             class_names=csra.VOC_CLASSES)
    store = default_store(model, classifier=None, device=device)
    side = live.frame_side(model)
    size = (side, round(side * 3 / 4))
    frame = Image.open(ROOT / "assets" / "cat.jpg").convert("RGB").resize(size)
    data = {"frame": render.data_uri(np.asarray(frame), 80), "session": "gpu_check",
            "stream": "gpu_check", "lam": 0.1, "threshold": 0.5, "alpha": 0.5}
    service = live.LiveService(store, live.FairGate(1), time_limit=float("inf"))

    def one_frame():
        out = service.frame(data)
        if "overlay" not in out:
            raise RuntimeError(f"live frame: {out}")

    return seconds(one_frame, cfg["min_run_time"]), size


def train_rows(cfg, device):
    modes = [("fp32 eager", False, False, False), ("AMP + channels-last", True, True, False)]
    if cfg["compile"]:
        modes.append(("AMP + channels-last + compile", True, True, True))
    amp_dtype = "fp16" if device.type == "cuda" else "bf16"
    rows = []
    for name, amp, channels_last, compiled in modes:
        torch.manual_seed(0)
        model = csra.build_model(cfg["backbone"], num_classes=20, image_size=cfg["img_size"]).to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        precision = Precision(device, amp, amp_dtype)
        step_model = torch.compile(model) if compiled else model
        x = torch.rand(cfg["train_batch"], 3, cfg["img_size"], cfg["img_size"], device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = (torch.rand(cfg["train_batch"], 20, device=device) > 0.8).float()
        s = seconds(lambda: train_step(step_model, x, y, optimizer, precision), cfg["min_run_time"])
        label = f"train b{cfg['train_batch']} {name}" + (f" ({amp_dtype})" if amp else "")
        rows.append((label, f"{cfg['train_batch'] / s:9.1f} img/s", f"{s * 1000:8.1f} ms"))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: proves the script runs")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing measured, the live-frame row included "
              "(--cpu runs a tiny smoke version)")
        return 0
    cfg, device = (SMOKE, torch.device("cpu")) if args.cpu else (FULL, torch.device("cuda"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        where = f"CUDA {torch.cuda.get_device_name(device)}"
    else:
        where = f"CPU, {torch.get_num_threads()} threads (smoke run)"
    print(f"{cfg['backbone']} + CSRA @ {cfg['img_size']} px, 20 classes, random weights; {where}; "
          f"torch {torch.__version__}")
    rows = forward_rows(cfg, device)
    upload_s = app_row(cfg, device)
    rows.append(("app upload -> scores + heatmaps (app.page.upload)", f"{upload_s:9.3f} s", ""))
    frame_s, frame_size = live_row(cfg, device)
    rows.append((f"live frame {frame_size[0]}x{frame_size[1]} -> overlay (app.live)",
                 f"{1 / frame_s:6.1f} frames/s", f"{frame_s * 1000:8.1f} ms"))
    train = train_rows(cfg, device)
    rows += train
    print(f"| {'what':<56} | {'throughput':>15} | {'per call':>11} |")
    print(f"|{'-' * 58}|{'-' * 17}|{'-' * 13}|")
    for what, rate, per in rows:
        print(f"| {what:<56} | {rate:>15} | {per:>11} |")

    def rate(label):
        return float(next(r[1] for r in rows if r[0] == label).split()[0])

    big = max(cfg["batches"])
    best = max((float(r[1].split()[0]), r[0]) for r in rows if r[0].startswith(f"forward b{big} "))
    result = {f"forward_b{big}_fp32_img_s": rate(f"forward b{big} fp32 contiguous eager"),
              f"forward_b{big}_best_img_s": best[0],
              "upload_s": round(upload_s, 4),
              "live_fps": round(1 / frame_s, 1),
              "train_fp32_img_s": float(train[0][1].split()[0]),
              "train_amp_cl_img_s": float(train[1][1].split()[0])}
    if len(train) > 2:
        result["train_amp_cl_compile_img_s"] = float(train[2][1].split()[0])
    print(f"fastest forward at batch {big}: {best[1]}")
    print("RESULT " + " ".join(f"{k}={v:g}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
