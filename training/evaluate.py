"""Evaluate a CSRA checkpoint on a dataset split: python -m training.evaluate --weights W --data-root R.

Prints mAP, CP, CR, CF1, OP, OR, OF1 and the per-class AP; writes metrics.json,
per_class_ap.png and pr_curves.png into --out. --pointing-game adds the
localisation figure: for every (image, present class) pair, does the peak of
the class's score map (upsampled to the image) lie within 15 pixels of one of
its boxes (TorchRay's protocol)? --faithfulness adds, for the CSRA map, the
pooling weights, Grad-CAM, a centre Gaussian and a random map, the pointing
game, the energy pointing game and the deletion and insertion AUCs (RISE),
as a table, faithfulness.csv and faithfulness_curves.png (csra.faithfulness;
docs/faithfulness.md). Both need boxes: VOC XML, COCO, the synthetic sets.
Data: any format of training.datasets (VOC, COCO, CSV, the authors' JSON
lists), detected or forced with --dataset.
Weights: our checkpoints (runs/*/best.pth), the official mmpretrain VOC07
checkpoint or the CSRA authors' (a path or an http(s) URL), read by
csra.load_checkpoint.
"""
import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import csra
from csra import CheckpointError, DeviceError, DownloadError, ImageError, arguments, pick_device
from csra import faithfulness
from csra.atomic import atomic_path
from csra.errors import one_line
from csra.faithfulness import TOLERANCE, box_cover_fraction, map_peak, point_hits, pointing_accuracy

from .augment import EvalTransform
from .distributed import Context
from .engine import Precision, predict
from .errors import ConfigError
from .metrics import METRIC_KEYS, multilabel_metrics
from .plots import plot_ap_bars, plot_faithfulness, plot_pointing, plot_pr_curves
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
    p.add_argument("--pointing-game", action="store_true",
                   help="also score where the score maps peak (TorchRay's pointing game; needs boxes)")
    p.add_argument("--faithfulness", action="store_true",
                   help="also measure how faithful each map is (CSRA map, pooling weights, Grad-CAM, centre, "
                        "random): pointing game, energy pointing game, deletion and insertion AUC; needs boxes")
    p.add_argument("--tolerance", type=arguments.nonnegative_int, default=TOLERANCE, metavar="PX",
                   help=f"pointing game: a hit within this many pixels of a box (default {TOLERANCE}, TorchRay's, "
                        "made for VOC/COCO-sized images; 0: inside a box)")
    p.add_argument("--steps", type=arguments.positive_int, default=12,
                   help="--faithfulness: points on each deletion and insertion curve, minus one (default 12)")
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


def pointing_pairs(split, maps, tolerance=TOLERANCE):
    """For every (image, present class): the peak pixel of the class map upsampled to the image,
    and whether it lies within `tolerance` pixels of one of the class's boxes (TorchRay: 15).

    The class map is the sum of the heads' score maps (see csra.faithfulness.map_peak for the peak).
    Pairs whose class has only VOC-difficult objects (label -1) are marked difficult: TorchRay
    leaves them out, they are scored apart.
    """
    pairs = []
    for i, ann in enumerate(split.annotations):
        for c in np.flatnonzero(split.labels[i] != 0):
            boxes = ann.boxes_of(int(c))
            if not boxes:
                continue
            x, y = map_peak(maps[i, c], ann.width, ann.height)
            pairs.append({"image": i, "class": int(c), "point": (int(x), int(y)), "boxes": boxes,
                          "hit": point_hits(x, y, boxes, tolerance), "difficult": bool(split.labels[i, c] == -1),
                          "random": box_cover_fraction(boxes, ann.width, ann.height, tolerance)})
    return pairs


def pointing_summary(split, pairs, tolerance=TOLERANCE):
    """TorchRay's pointing game over the pairs that are not difficult (mean over classes of each
    class's hit rate), the pooled hit rate, per class, the difficult-only pairs apart, and a
    uniformly random point's expected rate for scale."""
    easy = [p for p in pairs if not p["difficult"]]
    hard = [p for p in pairs if p["difficult"]]
    game = pointing_accuracy([p["hit"] for p in easy], [p["class"] for p in easy])
    per_class = {}
    for k, name in enumerate(split.classes):
        entry = game["per_class"].get(k)
        per_class[name] = {"hits": entry["hits"] if entry else 0, "pairs": entry["total"] if entry else 0,
                           "hit_rate": entry["accuracy"] if entry else None}
    return {
        "protocol": f"TorchRay: peak within {tolerance} px of a box; accuracy = mean over classes",
        "tolerance": tolerance,
        "accuracy": game["accuracy"], "hit_rate": game["hit_rate"], "hits": game["hits"], "pairs": game["total"],
        "random_point_rate": 100.0 * float(np.mean([p["random"] for p in easy])) if easy else float("nan"),
        "difficult_accuracy": pointing_accuracy([p["hit"] for p in hard], [p["class"] for p in hard])["accuracy"],
        "difficult_pairs": len(hard),
        "per_class": per_class,
    }


def pointing_examples(split, pairs, count):
    if not pairs or count <= 0:
        return []
    pairs = [p for p in pairs if not p["difficult"]]
    if not pairs:
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


FAITHFULNESS_COLUMNS = ("method", "pairs", "pointing", "pointing_pooled", "difficult_pairs", "pointing_difficult",
                        "energy", "energy_undefined", "deletion_auc", "insertion_auc")


def faithfulness_pairs(split, i, order):
    """csra.faithfulness.Pair of every class of image i that has boxes: present ones, and the
    classes with only VOC-difficult objects (label -1) marked difficult; class indices are the
    model's (order: dataset class -> model output)."""
    ann = split.annotations[i]
    return [faithfulness.Pair(order[int(c)], ann.boxes_of(int(c)), bool(split.labels[i, c] == -1))
            for c in np.flatnonzero(split.labels[i] != 0) if ann.boxes_of(int(c))]


def format_faithfulness(rows):
    lines = [f"{'method':<8} {'pointing':>8} {'pooled':>7} {'difficult':>9} {'energy':>7} {'deletion':>8} "
             f"{'insertion':>9}"]
    for r in rows:
        lines.append(f"{r['method']:<8} {r['pointing']:8.2f} {r['pointing_pooled']:7.2f} "
                     f"{r['pointing_difficult']:9.2f} {r['energy']:7.2f} {r['deletion_auc']:8.4f} "
                     f"{r['insertion_auc']:9.4f}")
    return "\n".join(lines)


def faithfulness_report(model, split, order, args, out):
    """Every map of every (image, class) pair with boxes (csra.faithfulness.measure_image): the
    table printed, faithfulness.csv (one row per method), faithfulness_pairs.csv (one row per
    pair and method) and faithfulness_curves.png (the mean deletion and insertion curves)."""
    model_to_data = {m: k for k, m in enumerate(order)}
    records, fractions = [], None
    todo = [i for i in range(len(split)) if faithfulness_pairs(split, i, order)]
    for i in tqdm(todo, desc="faithfulness", unit="img", leave=False, disable=not args.progress, dynamic_ncols=True):
        got, found = faithfulness.measure_image(model, csra.load_image(split.image_paths[i]),
                                                faithfulness_pairs(split, i, order), lam=model.lam,
                                                steps=args.steps, batch_size=args.batch_size,
                                                rng=np.random.default_rng([0, i]), tolerance=args.tolerance)
        fractions = got if got is not None else fractions
        for r in found:
            r["image"], r["class"] = i, model_to_data[r["class"]]
        records += found
    rows = faithfulness.summarize(records)
    table = out / "faithfulness.csv"
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FAITHFULNESS_COLUMNS)
        writer.writerows([[r[k] if isinstance(r[k], (str, int)) else round(float(r[k]), 6)
                           for k in FAITHFULNESS_COLUMNS] for r in rows])
    per_pair = out / "faithfulness_pairs.csv"
    with atomic_path(per_pair) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "class", "difficult", "method", "x", "y", "hit", "energy", "deletion_auc",
                         "insertion_auc"])
        for r in records:
            writer.writerow([Path(split.image_paths[r["image"]]).name, split.classes[r["class"]],
                             int(r["difficult"]), r["method"], *r["point"], int(r["hit"]), round(r["energy"], 6),
                             round(r["deletion_auc"], 6), round(r["insertion_auc"], 6)])
    written = [table, per_pair]
    if fractions is not None:
        title = f"{model.config.backbone}, lambda {model.lam:g}, {split.format} {split.split}"
        written.append(plot_faithfulness(fractions, rows, out / "faithfulness_curves.png", title))
    pairs, hard = rows[0]["pairs"], rows[0]["difficult_pairs"]
    print(f"\nfaithfulness over {pairs} (image, class) pairs" + (f" (+ {hard} difficult-only)" if hard else "")
          + f", lambda {model.lam:g}, {args.steps} steps per curve; pointing game: TorchRay's "
          f"({args.tolerance} px, mean over classes), pooled over pairs, difficult-only pairs; energy: % of the "
          "positive map inside the boxes; AUCs of the class probability (deletion: lower is better)")
    print(format_faithfulness(rows))
    summary = {"steps": args.steps, "tolerance": args.tolerance,
               "fractions": None if fractions is None else fractions.tolist(),
               "methods": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in rows]}
    return summary, written


def evaluate(args):
    device = pick_device(args.device)
    model = csra.load_checkpoint(args.weights, lam=args.lam, image_size=args.img_size,
                                 offline=args.offline or None)
    split = open_dataset(args.data_root, args.split, args.dataset, args.limit)
    for note in split.notes:
        print(f"note: {note}", file=sys.stderr)
    for flag, wanted in (("--pointing-game", args.pointing_game), ("--faithfulness", args.faithfulness)):
        if wanted and split.annotations is None:
            raise ConfigError(f"{flag} needs boxes, which {split.format} data do not have (VOC and COCO do)")
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
        pairs = pointing_pairs(split, maps[:, order], args.tolerance)
        summary = pointing_summary(split, pairs, args.tolerance)
        report["pointing_game"] = summary
        per_class = {c: (v["hits"], v["pairs"]) for c, v in summary["per_class"].items()}
        files.append(plot_pointing(list(split.classes), per_class, summary["accuracy"],
                                   summary["random_point_rate"], pointing_examples(split, pairs, args.examples),
                                   out / "pointing_game.png"))
        print(f"\npointing game ({args.tolerance} px): {summary['accuracy']:.2f}% (mean over classes; "
              f"{summary['hit_rate']:.2f}% of {summary['pairs']} (image, class) pairs; a random point: "
              f"{summary['random_point_rate']:.2f}%)"
              + (f"; difficult-only pairs: {summary['difficult_accuracy']:.2f}% of {summary['difficult_pairs']}"
                 if summary["difficult_pairs"] else ""))
    if args.faithfulness:
        report["faithfulness"], written = faithfulness_report(model, split, order, args, out)
        files += written
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print("\nwrote " + ", ".join(str(f) for f in [json_path, *files]))
    return report


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        # Grad-CAM (--faithfulness) runs a backward pass: the weights must not be inference tensors
        with torch.inference_mode(not args.faithfulness):
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
