"""The training step, one training epoch and inference over a split (scores, score maps)."""
import contextlib
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from csra.inference import score_map_batches

from . import distributed as dist_utils
from .errors import ConfigError, TrainingDiverged

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast settings: off, bf16 or fp16 (fp16 with a GradScaler, on CUDA only).

    On CPU, --amp uses bfloat16 autocast (fp16 is refused there): it helps on
    CPUs with bf16 units (AMX) and is slower on most others.
    """

    def __init__(self, device, amp=False, dtype="bf16"):
        self.device_type = torch.device(device).type
        self.enabled = bool(amp)
        if dtype not in AMP_DTYPES:
            raise ConfigError(f"--amp-dtype must be one of {', '.join(AMP_DTYPES)}, got {dtype!r}")
        if self.enabled and self.device_type != "cuda" and dtype == "fp16":
            raise ConfigError("--amp-dtype fp16 needs CUDA; on CPU use bf16")
        self.dtype = AMP_DTYPES[dtype]
        self.scaler = (torch.amp.GradScaler("cuda")
                       if self.enabled and self.dtype == torch.float16 else None)

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def describe(self):
        return f"{'bf16' if self.dtype == torch.bfloat16 else 'fp16'} autocast" if self.enabled else "fp32"


def to_device(images, device, channels_last=False):
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def training_targets(labels):
    """{1, 0, -1} labels -> BCE targets: difficult-only (-1) counts as negative, as the authors do."""
    return labels.clamp(min=0)


def train_step(model, images, targets, optimizer, precision):
    """One SGD step on a batch; returns the loss as a float tensor (not synced)."""
    with precision.autocast():
        logits = model(images)
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="mean")
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_epoch(ctx, model, loader, optimizer, schedule, precision, epoch, num_epochs,
                channels_last=False, progress=True):
    """Train one epoch; returns (per-iteration losses of this process, mean loss over ranks, images/s).

    schedule.step() follows each optimizer step (the schedule is per iteration, training/schedule.py).
    """
    model.train()
    losses = []
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}/{num_epochs}", unit="batch", leave=False,
               disable=not (progress and ctx.is_main), dynamic_ncols=True)
    for images, labels, _ in bar:
        images = to_device(images, ctx.device, channels_last)
        targets = training_targets(labels.to(ctx.device, non_blocking=True))
        loss = float(train_step(model, images, targets, optimizer, precision))
        schedule.step()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at epoch {epoch}, iteration {len(losses) + 1}; "
                                   "try a lower --lr (or --amp-dtype bf16)")
        losses.append(loss)
        seen += len(images) * ctx.world_size
        speed = seen / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", img_s=f"{speed:.1f}",
                        lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
    bar.close()
    elapsed = time.perf_counter() - start
    mean_loss = dist_utils.mean_over_ranks(ctx, np.mean(losses) if losses else float("nan"))
    return losses, mean_loss, seen / max(elapsed, 1e-9)


def predict(ctx, model, loader, precision, channels_last=False, keep_maps=False, progress=True,
            desc="evaluating"):
    """Sigmoid scores (N, C) for the loader's dataset (and its class score maps summed over heads).

    The batches go through csra.inference.score_map_batches, the loop csra.predict and
    training.evaluate_imagenet use too. Under torchrun every process runs its own shard (a loader
    over a subset whose items carry dataset indices); the results are gathered so every
    process returns the full, ordered arrays.
    """
    indices, scores, maps = [], [], []
    bar = tqdm(loader, desc=desc, unit="batch", leave=False,
               disable=not (progress and ctx.is_main), dynamic_ncols=True)
    for batch in score_map_batches(model, bar, ctx.device, precision.autocast, channels_last):
        _, index = batch.extra
        scores.append(torch.sigmoid(batch.logits()).cpu().numpy())
        indices.append(index.numpy())
        if keep_maps:
            maps.append(batch.class_maps().cpu().numpy())
    bar.close()
    parts = dist_utils.gather_objects(ctx, (indices, scores, maps))
    indices = np.concatenate([i for p in parts for i in p[0]])
    order = np.argsort(indices, kind="stable")
    scores = np.concatenate([s for p in parts for s in p[1]])[order]
    maps = np.concatenate([m for p in parts for m in p[2]])[order] if keep_maps else None
    return scores, maps
