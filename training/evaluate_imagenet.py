"""Top-1 / top-5 of an ImageNet classifier with CSRA added at test time, for several lambdas.

    python -m training.evaluate_imagenet --data imagenet/val --model resnet50 --lam 0 0.1 0.2 0.3

The classifier (torchvision, ImageNet weights, no training) is wrapped by
csra.from_classifier; lambda = 0 is the classifier itself. Every image goes
through the backbone once: its class score maps are computed once and the
logits for every lambda are read off those maps.

--data holds one sub-folder per class (images inside, searched recursively).
A sub-folder's name says which of the 1000 ImageNet classes it holds:
  - an ImageNet wnid such as n01440764: its position in the sorted list of
    the 1000 ImageNet-1k wnids (training/imagenet_wnids.txt), which is the
    order of the classifiers' outputs (n01440764 -> 0, "tench");
  - a class index 0..999;
  - or torchvision's category name ("goldfish", "great white shark";
    underscores count as spaces; case is ignored where that is unambiguous).
"""
import argparse
import csv
import json
import math
import re
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402
from torchvision.transforms import InterpolationMode  # noqa: E402
from tqdm import tqdm  # noqa: E402

from csra import CheckpointError, DownloadError, from_classifier, pick_device, prepare_for_inference  # noqa: E402
from csra import arguments  # noqa: E402
from csra.errors import one_line  # noqa: E402
from csra.head import MAX_POOL_T  # noqa: E402
from csra.inference import ImageFiles, collate, find_images, score_map_batches  # noqa: E402

WNIDS_FILE = Path(__file__).with_name("imagenet_wnids.txt")
WNID = re.compile(r"^n\d{8}$")


def load_wnids(path=WNIDS_FILE):
    """The 1000 ImageNet-1k wnids; index i is output i of torchvision's classifiers."""
    wnids = Path(path).read_text().split()
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or wnids != sorted(wnids):
        raise ValueError(f"{path}: expected the 1000 distinct ImageNet wnids in sorted order")
    return wnids


def class_lookup(categories, wnids=None):
    """folder name -> class index, or raise ValueError saying why the name is not understood."""
    wnid_index = {w: i for i, w in enumerate(wnids or load_wnids())}
    exact = {name: i for i, name in enumerate(categories)}
    loose = {}
    for i, name in enumerate(categories):
        loose.setdefault(_loose(name), []).append(i)

    def lookup(folder):
        if WNID.match(folder):
            if folder not in wnid_index:
                raise ValueError(f"{folder}: looks like a wnid but is not one of the 1000 ImageNet-1k classes")
            return wnid_index[folder]
        if folder.isdigit():
            if int(folder) >= len(categories):
                raise ValueError(f"{folder}: class index out of range 0..{len(categories) - 1}")
            return int(folder)
        if folder in exact:
            return exact[folder]
        found = loose.get(_loose(folder), [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(f"{folder}: ambiguous category name, matches "
                             + " and ".join(repr(categories[i]) for i in found))
        raise ValueError(f"{folder}: not a wnid (n01440764), a class index (0..999) or a category name")

    return lookup


def _loose(name):
    return " ".join(name.replace("_", " ").lower().split())


def image_folder(data, categories):
    """(files, class index per file, {folder name: class index}) of a class-per-folder tree."""
    data = Path(data)
    if not data.is_dir():
        raise ValueError(f"{data}: no such folder")
    folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{data}: holds no class sub-folders")
    lookup, classes, problems = class_lookup(categories), {}, []
    for folder in folders:
        try:
            classes[folder.name] = lookup(folder.name)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{data}: sub-folder names not understood: " + "; ".join(problems[:3]) + more)
    files, labels = [], []
    for folder in folders:
        found, _ = find_images([folder])
        files += found
        labels += [classes[folder.name]] * len(found)
    if not files:
        raise ValueError(f"{data}: no image files in its class folders")
    return files, labels, classes


def resize_centre_crop(preprocessing, crop_fraction=0.875):
    """The usual ImageNet evaluation: shorter side to size / crop_fraction, centre crop size x size."""
    size = preprocessing.image_size
    return transforms.Compose([transforms.Resize(round(size / crop_fraction), InterpolationMode.BILINEAR),
                               transforms.CenterCrop(size), preprocessing.to_tensor])


def evaluate(model, files, labels, lams, batch_size=32, device="cpu", workers=0, preprocess=None,
             progress=True, on_failure=None):
    """Correct top-1 and top-5 counts per lambda, in one pass over the images.

    Returns ({lam: (top1_correct, top5_correct)}, images evaluated, [failure messages]).
    """
    device = torch.device(device)
    model = prepare_for_inference(model, device)
    dataset = ImageFiles(files, preprocess or model.preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=device.type == "cuda")
    labels = torch.as_tensor(labels)
    k = min(5, model.config.num_classes)
    correct = {lam: [0, 0] for lam in lams}
    seen, failures = 0, []
    with tqdm(total=len(files), unit="img", disable=not progress, desc="evaluating") as bar:
        for batch in score_map_batches(model, loader, device):  # the backbone once per batch
            indices, failed = batch.extra[0]
            for _, message in failed:
                failures.append(message)
                if on_failure:
                    on_failure(message)
            if batch.maps is not None:
                target = labels[indices].to(device)[:, None]
                for lam in lams:
                    topk = batch.logits(lam=lam).topk(k, dim=1).indices
                    correct[lam][0] += int((topk[:, :1] == target).sum())
                    correct[lam][1] += int((topk == target).any(dim=1).sum())
                seen += len(indices)
            bar.update(len(indices) + len(failed))
    return {lam: tuple(c) for lam, c in correct.items()}, seen, failures


def result_rows(correct, images):
    rows = []
    for lam, (top1, top5) in correct.items():
        rows.append({"lam": lam, "top1": 100.0 * top1 / images if images else math.nan,
                     "top5": 100.0 * top5 / images if images else math.nan,
                     "top1_correct": top1, "top5_correct": top5, "images": images})
    return rows


def format_table(rows):
    base = next((r for r in rows if r["lam"] == 0), None)
    lines = ["lambda   top-1 %   top-5 %" + ("   top-1 vs lambda=0" if base else "")]
    for r in rows:
        line = f"{r['lam']:<6g}  {r['top1']:8.2f}  {r['top5']:8.2f}"
        if base:
            line += f"   {r['top1'] - base['top1']:+.2f}"
        lines.append(line)
    return "\n".join(lines)


def plot_accuracy(rows, path, title):
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    rows = sorted(rows, key=lambda r: r["lam"])
    lams = [r["lam"] for r in rows]
    for key, label in (("top1", "top-1"), ("top5", "top-5")):
        ax.plot(lams, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("lambda (0 = the classifier without CSRA)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(out, rows, about):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.json", "w", encoding="utf-8") as f:
        json.dump({**about, "results": rows}, f, indent=1)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    title = (f"{about['model']} + CSRA (T={about['temperature']}), {about['img_size']} px, "
             f"{about['images']} images")
    plot_accuracy(rows, out / "accuracy_vs_lambda.png", title)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate_imagenet",
        description="ImageNet top-1/top-5 of a torchvision classifier with CSRA added at test time, "
                    "for several lambdas in one pass. Sub-folders of --data are classes named by "
                    "wnid (n01440764), index (0..999) or torchvision category name.")
    parser.add_argument("--data", required=True, help="folder with one sub-folder per class")
    parser.add_argument("--model", default="resnet50", help="torchvision classifier name (default resnet50)")
    parser.add_argument("--lam", type=arguments.lam, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                        help="lambdas to evaluate (default 0 0.1 0.2 0.3 0.4 0.5)")
    parser.add_argument("--temperature", type=float, default=MAX_POOL_T,
                        help=f"attention temperature; {MAX_POOL_T} means max pooling (default)")
    parser.add_argument("--img-size", type=arguments.image_size, default=None,
                        help="input size in pixels (default: the size torchvision evaluates the weights at, 224 for ResNets)")
    parser.add_argument("--resize", choices=("square", "crop"), default="square",
                        help="square: the project's preprocessing (whole image squashed to a square, as "
                             "the app and the CLI see it); crop: shorter side to size/0.875 then centre "
                             "crop, the protocol torchvision's published accuracies use")
    parser.add_argument("--weights", help="state dict of the classifier (default: torchvision's ImageNet "
                                          "weights, downloaded once into torch.hub's cache)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=32)
    parser.add_argument("--workers", type=arguments.workers, default=2,
                        help="image decoding processes (default 2)")
    parser.add_argument("--device", default="auto",
                        help="auto (default: CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--out", help="output folder (default runs/imagenet-eval-<model>-<time>)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.lam = list(dict.fromkeys(args.lam))  # drop repeats, keep order
    return args


def main(argv=None):
    args = parse_args(argv)
    temperature = int(args.temperature) if float(args.temperature).is_integer() else args.temperature
    try:
        device = pick_device(args.device)
        model = from_classifier(args.model, pretrained=args.weights or True, lam=0.0,
                                temperature=temperature, image_size=args.img_size)
        args.img_size = model.config.image_size
        files, labels, classes = image_folder(args.data, model.class_names)
    except (CheckpointError, DownloadError, ValueError, RuntimeError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"{len(files)} image files in {len(classes)} class folders; {args.model}, T={temperature}, "
          f"{args.img_size} px ({args.resize}), lambdas {' '.join(f'{x:g}' for x in args.lam)}",
          file=sys.stderr)
    preprocess = resize_centre_crop(model.preprocessing) if args.resize == "crop" else model.preprocessing
    started = time.time()
    correct, images, failures = evaluate(
        model, files, labels, args.lam, args.batch_size, device, args.workers, preprocess,
        progress=not args.no_progress,
        on_failure=lambda m: tqdm.write(f"skipped {m}", file=sys.stderr))
    if images == 0:
        print("error: none of the images could be read", file=sys.stderr)
        return 2
    rows = result_rows(correct, images)
    about = {"model": args.model, "weights": args.weights or "torchvision DEFAULT",
             "temperature": temperature, "img_size": args.img_size, "resize": args.resize,
             "data": str(args.data), "images": images, "classes": len(classes),
             "seconds": round(time.time() - started, 1), "failed": failures}
    out = Path(args.out or f"runs/imagenet-eval-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(format_table(rows))
    try:
        write_results(out, rows, about)
    except OSError as err:
        print(f"error: cannot write results to {out}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'results.json'}, results.csv and accuracy_vs_lambda.png"
          + (f"; {len(failures)} image file(s) could not be read" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
