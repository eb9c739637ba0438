"""Pictures for the page, from cached score maps, as JPEG data URIs the page shows directly.

Maps are upsampled, coloured on an explicit range and blended by
csra.visualize (bilinear for overlays, nearest where the feature grid itself
is the point; negative values are clipped to the cold end, never wrapped
around). Pictures go to the browser inside the page's HTML, never as files in
Gradio's cache, so concurrent requests never write the same file. The scores,
the chart and the captions are drawn in the browser (app/explorer.js).
"""
import base64
import html

import cv2
import numpy as np

from csra import visualize

from .inference import pooling_weights

SCALES = {
    "global": "global: one colour range for all classes of this image, so a class the model "
              "finds absent stays cold",
    "per-map": "per-map: every map stretched to its own min..max; shows where, not how strongly",
}
PANEL_SIZE = 224  # longest side of each pooling-weight picture
TILE_SIZE = 256   # longest side of each heatmap tile (shown at up to 240 CSS px)
JPEG_QUALITY = 85


def data_uri(rgb, quality=JPEG_QUALITY):
    """(H, W, 3) uint8 RGB -> 'data:image/jpeg;base64,...' for an <img src>."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def tile_image(analysis, size=TILE_SIZE):
    """The analysis image at tile size (made once per image)."""
    if "tile_image" not in analysis.pictures:
        image = analysis.image
        scale = size / max(image.shape[:2])
        new = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        analysis.pictures["tile_image"] = cv2.resize(image, new, interpolation=cv2.INTER_AREA)
    return analysis.pictures["tile_image"]


def colour_ranges(maps, scale):
    """(vmin, vmax) per class for (C, h, w) maps: one shared range or one per map."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return visualize.value_range(maps, scale)


def heatmaps(analysis, classes, scale="global", alpha=0.5, image=None):
    """{class index: overlay} for the given classes, on the chosen colour scale."""
    maps = analysis.class_maps
    lo, hi = colour_ranges(maps, scale)
    image = analysis.image if image is None else image
    return {int(c): visualize.overlay(image, maps[c], lo[c], hi[c], alpha) for c in classes}


def heatmap_tiles(analysis, classes, scale="global", alpha=0.5):
    """{class index: JPEG data URI} at tile size; each (class, scale, alpha) is encoded once
    per image, and only the newest scale/alpha is kept."""
    key = tile_key(scale, alpha)
    cache = analysis.pictures.setdefault("tiles", {})
    if cache.get("key") != key:
        cache.clear()
        cache["key"] = key
    missing = [c for c in classes if c not in cache]
    for c, picture in heatmaps(analysis, missing, scale, alpha, tile_image(analysis)).items():
        cache[c] = data_uri(picture)
    return {str(c): cache[c] for c in classes}  # JSON object keys


def tile_key(scale, alpha):
    return f"{scale}|{float(alpha):.2f}"


def figure_grid_html(pictures, css_class="csra-panels"):
    """[(RGB picture, caption)] -> a grid of <figure>s with escaped captions."""
    items = "".join(f'<figure><img src="{data_uri(p)}" alt="{html.escape(c)}">'
                    f'<figcaption>{html.escape(c)}</figcaption></figure>' for p, c in pictures)
    return f'<div class="{css_class}">{items}</div>'


def jet_stops(n=9):
    """n RGB colours evenly along the colour map, coldest first (for a CSS gradient)."""
    return [tuple(int(v) for v in visualize.RGB_LUT[i, 0]) for i in np.linspace(0, 255, n).astype(int)]


def colour_bar_html(low_label, high_label, note=""):
    stops = ", ".join(f"rgb{c}" for c in jet_stops())
    return (
        '<div class="csra-legend" style="display:flex;align-items:center;gap:8px;font-size:13px">'
        f'<span>{html.escape(low_label)}</span>'
        f'<span style="flex:0 0 180px;height:12px;border-radius:3px;'
        f'background:linear-gradient(to right, {stops})"></span>'
        f'<span>{html.escape(high_label)}</span>'
        f'<span style="opacity:0.8">{html.escape(note)}</span></div>')


def scale_legend_html(analysis, scale):
    """Says which colour scale is on and what the colours mean in score-map units."""
    maps = analysis.class_maps
    if scale == "global":
        lo, hi = colour_ranges(maps, "global")
        bar = colour_bar_html(f"{lo[0]:+.2f}", f"{hi[0]:+.2f}", "score-map units, all classes")
    else:
        bar = colour_bar_html("map min", "map max", "each map on its own range")
    return f'<div class="csra-scale-legend">Colour scale — {html.escape(SCALES[scale])}.{bar}</div>'


def _label(picture, text):
    """White text with a dark outline in the top-left corner (in place)."""
    org = (6, 18)
    cv2.putText(picture, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def comparison_panels(analysis, c, scale="global", alpha=0.5):
    """For class c and every head: image | average-pooling contribution s/HW |
    attention softmax(T * s) | score map over the image, as [(picture, caption)]."""
    image = analysis.image
    size = image.shape[:2]
    h, w = analysis.grid
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    name = analysis.class_names[c]
    panels = []
    for k, t in enumerate(analysis.temperatures):
        s = analysis.maps[k, c].numpy()
        att = analysis.attention[k, c].numpy()
        contribution = s / (h * w)
        bound = max(float(np.abs(contribution).max()), 1e-12)
        head = f"head {k + 1}, T = {t}" if len(analysis.temperatures) > 1 else f"T = {t}"
        if t == 99:
            att_text = "attention (T = 99: all weight on the peak = max pooling)"
        else:
            att_text = f"attention softmax({t}·s) over the {h}×{w} grid, 0..{att.max():.3f}"
        if scale == "global":  # this head's maps of all classes share one range
            head_maps = analysis.maps[k].numpy()
            head_range = (float(head_maps.min()), float(head_maps.max()))
        else:
            head_range = (float(s.min()), float(s.max()))
        head_range = (head_range[0], max(head_range[1], head_range[0] + 1e-12))
        panels += [
            (image, f"{name} · {head}: image"),
            (visualize.colorize(contribution, -bound, bound, size, nearest=True),
             f"average-pooling contribution s/HW (sum {contribution.sum():+.2f}; "
             f"blue < 0 < red, ±{bound:.3g})"),
            (visualize.colorize(att, 0.0, max(float(att.max()), 1e-12), size, nearest=True), att_text),
            (visualize.overlay(image, s, head_range[0], head_range[1], alpha),
             f"score map s over the image ({scale} scale)"),
        ]
    return panels


def pooling_weight_picture(analysis, c, lam, size=PANEL_SIZE):
    """The effective pooling weights 1/HW + lam * softmax(T * s_c) of class c, one panel per head.

    Coloured by log(weight / uniform weight) on a range fixed for the image
    (from 1x = blue to the largest ratio any lambda in [0, 1] reaches = red),
    so the picture is uniform blue at lam = 0 and its peaks warm up as lam grows.
    """
    h, w = analysis.grid
    hw = h * w
    weights = pooling_weights(analysis, c, lam)            # (K, h, w)
    top = pooling_weights(analysis, c, 1.0).max(axis=(1, 2))  # largest weight at lam = 1, per head
    image = analysis.image
    scale = size / max(image.shape[:2])
    small = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    pictures = []
    for k, t in enumerate(analysis.temperatures):
        ratio = np.log(np.maximum(weights[k] * hw, 1e-12))
        vmax = float(np.log(max(top[k] * hw, 1.0 + 1e-6)))
        picture = visualize.overlay(small, ratio, 0.0, vmax, alpha=0.6, nearest=True)
        pictures.append(_label(picture, f"T={t}  peak {weights[k].max() * hw:.1f}x uniform"))
    gap = np.full((pictures[0].shape[0], 6, 3), 255, np.uint8)
    row = [pictures[0]]
    for p in pictures[1:]:
        row += [gap, p]
    return np.concatenate(row, axis=1)


def pooling_weight_text(analysis, c, lam):
    h, w = analysis.grid
    weights = pooling_weights(analysis, c, lam)
    name = analysis.class_names[c]
    lines = [f"<b>{html.escape(name)}</b>, λ = {lam:.2f}: uniform weight 1/HW = 1/{h * w} = {1 / (h * w):.4f} "
             f"per position; weights sum to 1 + λ = {1 + lam:.2f} per head."]
    for k, t in enumerate(analysis.temperatures):
        peak = float(weights[k].max())
        lines.append(f"T = {t}: the top position gets {peak:.4f} ({peak * h * w:.1f}× uniform).")
    return " ".join(lines)


def line_chart_svg(x, series, title, xlabel, ymax=None, width=300, height=190):
    """A small SVG line chart: series = [(key, label, colour, y)], y against x (0 at the
    bottom, ymax or the largest y at the top); each line carries data-key and a title."""
    left, right, top, bottom = 38, 8, 20, 30
    w, h = width - left - right, height - top - bottom
    x = np.asarray(x, dtype=float)
    x0, x1 = float(x.min()), float(x.max()) if len(x) else 1.0
    x1 = x1 if x1 > x0 else x0 + 1.0
    hi = ymax or max([1e-6] + [float(np.max(y)) for *_, y in series if len(y)])
    px = lambda v: left + (v - x0) / (x1 - x0) * w           # noqa: E731
    py = lambda v: top + h - v / hi * h                      # noqa: E731
    parts = [f'<svg class="csra-line-chart" width="{width}" height="{height}" viewBox="0 0 '
             f'{width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="13" class="title">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" class="axis"/>']
    for v, anchor in ((x0, "start"), ((x0 + x1) / 2, "middle"), (x1, "end")):
        parts.append(f'<text x="{px(v):.1f}" y="{top + h + 13}" text-anchor="{anchor}" '
                     f'class="tick">{v:.3g}</text>')
    for v in (0, hi / 2, hi):
        parts.append(f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end" '
                     f'class="tick">{v:.2f}</text>')
    parts.append(f'<text x="{left + w / 2:.1f}" y="{height - 3}" text-anchor="middle" '
                 f'class="tick">{html.escape(xlabel)}</text>')
    for key, label, colour, y in series:
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" '
                     f'data-key="{html.escape(str(key))}"><title>{html.escape(label)}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)
