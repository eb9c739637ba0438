"""Every backbone family under the CSRA head: parameters, score-map grid and forward time.

    python bench/backbones.py                       # one or two networks per family, 448 px
    python bench/backbones.py --backbones resnet101 vit_b_16 --img-size 224

For each backbone: the CSRA model's parameters (20 classes, 1 head), the
score-map grid at --img-size, and the forward time of one image (batch 1,
eval, inference mode) measured with torch.utils.benchmark.Timer on the CPU
and, where CUDA is present, on the GPU. Random weights: time does not depend
on their values. Prints a Markdown table and a last `RESULT ...` line.
"""
import argparse

import torch
from torch.utils import benchmark

from csra import build_model

DEFAULT = ("resnet50", "resnet101", "resnext50_32x4d", "convnext_tiny", "efficientnet_b0", "efficientnet_b3",
           "efficientnet_v2_s", "regnet_y_400mf", "regnet_y_8gf", "mobilenet_v3_large", "swin_t", "vit_b_16")


def forward_ms(model, x, min_time):
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x},
                            num_threads=torch.get_num_threads())
    with torch.inference_mode():
        model(x)  # warm-up (and cuDNN / oneDNN choices)
        return timer.blocked_autorange(min_run_time=min_time).median * 1000


def main(argv=None):
    p = argparse.ArgumentParser(prog="python bench/backbones.py", description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=list(DEFAULT))
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per backbone and device")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    rows = []
    print(f"| backbone | params (M) | score-map grid at {args.img_size} px | CPU forward, batch 1 (ms) |"
          + (" GPU forward, batch 1 (ms) |" if cuda else ""))
    print("|---|---|---|---|" + ("---|" if cuda else ""))
    for name in args.backbones:
        model = build_model(name, num_classes=20, image_size=args.img_size).eval()
        params = sum(q.numel() for q in model.parameters()) / 1e6
        x = torch.rand(1, 3, args.img_size, args.img_size)
        with torch.inference_mode():
            h, w = model.forward_features(x).shape[-2:]
        cpu = forward_ms(model, x, args.min_time)
        gpu = forward_ms(model.cuda(), x.cuda(), args.min_time) if cuda else None
        rows.append((name, params, h, w, cpu, gpu))
        print(f"| {name} | {params:.1f} | {h} x {w} | {cpu:.0f} |" + (f" {gpu:.1f} |" if cuda else ""), flush=True)
    fastest = min(rows, key=lambda r: r[4])
    slowest = max(rows, key=lambda r: r[4])
    print(f"RESULT backbones={len(rows)} img_size={args.img_size} threads={torch.get_num_threads()} "
          f"fastest_cpu={fastest[0]}:{fastest[4]:.0f}ms slowest_cpu={slowest[0]}:{slowest[4]:.0f}ms "
          + " ".join(f"{r[0]}_cpu_ms={r[4]:.0f}" for r in rows) + (" cuda=yes" if cuda else " cuda=no"))


if __name__ == "__main__":
    main()
