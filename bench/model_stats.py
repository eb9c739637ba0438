"""Parameters, FLOPs and CPU/GPU forward time of a CSRA model at its input size.

    python bench/model_stats.py                      # resnet101-csra, 448 px, batch 1
    python bench/model_stats.py --backbone resnet50 --img-size 224

FLOPs are counted by torch.utils.flop_counter (one multiply-add = 2 FLOPs);
the MACs column is half of that, the unit mmpretrain's metafile calls FLOPs.
The forward pass is timed twice: with the weights as built (contiguous) and as
the app and the CLIs run it (csra.prepare_for_inference: channels-last).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as python bench/model_stats.py

from csra import build_model, prepare_for_inference  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--num-classes", type=int, default=20)
    p.add_argument("--num-heads", type=int, default=1)
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    model = build_model(args.backbone, args.num_classes, args.num_heads).eval().to(args.device)
    params = sum(p.numel() for p in model.parameters())
    head_params = sum(p.numel() for p in model.head.parameters())
    x = torch.rand(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    flops = counter.get_total_flops() / args.batch_size
    contiguous = forward_times(model, x, args.repeats)
    channels_last = forward_times(prepare_for_inference(model, args.device), x, args.repeats)

    name = f"{args.backbone}-csra x{args.num_heads} @{args.img_size}"
    print("| model | params | head params | GFLOPs | GMACs | device | threads | batch | layout "
          "| forward median (s) | min (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for layout, times in (("contiguous", contiguous), ("channels-last", channels_last)):
        print(f"| {name} | {params / 1e6:.2f} M | {head_params:,} | {flops / 1e9:.1f} | {flops / 2e9:.1f} | "
              f"{args.device} | {torch.get_num_threads()} | {args.batch_size} | {layout} | "
              f"{statistics.median(times):.3f} | {min(times):.3f} |")


def forward_times(model, x, repeats):
    """Seconds per forward pass, `repeats` times after two warm-up runs."""
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return times


if __name__ == "__main__":
    main()
