"""Reading weight files safely and placing weights into modules, with one-line errors."""
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from .download import fetch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


# Globals that could run code if a loader ever called them: refused whatever the fallback.
REFUSED_MODULES = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "sys", "subprocess", "shutil", "importlib", "runpy",
    "pty", "socket", "ctypes", "code", "codeop", "pickle", "_pickle", "marshal", "multiprocessing",
    "signal", "webbrowser", "io", "_io", "tempfile", "pathlib", "operator", "functools", "types",
    "inspect", "pdb", "timeit", "platform", "asyncio", "threading", "_thread", "urllib", "http"})
REFUSED_NAMES = frozenset({"eval", "exec", "compile", "system", "popen", "spawn", "execv", "execve",
                           "getattr", "setattr", "__import__", "import_module", "open", "call",
                           "check_call", "check_output", "run", "Popen", "load", "loads"})
UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global")
MAX_UNKNOWN_GLOBALS = 64


class Placeholder:
    """Stands in for a class or function of someone else's library found in a checkpoint's metadata
    (numpy scalars, mmengine's HistoryBuffer, ...): creating it, calling it and setting its state
    record nothing and call nothing. The loader drops placeholders from what it returns."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def safe_load(path):
    """torch.load(weights_only=True) that also takes released files with foreign objects in their
    metadata: when torch refuses only unknown globals, they are replaced by inert placeholders
    (registered for exactly those names) and dropped; code-running names stay refused."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    unknown = []
    while True:
        try:
            with torch.serialization.safe_globals([(Placeholder, name) for name in unknown]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
            return _drop_placeholders(obj) if unknown else obj
        except pickle.UnpicklingError as err:
            if not _looks_like_torch_file(path):
                raise CheckpointError(f"{path}: {_why_unreadable(path)}") from None
            found = UNSUPPORTED_GLOBAL.search(str(err))
            name = _global_name(found.group(1)) if found else None
            if name is None or name in unknown or _refused(name) or len(unknown) >= MAX_UNKNOWN_GLOBALS:
                shown = f" ({name})" if name else ""
                raise CheckpointError(
                    f"{path}: holds pickled Python code or objects beyond tensors and plain containers"
                    f"{shown}; refused (only weights_only=True loads are allowed)") from None
            unknown.append(name)
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError,
                KeyError, IndexError, TypeError):
            raise CheckpointError(f"{path}: {_why_unreadable(path)}") from None


def _global_name(shown):
    """torch's message writes builtins.X as plain X; give the full module.name back."""
    return shown if "." in shown else f"builtins.{shown}"


def _refused(name):
    module, _, attr = name.rpartition(".")
    return module.split(".")[0] in REFUSED_MODULES or attr in REFUSED_NAMES


def _drop_placeholders(obj):
    """obj without placeholders in its dicts, lists and tuples, except in a dict of weights (any
    tensor value), where a placeholder stays so that the tensor check names it."""
    if isinstance(obj, dict):
        if any(torch.is_tensor(v) for v in obj.values()):
            return obj
        kept = {k: _drop_placeholders(v) for k, v in obj.items()
                if not isinstance(k, Placeholder) and not isinstance(v, Placeholder)}
        return OrderedDict(kept) if isinstance(obj, OrderedDict) else kept
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(_drop_placeholders(v) for v in obj if not isinstance(v, Placeholder))
    return obj


def require_tensors(state_dict, path, what="weights"):
    """A {name: tensor} dict, or CheckpointError naming the first entry that is not a tensor."""
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"{path}: does not hold a state dict of tensors ({what})")
    odd = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    if odd:
        kind = "an object of an unknown class" if isinstance(state_dict[odd[0]], Placeholder) \
            else f"a {type(state_dict[odd[0]]).__name__}"
        more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
        raise CheckpointError(f"{path}: state dict entry {odd[0]} is {kind}, not a tensor{more}; "
                              f"refused ({what})")
    return state_dict


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
    return require_tensors(obj, path, what)


def place_weights(module, state_dict, source):
    """load_state_dict that needs every key used and every weight placed, else one clear error."""
    require_tensors(state_dict, source)
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
