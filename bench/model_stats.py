"""Parameters, FLOPs and CPU/GPU forward time of a CSRA model at its input size.

    python bench/model_stats.py                      # resnet101-csra, 448 px, batch 1
    python bench/model_stats.py --backbone resnet50 --img-size 224

FLOPs are counted by torch.utils.flop_counter (one multiply-add = 2 FLOPs);
the MACs column is half of that, the unit mmpretrain's metafile calls FLOPs.
The forward pass is timed twice: with the weights as built (contiguous) and as
the app and the CLIs run it (csra.prepare_for_inference: channels-last).
"""
import argparse

import torch
from torch.utils.benchmark import Measurement, Timer
from torch.utils.flop_counter import FlopCounterMode

from csra import build_model, prepare_for_inference


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
    for layout, m in (("contiguous", contiguous), ("channels-last", channels_last)):
        print(f"| {name} | {params / 1e6:.2f} M | {head_params:,} | {flops / 1e9:.1f} | {flops / 2e9:.1f} | "
              f"{args.device} | {torch.get_num_threads()} | {args.batch_size} | {layout} | "
              f"{m.median:.3f} | {min(m.times):.3f} |")
    print(f"RESULT params_m={params / 1e6:.2f} gflops={flops / 1e9:.1f} forward_s={contiguous.median:.3f} "
          f"forward_channels_last_s={channels_last.median:.3f}")


def forward_times(model, x, repeats):
    """A torch.utils.benchmark Measurement of `repeats` single forward passes after two warm-up
    runs (Timer synchronises CUDA around each run); .median and .times are per pass."""
    timer = Timer("with torch.inference_mode(): model(x)", globals={"torch": torch, "model": model, "x": x},
                  num_threads=torch.get_num_threads())  # Timer's default is 1 thread
    timer.timeit(2)
    return Measurement.merge([timer.timeit(1) for _ in range(repeats)])[0]


if __name__ == "__main__":
    main()
