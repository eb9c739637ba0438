"""What the page shows, as numbers: run the network once per image, then rescore at any lambda.

analyse() runs the backbone and the CSRA head's 1x1 classifiers once and
keeps the class score maps s (heads x classes x h x w) with the image. Every
later question — scores at another lambda, the split of a logit into its
average-pooling and attention parts, the effective pooling weights — is
answered from those cached maps through the head's own functions; the
backbone never runs again for the same image.

For class c and head k with temperature T:

    logit_c = sum_k sum_p s_kc(p) * (1/HW + lam * softmax(T * s_kc)(p))  (+ bias_c)

so logit = base + lam * attention with base = sum_k mean_p s_kc (+ bias)
and attention = sum_k sum_p softmax(T * s_kc)(p) * s_kc(p): a lambda change
is base + lam * attention, both cached (see scores_at).
"""
import copy
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image


DISPLAY_SIZE = 448  # longest side of the picture the overlays are drawn on


@dataclass
class Analysis:
    """One image seen by one model: everything a lambda or threshold change needs."""
    name: str                  # the file name, for messages and downloads
    image: np.ndarray          # (H, W, 3) uint8 RGB, upright, longest side DISPLAY_SIZE
    maps: torch.Tensor         # (K, C, h, w) float32 CPU class score maps, K heads
    attention: torch.Tensor    # (K, C, h, w) softmax(T * s) over positions (one-hot for T=99)
    base: torch.Tensor         # (C,) logits at lam = 0: average pooling (+ the head's bias)
    attention_part: torch.Tensor  # (C,) how much one unit of lam adds to each logit
    model: object              # the CSRAModel that made the maps (shared, never modified)
    model_key: str = ""
    source: str = ""           # the path the image was read from (to re-run with another model)
    original_size: tuple = ()  # (width, height) of the decoded image
    class_maps: np.ndarray = None  # (C, h, w) maps summed over heads; the mean of class c's map
                                   # is its logit's average-pooling part (without the bias)
    pictures: dict = field(default_factory=dict, repr=False)  # encoded pictures, drawn once each
    sent: dict = field(default_factory=dict, repr=False)      # what this page already holds

    def __post_init__(self):
        if self.class_maps is None:
            self.class_maps = self.maps.sum(dim=0).numpy()

    @property
    def class_names(self):
        return tuple(self.model.class_names)

    @property
    def temperatures(self):
        return tuple(self.model.head.temperatures)

    @property
    def kind(self):
        """'sigmoid' (multi-label CSRA head) or 'softmax' (a wrapped ImageNet classifier)."""
        return self.model.score_kind

    @property
    def grid(self):
        return tuple(self.maps.shape[-2:])


@dataclass
class Scores:
    """Per-class figures at one lambda; every array has one entry per class."""
    lam: float
    logits: np.ndarray
    probabilities: np.ndarray
    base: np.ndarray            # average-pooling part (+ bias)
    attention: np.ndarray       # lam * attention part
    kind: str                   # "sigmoid" (multi-label) or "softmax" (one of C classes)

    def order(self):
        """Class indices, most probable first (ties keep class order)."""
        return np.argsort(-self.probabilities, kind="stable")

    def present(self, threshold):
        return self.probabilities >= threshold


def display_image(image, size=DISPLAY_SIZE):
    """RGB PIL image -> (H, W, 3) uint8 array whose longest side is `size` (aspect kept; a
    side never rounds to 0 pixels, so a 1x5000 strip becomes 1x448)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    w, h = image.size
    scale = size / max(w, h)
    new = (min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale))))
    resample = Image.NEAREST if max(image.size) < 8 else Image.BILINEAR  # tiny: keep pixels sharp
    return np.array(image.resize(new, resample), dtype=np.uint8)


def model_device(model):
    return next(model.parameters()).device


@torch.no_grad()
def score_maps(model, image):
    """Run the network once: RGB PIL image -> (K, C, h, w) float32 CPU score maps."""
    x = model.preprocessing(image)[None].to(model_device(model))
    features = model.forward_features(x)
    return model.head.score_maps(features)[0].float().cpu()


@torch.no_grad()
def analyse(model, image, name="image", model_key="", source="", display_size=DISPLAY_SIZE):
    """The expensive step, once per image and model: the backbone and the head's score maps."""
    maps = score_maps(model, image)
    analysis = analysis_from_maps(model, maps, display_image(image, display_size), name, model_key,
                                  source)
    analysis.original_size = tuple(image.size)
    return analysis


@torch.no_grad()
def analysis_from_maps(model, maps, image, name="image", model_key="", source=""):
    """Cache what every lambda needs from (K, C, h, w) maps; the head's own functions do the maths."""
    head = model.head
    maps = maps.detach().float().cpu()
    head_on_cpu = _cpu_head(head)
    attention = head_on_cpu.attention_weights(maps[None])[0]
    base = head_on_cpu.logits_from_maps(maps[None], lam=0.0)[0]
    attention_part = head_on_cpu.logits_from_maps(maps[None], lam=1.0)[0] - base
    return Analysis(name=name, image=image, maps=maps, attention=attention, base=base,
                    attention_part=attention_part, model=model, model_key=model_key, source=source)


_CPU_HEADS = weakref.WeakKeyDictionary()


def _cpu_head(head):
    """The head itself when it lives on the CPU; else a CPU copy, made once per head.

    The cached maps stay on the CPU so that a lambda change costs no device transfer.
    """
    if all(p.device.type == "cpu" for p in head.parameters()):
        return head
    if head not in _CPU_HEADS:
        _CPU_HEADS[head] = copy.deepcopy(head).cpu()
    return _CPU_HEADS[head]


def scores_at(analysis, lam):
    """Scores at lambda from the cached maps; the backbone never runs.

    head.logits_from_maps is linear in lambda (logit = base + lam * attention),
    so analysis_from_maps evaluates it at lam = 0 and lam = 1 once per image and
    a slider move only combines the two in numpy: no torch call, so no thread
    pool to wake up on a busy CPU. tests/test_app_inference.py checks the result
    against logits_from_maps and a full forward pass at several lambdas.
    """
    lam = float(lam)
    base = analysis.base.numpy().astype(np.float64)
    attention = lam * analysis.attention_part.numpy().astype(np.float64)
    logits = base + attention
    kind = analysis.kind
    if kind == "softmax":
        e = np.exp(logits - logits.max())
        probs = e / e.sum()
    else:
        probs = 0.5 * (1.0 + np.tanh(0.5 * logits))    # the sigmoid, without overflow
    return Scores(lam=lam, logits=logits, probabilities=probs, base=base, attention=attention,
                  kind=kind)


def pooling_weights(analysis, c, lam):
    """(K, h, w) effective pooling weights 1/HW + lam * softmax(T * s_kc) of class c, one per head.

    sum_k sum_p s_kc(p) * weights[k, p] (+ bias) is exactly class c's logit at lam.
    """
    h, w = analysis.grid
    return 1.0 / (h * w) + float(lam) * analysis.attention[:, c].numpy()


def shown_classes(scores, threshold, picked=(), limit=12):
    """Classes to draw: those at or above the threshold (most probable first, at most
    `limit`), then any picked ones not already there (indices)."""
    order = scores.order()
    present = [int(i) for i in order if scores.probabilities[i] >= threshold][:limit]
    extra = [int(i) for i in picked if int(i) not in present]
    return present + extra


def threshold_logit(threshold, kind):
    """The logit at which a sigmoid probability reaches threshold (None for softmax or 0/1)."""
    if kind != "sigmoid" or not 0.0 < threshold < 1.0:
        return None
    return float(np.log(threshold / (1.0 - threshold)))


def score_rows(analysis, scores, threshold, rows=None):
    """One dict per class (most probable first, or the given class indices), for the table,
    the API and the CSV/JSON downloads."""
    names = analysis.class_names
    present = scores.present(threshold)
    rows = scores.order() if rows is None else rows
    return [{"class": names[c], "probability": round(float(scores.probabilities[c]), 6),
             "logit": round(float(scores.logits[c]), 6), "base": round(float(scores.base[c]), 6),
             "lambda_attention": round(float(scores.attention[c]), 6), "present": bool(present[c])}
            for c in rows]
