"""Everything the page shows, computed without Gradio: the handlers app/ui.py wires to events.

upload() is what a new image costs (decode, one network run, all pictures);
refresh() is what a slider move costs (scores from the cached maps, pictures
redrawn with OpenCV). bench/app_latency.py times these two functions.
"""
import html
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import csra

from . import render
from .inference import analyse, scores_at, shown_classes, threshold_logit

MAX_PIXELS = csra.preprocess.MAX_PIXELS  # larger images are refused before decoding (bombs)
FULL_TABLE_LIMIT = 50     # models with more classes show only the top-k rows
CHART_ROWS = 30           # bars in the logit chart (most probable classes first)
MAX_HEATMAPS = 12         # at most this many "present" classes get a heatmap
TABLE_HEADERS = ["class", "probability", "logit", "base (avg pool)", "λ × attention", "present"]

LAMBDA_TEXT = (
    "**What λ does.** The head turns the image's feature grid (h×w positions p) into one score "
    "map s_c per class. The class logit is Σ_p s_c(p) · (1/HW + λ · softmax(T·s_c)(p)): "
    "the first term is plain average pooling — every position counts the same (blue bars); "
    "the second is class-specific attention that adds weight where this class scores highest "
    "(orange bars; T = 99 puts it all on the single best position, i.e. max pooling). λ = 0 is an "
    "ordinary average-pooling classifier; larger λ lets small or off-centre objects count more. "
    "Moving λ reuses this image's cached score maps — the network does not run again.")


@dataclass
class Controls:
    """The page's settings, as the handlers receive them."""
    lam: float = 0.1
    threshold: float = 0.5
    top_k: int = 20
    alpha: float = 0.5
    scale: str = "global"
    picked: tuple = ()          # class names to draw besides the present ones
    focus: str | None = None    # class of the comparison view and the pooling-weight map

    def clean(self):
        picked = self.picked if isinstance(self.picked, (list, tuple)) else (
            () if not self.picked else (self.picked,))
        return replace(self, lam=float(self.lam), threshold=float(self.threshold),
                       top_k=max(1, int(self.top_k)), alpha=min(max(float(self.alpha), 0.0), 1.0),
                       scale=self.scale if self.scale in render.SCALES else "global",
                       picked=tuple(picked))


@dataclass
class PageView:
    status: str = ""
    table: dict = field(default_factory=lambda: {"headers": TABLE_HEADERS, "data": []})
    chart: str = ""
    legend: str = ""
    gallery: list = field(default_factory=list)      # [(RGB uint8, caption)]
    comparison: list = field(default_factory=list)   # [(RGB uint8, caption)]
    weights_picture: np.ndarray | None = None
    weights_text: str = ""
    focus: str | None = None
    shown: list = field(default_factory=list)        # class names in the gallery
    scores: object = None


def display_name(path):
    return Path(str(path)).name or "image"


def open_image(path, max_pixels=MAX_PIXELS):
    """RGB PIL image from an uploaded file; csra.ImageError with a one-line message naming it."""
    name = display_name(path)
    try:
        return csra.load_image(str(path), max_pixels=max_pixels)
    except csra.ImageError as err:
        raise csra.ImageError(str(err).replace(str(path), name)) from None


def upload(model, path, controls, model_key="", max_pixels=MAX_PIXELS):
    """A new image: decode, run the network once, draw everything. -> (Analysis, PageView)."""
    image = open_image(path, max_pixels)
    analysis = analyse(model, image, name=display_name(path), model_key=model_key, source=str(path))
    return analysis, refresh(analysis, controls)


def refresh(analysis, controls):
    """All of the page from the cached maps at the controls' lambda: no network run."""
    c = controls.clean()
    scores = scores_at(analysis, c.lam)
    names = analysis.class_names
    index = {n: i for i, n in enumerate(names)}
    picked = [index[n] for n in c.picked if n in index]
    shown = shown_classes(scores, c.threshold, picked, MAX_HEATMAPS)
    order = scores.order()
    rows = order if len(names) <= FULL_TABLE_LIMIT else order[:c.top_k]
    focus = c.focus if c.focus in index else (names[shown[0]] if shown else names[order[0]])
    f = index[focus]
    present = scores.present(c.threshold)
    t_logit = threshold_logit(c.threshold, scores.kind)
    return PageView(
        status=status_text(analysis, scores, c),
        table=score_table(names, scores, rows, present),
        chart=render.logit_chart_svg(names, scores, rows[:CHART_ROWS], threshold=t_logit),
        legend=render.scale_legend_html(analysis, c.scale),
        gallery=render.heatmap_gallery(analysis, scores, shown, c.scale, c.alpha),
        comparison=render.comparison_panels(analysis, f, c.scale, c.alpha),
        weights_picture=render.pooling_weight_picture(analysis, f, c.lam),
        weights_text=render.pooling_weight_text(analysis, f, c.lam),
        focus=focus,
        shown=[names[i] for i in shown],
        scores=scores,
    )


def score_table(names, scores, rows, present):
    data = [[names[i], round(float(scores.probabilities[i]), 4), round(float(scores.logits[i]), 3),
             round(float(scores.base[i]), 3), round(float(scores.attention[i]), 3), bool(present[i])]
            for i in rows]
    return {"headers": TABLE_HEADERS, "data": data}


def status_text(analysis, scores, c):
    names = analysis.class_names
    present = [i for i in scores.order() if scores.probabilities[i] >= c.threshold]
    h, w = analysis.grid
    size = (f"{analysis.original_size[0]}×{analysis.original_size[1]} px, "
            if analysis.original_size else "")
    kind = ("sigmoid per class (multi-label)" if scores.kind == "sigmoid"
            else f"softmax over {len(names)} classes")
    found = ", ".join(f"{html.escape(names[i])} ({scores.probabilities[i]:.2f})" for i in present[:8])
    more = f" and {len(present) - 8} more" if len(present) > 8 else ""
    return (f"**{html.escape(analysis.name)}** — {size}{h}×{w} score maps, λ = {c.lam:.2f}, "
            f"{kind}. Present at p ≥ {c.threshold:.2f}: {found + more if present else 'none'}.")


def download_pictures(analysis, view):
    """The overlays (and comparison panels, pooling weights) of a view, with file stems."""
    pictures = [(img, f"overlay_{cap.split(' · ')[0]}") for img, cap in view.gallery]
    if view.focus:
        kinds = ("image", "avgpool_contribution", "attention", "score_map")
        pictures += [(img, f"compare_{view.focus}_head{i // 4 + 1}_{kinds[i % 4]}")
                     for i, (img, _) in enumerate(view.comparison) if i % 4]
        if view.weights_picture is not None:
            pictures.append((view.weights_picture, f"pooling_weights_{view.focus}"))
    return pictures
