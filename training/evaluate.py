"""Evaluate a CSRA checkpoint on a dataset split: python -m training.evaluate --weights W --data-root R.

Prints mAP, CP, CR, CF1, OP, OR, OF1 and the per-class AP; writes metrics.json,
per_class_ap.png and pr_curves.png into --out. --pointing-game adds the
localisation figure: for every (image, present class) pair, is the peak of
the class's score map (upsampled to the image) inside one of its boxes?
(VOC and COCO data have boxes). Data: any format of training.datasets (VOC,
COCO, CSV, the authors' JSON lists), detected or forced with --dataset.
Weights: our checkpoints (runs/*/best.pth), the official mmpretrain VOC07
checkpoint or the CSRA authors' (a path or an http(s) URL), read by
csra.load_checkpoint.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import csra
from csra import CheckpointError, DeviceError, DownloadError, ImageError, arguments, pick_device
from csra.errors import one_line

from .augment import EvalTransform
from .distributed import Context
from .engine import Precision, predict
from .errors import ConfigError
from .metrics import (METRIC_KEYS, box_cover_fraction, map_peak, multilabel_metrics, point_in_boxes,
                      pointing_game)
from .plots import plot_ap_bars, plot_pointing, plot_pr_curves
from .datasets import FORMATS, ImageLabelDataset, open_dataset
from .voc import DataError

GENERIC_NAME = "class_"


def build_parser():
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="checkpoint path or URL (ours, mmpretrain's or the authors')")
    p.add_argument("--data-root", required=True, help="dataset folder (VOC, COCO, CSV or the authors' JSON lists)")
    p.add_argument("--dataset", default=None, choices=FORMATS, help="force the format (default: detected)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None,
                   help="output folder (default: eval-<split> beside the weights, or runs/eval-<name>-<split>)")
    p.add_argument("--pointing-game", action="store_true", help="also score where the score maps peak")
    p.add_argument("--lam", type=arguments.lam, default=None, help="CSRA lambda (default: the checkpoint's)")
    p.add_argument("--img-size", type=arguments.image_size, default=None,
                   help="input size (default: the checkpoint's)")
    p.add_argument("--threshold", type=arguments.fraction, default=0.5, help="score threshold for CP/CR/OP/OR")
    p.add_argument("--batch-size", type=arguments.positive_int, default=16)
    p.add_argument("--workers", type=arguments.workers, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default=None,
                   help="auto (default: CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--limit", type=arguments.positive_int, default=None, metavar="N",
                   help="only the first N images")
    p.add_argument("--examples", type=arguments.nonnegative_int, default=6,
                   help="example images in the pointing-game figure")
    p.add_argument("--offline", action="store_true", help="never download (also: CSRA_OFFLINE=1)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p


def default_out(weights, split):
    s = str(weights)
    if s.startswith(("http://", "https://")):
        return Path("runs") / f"eval-{Path(s.split('?')[0]).stem}-{split}"
    return Path(s).parent / f"eval-{split}"


def class_order(model_names, data_names, weights):
    """Indices that put the model's outputs in the dataset's class order."""
    if tuple(model_names) == tuple(data_names):
        return list(range(len(data_names)))
    if len(model_names) != len(data_names):
        raise ConfigError(f"{weights} predicts {len(model_names)} classes but the data has {len(data_names)} "
                          f"({', '.join(data_names[:6])}{', ...' if len(data_names) > 6 else ''})")
    if all(n.startswith(GENERIC_NAME) for n in model_names):
        return list(range(len(data_names)))  # an unnamed checkpoint: trust the order
    if sorted(model_names) == sorted(data_names):
        return [list(model_names).index(n) for n in data_names]
    unknown = [n for n in data_names if n not in model_names]
    raise ConfigError(f"{weights} does not know the classes {', '.join(unknown[:6])} of the data")


def pointing_pairs(split, maps):
    """For every (image, present class): the peak pixel of the class map upsampled to the image.

    The class map is the sum of the heads' score maps (see metrics.map_peak for the peak).
    """
    pairs = []
    for i, ann in enumerate(split.annotations):
        present = np.flatnonzero(split.labels[i] == 1)
        if not len(present):
            continue
        for c in present:
            x, y = map_peak(maps[i, c], ann.width, ann.height)
            boxes = ann.boxes_of(int(c))
            pairs.append({"image": i, "class": int(c), "point": (int(x), int(y)), "boxes": boxes,
                          "hit": point_in_boxes(x, y, boxes),
                          "random": box_cover_fraction(boxes, ann.width, ann.height)})
    return pairs


def pointing_summary(split, pairs):
    """metrics.pointing_game over all pairs and per class, with a random point's rate for scale."""
    def game(chosen):
        return pointing_game([p["point"] for p in chosen], [p["boxes"] for p in chosen])

    overall = game(pairs)
    per_class = {}
    for k, name in enumerate(split.classes):
        g = game([p for p in pairs if p["class"] == k])
        per_class[name] = {"hits": g["hits"], "pairs": g["total"], "hit_rate": g["hit_rate"] if g["total"] else None}
    return {
        "hit_rate": overall["hit_rate"], "hits": overall["hits"], "pairs": overall["total"],
        "random_point_rate": 100.0 * float(np.mean([p["random"] for p in pairs])) if pairs else float("nan"),
        "per_class": per_class,
    }


def pointing_examples(split, pairs, count):
    if not pairs or count <= 0:
        return []
    chosen = [pairs[k] for k in np.linspace(0, len(pairs) - 1, min(count, len(pairs))).astype(int)]
    return [(np.asarray(csra.load_image(split.image_paths[p["image"]])), split.classes[p["class"]],
             p["point"], p["boxes"], p["hit"]) for p in chosen]


def format_table(metrics, classes):
    lines = ["  ".join(f"{k:>6}" for k in METRIC_KEYS), "  ".join(f"{metrics[k]:6.2f}" for k in METRIC_KEYS),
             "", "per-class AP:"]
    width = max(len(c) for c in classes)
    cells = [f"{c:<{width}} {a:6.2f}" for c, a in zip(classes, metrics["AP"])]
    for k in range(0, len(cells), 3):
        lines.append("  " + "    ".join(cells[k:k + 3]))
    return "\n".join(lines)


def evaluate(args):
    device = pick_device(args.device)
    model = csra.load_checkpoint(args.weights, lam=args.lam, image_size=args.img_size,
                                 offline=args.offline or None)
    split = open_dataset(args.data_root, args.split, args.dataset, args.limit)
    for note in split.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.pointing_game and split.annotations is None:
        raise ConfigError(f"--pointing-game needs boxes, which {split.format} data do not have (VOC and COCO do)")
    order = class_order(model.class_names, split.classes, args.weights)
    model.to(device)
    precision = Precision(device, args.amp, "bf16")
    ctx = Context(device=device)
    loader = DataLoader(ImageLabelDataset(split, EvalTransform(model.preprocessing)), batch_size=args.batch_size,
                        shuffle=False, num_workers=args.workers, pin_memory=device.type == "cuda")
    scores, maps = predict(ctx, model, loader, precision, keep_maps=args.pointing_game,
                           progress=args.progress, desc=f"evaluating {args.split}")
    scores = scores[:, order]
    metrics = multilabel_metrics(scores, split.labels, args.threshold)
    out = Path(args.out) if args.out else default_out(args.weights, args.split)
    out.mkdir(parents=True, exist_ok=True)
    info = getattr(model, "info", {})
    report = {
        "weights": str(args.weights), "format": info.get("format"), "data_root": str(split.root),
        "dataset": split.format,
        "split": args.split, "images": len(split), "classes": list(split.classes),
        "lam": float(model.lam), "image_size": model.config.image_size, "threshold": args.threshold,
        "metrics": {k: metrics[k] for k in METRIC_KEYS},
        "per_class_AP": dict(zip(split.classes, metrics["AP"])),
        "positives_per_class": dict(zip(split.classes, (split.labels == 1).sum(0).tolist())),
    }
    files = [plot_ap_bars(list(split.classes), metrics["AP"], out / "per_class_ap.png",
                          title=f"per-class AP on {args.split}"),
             plot_pr_curves(list(split.classes), scores, split.labels, metrics["AP"], out / "pr_curves.png")]
    print(f"{args.weights} ({info.get('format')}, lambda {model.lam:g}, {model.config.image_size} px) on "
          f"{len(split)} {args.split} images of {split.root} ({split.format}):")
    print(format_table(metrics, split.classes))
    if args.pointing_game:
        pairs = pointing_pairs(split, maps[:, order])
        summary = pointing_summary(split, pairs)
        report["pointing_game"] = summary
        per_class = {c: (v["hits"], v["pairs"]) for c, v in summary["per_class"].items()}
        files.append(plot_pointing(list(split.classes), per_class, summary["hit_rate"],
                                   summary["random_point_rate"], pointing_examples(split, pairs, args.examples),
                                   out / "pointing_game.png"))
        print(f"\npointing game: {summary['hit_rate']:.2f}% of {summary['pairs']} (image, class) pairs have "
              f"the score-map peak inside a box (a random point: {summary['random_point_rate']:.2f}%)")
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print("\nwrote " + ", ".join(str(f) for f in [json_path, *files]))
    return report


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with torch.inference_mode():
            evaluate(args)
    except (DataError, ConfigError, DeviceError, DownloadError, CheckpointError, ImageError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
