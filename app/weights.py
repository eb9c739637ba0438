"""Which weights the app serves: --weights, else the newest training run, else the official ones.

Order:
  1. `--weights PATH_OR_URL` (any checkpoint csra.load_checkpoint reads);
  2. the newest `runs/*/best.pth` under the current folder (what
     `python -m training.train` writes by default);
  3. mmpretrain's released ResNet-101 CSRA VOC07 checkpoint, downloaded once
     into torch.hub's cache (CSRA_OFFLINE=1 forbids the download).
With none of these, NoWeights carries a message that says how to get some.
"""
from dataclasses import dataclass
from pathlib import Path

import csra
from csra.download import cache_path, is_offline
from csra.registry import MMPRETRAIN_VOC07_URL

OFFICIAL_MODEL = "resnet101-csra_1xb16_voc07-448px"


class NoWeights(RuntimeError):
    """No usable weights; str() is the multi-line message for the command line."""


@dataclass
class Choice:
    source: str  # path or URL handed to csra.load_checkpoint
    reason: str  # why this one, for the log


def newest_run_checkpoint(root="."):
    """The most recently written runs/*/best.pth under root, or None."""
    found = [p for p in Path(root, "runs").glob("*/best.pth") if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def choose_weights(weights=None, root="."):
    if weights:
        return Choice(str(weights), "given with --weights")
    run = newest_run_checkpoint(root)
    if run is not None:
        return Choice(str(run), "the newest training run (runs/*/best.pth)")
    return Choice(MMPRETRAIN_VOC07_URL, "no --weights and no training run: mmpretrain's VOC07 weights")


def how_to_get_weights(reason=""):
    cached = cache_path(MMPRETRAIN_VOC07_URL)
    lines = ["error: the app has no model weights to serve."]
    if reason:
        lines.append(f"  ({reason})")
    lines += [
        "It looked for: --weights (not given); runs/*/best.pth under "
        f"{Path.cwd()} (none); the official checkpoint at {cached} (not there).",
        "Get weights in one of these ways:",
        "  1. train a model:  python -m training.train --data-root VOC_DIR   "
        "(writes runs/<date-time>/best.pth; start the app from the same folder)",
        f"  2. download {MMPRETRAIN_VOC07_URL}",
        f"     on a machine with internet and put it at {cached}",
        "     (or run the app once with internet and without CSRA_OFFLINE=1: it downloads it there)",
        "  3. point the app at a checkpoint:  python app.py --weights PATH_OR_URL",
    ]
    return "\n".join(lines)


def load_voc_model(weights=None, root=".", offline=None):
    """(model, Choice) for the app's main model; raises NoWeights, CheckpointError or DownloadError.

    A broken --weights file or run checkpoint raises CheckpointError (its own
    one-line message); only the missing official download becomes NoWeights.
    """
    choice = choose_weights(weights, root)
    if choice.source != MMPRETRAIN_VOC07_URL:
        return csra.load_checkpoint(choice.source, offline=offline), choice
    if is_offline(offline) and not cache_path(MMPRETRAIN_VOC07_URL).is_file():
        raise NoWeights(how_to_get_weights("downloads are off: CSRA_OFFLINE is set"))
    try:
        model = csra.get_model(OFFICIAL_MODEL, pretrained=True, offline=offline)
    except csra.DownloadError as err:
        raise NoWeights(how_to_get_weights(str(err))) from None
    return model, choice
