"""Reading weight files safely and placing weights into modules, with one-line errors."""
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .download import fetch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def safe_load(path):
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if _looks_like_torch_file(path) and "unsupported global" in str(err).lower():
            raise CheckpointError(
                f"{path}: holds pickled Python objects beyond tensors and plain containers; "
                "refused (only weights_only=True loads are allowed)") from None
        raise CheckpointError(f"{path}: {_why_unreadable(path)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError,
            KeyError, IndexError, TypeError):
        raise CheckpointError(f"{path}: {_why_unreadable(path)}") from None


def _looks_like_torch_file(path):
    """A zip archive (torch.save since 1.6) or a pickle stream (the legacy format)."""
    with open(path, "rb") as f:
        return zipfile.is_zipfile(path) or f.read(1) == b"\x80"


def _why_unreadable(path):
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "truncated PyTorch checkpoint (the zip archive has no end)"
    if not head:
        return "empty file, not a checkpoint"
    return "not a PyTorch checkpoint file"


def local_path(source, offline=None):
    s = str(source)
    if s.startswith(("http://", "https://")):
        return fetch(s, what=f"checkpoint {os.path.basename(s)}", offline=offline)
    return Path(s)


def read_state_dict(source, what="weights", offline=None):
    """A plain {name: tensor} dict from a file (unwrapping 'state_dict' / 'model' entries)."""
    path = local_path(source, offline)
    obj = safe_load(path)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors ({what})")
    return obj


def place_weights(module, state_dict, source):
    """load_state_dict that needs every key used and every weight placed, else one clear error."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    problems = []
    for label, items in (("wrong shape", wrong), ("missing", missing), ("unused", unexpected)):
        if items:
            shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model; " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=False)
