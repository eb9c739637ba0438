"""Everything the page shows, computed without Gradio: the handlers app/ui.py wires to events.

upload() is what a new image costs (decode, one network run, the numbers the
browser needs and the present classes' heatmap tiles); the browser then
recomputes scores, table, chart and captions at any lambda and threshold by
itself (app/explorer.js). changes() answers every later control event with
only the pictures the page does not hold yet. refresh() draws a whole view
from the cached maps (API clients, downloads, bench/app_latency.py).
"""
import html
import itertools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import csra

from . import render
from .inference import analyse, score_rows, scores_at, shown_classes, threshold_logit

MAX_PIXELS = csra.preprocess.MAX_PIXELS  # larger images are refused before decoding (bombs)
MAX_DECODE_BYTES = 300 * 2 ** 20   # memory one decode may hold (csra.preprocess.decode_bytes):
                                   # a 50-megapixel RGB photo, turned by its EXIF, fits
FULL_TABLE_LIMIT = 50     # models with more classes show only the top-k rows
MAX_HEATMAPS = 12         # at most this many "present" classes get a heatmap
MAX_PICKED = 12           # at most this many extra classes picked by hand
TOP_K_RANGE = (1, 1000)   # table rows an API client may ask for (the slider: 5..100)
_SERIAL = itertools.count(1)  # tells the browser a new analysis from an old one

LAMBDA_TEXT = (
    "**What λ does.** The head turns the image's feature grid (h×w positions p) into one score "
    "map s_c per class. The class logit is Σ_p s_c(p) · (1/HW + λ · softmax(T·s_c)(p)): "
    "the first term is plain average pooling — every position counts the same (blue bars); "
    "the second is class-specific attention that adds weight where this class scores highest "
    "(orange bars; T = 99 puts it all on the single best position, i.e. max pooling). λ = 0 is an "
    "ordinary average-pooling classifier; larger λ lets small or off-centre objects count more. "
    "Moving λ reuses this image's cached score maps — the network does not run again, and the "
    "scores are recomputed in your browser.")


class BadControl(ValueError):
    """A control value the page cannot use (the message says which and why)."""


def quoted(value, limit=40):
    """A value as a message quotes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def number(value, name, low, high, what="a number"):
    """A finite number in [low, high], or BadControl naming the control. Only numbers and
    numeric text are taken (not True, a list, or 1e308 for a whole number of rows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadControl(f"{name} must be {what} between {low:g} and {high:g}, got {quoted(value)}")
    try:
        v = float(value)
    except (ValueError, OverflowError):
        raise BadControl(f"{name} must be {what} between {low:g} and {high:g}, "
                         f"got {quoted(value)}") from None
    if not math.isfinite(v) or not low <= v <= high:
        raise BadControl(f"{name} must be between {low:g} and {high:g}, got {quoted(value)}")
    return v


def unit_interval(value, name):
    """A finite number in [0, 1], or BadControl naming the control."""
    return number(value, name, 0.0, 1.0)


def class_names(value, name):
    """A list of class names (text) from a control, or BadControl naming it."""
    if value is None or value == "":
        return ()
    values = value if isinstance(value, (list, tuple)) else (value,)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise BadControl(f"{name} must be class names, got {quoted(bad[0])}")
    return tuple(values)


@dataclass
class Controls:
    """The page's settings, as the handlers receive them (from the page or any API client)."""
    lam: float = 0.1
    threshold: float = 0.5
    top_k: int = 20
    alpha: float = 0.5
    scale: str = "global"
    picked: tuple = ()          # class names to draw besides the present ones
    focus: str | None = None    # class of the comparison view and the pooling-weight map

    def clean(self):
        """Checked values, or BadControl with one line naming the first control that is
        wrong: λ, threshold and opacity numbers in [0, 1], the table rows a whole number in
        TOP_K_RANGE, the colour scale one of render.SCALES, the classes text; picked names
        de-duplicated and capped at MAX_PICKED."""
        lam = unit_interval(self.lam, "λ")
        threshold = unit_interval(self.threshold, "threshold")
        top_k = round(number(self.top_k, "table rows (top-k)", *TOP_K_RANGE, "a whole number"))
        alpha = unit_interval(self.alpha, "heatmap opacity")
        if not isinstance(self.scale, str) or self.scale not in render.SCALES:
            raise BadControl(f"colour scale must be one of {', '.join(render.SCALES)}, "
                             f"got {quoted(self.scale)}")
        picked = tuple(dict.fromkeys(class_names(self.picked, "also show these classes")))
        if self.focus is not None and not isinstance(self.focus, str):
            raise BadControl(f"class must be a class name, got {quoted(self.focus)}")
        return replace(self, lam=lam, threshold=threshold, top_k=top_k, alpha=alpha,
                       picked=picked[:MAX_PICKED], focus=self.focus or None)


def model_key(store, label):
    """The ModelStore key of a model's label (or key), or BadControl listing the labels."""
    if isinstance(label, str):
        try:
            return store.key_for(label)
        except KeyError:
            pass
    raise BadControl(f"model must be one of: {'; '.join(store.labels)}; got {quoted(label)}")


@dataclass
class PageView:
    """What a handler hands the page; None means 'leave it as it is'."""
    status: str | None = None
    scores: dict | None = None      # the numbers the browser rescores at any lambda
    heatmaps: dict | None = None    # {"key", "legend", "tiles": {index: data URI}, "picked"}
    closeup: str | None = None      # comparison panels (HTML)
    weights: str | None = None      # pooling-weight picture and text (HTML)
    focus: str | None = None
    shown: list = field(default_factory=list)   # class names with a heatmap tile
    rows: list = field(default_factory=list)    # score rows at the controls' lambda


def display_name(path):
    return Path(str(path)).name or "image"


def open_image(path, max_pixels=MAX_PIXELS, name=None, max_bytes=MAX_DECODE_BYTES):
    """RGB PIL image from an uploaded file (a path, or a file object such as a pasted
    image's bytes); csra.ImageError with a one-line message naming it."""
    is_path = isinstance(path, (str, os.PathLike))
    name = name or (display_name(path) if is_path else getattr(path, "name", None) or "image")
    try:
        return csra.load_image(str(path) if is_path else path, max_pixels=max_pixels,
                               max_bytes=max_bytes)
    except csra.ImageError as err:
        text = str(err)
        if is_path:
            text = text.replace(str(path), name)
        elif not text.startswith(f"{name}:"):
            text = f"{name}: {text.partition(': ')[2] or text}"
        raise csra.ImageError(text) from None


def serial(analysis):
    return analysis.sent.setdefault("serial", next(_SERIAL))


def kind_text(analysis):
    if analysis.kind == "sigmoid":
        return "sigmoid per class (multi-label)"
    return f"softmax over {len(analysis.class_names)} classes"


def scores_payload(analysis, c, with_rows=True):
    """The numbers the browser needs to rescore at any lambda and threshold, plus (with_rows)
    the server's own rows at the controls' values (the reference, and what API clients read;
    the page computes its own, and its upload call leaves them out)."""
    scores = scores_at(analysis, c.lam)
    names = list(analysis.class_names)
    index = {n: i for i, n in enumerate(names)}
    return {
        "image": serial(analysis), "name": analysis.name, "names": names,
        "base": [float(v) for v in analysis.base], "attention": [float(v) for v in analysis.attention_part],
        "kind": analysis.kind, "kind_text": kind_text(analysis), "lam": c.lam, "threshold": c.threshold,
        "top_k": c.top_k, "full_table_limit": FULL_TABLE_LIMIT, "max_tiles": MAX_HEATMAPS,
        "picked": [index[n] for n in c.picked if n in index],
        "threshold_logit": threshold_logit(c.threshold, analysis.kind),
        "rows": score_rows(analysis, scores, c.threshold) if with_rows else None,
    }


def shown(analysis, c):
    """Class indices with a heatmap tile at these controls (the browser picks the same ones)."""
    index = {n: i for i, n in enumerate(analysis.class_names)}
    picked = [index[n] for n in c.picked if n in index]
    return shown_classes(scores_at(analysis, c.lam), c.threshold, picked, MAX_HEATMAPS)


def tiles_payload(analysis, c, classes, only_new=False):
    """Heatmap tiles for classes; with only_new, just those this page has not been sent yet
    (None when there are none)."""
    key = render.tile_key(c.scale, c.alpha)
    sent = analysis.sent.setdefault("tiles", set())
    if analysis.sent.get("tile_key") != key:
        sent.clear()
        analysis.sent["tile_key"] = key
        only_new = False
    wanted = [i for i in classes if not (only_new and i in sent)]
    index = {n: i for i, n in enumerate(analysis.class_names)}
    picked = [index[n] for n in c.picked if n in index]
    if only_new and not wanted and analysis.sent.get("picked") == picked:
        return None
    sent.update(wanted)
    analysis.sent["picked"] = picked
    return {"image": serial(analysis), "key": key, "legend": render.scale_legend_html(analysis, c.scale),
            "tiles": render.heatmap_tiles(analysis, wanted, c.scale, c.alpha), "picked": picked}


def focus_class(analysis, c):
    names = analysis.class_names
    if c.focus in names:
        return c.focus
    classes = shown(analysis, c)
    return names[classes[0]] if classes else names[int(scores_at(analysis, c.lam).order()[0])]


def closeup_html(analysis, focus, c):
    f = analysis.class_names.index(focus)
    return render.figure_grid_html(render.comparison_panels(analysis, f, c.scale, c.alpha))


def weights_html(analysis, focus, c):
    f = analysis.class_names.index(focus)
    picture = render.pooling_weight_picture(analysis, f, c.lam)
    return (f'<div class="csra-weights"><img src="{render.data_uri(picture)}" '
            f'alt="effective pooling weights of {html.escape(focus)}">'
            f'<p>{render.pooling_weight_text(analysis, f, c.lam)}</p></div>')


def upload(model, path, controls, model_key="", max_pixels=MAX_PIXELS, name=None, with_rows=True):
    """A new image: decode, run the network once, and what the first view needs (the numbers
    and the present classes' heatmap tiles). -> (Analysis, PageView)."""
    c = controls.clean()
    name = name or display_name(path)
    image = open_image(path, max_pixels, name)
    analysis = analyse(model, image, name=name, model_key=model_key, source=str(path))
    return analysis, first_view(analysis, c, with_rows)


def first_view(analysis, c, with_rows=True):
    classes = shown(analysis, c)
    h, w = analysis.grid
    size = (f"{analysis.original_size[0]}×{analysis.original_size[1]} px, "
            if analysis.original_size else "")
    return PageView(
        status=f"{analysis.name} — {size}{h}×{w} score maps, {kind_text(analysis)}.",  # plain text
        scores=scores_payload(analysis, c, with_rows), heatmaps=tiles_payload(analysis, c, classes),
        focus=focus_class(analysis, c), shown=[analysis.class_names[i] for i in classes])


def changes(analysis, controls):
    """A control moved: only what the page does not hold yet — tiles of newly shown classes
    (or all of them at a new colour scale/opacity), the close-up when its class or look
    changed, the pooling weights when lambda or the class changed. Nothing is redrawn twice."""
    c = controls.clean()
    focus = focus_class(analysis, c)
    analysis.sent["focus"] = focus        # the class the page looks at (a check of another stops)
    view = PageView(focus=focus, heatmaps=tiles_payload(analysis, c, shown(analysis, c), only_new=True))
    closeup_key = (focus, c.scale, round(c.alpha, 2))
    if analysis.sent.get("closeup") != closeup_key:
        view.closeup = closeup_html(analysis, focus, c)
        analysis.sent["closeup"] = closeup_key
    weights_key = (focus, c.lam)
    if analysis.sent.get("weights") != weights_key:
        view.weights = weights_html(analysis, focus, c)
        analysis.sent["weights"] = weights_key
    return view


def refresh(analysis, controls):
    """A whole view from the cached maps at the controls' lambda (no network run): scores,
    every shown tile, the close-up and the pooling weights."""
    c = controls.clean()
    classes = shown(analysis, c)
    focus = focus_class(analysis, c)
    scores = scores_at(analysis, c.lam)
    order = scores.order()
    rows = order if len(order) <= FULL_TABLE_LIMIT else order[:c.top_k]
    return PageView(scores=scores_payload(analysis, c), heatmaps=tiles_payload(analysis, c, classes),
                    closeup=closeup_html(analysis, focus, c), weights=weights_html(analysis, focus, c),
                    focus=focus, shown=[analysis.class_names[i] for i in classes],
                    rows=score_rows(analysis, scores, c.threshold, rows))


def download_pictures(analysis, c):
    """Full-size overlays of the shown classes, the focus class's comparison panels and its
    pooling weights, with file stems (for the PNG zip)."""
    c = c.clean()
    names = analysis.class_names
    classes = shown(analysis, c)
    pictures = [(p, f"overlay_{names[i]}") for i, p in
                render.heatmaps(analysis, classes, c.scale, c.alpha).items()]
    focus = focus_class(analysis, c)
    f = names.index(focus)
    kinds = ("image", "avgpool_contribution", "attention", "score_map")
    pictures += [(img, f"compare_{focus}_head{i // 4 + 1}_{kinds[i % 4]}")
                 for i, (img, _) in enumerate(render.comparison_panels(analysis, f, c.scale, c.alpha))
                 if i % 4]
    pictures.append((render.pooling_weight_picture(analysis, f, c.lam), f"pooling_weights_{focus}"))
    return pictures
