"""Training-step throughput (images/s) of ResNet + CSRA: fp32 eager vs --amp --channels-last (vs compiled).

    python bench/train_throughput.py                       # R101 @ 448 px, batch 16 (the VOC recipe)
    python bench/train_throughput.py --backbone resnet18 --img-size 128 --batch-size 4 --steps 3   # quick, CPU

Times the same step the trainer runs (training.engine.train_step: forward,
BCE loss, backward, SGD with momentum) on random images, after --warmup
untimed steps, on whatever device is present (CUDA if available). Modes:
fp32 (eager, fp32, NCHW), amp_cl (autocast bf16 or fp16 + channels_last),
compile (amp_cl + torch.compile; default only on CUDA, where it pays off).
Prints a table and, last, a line `RESULT mode=images_per_s ...`.
"""
import argparse
import sys

import torch
from torch.utils.benchmark import Timer

import csra
from training.engine import Precision, train_step

MODES = ("fp32", "amp_cl", "compile")


def measure(mode, args, device):
    torch.manual_seed(0)
    model = csra.build_model(args.backbone, num_classes=20, image_size=args.img_size).to(device).train()
    amp = mode != "fp32"
    channels_last = mode != "fp32"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = Precision(device, amp, args.amp_dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    step_model = torch.compile(model) if mode == "compile" else model
    images = torch.rand(args.batch_size, 3, args.img_size, args.img_size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = (torch.rand(args.batch_size, 20, device=device) < 0.1).float()

    timer = Timer("train_step(step_model, images, targets, optimizer, precision)",
                  globals={"train_step": train_step, "step_model": step_model, "images": images,
                           "targets": targets, "optimizer": optimizer, "precision": precision},
                  num_threads=torch.get_num_threads())  # Timer's default is 1 thread
    warmup = timer.timeit(args.warmup)  # torch.compile compiles here
    measured = timer.timeit(args.steps)  # Timer synchronises CUDA around the timed steps
    loss = train_step(step_model, images, targets, optimizer, precision)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{mode}: loss is {float(loss)}")
    described = precision.describe() + (" + channels_last" if channels_last else "")
    described += " + torch.compile" if mode == "compile" else ""
    return {"mode": mode, "precision": described,
            "step_ms": 1000 * measured.mean, "images_per_s": args.batch_size / measured.mean,
            "warmup_s": warmup.mean * args.warmup}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet101", choices=csra.RESNETS)
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; 1 on CPU)")
    p.add_argument("--device", default=None)
    p.add_argument("--amp-dtype", default="bf16", choices=("bf16", "fp16"))
    p.add_argument("--modes", default=None, help=f"comma-separated from {','.join(MODES)} "
                                                 "(default: all on CUDA, fp32,amp_cl on CPU)")
    args = p.parse_args(argv)
    device = csra.pick_device(args.device)
    if args.warmup is None:
        args.warmup = 3 if device.type == "cuda" else 1
    modes = (args.modes.split(",") if args.modes else
             list(MODES) if device.type == "cuda" else ["fp32", "amp_cl"])
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.backbone} + CSRA, {args.img_size} px, batch {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup} warm-up; device: {name}; torch {torch.__version__}")
    rows = []
    for mode in modes:
        try:
            rows.append(measure(mode, args, device))
        except Exception as err:  # one failing mode (e.g. no compiler for torch.compile) keeps the table
            print(f"{mode}: failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    if not rows:
        return 1
    base = next((r["images_per_s"] for r in rows if r["mode"] == "fp32"), rows[0]["images_per_s"])
    print("\n| mode | precision | ms/step | images/s | vs fp32 | warm-up s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['precision']} | {r['step_ms']:.1f} | {r['images_per_s']:.1f} | "
              f"{r['images_per_s'] / base:.2f}x | {r['warmup_s']:.1f} |")
    print("RESULT " + " ".join(f"{r['mode']}={r['images_per_s']:.2f}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
