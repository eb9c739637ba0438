"""Batch prediction from the command line.

    python -m csra.predict photos/ extra.jpg --weights runs/x/best.pth --out preds.csv
    python -m csra.predict photos/ --classifier resnet50 --lam 0.2 --threshold 0.2
    python -m csra.predict clip.mp4 --classifier efficientnet_lite0 --out scores.csv --heatmaps overlay.mp4

Folders are searched recursively for image and video files. Every image gets one row
with a score for every class and its predicted labels (score >= threshold); every
(--every N-th) frame of a video gets one such row too (csra/video.py).
Scores are sigmoid probabilities for CSRA models (multi-label: each class on
its own) and softmax probabilities over the 1000 classes for an ImageNet
classifier wrapped with --classifier (single-label: they sum to 1, so at most
one class can reach a threshold of 0.5).

Files that cannot be read are reported on stderr and skipped. Exit code:
0 all images predicted, 1 some could not be read, 2 bad arguments or weights, or a video
that cannot be used (corrupt, too long, a still image under a video's name or the reverse).
"""
import argparse
import contextlib
import csv
import json
import os
import sys
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import arguments, video
from .atomic import atomic_path
from .checkpoint import load_checkpoint
from .classifier import from_classifier
from .device import pick_device, prepare_for_inference
from .download import DownloadError
from .errors import one_line
from .inference import IMAGE_EXTENSIONS, ImageFiles, collate, find_images, safe_stem, score_map_batches
from .preprocess import load_image
from .registry import MODEL_CONFIGS, get_model
from .visualize import overlay, value_range
from .weights import CheckpointError

HEATMAP_MAX_SIDE = 768  # heatmap overlays are drawn on the image shrunk to fit this many pixels


@dataclass
class Prediction:
    path: Path
    scores: np.ndarray  # (num_classes,) probabilities
    labels: list = field(default_factory=list)  # class names with score >= threshold, best first
    frame: int = None  # a video's frame: its index and time in seconds (None for an image)
    time: float = None


@dataclass
class Failure:
    path: Path
    message: str
    exit_code: int = 1  # 2 for a video that cannot be used


# ---------------------------------------------------------------- model

def load_model(weights=None, classifier=None, lam=None):
    """A CSRAModel from --weights (checkpoint path/URL or registered name) or --classifier."""
    if classifier:
        model = from_classifier(classifier, pretrained=weights or True)
    elif weights in MODEL_CONFIGS:
        model = get_model(weights, pretrained=True)
    else:
        model = load_checkpoint(weights)
    if lam is not None:
        model.lam = lam
    return model.eval()


# ---------------------------------------------------------------- prediction

def predict_images(model, files, batch_size=8, device="cpu", workers=0, threshold=0.5,
                   heatmap_dir=None, progress=True):
    """Yields a Prediction or a Failure per file (in batches, in file order within a batch)."""
    device = torch.device(device)
    model = prepare_for_inference(model, device)
    loader = DataLoader(ImageFiles(files, model.preprocessing), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda")
    names = model.class_names
    stems = heatmap_stems(files) if heatmap_dir else None
    with tqdm(total=len(files), unit="img", disable=not progress, desc="predicting") as bar:
        for batch in score_map_batches(model, loader, device):
            indices, failed = batch.extra[0]
            for i, message in failed:
                yield Failure(files[i], message)
            if batch.maps is not None:
                scores = model.scores(batch.logits()).cpu().numpy()
                maps = batch.class_maps().cpu().numpy() if heatmap_dir is not None else None
                for row, i in enumerate(indices):
                    order = [c for c in np.argsort(-scores[row], kind="stable") if scores[row, c] >= threshold]
                    prediction = Prediction(files[i], scores[row], [names[c] for c in order])
                    if heatmap_dir is not None and order:
                        try:
                            save_heatmaps(files[i], maps[row], order, names, heatmap_dir, stems[i])
                        except Exception as err:  # the scores are still good; say why there is no picture
                            yield Failure(files[i], f"{files[i]}: heatmaps not saved ({err})")
                    yield prediction
            bar.update(len(indices) + len(failed))


def heatmap_stems(files):
    """A distinct file-name stem per input file (a-1, a-2 when two folders both hold a.jpg)."""
    counts, stems = {}, []
    for f in files:
        stem = safe_stem(f.stem)
        counts[stem] = counts.get(stem, 0) + 1
        stems.append(stem if counts[stem] == 1 else f"{stem}-{counts[stem]}")
    return stems


def save_heatmaps(path, maps, classes, names, out_dir, stem):
    """One PNG per class in `classes`: the class's score map (summed over heads) over the image.

    All maps of the image share one colour range (global scale), so a weak class stays cold.
    """
    image = load_image(str(path))
    image.thumbnail((HEATMAP_MAX_SIDE, HEATMAP_MAX_SIDE), Image.BILINEAR)
    vmin, vmax = value_range(maps, scale="global")
    out_dir = Path(out_dir)
    for c in classes:
        picture = overlay(np.asarray(image), maps[c], vmin[c], vmax[c])
        Image.fromarray(picture).save(out_dir / f"{stem}_{safe_stem(names[c])}.png")


# ---------------------------------------------------------------- outputs

def shown(path):
    """A path as valid text that still tells every file apart: a byte that is not UTF-8 is written
    \\xNN and, where a backslash is an ordinary file-name character (not Windows), a backslash is
    written \\\\. So caf<E9>.jpg, caf<E8>.jpg, caf\ufffd.jpg and caf\\xe9.jpg stay four names, and
    each name's bytes can be read back (they are Python's string escapes)."""
    raw = os.fsencode(path)
    if os.sep != "\\":
        raw = raw.replace(b"\\", b"\\\\")
    return raw.decode("utf-8", errors="backslashreplace")


def write_csv(path, predictions, class_names):
    """One row per image: image, labels (';'-separated, best first), one score column per class."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        frames = has_frames(predictions)
        writer.writerow(["image", *(["frame", "time_s"] if frames else []), "labels", *class_names])
        for p in predictions:
            writer.writerow([shown(p.path), *(frame_cells(p) if frames else []), ";".join(p.labels),
                             *(f"{s:.6f}" for s in p.scores)])


def write_json(path, predictions, failures, class_names, about):
    data = {
        **about,
        "classes": list(class_names),
        "predictions": [{"image": shown(p.path), **frame_fields(p), "labels": p.labels,
                         "scores": {n: float(s) for n, s in zip(class_names, p.scores)}}
                        for p in predictions],
        "failed": [{"image": shown(f.path), "error": shown(f.message)} for f in failures],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def print_table(predictions, class_names, file=None):
    """image | labels with scores (or the best class when none reaches the threshold)."""
    file = file or sys.stdout
    width = max([len("image")] + [len(row_name(p)) for p in predictions])
    index = {n: i for i, n in enumerate(class_names)}
    print(f"{'image':<{width}}  labels", file=file)
    for p in predictions:
        if p.labels:
            text = ", ".join(f"{n} {p.scores[index[n]]:.3f}" for n in p.labels)
        else:
            best = int(np.argmax(p.scores))
            text = f"(none; best {class_names[best]} {p.scores[best]:.3f})"
        print(f"{row_name(p):<{width}}  {text}", file=file)


def has_frames(predictions):
    return any(p.frame is not None for p in predictions)


def frame_cells(p):
    """A video frame's CSV cells (frame, time_s); empty for an image."""
    return ["", ""] if p.frame is None else [p.frame, f"{p.time:.6f}"]


def frame_fields(p):
    return {} if p.frame is None else {"frame": p.frame, "time_s": round(p.time, 6)}


def row_name(p):
    """The table's first column: the file, and for a video frame its index and time."""
    return shown(p.path) if p.frame is None else f"{shown(p.path)} #{p.frame} {p.time:.3f}s"


def print_results(predictions, class_names):
    """The table on stdout; False, after one line on stderr, when stdout cannot take it (a full disk)."""
    try:
        print_table(predictions, class_names)
        sys.stdout.flush()
    except OSError as err:
        print(f"error: cannot write the results to standard output ({err.strerror or one_line(err)})",
              file=sys.stderr)
        with contextlib.suppress(OSError, ValueError):  # what is still buffered would fail again at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


def write_outputs(out, predictions, failures, model, args):
    """Write the results to `out` (.csv or .json) or as a table to stdout; False if stdout failed."""
    names = model.class_names
    if out is None:
        return print_results(predictions, names)
    out = Path(out)
    about = {"weights": args.weights, "classifier": args.classifier, "lam": float(model.lam),
             "threshold": args.threshold, "score": model.score_kind}
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            write_csv(tmp, predictions, names)
        else:
            write_json(tmp, predictions, failures, names, about)
    print(f"wrote {len(predictions)} rows to {out}", file=sys.stderr)
    return True


# ---------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m csra.predict",
        description="Predict labels for images, the frames of videos, and folders of them with a CSRA model.")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image and video files, or folders searched recursively for "
                             + "/".join(e[1:] for e in IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS) + " files")
    parser.add_argument("--weights", metavar="W",
                        help="checkpoint file or URL (this project's, mmpretrain's or the CSRA authors'), "
                             f"or a model name ({', '.join(MODEL_CONFIGS)}: downloads its weights); "
                             "with --classifier: a state dict of that classifier")
    parser.add_argument("--classifier", metavar="NAME",
                        help="wrap a torchvision ImageNet classifier (e.g. resnet50) with CSRA, no training; "
                             "its ImageNet weights are downloaded once unless --weights is given")
    parser.add_argument("--out", metavar="FILE", help="write a .csv or .json file (default: a table on stdout)")
    parser.add_argument("--threshold", type=arguments.fraction, default=0.5,
                        help="a label is predicted when its score reaches this (default 0.5)")
    parser.add_argument("--lam", type=arguments.lam,
                        help="CSRA lambda, 0 to 10 (default: the one stored with the model)")
    parser.add_argument("--heatmaps", metavar="DIR",
                        help="save a heatmap overlay PNG per predicted label of each image here, and "
                             "<video stem>_overlay.mp4 per video; or, for one input video, the overlay "
                             "video's file name (.mp4, .m4v, .mov, .mkv or .avi)")
    parser.add_argument("--every", type=arguments.positive_int, default=1, metavar="N",
                        help="videos: predict every N-th frame (default 1: all)")
    parser.add_argument("--max-seconds", type=arguments.positive_float, default=video.MAX_SECONDS,
                        metavar="S", help=f"refuse videos longer than this (default {video.MAX_SECONDS:g} s)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=8,
                        help="images per forward pass (default 8)")
    parser.add_argument("--workers", type=arguments.nonnegative_int,
                        default=min(4, max(0, (os.cpu_count() or 1) - 1)),
                        help="image decoding processes (default: CPU cores - 1, at most 4; 0 = none)")
    parser.add_argument("--device", default="auto",
                        help="auto (default: CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if not args.weights and not args.classifier:
        parser.error("give --weights W (a CSRA checkpoint) or --classifier NAME")
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        parser.error(f"--out must end in .csv or .json, got {args.out!r}")
    problem = output_problem(args.out, "--out", want_dir=False) or output_problem(
        args.heatmaps, "--heatmaps", want_dir=not overlay_video_name(args.heatmaps))
    if not problem and overlay_video_name(args.heatmaps):
        try:
            video.overlay_codec(args.heatmaps)
        except video.VideoError as err:
            problem = f"--heatmaps {err}"
    if problem:
        parser.error(problem)
    return args


def output_problem(target, option, want_dir):
    """Why `target` cannot be written (checked before any work), or None."""
    if not target:
        return None
    target = Path(target)
    if target.is_dir() and not want_dir:
        return f"{option} {target}: is a folder, give a file name"
    if target.exists() and not target.is_dir() and want_dir:
        return f"{option} {target}: is a file, not a folder"
    for parent in [target.parent, *target.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"{option} {target}: {parent} is a file, not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{option} {target}: cannot write into {parent} (no permission)"
            return None
    return None


def main(argv=None):
    args = parse_args(argv)
    try:
        device = pick_device(args.device)
        model = load_model(args.weights, args.classifier, args.lam)
    except (CheckpointError, DownloadError, ValueError, RuntimeError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    files, missing = find_images(args.images, IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS)
    if not files and not missing:
        print(f"error: no image files ({', '.join(IMAGE_EXTENSIONS)}) or video files "
              f"({', '.join(video.VIDEO_EXTENSIONS)}) in {', '.join(args.images)}", file=sys.stderr)
        return 2
    files, videos, problems = video.sort_inputs(files)  # images, videos, and files of the other kind
    problem = overlay_video_problem(args, files, videos, problems, missing)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    failures = [Failure(p, f"{p}: no such file or folder") for p in missing]
    failures += [Failure(p, message, exit_code=2) for p, message in problems]
    for failure in failures:
        print(f"skipped {failure.message}", file=sys.stderr)
    if args.heatmaps and not overlay_video_name(args.heatmaps):
        try:
            Path(args.heatmaps).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(f"error: --heatmaps {args.heatmaps}: cannot make the folder ({err.strerror or one_line(err)})",
                  file=sys.stderr)
            return 2
    predictions, interrupted = [], False
    try:
        images = predict_images(model, files, args.batch_size, device, args.workers, args.threshold,
                                args.heatmaps, progress=not args.no_progress) if files else ()
        for item in chain(images, predict_videos(model, videos, device, args)):
            if isinstance(item, Failure):
                failures.append(item)
                tqdm.write(f"skipped {item.message}", file=sys.stderr)
            else:
                predictions.append(item)
    except KeyboardInterrupt:
        interrupted = True  # keep what was predicted so far
    try:
        if not write_outputs(args.out, predictions, failures, model, args):
            return 2
    except OSError as err:  # never lose finished work: the results go to stdout instead
        print(f"error: cannot write {args.out}: {one_line(err)}; the results follow on stdout", file=sys.stderr)
        print_results(predictions, model.class_names)
        return 2
    unreadable = len({str(f.path) for f in failures})
    frames = sum(p.frame is not None for p in predictions)
    done = [f"{len(predictions) - frames} images predicted"] if files or not videos else []
    if videos:
        done.append(f"{len({p.path for p in predictions if p.frame is not None})} of {len(videos)} videos "
                    f"predicted ({frames} frames)")
    summary = ", ".join(done)
    if unreadable:
        summary += f", {unreadable} skipped or incomplete (see the messages above)"
    print(summary + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    if interrupted:
        return 130
    return max(f.exit_code for f in failures) if failures else 0


# ---------------------------------------------------------------- videos (the work is in csra/video.py)

def overlay_video_name(heatmaps):
    """Whether --heatmaps names one overlay video (a video extension) rather than a folder."""
    return bool(heatmaps) and Path(heatmaps).suffix.lower() in video.VIDEO_EXTENSIONS \
        and not Path(heatmaps).is_dir()


def overlay_video_problem(args, images, videos, problems, missing):
    """Why --heatmaps FILE.mp4 cannot be used with these inputs (it takes exactly one video), or None."""
    if not overlay_video_name(args.heatmaps):
        return None
    given = len(images) + len(videos) + len(problems) + len(missing)
    if len(args.images) == 1 and given == 1 and not images:
        return None  # one video (a missing or unusable one is reported as such)
    if len(args.images) == 1 and len(images) == 1 and given == 1:
        return (f"--heatmaps {args.heatmaps} is an overlay video, but {images[0]} is a still image; "
                f"give --heatmaps a folder for its PNGs")
    return (f"--heatmaps {args.heatmaps} is one overlay video, for one input video; give --heatmaps a folder "
            f"to get <video stem>_overlay.mp4 per video and PNGs for images")


def predict_videos(model, videos, device, args):
    """A Prediction per predicted frame of each video in turn, or a Failure (exit code 2 for a
    video that cannot be used); overlays as --heatmaps says."""
    stems = heatmap_stems(videos) if args.heatmaps else [None] * len(videos)
    for path, stem in zip(videos, stems):
        if not args.heatmaps:
            out_video = None
        elif overlay_video_name(args.heatmaps):
            out_video = Path(args.heatmaps)
        else:
            out_video = Path(args.heatmaps) / f"{stem}_overlay.mp4"
        try:
            run = video.VideoRun(model, path, out_video, every=args.every, batch_size=args.batch_size,
                                 max_seconds=args.max_seconds, device=device, progress=not args.no_progress)
            for f in run:
                order = [c for c in np.argsort(-f.scores, kind="stable") if f.scores[c] >= args.threshold]
                yield Prediction(path, f.scores, [model.class_names[c] for c in order], f.frame, f.time)
        except video.VideoError as err:
            yield Failure(path, one_line(err), exit_code=2)
            continue
        if run.incomplete:
            yield Failure(path, run.incomplete)


if __name__ == "__main__":
    sys.exit(main())
