"""Train CSRA on any multi-label dataset: python -m training.train --data-root DIR.

DIR holds VOC, COCO, CSV (your own data) or the CSRA authors' JSON lists
(training.datasets says how each looks; the format is detected, --dataset
forces it). --backbone takes any torchvision network of csra.list_backbones().

Defaults are the CSRA authors' VOC 2007 recipe (their main.py): 448 px,
random horizontal flip + random resized crop (scale 0.7-1.0), batch 16, SGD
momentum 0.9, weight decay 1e-4, lr 0.01 for the backbone and 10x for the
head, 2 warm-up epochs (linear, per iteration), 30 epochs, step decay x0.1
every 4 epochs, BCE-with-logits (mean), pixels in [0, 1], ImageNet-initialised
ResNet-101, 1 head, lambda 0.1. On COCO (or any data with COCO's 80 classes)
the defaults are their COCO recipe instead: 4 heads, lambda 0.5, decay every 5
epochs (RECIPES; options given on the command line always win).

Each epoch (or every --val-every epochs, and always the last) the model is
scored on the test split; OUT gets best.pth (best mAP), last.pth (with the
state to --resume from), metrics.csv, loss.png and map.png. Several GPUs or
nodes: torchrun --nproc_per_node N -m training.train ... (--batch-size is the
total over all processes).
"""
import argparse
import contextlib
import csv
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import csra
from csra import CheckpointError, DeviceError, DownloadError, ImageError
from csra import arguments
from csra.atomic import atomic_path
from csra.errors import one_line
from csra.weights import safe_load

from . import distributed as dist_utils
from .augment import EvalTransform, TrainTransform
from .engine import Precision, predict, train_epoch
from .errors import ConfigError, TrainingDiverged
from .interrupt import EXIT_CODE, PromptInterrupt
from .metrics import METRIC_KEYS, multilabel_metrics
from .plots import plot_loss, plot_map
from .datasets import FORMAT_NAMES, FORMATS, ImageLabelDataset, classes_without_positives, open_dataset
from .schedule import last_lr, warmup_step_schedule
from .voc import DataError

# Options that define the run; --resume keeps the saved values and refuses different ones.
RECIPE = ("backbone", "num_heads", "lam", "img_size", "batch_size", "lr", "head_lr_mult", "momentum",
          "weight_decay", "warmup_epochs", "lr_step", "lr_gamma", "crop_scale", "flip", "pretrained",
          "seed", "limit", "train_split", "test_split", "amp", "amp_dtype", "sync_bn", "dataset")
# The papers' settings that depend on the data (the rest is shared): CSRA authors' README table and
# main.py (step_size 4 for voc07, 5 for coco); filled in for options the command line does not give.
RECIPES = {
    "voc07": dict(backbone="resnet101", img_size=448, num_heads=1, lam=0.1, lr_step=4),
    "coco": dict(backbone="resnet101", img_size=448, num_heads=4, lam=0.5, lr_step=5),
}
CSV_FIELDS = ("epoch", "train_loss", "lr", "images_per_s", "epoch_s") + METRIC_KEYS


def build_parser(suppress=False):
    """The argument parser; suppress=True leaves out defaults (to see which options were given)."""
    d = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                argument_default=argparse.SUPPRESS if suppress else None)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=d(None),
                   help="dataset folder: VOC (VOCdevkit/ or VOC2007/), COCO (annotations/instances_*.json), "
                        "CSV (train.csv, test.csv) or the CSRA authors' *.json lists; see training/datasets.py")
    g.add_argument("--dataset", default=d(None), choices=FORMATS,
                   help="force the dataset format (default: detected from --data-root)")
    g.add_argument("--train-split", default=d("trainval"))
    g.add_argument("--test-split", default=d("test"))
    g.add_argument("--limit", type=arguments.positive_int, default=d(None), metavar="N",
                   help="use only the first N images of each split (quick runs)")
    g.add_argument("--workers", type=arguments.workers, default=d(min(8, os.cpu_count() or 1)),
                   help="data loading processes per training process (0: load in the main process)")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default=d("resnet101"), choices=csra.list_backbones(), metavar="NAME",
                   help="any torchvision network of csra.list_backbones(): resnet101 (default), resnet50, "
                        "convnext_tiny, efficientnet_b3, efficientnet_v2_s, regnet_y_8gf, mobilenet_v3_large, "
                        "swin_t, vit_b_16, ...")
    g.add_argument("--num-heads", type=int, default=d(1), choices=sorted(csra.TEMPERATURES),
                   help="CSRA heads (default 1; 4 on COCO)")
    g.add_argument("--lam", type=arguments.lam, default=d(0.1), help="CSRA lambda (default 0.1; 0.5 on COCO)")
    g.add_argument("--img-size", type=arguments.image_size, default=d(448))
    g.add_argument("--pretrained", default=d("imagenet"),
                   help="imagenet (torchvision's IMAGENET1K_V1 weights, downloaded once), none, or the .pth of "
                        "a torchvision state dict of the backbone network")
    g.add_argument("--offline", action="store_true", default=d(False),
                   help="never download (also: CSRA_OFFLINE=1)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=arguments.positive_int, default=d(30))
    g.add_argument("--batch-size", type=arguments.positive_int, default=d(16),
                   help="images per step, over all processes")
    g.add_argument("--lr", type=arguments.positive_float, default=d(0.01), help="backbone learning rate")
    g.add_argument("--head-lr-mult", type=arguments.positive_float, default=d(10.0), help="head lr = lr x this")
    g.add_argument("--momentum", type=arguments.nonnegative_float, default=d(0.9))
    g.add_argument("--weight-decay", type=arguments.nonnegative_float, default=d(1e-4))
    g.add_argument("--warmup-epochs", type=arguments.nonnegative_int, default=d(2),
                   help="linear warm-up, per iteration")
    g.add_argument("--lr-step", type=arguments.nonnegative_int, default=d(4),
                   help="multiply lr by --lr-gamma every N epochs (0: never; default 4, 5 on COCO)")
    g.add_argument("--lr-gamma", type=arguments.positive_float, default=d(0.1))
    g.add_argument("--crop-scale", type=arguments.area_fraction, nargs=2, default=d([0.7, 1.0]),
                   metavar=("MIN", "MAX"),
                   help="area range of the random resized crop")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=d(True),
                   help="random horizontal flip")
    g.add_argument("--seed", type=arguments.seed, default=d(0))
    g = p.add_argument_group("run")
    g.add_argument("--out", default=d(None), help="run folder (default runs/<date-time>)")
    g.add_argument("--resume", default=d(None), metavar="PATH|auto",
                   help="continue from a last.pth (or a run folder); 'auto': from --out's last.pth if any")
    g.add_argument("--val-every", type=arguments.positive_int, default=d(1),
                   help="evaluate every N epochs (and the last)")
    g.add_argument("--device", default=d(None),
                   help="auto (default: CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    g.add_argument("--amp", action="store_true", default=d(False),
                   help="mixed precision (bf16 autocast; fp16 + GradScaler with --amp-dtype fp16, CUDA only)")
    g.add_argument("--amp-dtype", default=d("bf16"), choices=("bf16", "fp16"))
    g.add_argument("--channels-last", action="store_true", default=d(False))
    g.add_argument("--compile", action="store_true", default=d(False), help="torch.compile the training model")
    g.add_argument("--sync-bn", action="store_true", default=d(False),
                   help="synchronise BatchNorm over processes (torchrun runs with few images per GPU)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=d(True), help="tqdm bars")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.crop_scale[0] > args.crop_scale[1]:
        low, high = args.crop_scale
        parser.error(f"argument --crop-scale: MIN {low:g} is larger than MAX {high:g}")
    given = set(vars(build_parser(suppress=True).parse_args(argv)))
    return args, given


def plain(value):
    """Args as plain values a weights_only checkpoint accepts."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def epoch_seed(seed, epoch, rank):
    return (seed * 1_000_003 + epoch * 1009 + rank) % (2 ** 31)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def find_resume(args):
    """The last.pth to resume from, or None for a fresh run."""
    if not args.resume:
        return None
    if args.resume == "auto":
        if not args.out:
            raise ConfigError("--resume auto needs --out (the run folder to continue)")
        path = Path(args.out) / "last.pth"
        return path if path.is_file() else None
    path = Path(args.resume)
    if path.is_dir():
        path = path / "last.pth"
    if not path.is_file():
        raise ConfigError(f"--resume {args.resume}: no such checkpoint ({path})")
    return path


def load_resume_state(path):
    state = safe_load(path) if path else None
    if state is not None and not ({"optimizer", "epoch", "history"} <= set(state)):
        raise CheckpointError(f"{path}: not a last.pth with resume state (best.pth cannot be resumed)")
    return state


def merge_resumed_args(args, given, state, path):
    """The saved recipe with this command line's runtime options; refuse recipe changes."""
    saved = state["training"]["args"]
    for key in RECIPE:
        if key in given and plain(getattr(args, key)) != saved.get(key):
            raise ConfigError(f"--{key.replace('_', '-')} {plain(getattr(args, key))} differs from the run "
                              f"being resumed ({saved.get(key)} in {path}); resume keeps the recipe")
    for key, value in saved.items():
        if key in RECIPE or (key not in given and key in ("data_root", "epochs", "val_every")):
            setattr(args, key, value)
    if "out" not in given:
        args.out = str(path.parent)
    return args


def write_csv(history, path):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else
                            (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])) for k in CSV_FIELDS})


def write_reports(history, out):
    """metrics.csv, loss.png and map.png of the epochs so far, each written whole (csra.atomic)."""
    write_csv(history, out / "metrics.csv")
    plot_loss(history, out / "loss.png")
    plot_map(history, out / "map.png")


def build_loaders(ctx, args, train_split, test_split, preprocessing):
    if args.batch_size % ctx.world_size:
        raise ConfigError(f"--batch-size {args.batch_size} is the total over {ctx.world_size} processes "
                          "and must divide evenly")
    per_process = args.batch_size // ctx.world_size
    train_ds = ImageLabelDataset(train_split, TrainTransform(preprocessing, args.crop_scale, args.flip), seed=args.seed)
    sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=args.seed)
    generator = torch.Generator()
    pin = ctx.device.type == "cuda"
    # BatchNorm cannot train on a batch of one image: drop a last batch of exactly one
    drop_last = len(sampler) % per_process == 1
    train_loader = DataLoader(train_ds, batch_size=per_process, sampler=sampler, num_workers=args.workers,
                              pin_memory=pin, drop_last=drop_last, generator=generator)
    if len(train_loader) == 0:
        raise ConfigError(f"{len(train_ds)} training images make no batch of {per_process}")
    test_ds = ImageLabelDataset(test_split, EvalTransform(preprocessing))
    shard = Subset(test_ds, range(ctx.rank, len(test_ds), ctx.world_size))
    test_loader = DataLoader(shard, batch_size=per_process, shuffle=False, num_workers=args.workers,
                             pin_memory=pin)
    return train_loader, sampler, generator, test_loader, train_ds


def build_optimizer(model, args):
    head = [p for n, p in model.named_parameters() if n.startswith("head.")]
    backbone = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    return torch.optim.SGD([{"params": backbone, "lr": args.lr}, {"params": head, "lr": args.lr * args.head_lr_mult}],
                           momentum=args.momentum, weight_decay=args.weight_decay)


def make_model(ctx, args, classes):
    """Rank 0 builds with the pretrained weights (it may download); DDP copies them to the others."""
    error = None
    model = None
    if ctx.is_main:
        try:
            pretrained = None if str(args.pretrained).lower() == "none" else args.pretrained
            model = csra.build_model(args.backbone, len(classes), args.num_heads, args.lam, pretrained,
                                     args.img_size, class_names=classes, offline=args.offline or None)
        except (DownloadError, CheckpointError, ValueError) as err:
            error = one_line(err)
            if isinstance(err, DownloadError):
                error += " (or train from scratch with --pretrained none)"
    error = dist_utils.broadcast_object(ctx, error)
    if error:
        raise ConfigError(error)
    if model is None:
        model = csra.build_model(args.backbone, len(classes), args.num_heads, args.lam, None,
                                 args.img_size, class_names=classes)
    return model


def dataset_name(split):
    return split.root.name if split.root.name != "VOC2007" or split.classes != csra.VOC_CLASSES \
        else "VOC2007"


def recipe_for(split):
    """The papers' recipe for this data: COCO's for COCO files or COCO's 80 classes, else VOC07's."""
    return "coco" if split.format == "coco" or tuple(split.classes) == csra.COCO_CLASSES else "voc07"


def apply_recipe(args, given, split):
    """Fill the data-dependent options the command line did not give from RECIPES; returns the recipe name."""
    name = recipe_for(split)
    for key, value in RECIPES[name].items():
        if key not in given:
            setattr(args, key, value)
    return name


def run(ctx, args, given, interrupt=None):
    resume_path = find_resume(args)
    state = load_resume_state(resume_path)
    if state is not None:
        args = merge_resumed_args(args, given, state, resume_path)
    elif args.resume == "auto" and ctx.is_main:
        print(f"no last.pth in {args.out}: starting a new run", file=sys.stderr)
    if not args.data_root:
        raise ConfigError("--data-root is required: a dataset folder of " + ", ".join(FORMAT_NAMES.values())
                          + " (docs/training.md says how each is laid out)")
    if args.epochs < 1 or args.val_every < 1:
        raise ConfigError("--epochs and --val-every must be at least 1")
    out = Path(args.out) if args.out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    out = Path(dist_utils.broadcast_object(ctx, str(out)))
    args.out = str(out)
    precision = Precision(ctx.device, args.amp, args.amp_dtype)

    train_split = open_dataset(args.data_root, args.train_split, args.dataset, args.limit)
    test_split = open_dataset(args.data_root, args.test_split, train_split.format, args.limit)
    if tuple(test_split.classes) != tuple(train_split.classes):
        raise DataError(f"{test_split.source} has other classes than {train_split.source}")
    if ctx.is_main:
        for note in train_split.notes + test_split.notes:
            print(f"note: {note}", file=sys.stderr)
    classes = train_split.classes
    args.dataset = train_split.format
    if state is None:
        recipe = apply_recipe(args, given, train_split)
        if ctx.is_main and recipe != "voc07":
            settings = ", ".join(f"{key} {getattr(args, key)}" for key in RECIPES[recipe])
            print(f"{recipe} recipe: {settings}", file=sys.stderr)
    empty = classes_without_positives(train_split)
    if empty and ctx.is_main:
        print(f"warning: {len(empty)} class(es) with no positive image in {train_split.source}: "
              f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''} (their AP will be undefined or poor)",
              file=sys.stderr)
    start_epoch = state["epoch"] if state else 0
    if start_epoch >= args.epochs:
        if ctx.is_main:  # a run killed while writing its last figures gets them now
            write_reports(state["history"], Path(args.out))
            print(f"{resume_path} has already trained {start_epoch} of {args.epochs} epochs; nothing to train "
                  f"(raise --epochs to train longer); metrics.csv, loss.png and map.png rewritten in {args.out}")
        return 0

    seed_everything(args.seed)
    model = make_model(ctx, args, classes)
    if state is not None:
        model.load_state_dict(state["state_dict"])
    model.to(ctx.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    raw_model = model
    train_model = raw_model
    if ctx.distributed:
        if args.sync_bn:
            train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        train_model = DistributedDataParallel(
            train_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)

    preprocessing = raw_model.preprocessing
    train_loader, sampler, generator, test_loader, train_ds = build_loaders(ctx, args, train_split, test_split,
                                                                   preprocessing)
    optimizer = build_optimizer(raw_model, args)
    schedule = warmup_step_schedule(optimizer, len(train_loader), args.warmup_epochs, args.lr_step, args.lr_gamma)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if "last_epoch" in state["schedule"]:
            schedule.load_state_dict(state["schedule"])
        else:  # a last.pth from before the LambdaLR schedule: the count follows from the epoch
            schedule.last_epoch = start_epoch * len(train_loader) - 1
            schedule.step()
        if precision.scaler is not None and state.get("scaler"):
            precision.scaler.load_state_dict(state["scaler"])
    history = list(state["history"]) if state else []
    best = dict(state.get("best") or {}) if state else {}
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        init = "from scratch" if str(args.pretrained).lower() == "none" else f"from {args.pretrained}"
        print(f"{'resuming after epoch ' + str(start_epoch) + ' of' if state else 'training'} "
              f"{args.backbone} ({init}, {args.num_heads} head(s), lambda {args.lam}) on "
              f"{len(train_split)} images of {train_split.source} ({train_split.format}, {len(classes)} classes), "
              f"testing on {len(test_split)} images of {test_split.source.name}; "
              f"{args.img_size} px, batch {args.batch_size}, {ctx.device.type} {precision.describe()}, "
              f"{ctx.world_size} process(es); writing {out}")

    figures = {}
    for epoch in range(start_epoch + 1, args.epochs + 1):
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        seed = epoch_seed(args.seed, epoch, ctx.rank)
        seed_everything(seed)
        generator.manual_seed(seed)
        epoch_start = time.perf_counter()
        losses, mean_loss, speed = train_epoch(
            ctx, train_model, train_loader, optimizer, schedule, precision,
            epoch, args.epochs, args.channels_last, args.progress)
        row = {"epoch": epoch, "train_loss": mean_loss, "lr": last_lr(schedule),
               "images_per_s": speed, "iteration_losses": losses}
        if epoch % args.val_every == 0 or epoch == args.epochs:
            scores, _ = predict(ctx, raw_model, test_loader, precision, args.channels_last,
                                progress=args.progress)
            metrics = multilabel_metrics(scores, test_split.labels)
            row.update({k: metrics[k] for k in METRIC_KEYS})
        row["epoch_s"] = time.perf_counter() - epoch_start
        history.append(row)
        # a Ctrl-C (training/interrupt.py) waits for these writes to finish
        with interrupt.saving if interrupt else contextlib.nullcontext():
            if ctx.is_main:
                figures = {"epoch": epoch, **{k: row.get(k) for k in METRIC_KEYS}, "train_loss": mean_loss,
                           "dataset": dataset_name(train_split), "data_root": str(args.data_root),
                           "train_split": args.train_split, "test_split": args.test_split,
                           "args": {k: plain(v) for k, v in vars(args).items()}}
                improved = row.get("mAP") is not None and row["mAP"] > best.get("mAP", -1.0)
                if improved:
                    best = {"epoch": epoch, "mAP": row["mAP"]}
                    csra.save_checkpoint(out / "best.pth", raw_model, training=figures)
                csra.save_checkpoint(out / "last.pth", raw_model, training=figures, epoch=epoch,
                                     optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                                     scaler=precision.scaler.state_dict() if precision.scaler else None,
                                     history=history, best=best)
                write_reports(history, out)
                shown = (f"  mAP {row['mAP']:.2f}  CF1 {row['CF1']:.2f}  OF1 {row['OF1']:.2f}"
                         if row.get("mAP") is not None else "")
                tqdm.write(f"epoch {epoch}/{args.epochs}  loss {mean_loss:.4f}{shown}  {speed:.1f} img/s  "
                           f"{row['epoch_s']:.0f} s" + ("  (best)" if improved else ""))
        dist_utils.barrier(ctx)
    if ctx.is_main:
        print(f"done: best mAP {best.get('mAP', float('nan')):.2f} at epoch {best.get('epoch')}; "
              f"{out / 'best.pth'}")
    return 0


def interrupted_message(args):
    if args.out and (Path(args.out) / "last.pth").is_file():
        return (f"interrupted: the last finished epoch is saved in {args.out} (last.pth); continue with "
                f"--resume {args.out}")
    return "interrupted before the first epoch finished: nothing was saved"


def main(argv=None):
    args, given = parse_args(argv)
    ctx = None
    try:
        ctx = dist_utils.setup(args.device)
        with PromptInterrupt(lambda: interrupted_message(args)) as interrupt:
            return run(ctx, args, given, interrupt)
    except (DataError, ConfigError, DeviceError, DownloadError, CheckpointError, ImageError,
            TrainingDiverged) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the loop (or outside the main thread)
        print("\n" + interrupted_message(args), file=sys.stderr)
        return EXIT_CODE
    finally:
        if ctx is not None:
            dist_utils.cleanup(ctx)


if __name__ == "__main__":
    sys.exit(main())
