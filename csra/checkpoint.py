"""Checkpoints: our own format, plus the mmpretrain and the CSRA authors' releases.

Our format is a dict {"format", "config", "state_dict", "training", ...}
saved atomically. Every file is read with torch.load(weights_only=True), so
no pickled code runs. Problems raise CheckpointError with a one-line message
that names the file.
"""
import os
import re
import warnings
from pathlib import Path

import torch

from .atomic import atomic_path
from .backbone import Backbone
from .classes import default_class_names
from .head import TEMPERATURES
from .model import ModelConfig, model_from_config
from .vit_layout import convert_authors_vit, is_authors_vit
from .weights import CheckpointError, local_path, place_weights, safe_load

FORMAT = "csra-explorer"
VERSION = 1

# blocks per stage and block type -> torchvision ResNet name
RESNET_LAYOUTS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}
MMPRETRAIN_HEAD = re.compile(r"^head\.csra_heads\.(\d+)\.head\.weight$")
AUTHORS_HEAD = re.compile(r"^classifier\.multi_head\.(\d+)\.head\.weight$")


def save_checkpoint(path, model, training=None, **extra):
    """Write model weights + config (+ training figures, + extra entries) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict() | {"lam": float(model.lam)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": dict(training or {}),
        **extra,
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def _resnet_name(keys, prefix, source):
    blocks = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in keys
               if (m := re.match(rf"^{re.escape(prefix)}layer{stage}\.(\d+)\.", k))}
        blocks.append(len(idx))
    bottleneck = any(k.startswith(f"{prefix}layer1.0.conv3.") for k in keys)
    name = RESNET_LAYOUTS.get((tuple(blocks), bottleneck))
    if name is None:
        raise CheckpointError(f"{source}: backbone is not a torchvision ResNet (blocks per stage {blocks})")
    return name


def convert_foreign_state_dict(state_dict, source="checkpoint"):
    """mmpretrain or authors' CSRA weights -> (our state dict, config kwargs), or None if neither."""
    keys = list(state_dict)
    if any(MMPRETRAIN_HEAD.match(k) for k in keys):
        head_re, prefix, kind = MMPRETRAIN_HEAD, "backbone.", "mmpretrain"
        rename = lambda k: k
    else:
        if any(k.startswith("module.") for k in keys):
            state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
            keys = list(state_dict)
        if not any(AUTHORS_HEAD.match(k) for k in keys):
            return None
        head_re, prefix, kind = AUTHORS_HEAD, "", "authors"
        rename = lambda k: "backbone." + k
    heads = sorted((int(m.group(1)), k) for k in keys if (m := head_re.match(k)))
    if [i for i, _ in heads] != list(range(len(heads))) or len(heads) not in TEMPERATURES:
        raise CheckpointError(f"{source}: {len(heads)} CSRA heads with indices "
                              f"{[i for i, _ in heads]}; expected 1, 2, 4, 6 or 8 heads numbered from 0")
    head_keys = {k: f"head.classifiers.{i}.weight" for i, k in heads}
    num_classes = state_dict[heads[0][1]].shape[0]
    if kind == "authors" and is_authors_vit(state_dict):  # their ViT: csra.vit_layout
        converted, config = convert_authors_vit(state_dict, head_keys, source)
        converted.update({ours: state_dict[theirs] for theirs, ours in head_keys.items()})
        return converted, dict(config, num_classes=num_classes, num_heads=len(heads)), "authors-vit"
    converted = {head_keys[k] if k in head_keys else rename(k): v for k, v in state_dict.items()}
    config = dict(backbone=_resnet_name(keys, prefix, source), num_classes=num_classes,
                  num_heads=len(heads))
    return converted, config, kind


def _keep_position_grid(model, state_dict, saved_size, path):
    """A ViT keeps the position-embedding grid of its file; when the input size asked for needs
    another grid, the embeddings are resampled at run time, and a warning says so."""
    if not isinstance(model.backbone, Backbone):  # a wrapped classifier's trunk: never a ViT
        return
    grid = model.backbone.take_position_grid(state_dict.get("backbone.encoder.pos_embedding"))
    size = model.config.image_size
    wanted = size // model.backbone.conv_proj.stride[0] if grid else None
    if grid and wanted != grid and size != saved_size:
        warnings.warn(f"{path}: position embeddings of a {grid}x{grid} patch grid are resampled to "
                      f"{wanted}x{wanted} for {size} px input (the checkpoint's size: {saved_size} px)",
                      stacklevel=3)


def load_checkpoint(source, lam=None, image_size=None, class_names=None, offline=None):
    """A CSRAModel (CPU, eval mode) from our checkpoint, mmpretrain's or the authors'.

    source is a path or an http(s) URL (fetched once into torch.hub's cache).
    For foreign checkpoints, which carry no CSRA settings, lam defaults to 0.1
    and image_size to 448, with [0, 1] pixels as both recipes use.
    """
    path = local_path(source, offline)
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, not a dict)")
    training, kind = {}, FORMAT
    if obj.get("format") == FORMAT:
        if not isinstance(obj.get("config"), dict) or not isinstance(obj.get("state_dict"), dict):
            raise CheckpointError(f"{path}: {FORMAT} checkpoint without 'config' or 'state_dict'")
        try:
            config = ModelConfig.from_dict(obj["config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: bad config in checkpoint ({err})") from None
        state_dict, training = obj["state_dict"], obj.get("training") or {}
    else:
        inner = obj.get("state_dict", obj)
        found = convert_foreign_state_dict(inner, path) if isinstance(inner, dict) else None
        if found is None:
            some = ", ".join(list(map(str, inner))[:4]) if isinstance(inner, dict) else ""
            raise CheckpointError(
                f"{path}: not a CSRA checkpoint (no CSRA head weights; first keys: {some or 'none'})")
        state_dict, kwargs, kind = found
        meta = obj.get("meta") or {}
        names = (meta.get("dataset_meta") or {}).get("classes") or meta.get("CLASSES") or ()
        if len(names) != kwargs["num_classes"]:
            names = default_class_names(kwargs["num_classes"])
        config = ModelConfig(**{"lam": 0.1, "image_size": 448, **kwargs, "class_names": tuple(names)})
    saved_size = config.image_size
    try:
        if lam is not None:
            config.lam = float(lam)
        if image_size is not None:
            config.image_size = int(image_size)
        if class_names is not None:
            config.class_names = tuple(class_names)
        config.__post_init__()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: bad config ({err})") from None
    try:
        model = model_from_config(config)
    except ValueError as err:  # e.g. a backbone this version does not know
        raise CheckpointError(f"{path}: bad config in checkpoint (config.backbone = {config.backbone!r}: "
                              f"{err})") from None
    _keep_position_grid(model, state_dict, saved_size, path)
    place_weights(model, state_dict, path)
    model.info = {"source": str(source), "format": kind, "training": training}
    return model.eval()
