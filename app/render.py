"""Pictures for the page, from cached score maps: fast enough to redraw on every slider move.

Maps are upsampled, coloured on an explicit range and blended by
csra.visualize (bilinear for overlays, nearest where the feature grid itself
is the point; negative values are clipped to the cold end, never wrapped
around). No matplotlib here.
"""
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


def colour_ranges(maps, scale):
    """(vmin, vmax) per class for (C, h, w) maps: one shared range or one per map."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return visualize.value_range(maps, scale)


def caption(name, scores, c):
    return f"{name} · p = {scores.probabilities[c]:.3f} · logit {scores.logits[c]:+.2f}"


def heatmap_gallery(analysis, scores, classes, scale="global", alpha=0.5):
    """[(overlay, caption)] for the given class indices, on the chosen colour scale."""
    maps = analysis.class_maps
    lo, hi = colour_ranges(maps, scale)
    names = analysis.class_names
    return [(visualize.overlay(analysis.image, maps[c], lo[c], hi[c], alpha), caption(names[c], scores, c))
            for c in classes]


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
    return f'<div><b>Colour scale — {html.escape(SCALES[scale])}.</b>{bar}</div>'


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
    lines = [f"**{html.escape(name)}**, λ = {lam:.2f}: uniform weight 1/HW = 1/{h * w} = {1 / (h * w):.4f} "
             f"per position; weights sum to 1 + λ = {1 + lam:.2f} per head."]
    for k, t in enumerate(analysis.temperatures):
        peak = float(weights[k].max())
        lines.append(f"T = {t}: the top position gets {peak:.4f} ({peak * h * w:.1f}× uniform).")
    return " ".join(lines)


def _nice_step(span, count=5):
    raw = max(span, 1e-9) / count
    power = 10 ** np.floor(np.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def logit_chart_svg(names, scores, classes, threshold=None, width=640):
    """Horizontal bars per class: base (average pooling) from 0, then lam x attention on top;
    a black tick marks the logit; a dashed line the threshold's logit (sigmoid models)."""
    classes = list(classes)
    if not classes:
        return "<p>No scores yet.</p>"
    base = scores.base[classes]
    att = scores.attention[classes]
    total = base + att
    values = np.concatenate([[0.0], base, total] + ([[threshold]] if threshold is not None else []))
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * max(hi - lo, 1e-6)
    lo, hi = lo - pad, hi + pad
    label_w, right, row_h, top, bottom = 150, 16, 17, 40, 26
    plot_w = width - label_w - right
    height = top + row_h * len(classes) + bottom

    def x(v):
        return label_w + (float(v) - lo) / (hi - lo) * plot_w

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="csra-chart" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">']
    bias = " (+ bias)" if scores.kind == "softmax" else ""
    legend = [("#4C78A8", f"base: average pooling{bias}"),
              ("#F58518", f"λ × attention (λ = {scores.lam:.2f})")]
    lx = label_w
    for colour, text in legend:
        out.append(f'<rect x="{lx}" y="8" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{lx + 16}" y="18">{html.escape(text)}</text>')
        lx += 24 + 6.2 * len(text)
    out.append(f'<line x1="{lx}" y1="7" x2="{lx}" y2="21" stroke="#000" stroke-width="2"/>'
               f'<text x="{lx + 5}" y="18">logit</text>')
    step = _nice_step(hi - lo)
    for tick in np.arange(np.ceil(lo / step) * step, hi, step):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - bottom}" '
                   f'stroke="#ddd"/><text x="{tx:.1f}" y="{height - bottom + 14}" '
                   f'text-anchor="middle" fill="#555">{tick:g}</text>')
    out.append(f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{height - bottom}" '
               'stroke="#888"/>')
    for i, c in enumerate(classes):
        y = top + i * row_h
        b, a, t = float(base[i]), float(att[i]), float(total[i])
        prob = scores.probabilities[c]
        weight = ' font-weight="bold"' if threshold is not None and t >= threshold else ""
        tip = html.escape(f"{names[c]}: p = {prob:.4f}, logit {t:+.3f} = base {b:+.3f} + "
                          f"λ×attention {a:+.3f}")
        out.append(f'<g><title>{tip}</title>'
                   f'<text x="{label_w - 6}" y="{y + 11}" text-anchor="end"{weight}>'
                   f'{html.escape(names[c][:24])} {prob:.2f}</text>'
                   f'<rect x="{min(x(0), x(b)):.1f}" y="{y + 2}" width="{abs(x(b) - x(0)):.1f}" '
                   f'height="12" fill="#4C78A8"/>'
                   f'<rect x="{min(x(b), x(t)):.1f}" y="{y + 2}" width="{abs(x(t) - x(b)):.1f}" '
                   f'height="12" fill="#F58518" fill-opacity="0.9"/>'
                   f'<line x1="{x(t):.1f}" y1="{y}" x2="{x(t):.1f}" y2="{y + 16}" stroke="#000" '
                   'stroke-width="2"/></g>')
    if threshold is not None and lo < threshold < hi:
        tx = x(threshold)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - bottom}" '
                   'stroke="#d62728" stroke-dasharray="4 3"/>'
                   f'<text x="{tx + 3:.1f}" y="{top - 6}" fill="#d62728">threshold</text>')
    out.append(f'<text x="{label_w + plot_w / 2:.0f}" y="{height - 2}" text-anchor="middle" '
               'fill="#333">class logit</text></svg>')
    return "".join(out)
