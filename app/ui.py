"""The Gradio page: components, layout and events. The work itself is in app/page.py,
the browser side (the upload call, scores at any lambda and threshold, chart, table,
captions, status line) in app/explorer.js.

An upload or an example click goes the shortest way: the page's script sends the file
through Gradio's upload route and calls one server function of the scores view
(analyse_file), whose answer holds the status, the numbers and the first heatmap tiles; no
queue round trip, no preview fetch, no second answer. Gradio's image component stays for
paste and the camera, and for API clients (api_name "analyse"). Both paths share one lock
for the network (NETWORK_CONCURRENCY runs at a time, first come first served) and the same
checks. The "Live camera" tab sends camera frames one at a time to its own server function
(live_frame; the logic is in app/live.py), which takes the same lock for each frame's network
run and leaves the session's upload analysis alone.

One ModelStore is shared by every session; each session's Analysis (the image's cached
score maps) lives in a Sessions store (app/sessions.py) under Gradio's session hash, so the
server function and the Gradio events see the same one. Moving lambda or the threshold is
answered in the browser; the server then sends, off the critical path, only the pictures
the page does not hold yet. Handlers return {component: value} for what they change. Errors
in an input (not an image, too many pixels, a model that cannot be loaded, a lambda that is
not a number) become a one-line message in the page; the app keeps serving.
"""
import atexit
import html
import json
import logging
import os
import time
import traceback
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import ImageOps

import csra
import csra.inference
from csra import video

from . import evidence as evidence_check
from . import limits as server_limits
from . import live, page, render
from .exports import DownloadFolders, write_downloads
from .inference import scores_at
from .models import VOC, ModelUnavailable, model_info, model_info_markdown
from .network import NetworkTurns
from .sessions import Sessions
from .uploads import PASTED, UploadGuard, data_url_image

log = logging.getLogger("csra.app")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXPLORER_JS = (Path(__file__).resolve().parent / "explorer.js").read_text()
EXAMPLES = ["cat_and_person.jpg", "cat.jpg", "astronaut.jpg", "grace_hopper.jpg",
            "camera_gray.jpg", "coffee.jpg", "rocket.jpg"]
LIMITS = server_limits.ServeLimits()   # file size, uploads, session lifetime (app/limits.py)
MAX_FILE_BYTES = LIMITS.max_file_bytes
MAX_FILE_SIZE = MAX_FILE_BYTES            # launch: Gradio's max_file_size, in bytes
NETWORK_CONCURRENCY = 1   # network runs at a time (one GPU, or all CPU cores, per run)
DRAWING_CONCURRENCY = 4   # picture requests at a time: no network, a few ms each
THUMB_SIZE = 200          # example thumbnails (the buttons, and the preview when clicked)
PROMPT = "Upload, drop or paste an image, take a picture, or click an example."
MAX_VIDEO_SECONDS = 120   # longer videos are refused on the page (the CLI: --max-seconds)
VIDEO_FRAMES = 240        # at most this many frames of a video are analysed (evenly spaced)
VIDEO_CLASSES = 6         # classes drawn over time: those reaching the threshold, best first
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]

# The explorer's views: the browser fills them from the server's numbers (explorer.js).
HEAD = f"<script>{EXPLORER_JS}</script>"
UPLOAD_TEMPLATE = '<div class="csra-upload-root"></div>'
UPLOAD_JS = "csraExplorer.mountUpload(element, server, upload, props.value);"
STATUS_TEMPLATE = '<div class="csra-status-line" role="status" aria-live="polite"></div>'
STATUS_JS = ("csraExplorer.mountStatus(element, props); watch('value', () => "
             "csraExplorer.setStatus(props.value)); csraExplorer.setStatus(props.value);")
# the close-up, the pooling weights and the map check: HTML from the server, kept by the
# browser while the server answers None (nothing new; the browser receives it as ""), so
# that every answer can give every output a plain value (see build_demo, Memory); BLANK, an
# HTML comment, empties the view. The status line, likewise, stays as it is on None.
BLANK = "<!-- empty -->"
KEPT_TEMPLATE = '<div class="csra-kept-root"></div>'


def kept_js(name):
    return (f"csraExplorer.mountKept(element, '{name}'); watch('value', () => "
            f"csraExplorer.setKept('{name}', props.value)); "
            f"csraExplorer.setKept('{name}', props.value);")


SCORES_TEMPLATE = (
    '<div class="csra-explorer"><div class="csra-summary"></div><div class="csra-chart"></div>'
    '<details class="csra-table-box"><summary>Table: every class, most probable first</summary>'
    '<div class="csra-table"></div></details></div>')
SCORES_JS = ("csraExplorer.mountScores(element, trigger); watch('value', () => "
             "csraExplorer.setData(props.value)); if (props.value) csraExplorer.setData(props.value);")
TILES_TEMPLATE = '<div class="csra-tiles-root"></div>'
TILES_JS = ("csraExplorer.mountTiles(element, trigger); watch('value', () => "
            "csraExplorer.setTiles(props.value)); if (props.value) csraExplorer.setTiles(props.value);")
LIVE_TEMPLATE = '<div class="csra-live-root"></div>'
# After a picture from the image box: a refused one (a message, no scores) empties the box, in
# the browser; otherwise the box is left as it is. The server never outputs the box: an
# answer that leaves it unchanged would make Gradio keep a new copy of it in the session.
REFUSED_JS = ("(status, scores) => (typeof status === 'string' && status.startsWith('⚠️') "
              "&& !scores) ? null : {__type__: 'update'}")
LIVE_JS = "csraExplorer.mountLive(element, server, props.value);"

CSS = """
/* contrast (WCAG AA, checked with axe in tests/test_app_a11y.py): Gradio's default theme
   draws help text, footer links and the selected tab in colours too light on white */
:root { --body-text-color-subdued: #5f5f6b; --color-accent: #c2410c; }
.dark { --body-text-color-subdued: #a9a9b4; }
#csra-status { min-height: 2.5em; }
@media (min-width: 1000px) {
  #csra-main { display: grid; grid-template-columns: 4fr 5fr 6fr; grid-template-rows: auto 1fr;
               align-items: start; }
  #csra-col-image { grid-column: 1; grid-row: 1; }
  #csra-col-controls { grid-column: 1; grid-row: 2; }
  #csra-col-scores { grid-column: 2; grid-row: 1 / span 2; }
  #csra-col-heatmaps { grid-column: 3; grid-row: 1 / span 2; }
}
.csra-status-line { white-space: pre-wrap; overflow-wrap: anywhere; }
.csra-status-line.csra-message { color: #b02a37; }
.csra-drop { display: flex; flex-direction: column; align-items: center; justify-content: center;
             gap: 6px; min-height: 200px; border: 2px dashed var(--border-color-primary);
             border-radius: 8px; cursor: pointer; padding: 8px; text-align: center;
             background: var(--background-fill-secondary); }
.csra-drop.csra-over { border-color: var(--color-accent); }
.csra-drop:focus-within { outline: 2px solid var(--color-accent); outline-offset: 2px; }
.csra-drop input[type=file] { position: absolute; width: 1px; height: 1px; opacity: 0; }
.csra-drop img { max-width: 100%; max-height: 220px; object-fit: contain; }
.csra-drop img[hidden] { display: none; }
.csra-examples { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; }
.csra-examples p { width: 100%; margin: 0; font-size: 13px; }
.csra-example { padding: 0; border: 1px solid var(--border-color-primary); border-radius: 4px;
                background: none; cursor: pointer; width: 56px; height: 56px; }
.csra-example:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 2px; }
.csra-example img { width: 100%; height: 100%; object-fit: cover; border-radius: 3px; display: block; }
.csra-banner details { margin-top: 4px; font-size: 13px; }
.csra-banner code { overflow-wrap: anywhere; white-space: normal; }
.csra-explorer.csra-stale .csra-chart, .csra-explorer.csra-stale .csra-table-box,
.csra-tiles-root.csra-stale { opacity: 0.45; }
.csra-explorer.csra-stale .csra-summary { font-weight: bold; }
.csra-banner { padding: 8px 12px; border-radius: 6px; background: #fff3cd; color: #523d02;
               border: 1px solid #ffe69c; overflow-wrap: anywhere; }
.csra-summary { margin-bottom: 6px; }
.csra-note { color: #b02a37; }
.csra-chart { width: 100%; overflow-x: auto; }
.csra-chart-svg { display: block; max-width: 100%; font: 11px sans-serif; }
.csra-chart-svg text { fill: var(--body-text-color); }
.csra-chart-svg .tick { fill: var(--body-text-color-subdued); }
.csra-chart-svg .grid { stroke: var(--border-color-primary); }
.csra-chart-svg .zero { stroke: #888; }
.csra-chart-svg .base { fill: #4C78A8; }
.csra-chart-svg .att { fill: #F58518; fill-opacity: 0.9; }
.csra-chart-svg .logit { stroke: var(--body-text-color); stroke-width: 2; }
.csra-chart-svg .present text { font-weight: bold; }
.csra-chart-svg line.threshold { stroke: #d62728; stroke-dasharray: 4 3; }
.csra-chart-svg text.threshold { fill: #d62728; }
.csra-chart-legend { font-size: 12px; display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: center; }
.csra-chart-legend .sw { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
                         vertical-align: middle; }
.csra-chart-legend .sw.base { background: #4C78A8; }
.csra-chart-legend .sw.att { background: #F58518; }
.csra-chart-legend .sw.logit { width: 2px; background: var(--body-text-color); }
.csra-table-box { max-height: 420px; overflow: auto; font-size: 13px; }
.csra-table { width: 100%; overflow-x: auto; }
.csra-table table { width: 100%; border-collapse: collapse; }
.csra-table td, .csra-table th { padding: 2px 6px; text-align: right; white-space: nowrap; }
.csra-table td:first-child, .csra-table th:first-child { text-align: left; }
.csra-table tr.present td { font-weight: bold; }
.csra-tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 200px), 1fr));
              gap: 10px; }
.csra-tile { margin: 0; cursor: pointer; min-width: 0; border-radius: 4px; padding: 0; border: none;
             background: none; text-align: left; color: inherit; font: inherit; }
.csra-tile:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 2px; }
.csra-tile img, .csra-tile .csra-wait { display: block; width: 100%; max-width: 240px;
              aspect-ratio: 1 / 1; object-fit: contain; background: var(--background-fill-secondary);
              border-radius: 4px; }
.csra-tile .csra-wait { display: flex; align-items: center; justify-content: center; }
.csra-tile .csra-caption { display: block; font-size: 12px; margin-top: 3px; overflow-wrap: anywhere; }
.csra-scale-legend { font-size: 12px; margin-bottom: 8px; }
.csra-legend { flex-wrap: wrap; margin-top: 2px; }
.csra-panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 220px), 1fr));
               gap: 10px; }
.csra-panels figure { margin: 0; min-width: 0; }
.csra-panels img { width: 100%; height: auto; max-height: 320px; object-fit: contain; }
.csra-panels figcaption { font-size: 12px; overflow-wrap: anywhere; }
.csra-weights img { max-width: 100%; height: auto; }
.csra-line-chart { max-width: 100%; height: auto; font: 11px sans-serif; }
.csra-line-chart text { fill: var(--body-text-color); }
.csra-line-chart .title { font-weight: bold; }
.csra-line-chart .axis { stroke: var(--body-text-color-subdued); }
.csra-video-legend { font-size: 12px; display: flex; flex-wrap: wrap; gap: 4px 12px; }
.csra-video-legend .sw { display: inline-block; width: 12px; height: 3px; margin-right: 4px;
                         vertical-align: middle; }
.csra-curves { display: flex; flex-wrap: wrap; gap: 12px; }
.csra-auc { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
.csra-auc td, .csra-auc th { padding: 2px 8px; text-align: right; }
.csra-auc td:first-child, .csra-auc th:first-child { text-align: left; }
.csra-auc .sw { display: inline-block; width: 12px; height: 3px; margin-right: 6px;
                vertical-align: middle; }
/* Grad-CAM's curves often lie on the CSRA map's (on CSRA's layer it is the clipped map):
   dashed, so both stay visible */
#csra-evidence polyline[data-key="gradcam"] { stroke-dasharray: 6 4; }
#csra-evidence tr[data-method="gradcam"] .sw { height: 0; background: none !important;
                                               border-top: 3px dashed #1f5fa8; }
.csra-live-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.csra-live-bar button { padding: 6px 14px; border-radius: 6px; border: 1px solid var(--border-color-primary);
                        background: var(--button-secondary-background-fill); color: inherit; cursor: pointer; }
.csra-live-bar button:disabled { opacity: 0.5; cursor: default; }
.csra-live-bar button:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 2px; }
.csra-live-fps { font-variant-numeric: tabular-nums; margin-left: 4px; }
.csra-live-line.csra-message { color: #b02a37; }
.csra-live-overlay { display: block; width: 100%; max-width: 640px; height: auto; border-radius: 4px; }
.csra-live-overlay[hidden] { display: none; }
"""


def upload_source(payload, guard, session):
    """(source, display name) of an image as Gradio received it, without opening it: every
    picture is decoded by csra.load_image (EXIF orientation, modes, pixel limit, one-line
    errors). The events that take the image skip Gradio's own decoding (preprocess=False),
    so the path in the payload is whatever the client sent: guard (app/uploads.py) lets
    through only the examples and this session's own uploads."""
    if not payload:
        return None, None
    if isinstance(payload, str):
        name = page.display_name(payload)
        return guard.path_for(payload, session, name), name
    url = payload.get("url") or ""
    if url.startswith("data:") and not payload.get("path"):
        return data_url_image(url, guard.max_bytes), PASTED   # limited like an upload
    path = payload.get("path")
    if not isinstance(path, str) or not path:
        raise csra.ImageError("image: no such file")
    name = payload.get("orig_name") or page.display_name(path)
    return guard.path_for(path, session, name), name


def example_paths(names=EXAMPLES, folder=ASSETS):
    return [str(folder / n) for n in names if (folder / n).is_file()]


def example_thumbnails(paths, size=THUMB_SIZE):
    """[{"name", "thumb": JPEG data URI}] for the page's example buttons."""
    out = []
    for path in paths:
        image = ImageOps.contain(csra.load_image(path), (size, size))
        out.append({"name": Path(path).name, "thumb": render.data_uri(np.asarray(image), 80)})
    return out


def threshold_info(model):
    """What the threshold means for the model's kind of score (the slider's help line)."""
    if model.score_kind == "softmax":
        return ("softmax over all classes: the probabilities sum to 1, so even a clear "
                "winner can stay well below 0.5")
    return "sigmoid per class: each class is scored on its own"


def banner_html(text, details=""):
    """The banner: one plain sentence, the details folded away (both escaped)."""
    more = (f"<details><summary>Details</summary>{html.escape(details)}</details>"
            if details else "")
    return f'<div class="csra-banner" role="alert">⚠️ {html.escape(text)}{more}</div>'


def build_demo(store, examples=None, downloads=None, title="CSRA explorer", limits=LIMITS):
    """The page for a ModelStore (see app/models.py), with what the server keeps and for
    how long (app/limits.py ServeLimits; launch applies them)."""
    if downloads is None:
        downloads = DownloadFolders()
        atexit.register(downloads.cleanup)
    first = store.get(VOC)
    first_names = list(first.class_names)
    examples = example_paths() if examples is None else examples
    example_by_name = {Path(p).name: p for p in examples}
    sessions = Sessions(ttl=limits.session_ttl_s)
    # first come, first served; a live frame holds it for one network run (app/live.py)
    network = live.FairGate(NETWORK_CONCURRENCY)
    live_service = live.LiveService(store, network)
    checks = evidence_check.Checks()

    def problem(err):
        text = str(err)
        gr.Warning(html.escape(text))
        return f"⚠️ {text}"

    def unexpected(err):
        log.error("unexpected error:\n%s", traceback.format_exc())
        return problem(f"internal error ({type(err).__name__}: {err}); the details are in "
                       "the server log — try another image")

    def analyse_payload(payload, model_key, c, session, name=None, with_rows=True):
        """(Analysis, PageView) for an image payload, with the network lock held for the run;
        the analysis becomes the session's. Raises the page's one-line errors."""
        source, shown_name = upload_source(payload, guard, session)
        model = store.get(model_key)
        start = time.perf_counter()
        with network:
            analysis, view = page.upload(model, source, c, model_key=model_key,
                                         name=name or shown_name, with_rows=with_rows)
        if not isinstance(source, str):
            analysis.source = ""
        view.status += f" Network + drawing {time.perf_counter() - start:.2f} s."
        analysis.sent["status"] = view.status     # shown again once a message is resolved
        sessions.put(session, analysis)
        return analysis, view

    def cleared():
        return {status: None, scores: None, heatmaps: None, closeup: BLANK, weights: BLANK}

    def shown_view(view, focus_v=None):
        """{component: value} for the parts of a PageView that are set. The class box always
        gets a plain value (view.focus, else focus_v, what it shows): see "Memory" below.
        None for the others means "nothing new" to the page's script."""
        return {status: view.status, heatmaps: view.heatmaps, closeup: view.closeup,
                weights: view.weights, focus: view.focus if view.focus is not None else focus_v}

    def scores_text(view):
        """The scores view's value: its numbers as one JSON text (or None). Gradio keeps each
        session's last value of every output; as a dict, 1000 classes' rows were some 8,000
        small Python objects a session, spread over the allocator's arenas, which then could
        not be given back when the session was forgotten. One text is one block."""
        return None if view.scores is None else json.dumps(view.scores, separators=(",", ":"))

    def run_upload(payload, model_key, c, session, name=None, focus_v=None):
        """{component: value} for an image from Gradio's image box or the API."""
        try:
            if not payload:
                return {**cleared(), focus: focus_v}
            start = time.perf_counter()
            analysis, view = analyse_payload(payload, model_key, c, session, name)
            view.scores["handler_ms"] = round(1000 * (time.perf_counter() - start), 1)
            return {**shown_view(view, focus_v), scores: scores_text(view), closeup: BLANK,
                    weights: BLANK}
        except (csra.ImageError, ModelUnavailable, page.BadControl) as err:
            return {**cleared(), status: problem(err), focus: focus_v}
        except Exception as err:  # never let one request take the page down
            return {**cleared(), status: unexpected(err), focus: focus_v}

    def analyse_file(data):
        """The page's own upload call (explorer.js): data = {"path" (from Gradio's upload
        route) and "name", or "example"; "model"; the controls; "session", Gradio's session
        hash of the page, which a server function is not told}. One JSON answer with the
        status, the numbers and the first tiles, or {"error": one line}, as JSON text."""
        start = time.perf_counter()
        try:
            if not isinstance(data, dict) or not isinstance(data.get("session"), str) \
                    or not data["session"]:
                raise csra.ImageError("the page is out of date: reload it")
            c = page.Controls(data.get("lam"), data.get("threshold"), data.get("top_k", 20),
                              data.get("alpha", 0.5), data.get("scale", "global"),
                              data.get("picked") or (), None)
            if "example" in data:
                name = str(data["example"])
                if name not in example_by_name:
                    raise csra.ImageError(f"{name}: no such file")
                payload = {"path": example_by_name[name], "orig_name": name}
            else:
                payload = {"path": data.get("path"), "orig_name": data.get("name")}
            key = page.model_key(store, data.get("model") or VOC)
            analysis, view = analyse_payload(payload, key, c.clean(), data["session"],
                                             with_rows=False)
        except (csra.ImageError, ModelUnavailable, page.BadControl) as err:
            return json.dumps({"error": str(err)})
        except Exception as err:
            return json.dumps({"error": unexpected(err).removeprefix("⚠️ ")})
        view.scores["handler_ms"] = handler_ms = round(1000 * (time.perf_counter() - start), 1)
        # one JSON text: FastAPI would otherwise walk the thousands of numbers in Python
        # (jsonable_encoder) before serialising them
        return json.dumps({"status": view.status, "scores": view.scores, "heatmaps": view.heatmaps,
                           "focus": view.focus, "handler_ms": handler_ms}, separators=(",", ":"))

    def live_frame(data):
        """The live camera tab's call (explorer.js, mountLive): one frame in, the frame with
        its heatmap and the present classes' scores out, as JSON text (app/live.py). It does
        not touch the session's upload analysis."""
        try:
            answer = live_service.frame(data)
        except Exception as err:  # never let one frame take the page down
            log.error("unexpected error in a live frame:\n%s", traceback.format_exc())
            answer = {"error": f"internal error ({type(err).__name__}: {err}); the details are "
                               "in the server log"}
        return json.dumps(answer, separators=(",", ":"))

    def on_image(payload, model_label, lam_v, threshold_v, top_k_v, alpha_v, scale_v,
                 picked_v, focus_v, request: gr.Request):
        if not payload:
            return {**cleared(), focus: focus_v}
        try:
            key = page.model_key(store, model_label)
        except page.BadControl as err:
            return {**cleared(), status: problem(err), focus: focus_v}
        c = page.Controls(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, None)
        analysis = sessions.get(request.session_hash)
        if (analysis is not None and isinstance(payload, dict) and payload.get("path")
                and analysis.source == str(payload["path"]) and analysis.model_key == key):
            try:   # the same file again (the image box may report one upload twice): no rerun
                view = page.first_view(analysis, c.clean())
                view.status = analysis.sent.get("status", view.status)
                return {**shown_view(view, focus_v), scores: scores_text(view)}
            except page.BadControl as err:
                return {**cleared(), status: problem(err), focus: focus_v}
        return run_upload(payload, key, c, request.session_hash, focus_v=focus_v)

    def on_changes(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, focus_v,
                   request: gr.Request):
        """Pictures the page does not hold yet for these controls (None: nothing new)."""
        analysis = sessions.get(request.session_hash)
        kept = {status: None, heatmaps: None, closeup: None, weights: None, evidence: None,
                focus: focus_v if isinstance(focus_v, str) else None}
        try:
            c = page.Controls(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v,
                              focus_v).clean()
            if analysis is None:
                return kept
            view = page.changes(analysis, c)
        except Exception as err:
            if analysis is not None:
                analysis.sent["status_is_message"] = True
            return {**kept, status: problem(err) if isinstance(err, page.BadControl)
                    else unexpected(err)}
        out = {**shown_view(view, kept[focus]), evidence: None}
        if checks.stale(request.session_hash, analysis, view.focus):
            out[evidence] = BLANK       # the curves were of another image or class
        if analysis.sent.pop("status_is_message", False):
            out[status] = analysis.sent.get("status", "")
        return out

    def on_tile_select(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, focus_v,
                       evt: gr.SelectData, request: gr.Request):
        """A heatmap tile was clicked: its class up close, in its tab (a new copy of the
        tabs costs nothing kept: no event reads them; see "Memory" below)."""
        analysis = sessions.get(request.session_hash)
        if analysis is None or evt.value not in analysis.class_names:
            return on_changes(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, focus_v,
                              request)
        out = on_changes(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, evt.value,
                         request)
        return {**out, tabs: gr.Tabs(selected="closeup")}

    def on_video(payload, model_label, lam_v, threshold_v, alpha_v, request: gr.Request,
                 progress=gr.Progress()):
        """A video file: every N-th frame analysed (at most VIDEO_FRAMES), the overlay video
        of the top classes (WebM, which the browser plays) and each class's score over time.
        The network is taken one batch at a time, so other sessions' uploads go on."""
        def fail(text):
            return {video_status: html.escape(f"⚠️ {text}"), video_out: None, video_plot: ""}
        if not payload:
            return fail("choose a video file first")
        try:
            file = payload.get("video", payload) if isinstance(payload, dict) else payload
            c = page.Controls(lam_v, threshold_v, 20, alpha_v).clean()
            source, name = upload_source(file, guard, request.session_hash)
            model = store.get(page.model_key(store, model_label))
            capture, info = video.open_video(source, MAX_VIDEO_SECONDS)
            capture.release()
            every = max(1, -(-info.frame_count // VIDEO_FRAMES))
            out_path = downloads.new() / f"{csra.inference.safe_stem(Path(name).stem)}-overlay.webm"
            turns = NetworkTurns(network)
            turns()                                     # the first batch's turn
            try:
                result = video.predict_video(
                    model, source, out_video=out_path, every=every, max_seconds=MAX_VIDEO_SECONDS,
                    lam=c.lam, alpha=c.alpha, should_stop=turns,
                    progress=lambda done, total: progress((done, total or None), unit="frames"))
            finally:
                turns.release()
        except (video.VideoError, csra.ImageError, page.BadControl, ModelUnavailable) as err:
            text = str(err)
            return fail(text.replace(str(source), name) if "source" in locals() else text)
        except Exception as err:
            return {video_status: html.escape(unexpected(err)), video_out: None, video_plot: ""}
        scores = result.scores
        best = scores.max(axis=0) if len(scores) else np.zeros(len(result.class_names))
        shown_c = [int(i) for i in np.argsort(-best, kind="stable")[:VIDEO_CLASSES]
                   if best[i] >= c.threshold] or [int(np.argmax(best))]
        series = [(result.class_names[i], result.class_names[i], COLOURS[k % len(COLOURS)], scores[:, i])
                  for k, i in enumerate(shown_c)]
        legend = "".join(f'<span><span class="sw" style="background:{colour}"></span>'
                         f'{html.escape(label)} (max {best[result.class_names.index(key)]:.2f})</span>'
                         for key, label, colour, _ in series)
        chart = render.line_chart_svg(result.times, series, "score over time",
                                      "seconds", ymax=1.0, width=560, height=220)
        text = (f"{name}: {len(result.frames)} frames analysed (every {every}) of "
                f"{result.frames_read}, {info.fps:.1f} frames/s, {info.width}×{info.height} px; "
                f"the overlay shows the top 3 classes of each analysed frame.")
        return {video_out: str(out_path), video_status: html.escape(text),
                video_plot: f'<div class="csra-video-legend">{legend}</div>{chart}'}

    def on_check(lam_v, focus_v, request: gr.Request):
        """'Check this map': deletion and insertion curves of the focused class (CSRA map,
        Grad-CAM, random order); stops when a new image, class or check comes."""
        session = request.session_hash
        analysis = sessions.get(session)
        try:
            lam_c = page.unit_interval(lam_v, "λ")
            page.Controls(focus=focus_v).clean()
        except page.BadControl as err:
            return {evidence: None, status: problem(err)}
        if analysis is None:
            return {evidence: "<p>Upload an image first.</p>", status: None}
        focus_name = focus_v if focus_v in analysis.class_names else analysis.sent.get("focus")
        if focus_name not in analysis.class_names:
            return {evidence: "<p>Choose a class first.</p>", status: None}
        token = checks.start(session)

        def cancelled():
            return (checks.superseded(session, token) or sessions.get(session) is not analysis
                    or analysis.sent.get("focus") != focus_name)
        try:
            check = evidence_check.run_check(analysis, analysis.class_names.index(focus_name),
                                             lam_c, network, cancelled)
        except evidence_check.Cancelled:
            return {evidence: None, status: None}
        except Exception as err:
            return {evidence: None, status: unexpected(err)}
        finally:
            checks.finish(session, token)
        checks.shown[session] = (analysis, focus_name)
        return {evidence: evidence_check.evidence_html(check, analysis.name), status: None}

    def on_model(model_label, top_k_v, alpha_v, scale_v, lam_v, threshold_v, picked_v, focus_v,
                 request: gr.Request):
        """Another model: its classes, λ and threshold in the controls, the image again.
        (The new class lists and threshold help are updates, which Gradio files as new
        copies of those components; the copies the previous switch left are forgotten here,
        so a session holds one switch's at most.) A model that cannot be loaded, or a bad
        value: a message, and every output as it was."""
        server_limits.forget_replaced_components(demo.state_holder, request.session_hash,
                                                 demo.blocks)
        analysis = sessions.get(request.session_hash)
        previous = analysis.model_key if analysis is not None else VOC

        def stay(text, c=None):
            """The message; the model, the controls (c, else their defaults: one was bad)
            and the scores as they were."""
            view = (page.first_view(analysis, c) if analysis is not None and c is not None
                    else page.PageView())
            c = c or page.Controls().clean()
            return {model_choice: store.label_for(previous), lam: c.lam, threshold: c.threshold,
                    top_k: c.top_k, picked: list(c.picked), focus: c.focus,
                    info: model_info_markdown(store.get(previous), store.device),
                    status: problem(text), scores: scores_text(view), heatmaps: None, closeup: None,
                    weights: None}

        try:
            c = page.Controls(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v,
                              focus_v).clean()
        except page.BadControl as err:
            return stay(str(err))
        try:
            key = page.model_key(store, model_label)
            model = store.get(key)
        except page.BadControl as err:
            return stay(str(err), c)
        except ModelUnavailable as err:
            return stay(f"{err} — staying with the model that was loaded", c)
        option = store.option(key)
        names = list(model.class_names)
        lam_v = float(model.lam)
        c = page.Controls(lam_v, option.threshold, top_k_v, alpha_v, scale_v, (), None)
        out = {scores: None, heatmaps: None, closeup: BLANK, weights: BLANK,
               status: f"Model: {option.label}. Upload an image or click an example."}
        if analysis is not None and analysis.source:
            out = run_upload({"path": analysis.source}, key, c, request.session_hash,
                             name=analysis.name)
        else:
            sessions.drop(request.session_hash)
        return {**out, model_choice: option.label, lam: lam_v,
                threshold: gr.update(value=option.threshold, info=threshold_info(model)),
                top_k: gr.update(visible=len(names) > page.FULL_TABLE_LIMIT),
                picked: gr.update(choices=names, value=[]),
                focus: gr.update(choices=names, value=out.get(focus)),
                info: model_info_markdown(model, store.device)}

    def on_downloads(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, focus_v,
                     request: gr.Request):
        analysis = sessions.get(request.session_hash)
        if analysis is None:
            gr.Warning("Nothing to download yet: upload an image first.")
            return {files: None, status: None}
        try:
            c = page.Controls(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v,
                              focus_v).clean()
        except page.BadControl as err:
            return {files: None, status: problem(err)}
        return {status: None, files: write_downloads(downloads.new(), analysis, scores_at(analysis, c.lam),
                                       c.threshold, page.download_pictures(analysis, c),
                                       model_info(analysis.model, store.device))}

    def forget(request: gr.Request):
        """The page was closed: its analysis goes."""
        sessions.drop(request.session_hash)

    first_threshold = store.option(VOC).threshold
    with gr.Blocks(title=title,
                   delete_cache=(limits.cache_check_s, limits.upload_max_age_s)) as demo:
        guard = UploadGuard(examples, demo.GRADIO_CACHE, received=lambda: demo.upload_file_set,
                            max_bytes=limits.max_file_bytes)
        if store.banner:  # e.g. why the VOC model is not served (app/weights.py)
            gr.HTML(banner_html(store.banner, store.banner_details), elem_id="csra-banner")
        gr.Markdown(
            f"# {title}: what does CSRA see?\n"
            "Class-specific residual attention (Zhu & Wu, ICCV 2021) scores every class from its "
            "own score map: an average over all positions plus λ times an attention-weighted sum. "
            "Upload an image, then move λ.")
        # The order is the phone's: the image, the results, then the controls. On a wide screen
        # CSS puts the controls under the image, beside the results (#csra-main).
        with gr.Row(equal_height=False, elem_id="csra-main"):
            with gr.Column(scale=4, min_width=300, elem_id="csra-col-image"):
                start = {"lam": float(first.lam), "threshold": first_threshold, "top_k": 20,
                         "model": store.label_for(VOC)}
                upload = gr.HTML({"examples": example_thumbnails(examples),
                                  "max_bytes": limits.max_file_bytes, "controls": start},
                                 html_template=UPLOAD_TEMPLATE, js_on_load=UPLOAD_JS, head=HEAD,
                                 server_functions=[analyse_file], elem_id="csra-upload")
                with gr.Accordion("Paste an image or use the camera", open=False):
                    image = gr.Image(type="filepath", image_mode=None, label="Paste or camera",
                                     height=240, sources=["clipboard", "webcam"],
                                     elem_id="csra-image")
            with gr.Column(scale=5, min_width=300, elem_id="csra-col-scores"):
                status = gr.HTML(PROMPT, html_template=STATUS_TEMPLATE, js_on_load=STATUS_JS,
                                 head=HEAD, elem_id="csra-status")
                scores = gr.HTML(None, html_template=SCORES_TEMPLATE, js_on_load=SCORES_JS,
                                 head=HEAD, elem_id="csra-scores")
            with gr.Column(scale=6, min_width=300, elem_id="csra-col-heatmaps"):
                gr.Markdown("**Heatmaps** of the present classes — click one to look closer")
                heatmaps = gr.HTML(None, html_template=TILES_TEMPLATE, js_on_load=TILES_JS,
                                   head=HEAD, elem_id="csra-heatmaps")
            with gr.Column(scale=4, min_width=300, elem_id="csra-col-controls"):
                lam = gr.Slider(0.0, 1.0, value=float(first.lam), step=0.01,
                                label="λ (lambda): weight of the attention part",
                                elem_id="csra-lambda")
                threshold = gr.Slider(
                    0.0, 1.0, value=first_threshold, step=0.01, elem_id="csra-threshold",
                    label="threshold: a class is present when p ≥ this",
                    info=threshold_info(first))
                top_k = gr.Slider(5, 100, value=20, step=1, label="table rows (top-k classes)",
                                  visible=len(first_names) > page.FULL_TABLE_LIMIT,
                                  elem_id="csra-topk")
                with gr.Accordion("Heatmap options", open=False):
                    alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="heatmap opacity",
                                      elem_id="csra-alpha")
                    scale = gr.Radio(list(page.render.SCALES), value="global",
                                     label="colour scale", elem_id="csra-scale")
                    picked = gr.Dropdown(first_names, value=[], multiselect=True,
                                         max_choices=page.MAX_PICKED, elem_id="csra-picked",
                                         label=f"also show these classes (up to {page.MAX_PICKED})")
                model_choice = gr.Radio(store.labels, value=store.label_for(VOC), label="Model",
                                        elem_id="csra-model")
        with gr.Tabs(selected="closeup") as tabs:
            with gr.Tab("One class up close", id="closeup"):
                focus = gr.Dropdown(first_names, value=None, label="class", elem_id="csra-focus")
                gr.Markdown("Image | average-pooling contribution | attention | score map, per "
                            "head; then the effective pooling weights 1/HW + λ·softmax(T·s).")
                closeup = gr.HTML("", html_template=KEPT_TEMPLATE, js_on_load=kept_js("closeup"),
                                  head=HEAD, elem_id="csra-closeup")
                weights = gr.HTML("", html_template=KEPT_TEMPLATE, js_on_load=kept_js("weights"),
                                  head=HEAD, elem_id="csra-weights")
                check_button = gr.Button("Check this map: deletion and insertion curves beside "
                                         "Grad-CAM and a random order", elem_id="csra-check")
                evidence = gr.HTML("", html_template=KEPT_TEMPLATE, js_on_load=kept_js("evidence"),
                                   head=HEAD, elem_id="csra-evidence")
            with gr.Tab("Video", id="video"):
                gr.Markdown(f"A video file (up to {MAX_VIDEO_SECONDS} s; at most {VIDEO_FRAMES} "
                            "frames are analysed, evenly spaced): the overlay of each analysed "
                            "frame's top classes, and each class's score over time. λ, the "
                            "threshold and the heatmap opacity are the controls above.")
                video_in = gr.Video(sources=["upload"], label="Video file", height=240,
                                    elem_id="csra-video-in")
                video_button = gr.Button("Analyse the video", elem_id="csra-video-go")
                video_status = gr.HTML("", elem_id="csra-video-status")
                video_out = gr.Video(label="Overlay", interactive=False, height=320,
                                     elem_id="csra-video-out")
                video_plot = gr.HTML("", elem_id="csra-video-plot")
            with gr.Tab("Live camera", id="live"):
                gr.HTML({"time_limit_s": live.TIME_LIMIT_S, "side": live.frame_side(first)},
                        html_template=LIVE_TEMPLATE, js_on_load=LIVE_JS, head=HEAD,
                        server_functions=[live_frame], elem_id="csra-live")
            with gr.Tab("Downloads", id="downloads"):
                download_button = gr.Button(
                    "Prepare downloads: scores (CSV, JSON) + overlays (PNG zip)")
                files = gr.File(label="Files", file_count="multiple", interactive=False,
                                height=140)
            with gr.Tab("What λ does · model", id="about"):
                gr.Markdown(page.LAMBDA_TEXT)
                info = gr.Markdown(model_info_markdown(first, store.device), elem_id="csra-info")

        controls = [lam, threshold, top_k, alpha, scale, picked]
        # Memory: when an answer updates a component that some event reads (gr.update, or
        # gr.skip(), which is what an output left out of the answer's dict becomes), Gradio
        # builds a new copy of the component and the session keeps every such copy until it
        # is forgotten; for the 1000-class box that was +133 KB a call. So every answer gives
        # such outputs (the class box, the controls, the image box) a plain value, or does
        # not list them; outputs no event reads (status, views, tabs) may be left out. The
        # model switch must change the class lists: its copies are forgotten at the next
        # switch (limits.forget_replaced_components), so one switch's are kept at most.
        # preprocess=False: the handlers check every value themselves (page.Controls.clean), so
        # a bad one (lambda = 5, NaN, a class list of 10,000 names) gets the page's one-line
        # message rather than Gradio's error
        drawing = dict(concurrency_id="drawing", concurrency_limit=DRAWING_CONCURRENCY,
                       show_progress="hidden", preprocess=False)
        # every control is known to the browser: lambda, threshold and rows are answered
        # there, and the page's own upload call sends them all
        for component, key in ((lam, "lam"), (threshold, "thr"), (top_k, "topk"), (alpha, "alpha"),
                               (scale, "scale"), (picked, "picked"), (model_choice, "model")):
            component.change(None, [component], None,
                             js=f"(v) => {{ csraExplorer.setControls({{{key}: v}}); }}")

        # Paste and camera: Gradio's image box. No progress overlay (its animation competes
        # with the network for the cores): the summary says "Analysing the image…" instead.
        image.change(None, [image], None, js="(v) => { csraExplorer.analysing(v); }")
        image.change(on_image, [image, model_choice, *controls, focus],
                     [status, scores, heatmaps, closeup, weights, focus],
                     api_name="analyse", concurrency_id="network", preprocess=False,
                     show_progress="hidden", trigger_mode="once").then(
            None, [status, scores], [image], js=REFUSED_JS)
        # new numbers on the page (any path): the close-up, the pooling weights and any tile
        # the page lacks, after the first view is drawn
        changed = [status, heatmaps, closeup, weights, focus, evidence]
        scores.change(on_changes, [*controls, focus], changed,
                      api_visibility="private", trigger_mode="always_last", **drawing)
        # pictures the page does not hold yet: off the critical path, newest request only
        gr.on([lam.release, threshold.release, alpha.release, scale.input, picked.input, focus.input],
              on_changes, [*controls, focus], changed,
              api_name="refresh", trigger_mode="always_last", **drawing)
        heatmaps.select(on_tile_select, [*controls, focus], [*changed, tabs],
                        api_visibility="private", **drawing)
        model_choice.input(on_model, [model_choice, top_k, alpha, scale, lam, threshold, picked,
                                      focus],
                           [model_choice, lam, threshold, top_k, picked, focus, info,
                            status, scores, heatmaps, closeup, weights],
                           api_name="choose_model", concurrency_id="network", preprocess=False)
        video_button.click(on_video, [video_in, model_choice, lam, threshold, alpha],
                           [video_status, video_out, video_plot], api_name="analyse_video",
                           concurrency_id="video", concurrency_limit=1, preprocess=False)
        # the check takes the network one batch at a time (app/evidence.py), not the queue's
        # network slot: uploads of other sessions wait at most one batch
        check_button.click(on_check, [lam, focus], [evidence, status], api_name="check_map",
                           concurrency_id="check", concurrency_limit=2, preprocess=False)
        download_button.click(on_downloads, [*controls, focus], [files, status],
                              api_name="downloads", concurrency_id="drawing",
                              concurrency_limit=DRAWING_CONCURRENCY, preprocess=False)
        demo.unload(forget)
    demo.csra_sessions = sessions   # for tests and benches: the analyses held
    demo.csra_limits = limits       # launch() serves with them
    demo.csra_live = live_service   # for tests and benches: the live tab's time limit, its gate
    return demo


def launch(demo, host="127.0.0.1", port=7860, share=False, prevent_thread_lock=False, quiet=False):
    """Queue (one network run at a time suits one GPU) and serve with the page's limits
    (demo.csra_limits, app/limits.py): Gradio's max_file_size, and through FastAPI's
    middleware and lifespan (launch's app_kwargs) the request bodies, the upload folder's
    total size and the sessions idle past their lifetime.

    run_history=False: Gradio would otherwise keep every run's inputs and outputs (here the
    heatmaps, inline) in the browser's localStorage and rewrite that list on every event,
    which cost 0.34 s of browser time at the 8th upload, growing with each one; it would also
    keep the user's pictures in the browser after they leave.

    enable_monitoring=False: Gradio's monitoring page is on unless told otherwise, and its
    /monitoring/summary showed anyone the page's traffic (each API's requests, success rate
    and latency)."""
    # Gradio also records each event for that page and after each one builds a pandas table
    # of the last 10,000 records; that churn stayed in the memory that forgotten sessions
    # did not give back (about half of it, bench/soak.py). One record is kept.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1")
    demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=64)
    return demo.launch(server_name=host, server_port=port, share=share,
                       max_file_size=demo.csra_limits.max_file_bytes, state_session_capacity=256,
                       show_error=True, enable_monitoring=False,
                       prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                       css=CSS, footer_links=["api", "gradio"], run_history=False,
                       app_kwargs=server_limits.server_options(demo, demo.csra_limits))
