"""'Check this map' on the page: the deletion and insertion curves of the focused class for
the CSRA map, Grad-CAM and a random order (csra.faithfulness.check_map), drawn as SVG.

The check shares the network with everyone's uploads one batch at a time
(app/network.py's NetworkTurns),
and stops at the next batch when the page has moved on (a new image or another class).
"""
import html
import threading

from PIL import Image

from csra.faithfulness import Cancelled, check_map

from .network import NetworkTurns
from .render import line_chart_svg

STEPS = 10        # points per curve minus one: the fewest the page promises; about 1.5 s with the
                  # embedded model on 2 cores (bench/faithfulness.py, check_map_10_steps_s)
BATCH = 8         # perturbed images per forward pass: the longest wait an upload can meet
LABELS = {"csra": "CSRA score map", "weights": "pooling weights", "gradcam": "Grad-CAM (Captum)",
          "centre": "centre Gaussian", "random": "random order"}
COLOURS = {"csra": "#c2410c", "weights": "#9467bd", "gradcam": "#1f5fa8", "centre": "#2ca02c",
           "random": "#6b6b6b"}
READING = ("How to read it: deletion removes the pixels the map ranks highest first (replaced by "
           "a blurred copy), insertion puts them first into the blurred image. If the model "
           "really relies on the highlighted pixels, the probability falls fast under deletion "
           "(low AUC) and rises fast under insertion (high AUC); a map no better than the random "
           "order shows no evidence.")


def run_check(analysis, class_index, lam, lock, cancelled, steps=STEPS):
    """check_map on the image the page shows; Cancelled when the page moved on."""
    turns = NetworkTurns(lock, cancelled)
    try:
        return check_map(analysis.model, Image.fromarray(analysis.image), class_index, lam=lam,
                         steps=steps, batch_size=BATCH, should_stop=turns)
    finally:
        turns.release()


def curves_svg(check, curve):
    """One chart: the `curve` ("deletion" or "insertion") of every method, probability
    against the share of pixels changed."""
    series = [(m, LABELS.get(m, m), COLOURS.get(m, "#000"), getattr(r, curve))
              for m, r in check.methods.items()]
    verb = "deleted" if curve == "deletion" else "inserted"
    return line_chart_svg(check.fractions, series, f"{curve} curves", f"share of pixels {verb}")


def evidence_html(check, image_name):
    """Both charts, the AUC table and how to read them."""
    kind = "sigmoid" if check.kind == "sigmoid" else "softmax"
    rows = "".join(
        f'<tr data-method="{m}"><td><span class="sw" style="background:{COLOURS.get(m, "#000")}">'
        f'</span>{LABELS.get(m, m)}</td><td>{r.deletion_auc:.3f}</td><td>{r.insertion_auc:.3f}</td></tr>'
        for m, r in check.methods.items())
    return (f'<div class="csra-evidence-box"><p><b>{html.escape(check.class_name)}</b> on '
            f'{html.escape(image_name)}: {kind} probability {check.probability:.3f} untouched, '
            f'{check.baseline_probability:.3f} fully blurred; λ = {check.lam:.2f}, '
            f'{check.steps} steps, {check.seconds:.2f} s.</p>'
            f'<div class="csra-curves">{curves_svg(check, "deletion")}'
            f'{curves_svg(check, "insertion")}</div>'
            f'<table class="csra-auc"><thead><tr><th>map</th><th>deletion AUC (lower is better)'
            f'</th><th>insertion AUC (higher is better)</th></tr></thead><tbody>{rows}</tbody>'
            f'</table><p>{READING}</p></div>')


class Checks:
    """At most one check per session at a time; a new one supersedes the old (which stops at
    its next batch). shown: what each session's curves are of, (analysis, class name)."""

    def __init__(self):
        self.current = {}
        self.shown = {}
        self.lock = threading.Lock()

    def stale(self, session, analysis, focus):
        """True (once) when the session's curves are of another image or class."""
        shown = self.shown.get(session)
        if shown is None or shown == (analysis, focus):
            return False
        self.shown.pop(session, None)
        return True

    def start(self, session):
        token = object()
        with self.lock:
            self.current[session] = token
        return token

    def superseded(self, session, token):
        with self.lock:
            return self.current.get(session) is not token

    def finish(self, session, token):
        with self.lock:
            if self.current.get(session) is token:
                del self.current[session]
