"""How far to trust a heatmap: deletion and insertion curves, the pointing game and its energy variant.

    from csra import faithfulness
    check = faithfulness.check_map(model, image, class_index)       # one PIL image, one class
    check.methods["csra"].deletion_auc, check.methods["gradcam"].insertion_auc

The maps compared, all on the same model, image and lambda (METHODS):

- ``csra``: the class's score map s_c, summed over the heads: what the page shows.
- ``weights``: the effective pooling weights 1/(hw) + lambda * softmax(T s_c), summed over the
  heads (the class logit is sum_p weights(p) s_c(p)); one-hot at the peak for T = 99, uniform at
  lambda = 0 (then it ranks like the random map).
- ``gradcam``: Grad-CAM of the class logit at lambda, through Captum's LayerGradCam (ReLU'd, as
  in the paper) on the layer whose output is ``model.forward_features(x)``: the (B, D, h, w)
  map that csra.backbone.FAMILIES says how each family yields (for a wrapped classifier, the
  trunk before its global pool), the layer the CSRA head reads. On that layer Grad-CAM is
  (1 + lambda) ReLU(csra map) / (h w) for every CSRA head, any lambda and any number of heads
  (the class logit depends on the features only through the score maps, and shifting every
  s_kc by t shifts the logit by (1 + lambda) t), so the two rank alike wherever the CSRA map is
  positive and differ only in the order of the rest (tests/test_faithfulness.py).
- ``centre``: a Gaussian in the middle of the image (sigma a quarter of each side); its maximum
  is the image centre, TorchRay's centre baseline.
- ``random``: uniform noise on the model's feature grid (seeded), so it is as coarse as the
  maps it stands beside.

Protocols (sources and discussion in docs/faithfulness.md):

- Deletion / insertion (Petsiuk, Das & Saenko, RISE, BMVC 2018): the input pixels are ranked by
  the map, bilinearly upsampled to the model input (equal values in a seeded random order).
  Deletion replaces the first k pixels by the baseline, insertion puts them into the baseline;
  the baseline is the input blurred (RISE's 11 px Gaussian kernel with sigma 5 at 224 px, scaled
  with the input side). k = round(i * H * W / steps) for i = 0..steps; the curve is the model's
  probability of the class (sigmoid for a multi-label model, softmax for a wrapped ImageNet
  classifier), the AUC its trapezoid over the fractions k / (H * W) in [0, 1]. A faithful map
  gives a low deletion AUC and a high insertion AUC. The perturbed images run in batches.
- Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016,
  as TorchRay's benchmark/pointing_game.py scores it): the maximum of the map upsampled to the
  image is a hit when some pixel of the class's boxes lies closer than 15 pixels to it;
  accuracy of a class = hits / (hits + misses), the score = the mean over the classes.
- Energy pointing game (Wang et al., Score-CAM, CVPR workshops 2020): the share of the map's
  positive mass, upsampled to the image, inside the union of the class's boxes.

Boxes are (xmin, ymin, xmax, ymax) in VOC's 1-based inclusive pixels (training.datasets gives
COCO's boxes the same way); points are 0-based (x, y) pixels. Captum is imported only where
Grad-CAM is computed, so ``import csra`` does not pay for it.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from .visualize import upsample

METHODS = ("csra", "weights", "gradcam", "centre", "random")
PAGE_METHODS = ("csra", "gradcam", "random")
TOLERANCE = 15          # pixels: TorchRay's pointing-game tolerance
CENTRE_GRID = 15        # odd: the middle cell's centre is the image centre
CENTRE_SIGMA = 0.25     # of each image side
RISE_SIDE, RISE_KERNEL, RISE_SIGMA = 224, 11, 5.0   # RISE's blur: 11 px kernel, sigma 5, at 224 px


class Cancelled(Exception):
    """check_map (or measure_image) stopped because should_stop() returned True."""


# ------------------------------------------------------------------ the pointing game

def box_distance2(x, y, boxes):
    """Squared distance from 0-based pixel(s) (x, y) to the nearest pixel of the union of boxes
    (VOC 1-based inclusive); inf without boxes. x, y: numbers or broadcastable arrays."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    best = np.full(np.broadcast(x, y).shape, np.inf)
    for xmin, ymin, xmax, ymax in b - [1, 1, 1, 1]:
        dx = np.maximum(np.maximum(xmin - x, x - xmax), 0.0)
        dy = np.maximum(np.maximum(ymin - y, y - ymax), 0.0)
        best = np.minimum(best, dx * dx + dy * dy)
    return best


def _hits(d2, tolerance):
    """TorchRay's rule: a box pixel at distance < tolerance; tolerance 0 means inside a box."""
    return (d2 == 0) | (d2 < float(tolerance) ** 2)


def point_hits(x, y, boxes, tolerance=TOLERANCE):
    """Is pixel (x, y) closer than `tolerance` pixels to a box (tolerance 0: inside one)?"""
    return bool(_hits(box_distance2(x, y, boxes), tolerance))


def point_in_boxes(x, y, boxes):
    """Is pixel (x, y) (0-based column, row) inside any of the boxes (VOC: 1-based inclusive)?"""
    return point_hits(x, y, boxes, tolerance=0)


def box_cover_fraction(boxes, width, height, tolerance=0):
    """Fraction of a width x height image's pixels that would score a hit: a uniformly random
    point's hit rate (tolerance 0: the pixels inside the union of the boxes)."""
    d2 = box_distance2(np.arange(int(width))[None, :], np.arange(int(height))[:, None], boxes)
    return float(_hits(d2, tolerance).mean())


def box_mask(boxes, width, height):
    """(height, width) bool mask of the union of the boxes."""
    return box_distance2(np.arange(int(width))[None, :], np.arange(int(height))[:, None], boxes) == 0


def pointing_game(points, boxes, classes=None, tolerance=TOLERANCE):
    """The pointing game over (image, class) pairs, TorchRay's way.

    points: one (x, y) pixel per pair (the map's maximum); boxes: for each pair, the class's
    boxes in that image; classes: each pair's class (None: all one class). A hit: a box pixel
    closer than `tolerance` (tolerance 0: the point inside a box). Returns pointing_accuracy's
    dict.
    """
    if len(points) != len(boxes):
        raise ValueError(f"{len(points)} points but {len(boxes)} box lists")
    return pointing_accuracy([point_hits(x, y, b, tolerance) for (x, y), b in zip(points, boxes)], classes)


def pointing_accuracy(hits, classes=None):
    """Hits of (image, class) pairs -> "accuracy" (percent: the mean over the classes that have
    pairs of hits / (hits + misses), TorchRay's figure), "hit_rate" (percent of all pairs),
    "hits", "total" and "per_class" {class: {hits, total, accuracy}}; NaN figures without pairs."""
    classes = [0] * len(hits) if classes is None else list(classes)
    if len(classes) != len(hits):
        raise ValueError(f"{len(hits)} pairs but {len(classes)} classes")
    per_class = {}
    for hit, c in zip(hits, classes):
        entry = per_class.setdefault(c, {"hits": 0, "total": 0})
        entry["hits"] += bool(hit)
        entry["total"] += 1
    for entry in per_class.values():
        entry["accuracy"] = 100.0 * entry["hits"] / entry["total"]
    total = len(hits)
    found = sum(e["hits"] for e in per_class.values())
    nan = float("nan")
    return {"accuracy": float(np.mean([e["accuracy"] for e in per_class.values()])) if total else nan,
            "hit_rate": 100.0 * found / total if total else nan, "hits": int(found), "total": int(total),
            "per_class": per_class}


def map_peak(score_map, width, height):
    """Pixel (x, y) of a (h, w) map's maximum once upsampled to a width x height image.

    Bilinear upsampling of a map to the image peaks exactly at the centre of the map's highest
    cell (interpolation never exceeds the nodes), so that centre is the upsampled map's peak.
    Taking it directly also avoids the flat border band that bilinear upsampling
    (align_corners=False) creates, where a plain argmax would land on the band's corner.
    """
    m = np.asarray(score_map)
    h, w = m.shape
    row, col = np.unravel_index(int(np.argmax(m)), m.shape)
    return int((col + 0.5) * width / w), int((row + 0.5) * height / h)


def energy_share(saliency, boxes, width, height):
    """Energy pointing game: the share of the map's positive mass, upsampled to the image,
    inside the union of the boxes (NaN when the map has no positive mass)."""
    up = np.clip(upsample(saliency, (int(height), int(width))), 0.0, None)
    total = float(up.sum(dtype=np.float64))
    if not total > 0:
        return float("nan")
    return float(up[box_mask(boxes, width, height)].sum(dtype=np.float64) / total)


# ------------------------------------------------------------------ the maps

def class_map(maps, c):
    """(K, C, h, w) score maps -> class c's map summed over the heads (the page's heatmap)."""
    return maps[:, c].sum(dim=0)


def pooling_weight_map(head, maps, c, lam):
    """(h, w) effective pooling weights 1/(hw) + lam * softmax(T * s_c) of class c, summed over
    the heads: sum_k sum_p weights_k(p) s_kc(p) (+ bias) is class c's logit at lam."""
    h, w = maps.shape[-2:]
    attention = head.attention_weights(maps[None, :, c:c + 1])[0, :, 0]
    return (1.0 / (h * w) + float(lam) * attention).sum(dim=0)


def centre_map(grid=CENTRE_GRID, sigma=CENTRE_SIGMA):
    """(grid, grid) Gaussian around the middle cell, sigma a fraction of the side; upsampled to
    any image its maximum is the image centre (TorchRay's centre baseline)."""
    t = (np.arange(grid) + 0.5) / grid - 0.5
    return np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma ** 2)).astype(np.float32)


def random_map(shape, rng):
    """Uniform noise on a grid of `shape`: a random ranking of the cells."""
    return rng.random(shape).astype(np.float32)


def logits_at(model, lam):
    """images -> (B, C) logits of model at lambda lam (its head's own maps and pooling)."""
    head = model.head

    def forward(images):
        return head.logits_from_maps(head.score_maps(model.forward_features(images)), lam=lam)
    return forward


class FeatureLayer(nn.Identity):
    """The feature layer as a module of its own: its output is model.forward_features(x), the
    (B, D, h, w) map every backbone family yields (csra.backbone.FAMILIES), handed to Captum."""


def gradcam_maps(head, features, classes, lam):
    """(n, h, w) Grad-CAM maps of the classes from one image's features (1, D, h, w), which are
    model.forward_features(x): Captum's LayerGradCam on that layer (ReLU'd, as in the paper) for
    the class logits at lambda lam. Only the head runs forward and backward: Grad-CAM needs the
    layer's output and the gradient of the logit with respect to it, nothing below the layer.
    LayerGradCam(model's logits, model.backbone) on the image gives the same maps
    (tests/test_faithfulness.py)."""
    from captum.attr import LayerGradCam  # lazily: import csra stays fast

    if any(p.is_inference() for p in head.parameters()):
        raise ValueError("Grad-CAM needs a model loaded outside torch.inference_mode() "
                         "(its weights are inference tensors and cannot take part in a backward pass)")
    classes = [int(c) for c in classes]
    layer = FeatureLayer()

    def forward(f):
        return head.logits_from_maps(head.score_maps(layer(f)), lam=lam)
    with torch.inference_mode(False), torch.enable_grad():
        inputs = features.detach().clone().float().expand(len(classes), *features.shape[1:]).contiguous()
        cam = LayerGradCam(forward, layer).attribute(inputs, target=classes, relu_attributions=True)
    return cam[:, 0].detach()


# ------------------------------------------------------------------ deletion and insertion

def blur_baseline(x):
    """RISE's blurred baseline of (B, 3, H, W) inputs: an 11 px kernel with sigma 5 at 224 px,
    both scaled with the shorter side (reflected borders). Blurring commutes with the per-channel
    normalisation, so blurring the normalised input is the normalised blurred image."""
    scale = min(x.shape[-2:]) / RISE_SIDE
    radius = max(1, int(round((RISE_KERNEL // 2) * scale)))
    sigma = max(RISE_SIGMA * scale, 0.1)
    return gaussian_blur(x, [2 * radius + 1] * 2, [sigma] * 2)


def pixel_ranks(saliency, size, rng):
    """Rank of every pixel of the (H, W) input once `saliency` is upsampled to it (0 = first to
    go), highest value first, equal values in random order: (H * W,) int64."""
    values = upsample(np.asarray(saliency, dtype=np.float32), size).reshape(-1)
    order = np.lexsort((rng.random(values.size), -values))
    ranks = np.empty(values.size, dtype=np.int64)
    ranks[order] = np.arange(values.size)
    return ranks


def auc(y, x=None):
    """Trapezoid area under y over x (default: evenly spaced on [0, 1])."""
    y = np.asarray(y, dtype=np.float64)
    x = np.linspace(0.0, 1.0, len(y)) if x is None else np.asarray(x, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def step_counts(pixels, steps):
    """Pixels changed at each of the steps + 1 points: round(i * pixels / steps), i = 0..steps."""
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    return np.rint(np.arange(int(steps) + 1) * pixels / int(steps)).astype(np.int64)


def _poll(should_stop):
    if should_stop is not None and should_stop():
        raise Cancelled("stopped by should_stop()")


@dataclass
class FirstPass:
    """One image through the network once, with its baseline: what every map and curve needs."""
    x: torch.Tensor             # (1, 3, H, W) model input
    baseline: torch.Tensor      # (1, 3, H, W) the blurred input
    features: torch.Tensor      # (1, D, h, w) model.forward_features(x)
    maps: torch.Tensor          # (K, C, h, w) score maps of x
    untouched: np.ndarray       # (C,) probabilities of x at lambda
    blurred: np.ndarray         # (C,) probabilities of the baseline at lambda


def first_pass(model, x, lam):
    """x and its blurred baseline through the network as one batch of two."""
    with torch.inference_mode():
        baseline = blur_baseline(x)
        features = model.forward_features(torch.cat([x, baseline]))
        maps = model.head.score_maps(features)
        scores = model.scores(model.head.logits_from_maps(maps, lam=lam)).float().cpu().numpy()
    return FirstPass(x, baseline, features[:1], maps[0].float(), scores[0], scores[1])


def perturbation_curves(model, run, saliency, lam, steps=12, batch_size=8, should_stop=None, rng=None):
    """Deletion and insertion curves of one image (a FirstPass) for several (class, map) pairs.

    saliency: {key: (class index, (h, w) map)}. Returns (fractions (steps + 1,), {key:
    (deletion, insertion)}). The untouched and the fully baselined image, both curves' ends for
    every key, ran in the first pass; the steps - 1 inner points of every curve run here, in
    batches of at most batch_size images; a perturbed image that another key's curve needs
    too (the same class and pixels: the CSRA map and Grad-CAM often rank the first pixels
    alike) runs once. should_stop() is asked before every batch; True raises Cancelled.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    forward = logits_at(model, lam)
    x, baseline = run.x, run.baseline
    size = tuple(x.shape[-2:])
    counts = step_counts(size[0] * size[1], steps)
    inner = len(counts) - 2
    keys = list(saliency)
    jobs = [(j, i, deleting) for j in range(len(keys)) for deleting in (True, False) for i in range(1, inner + 1)]
    probabilities = np.empty(len(jobs), dtype=np.float64)
    classes = np.array([saliency[keys[j]][0] for j, _, _ in jobs], dtype=np.int64)
    ranks = [torch.from_numpy(pixel_ranks(saliency[k][1], size, rng)).to(x.device) for k in keys]
    # identical perturbed images run once: unique lists the jobs that run, runner_of gives
    # each job the index of the one that runs for it
    masks, first_of, unique, runner_of = [], {}, [], []
    for n, (j, i, deleting) in enumerate(jobs):
        mask = ranks[j] < int(counts[i])
        key = (int(classes[n]), deleting, mask.cpu().numpy().tobytes())
        if key not in first_of:
            first_of[key] = len(unique)
            unique.append(n)
            masks.append(mask)
        runner_of.append(first_of[key])
    found = np.empty(len(unique), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(unique), int(batch_size)):
            _poll(should_stop)
            part = unique[start:start + int(batch_size)]
            changed = torch.stack(masks[start:start + len(part)]).view(len(part), 1, *size)
            deleting = torch.tensor([jobs[n][2] for n in part], device=x.device).view(-1, 1, 1, 1)
            # deletion: the changed pixels come from the baseline; insertion: from the image
            images = torch.where(changed == deleting, baseline, x)
            scores = model.scores(forward(images)).float()
            wanted = torch.from_numpy(classes[part]).to(x.device)
            found[start:start + len(part)] = scores.gather(1, wanted[:, None])[:, 0].cpu().numpy()
    probabilities[:] = found[runner_of]
    curves = {}
    for j, key in enumerate(keys):
        c, first = saliency[key][0], 2 * inner * j
        deletion = np.r_[run.untouched[c], probabilities[first:first + inner], run.blurred[c]]
        insertion = np.r_[run.blurred[c], probabilities[first + inner:first + 2 * inner], run.untouched[c]]
        curves[key] = (deletion.astype(np.float64), insertion.astype(np.float64))
    return counts / float(size[0] * size[1]), curves


# ------------------------------------------------------------------ one image, several classes

def _device(model):
    return next(model.parameters()).device


def _check_methods(methods):
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown map method(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"known: {', '.join(METHODS)}")
    return methods


def saliency_maps(model, run, classes, methods, lam, rng):
    """{method: [(h', w') float32 numpy map per class]} of an image's FirstPass."""
    grid = tuple(run.maps.shape[-2:])
    out = {}
    for method in methods:
        if method == "csra":
            out[method] = [class_map(run.maps, c).cpu().numpy() for c in classes]
        elif method == "weights":
            out[method] = [pooling_weight_map(model.head, run.maps, c, lam).cpu().numpy() for c in classes]
        elif method == "gradcam":
            out[method] = (list(gradcam_maps(model.head, run.features, classes, lam).cpu().numpy())
                           if len(classes) else [])
        elif method == "centre":
            out[method] = [centre_map() for _ in classes]
        else:
            out[method] = [random_map(grid, rng) for _ in classes]
    return out


@dataclass
class MethodCheck:
    """One map's evidence: the map (on its own grid) and its deletion and insertion curves."""
    map: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float

    def to_dict(self):
        return {"map": self.map.tolist(), "deletion": self.deletion.tolist(),
                "insertion": self.insertion.tolist(), "deletion_auc": self.deletion_auc,
                "insertion_auc": self.insertion_auc}


@dataclass
class MapCheck:
    """check_map's answer for one image and one class."""
    class_index: int
    class_name: str
    lam: float
    kind: str                      # "sigmoid" or "softmax": what the probabilities are
    steps: int
    fractions: np.ndarray          # (steps + 1,) share of the input's pixels changed, 0 .. 1
    probability: float             # the untouched image's (deletion starts, insertion ends here)
    baseline_probability: float    # the fully blurred image's (deletion ends, insertion starts here)
    methods: dict = field(default_factory=dict)   # method -> MethodCheck, in the order asked
    seconds: float = 0.0

    def to_dict(self):
        return {"class_index": self.class_index, "class_name": self.class_name, "lam": self.lam,
                "kind": self.kind, "steps": self.steps, "fractions": self.fractions.tolist(),
                "probability": self.probability, "baseline_probability": self.baseline_probability,
                "methods": {k: v.to_dict() for k, v in self.methods.items()}, "seconds": self.seconds}


def check_map(model, image, class_index, lam=None, steps=12, methods=PAGE_METHODS, batch_size=8,
              should_stop=None, seed=0):
    """Deletion and insertion curves of the maps of one class on one image, side by side.

    model: a CSRAModel (any backbone; the embedded classifier too) on its device.
    image: an RGB PIL image (preprocessed here with model.preprocessing). class_index: the class.
    lam: lambda of the logits and of the pooling weights (default model.lam). steps: points per
    curve minus one (12: 0, 1/12, ..., 1 of the pixels). methods: any of METHODS.
    batch_size: perturbed images per forward pass; one batch is the longest stretch between
    two calls of should_stop(). should_stop: a callable asked before every forward pass; when
    it returns True, check_map raises Cancelled. seed: the random map and the order of tied
    pixels. Returns a MapCheck (methods in the order asked).

    Cost: one forward pass of 2 images (the image and its baseline), Grad-CAM's head-only
    backward, and len(methods) * 2 * (steps - 1) perturbed images in batches.
    """
    start = time.perf_counter()
    methods = _check_methods(methods)
    c = int(class_index)
    if not 0 <= c < model.config.num_classes:
        raise ValueError(f"class_index {class_index!r}: the model has classes 0..{model.config.num_classes - 1}")
    step_counts(1, steps)
    lam = model.lam if lam is None else float(lam)
    rng = np.random.default_rng(seed)
    model.eval()
    _poll(should_stop)
    run = first_pass(model, model.preprocessing(image)[None].to(_device(model)), lam)
    maps = saliency_maps(model, run, [c], methods, lam, rng)
    fractions, curves = perturbation_curves(model, run, {m: (c, maps[m][0]) for m in methods}, lam, steps,
                                            batch_size, should_stop, rng)
    checks = {}
    for m in methods:
        deletion, insertion = curves[m]
        checks[m] = MethodCheck(maps[m][0], deletion, insertion, auc(deletion, fractions), auc(insertion, fractions))
    return MapCheck(c, model.class_names[c], lam, model.score_kind, int(steps), fractions,
                    float(run.untouched[c]), float(run.blurred[c]), checks, time.perf_counter() - start)


# ------------------------------------------------------------------ datasets: pairs with boxes

@dataclass
class Pair:
    """A class present in an image, with its boxes; difficult: all its objects are VOC-difficult
    (TorchRay leaves such pairs out; they are scored apart, pointing games only)."""
    class_index: int
    boxes: list
    difficult: bool = False


def measure_image(model, image, pairs, methods=METHODS, lam=None, steps=12, batch_size=8, rng=None,
                  should_stop=None, curves=True, tolerance=TOLERANCE):
    """Every map of every pair of one image: pointing hit, energy share and (for the pairs that
    are not difficult, when curves is True) deletion and insertion curves.

    image: RGB PIL image; pairs: [Pair]; tolerance: the pointing game's, in image pixels.
    Returns (fractions or None, records), one record per (pair, method): {"class", "difficult",
    "method", "point", "hit", "energy", "deletion", "insertion", "deletion_auc", "insertion_auc"}
    (curves None and AUCs NaN where not measured).
    """
    methods = _check_methods(methods)
    rng = np.random.default_rng(0) if rng is None else rng
    lam = model.lam if lam is None else float(lam)
    width, height = image.size
    run = first_pass(model, model.preprocessing(image)[None].to(_device(model)), lam)
    classes = [p.class_index for p in pairs]
    maps = saliency_maps(model, run, classes, methods, lam, rng)
    wanted = {(k, m): (pairs[k].class_index, maps[m][k]) for k in range(len(pairs)) for m in methods
              if curves and not pairs[k].difficult}
    fractions, measured = None, {}
    if wanted:
        fractions, measured = perturbation_curves(model, run, wanted, lam, steps, batch_size, should_stop, rng)
    records = []
    for k, pair in enumerate(pairs):
        for m in methods:
            point = map_peak(maps[m][k], width, height)
            deletion, insertion = measured.get((k, m), (None, None))
            records.append({
                "class": pair.class_index, "difficult": pair.difficult, "method": m, "point": point,
                "hit": point_hits(*point, pair.boxes, tolerance),
                "energy": energy_share(maps[m][k], pair.boxes, width, height),
                "deletion": deletion, "insertion": insertion,
                "deletion_auc": auc(deletion, fractions) if deletion is not None else float("nan"),
                "insertion_auc": auc(insertion, fractions) if insertion is not None else float("nan")})
    return fractions, records


def _mean(values):
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def summarize(records, methods=METHODS):
    """One row per method over measure_image's records: "pointing" (TorchRay: the class mean, in
    percent, over the pairs that are not difficult), "pointing_pooled" (percent of those pairs),
    "pointing_difficult" (the class mean over the difficult-only pairs), "energy" (mean share,
    percent; maps without positive mass left out and counted in "energy_undefined"), the mean
    "deletion_auc" and "insertion_auc", the pair counts and the mean curves."""
    rows = []
    for m in methods:
        easy = [r for r in records if r["method"] == m and not r["difficult"]]
        hard = [r for r in records if r["method"] == m and r["difficult"]]
        game = pointing_accuracy([r["hit"] for r in easy], [r["class"] for r in easy])
        curved = [r for r in easy if r["deletion"] is not None]
        energies = [r["energy"] for r in easy]
        rows.append({
            "method": m, "pairs": len(easy), "difficult_pairs": len(hard),
            "pointing": game["accuracy"], "pointing_pooled": game["hit_rate"],
            "pointing_difficult": pointing_accuracy([r["hit"] for r in hard], [r["class"] for r in hard])["accuracy"],
            "energy": 100.0 * _mean(energies), "energy_undefined": sum(math.isnan(e) for e in energies),
            "deletion_auc": _mean([r["deletion_auc"] for r in curved]),
            "insertion_auc": _mean([r["insertion_auc"] for r in curved]),
            "deletion_curve": np.mean([r["deletion"] for r in curved], axis=0) if curved else None,
            "insertion_curve": np.mean([r["insertion"] for r in curved], axis=0) if curved else None,
        })
    return rows
