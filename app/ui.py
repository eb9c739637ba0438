"""The Gradio page: components, layout and events. The work itself is in app/page.py,
the browser side (scores at any lambda and threshold, chart, table, captions) in
app/explorer.js.

One ModelStore is shared by every session; each session keeps its own
Analysis (the image's cached score maps) in a gr.State. Moving lambda or the
threshold is answered in the browser; the server then sends, off the critical
path, only the pictures the page does not hold yet. Handlers return
{component: value} for what they change. Errors in an input (not an image, too
many pixels, a model that cannot be loaded, a lambda that is not a number)
become a one-line message in the page; the app keeps serving.
"""
import atexit
import base64
import binascii
import html
import io
import json
import logging
import time
import traceback
from pathlib import Path

import gradio as gr

import csra

from . import page
from .exports import DownloadFolders, write_downloads
from .inference import scores_at
from .models import VOC, ModelUnavailable, model_info, model_info_markdown
from .uploads import UploadGuard

log = logging.getLogger("csra.app")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXPLORER_JS = (Path(__file__).resolve().parent / "explorer.js").read_text()
EXAMPLES = ["cat_and_person.jpg", "cat.jpg", "astronaut.jpg", "grace_hopper.jpg",
            "camera_gray.jpg", "coffee.jpg", "rocket.jpg"]
MAX_FILE_SIZE = "20mb"
SESSION_TTL_S = 3600
NETWORK_CONCURRENCY = 1   # network runs at a time (one GPU, or all CPU cores, per run)
DRAWING_CONCURRENCY = 4   # picture requests at a time: no network, a few ms each
PROMPT = "Upload, paste or take a picture, or click an example."

# The explorer's two views: the browser fills them from the server's numbers (explorer.js).
HEAD = f"<script>{EXPLORER_JS}</script>"
SCORES_TEMPLATE = (
    '<div class="csra-explorer"><div class="csra-summary"></div><div class="csra-chart"></div>'
    '<details class="csra-table-box"><summary>Table: every class, most probable first</summary>'
    '<div class="csra-table"></div></details></div>')
SCORES_JS = ("csraExplorer.mountScores(element); watch('value', () => "
             "csraExplorer.setData(props.value)); if (props.value) csraExplorer.setData(props.value);")
TILES_TEMPLATE = '<div class="csra-tiles-root"></div>'
TILES_JS = ("csraExplorer.mountTiles(element, trigger); watch('value', () => "
            "csraExplorer.setTiles(props.value)); if (props.value) csraExplorer.setTiles(props.value);")

CSS = """
#csra-status { min-height: 2.5em; }
.csra-stale .csra-chart, .csra-stale .csra-table-box, .csra-stale .csra-tiles-root { opacity: 0.45; }
.csra-stale .csra-summary { font-weight: bold; }
.csra-banner { padding: 8px 12px; border-radius: 6px; background: #fff3cd; color: #664d03;
               border: 1px solid #ffe69c; }
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
.csra-tile { margin: 0; cursor: pointer; min-width: 0; border-radius: 4px; }
.csra-tile:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 2px; }
.csra-tile img, .csra-tile .csra-wait { display: block; width: 100%; max-width: 240px;
              aspect-ratio: 1 / 1; object-fit: contain; background: var(--background-fill-secondary);
              border-radius: 4px; }
.csra-tile .csra-wait { display: flex; align-items: center; justify-content: center; }
.csra-tile figcaption { font-size: 12px; margin-top: 3px; overflow-wrap: anywhere; }
.csra-scale-legend { font-size: 12px; margin-bottom: 8px; }
.csra-legend { flex-wrap: wrap; margin-top: 2px; }
.csra-panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 220px), 1fr));
               gap: 10px; }
.csra-panels figure { margin: 0; min-width: 0; }
.csra-panels img { width: 100%; height: auto; max-height: 320px; object-fit: contain; }
.csra-panels figcaption { font-size: 12px; overflow-wrap: anywhere; }
.csra-weights img { max-width: 100%; height: auto; }
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
        try:
            data = base64.b64decode(url.partition(",")[2], validate=False)
        except (binascii.Error, ValueError):
            raise csra.ImageError("pasted image: not valid base64 data") from None
        return io.BytesIO(data), "pasted image"
    path = payload.get("path")
    if not isinstance(path, str) or not path:
        raise csra.ImageError("image: no such file")
    name = payload.get("orig_name") or page.display_name(path)
    return guard.path_for(path, session, name), name


def example_paths(names=EXAMPLES, folder=ASSETS):
    return [str(folder / n) for n in names if (folder / n).is_file()]


def build_demo(store, examples=None, downloads=None, title="CSRA explorer"):
    """The page for a ModelStore (see app/models.py)."""
    if downloads is None:
        downloads = DownloadFolders()
        atexit.register(downloads.cleanup)
    first = store.get(VOC)
    first_names = list(first.class_names)
    examples = example_paths() if examples is None else examples

    def problem(err):
        text = str(err)
        gr.Warning(html.escape(text))
        return f"⚠️ {html.escape(text)}"

    def unexpected(err):
        log.error("unexpected error:\n%s", traceback.format_exc())
        return problem(f"internal error ({type(err).__name__}: {err}); the details are in "
                       "the server log — try another image")

    def cleared():
        return {state: None, scores: None, heatmaps: None, closeup: "", weights: ""}

    def shown_view(view, analysis):
        """{component: value} for the parts of a PageView that are set."""
        out = {state: analysis}
        for component, value in ((status, view.status), (scores, view.scores),
                                 (heatmaps, view.heatmaps), (closeup, view.closeup),
                                 (weights, view.weights)):
            if value is not None:
                out[component] = value
        if view.focus is not None:
            out[focus] = gr.update(value=view.focus)
        return out

    def run_upload(payload, model_key, c, session, name=None):
        """{component: value} for an uploaded image; errors become the page's status."""
        try:
            source, shown_name = upload_source(payload, guard, session)
            if source is None:
                return cleared()
            model = store.get(model_key)
            start = time.perf_counter()
            analysis, view = page.upload(model, source, c, model_key=model_key,
                                         name=name or shown_name)
            if not isinstance(source, str):
                analysis.source = ""
            view.status += f" _(network + drawing {time.perf_counter() - start:.2f} s)_"
            analysis.sent["status"] = view.status     # shown again once a message is resolved
            return {**shown_view(view, analysis), closeup: "", weights: ""}
        except (csra.ImageError, ModelUnavailable, page.BadControl) as err:
            return {**cleared(), status: problem(err), image: None}
        except Exception as err:  # never let one request take the page down
            return {**cleared(), status: unexpected(err)}

    def on_image(analysis, payload, model_label, lam_v, threshold_v, top_k_v, alpha_v, scale_v,
                 picked_v, request: gr.Request):
        if not payload:
            return cleared()
        key = store.key_for(model_label)
        c = page.Controls(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v or (), None)
        if (analysis is not None and isinstance(payload, dict) and payload.get("path")
                and analysis.source == str(payload["path"]) and analysis.model_key == key):
            try:   # the same file again (the image box may report one upload twice): no rerun
                view = page.first_view(analysis, c.clean())
                view.status = analysis.sent.get("status", view.status)
                return shown_view(view, analysis)
            except page.BadControl as err:
                return {**cleared(), status: problem(err)}
        return run_upload(payload, key, c, request.session_hash)

    def on_changes(analysis, lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, focus_v):
        if analysis is None:
            return {state: gr.skip()}   # (Gradio reads an empty dict as one value)
        try:
            c = page.Controls(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v or (), focus_v)
            view = page.changes(analysis, c)
        except page.BadControl as err:
            analysis.sent["status_is_message"] = True
            return {status: problem(err)}
        except Exception as err:
            analysis.sent["status_is_message"] = True
            return {status: unexpected(err)}
        out = shown_view(view, analysis)
        if analysis.sent.pop("status_is_message", False):
            out[status] = analysis.sent.get("status", "")
        if view.focus == focus_v:
            out.pop(focus)
        return out

    def on_tile_select(analysis, lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v,
                       evt: gr.SelectData):
        if analysis is None or evt.value not in analysis.class_names:
            return {state: gr.skip()}
        out = on_changes(analysis, lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v,
                         evt.value)
        return {**out, focus: gr.update(value=evt.value), tabs: gr.Tabs(selected="closeup")}

    def on_model(model_label, analysis, top_k_v, alpha_v, scale_v, request: gr.Request):
        key = store.key_for(model_label)
        try:
            model = store.get(key)
        except ModelUnavailable as err:
            text = problem(str(err) + " — staying with the model that was loaded")
            previous = analysis.model_key if analysis is not None else VOC
            return {model_choice: gr.update(value=store.label_for(previous)), status: text}
        option = store.option(key)
        names = list(model.class_names)
        lam_v = float(model.lam)
        c = page.Controls(lam_v, option.threshold, top_k_v, alpha_v, scale_v, (), None)
        out = {state: None, scores: None, heatmaps: None, closeup: "", weights: "",
               status: f"Model: {html.escape(option.label)}. Upload an image or click an example."}
        if analysis is not None and analysis.source:
            out = run_upload({"path": analysis.source}, key, c, request.session_hash,
                             name=analysis.name)
        return {**out, lam: gr.update(value=lam_v), threshold: gr.update(value=option.threshold),
                top_k: gr.update(visible=len(names) > page.FULL_TABLE_LIMIT),
                picked: gr.update(choices=names, value=[]),
                focus: gr.update(choices=names, value=out[focus]["value"] if focus in out else None),
                info: model_info_markdown(model, store.device)}

    def on_downloads(analysis, lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v, focus_v):
        if analysis is None:
            gr.Warning("Nothing to download yet: upload an image first.")
            return {files: gr.skip()}
        try:
            c = page.Controls(lam_v, threshold_v, top_k_v, alpha_v, scale_v, picked_v or (),
                              focus_v).clean()
        except page.BadControl as err:
            return {status: problem(err)}
        return {files: write_downloads(downloads.new(), analysis, scores_at(analysis, c.lam),
                                       c.threshold, page.download_pictures(analysis, c),
                                       model_info(analysis.model, store.device))}

    with gr.Blocks(title=title, delete_cache=(1800, 3600)) as demo:
        guard = UploadGuard(examples, demo.GRADIO_CACHE, received=lambda: demo.upload_file_set)
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        if store.banner:  # e.g. why the VOC model is not served (app/weights.py)
            gr.HTML(f'<div class="csra-banner" role="alert">⚠️ {html.escape(store.banner)}</div>',
                    elem_id="csra-banner")
        gr.Markdown(
            f"## {title}: what does CSRA see?\n"
            "Class-specific residual attention (Zhu & Wu, ICCV 2021) scores every class from its "
            "own score map: an average over all positions plus λ times an attention-weighted sum. "
            "Upload an image, then move λ.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                image = gr.Image(type="filepath", image_mode=None, label="Image", height=240,
                                 sources=["upload", "clipboard", "webcam"], elem_id="csra-image")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image],
                                label="Examples (click one)", examples_per_page=len(examples))
                lam = gr.Slider(0.0, 1.0, value=float(first.lam), step=0.01,
                                label="λ (lambda): weight of the attention part",
                                elem_id="csra-lambda")
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01,
                                      label="threshold: a class is present when p ≥ this",
                                      elem_id="csra-threshold")
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
                model_choice = gr.Radio(store.labels, value=store.label_for(VOC), label="Model")
            with gr.Column(scale=5, min_width=300):
                status = gr.Markdown(PROMPT, elem_id="csra-status")
                scores = gr.HTML(None, html_template=SCORES_TEMPLATE, js_on_load=SCORES_JS,
                                 head=HEAD, elem_id="csra-scores")
            with gr.Column(scale=6, min_width=300):
                gr.Markdown("**Heatmaps** of the present classes — click one to look closer")
                heatmaps = gr.HTML(None, html_template=TILES_TEMPLATE, js_on_load=TILES_JS,
                                   head=HEAD, elem_id="csra-heatmaps")
        with gr.Tabs(selected="closeup") as tabs:
            with gr.Tab("One class up close", id="closeup"):
                focus = gr.Dropdown(first_names, value=None, label="class", elem_id="csra-focus")
                gr.Markdown("Image | average-pooling contribution | attention | score map, per "
                            "head; then the effective pooling weights 1/HW + λ·softmax(T·s).")
                closeup = gr.HTML("", elem_id="csra-closeup")
                weights = gr.HTML("", elem_id="csra-weights")
            with gr.Tab("Downloads", id="downloads"):
                download_button = gr.Button(
                    "Prepare downloads: scores (CSV, JSON) + overlays (PNG zip)")
                files = gr.File(label="Files", file_count="multiple", interactive=False,
                                height=140)
            with gr.Tab("What λ does · model", id="about"):
                gr.Markdown(page.LAMBDA_TEXT)
                info = gr.Markdown(model_info_markdown(first, store.device), elem_id="csra-info")

        controls = [lam, threshold, top_k, alpha, scale, picked]
        # preprocess=False: the handlers check every value themselves (page.Controls.clean), so
        # a bad one (lambda = 5, NaN, a class list of 10,000 names) gets the page's one-line
        # message rather than Gradio's error
        drawing = dict(concurrency_id="drawing", concurrency_limit=DRAWING_CONCURRENCY,
                       show_progress="hidden", preprocess=False)
        # lambda, threshold and rows: answered in the browser, no server round trip
        lam.change(None, [lam], None, js="(v) => { csraExplorer.setControls({lam: v}); }")
        threshold.change(None, [threshold], None,
                         js="(v) => { csraExplorer.setControls({thr: v}); }")
        top_k.change(None, [top_k], None, js="(v) => { csraExplorer.setControls({topk: v}); }")

        # Gradio's progress overlay is hidden on the upload: its animation, drawn by the browser
        # on the same cores as the network, made an upload 0.1-0.25 s slower on a 2-core
        # machine (bench/browser_latency.py). Instead the summary says "Analysing the image…"
        # and the old results are dimmed, both still (explorer.js).
        image.change(None, [image], None, js="(v) => { csraExplorer.analysing(v); }")
        image.clear(None, None, [status], js=f"() => {json.dumps(PROMPT)}")
        image.change(on_image, [state, image, model_choice, *controls],
                     [state, status, scores, heatmaps, closeup, weights, focus, image],
                     api_name="analyse", concurrency_id="network", preprocess=False,
                     show_progress="hidden", trigger_mode="once").then(
            on_changes, [state, *controls, focus], [state, status, heatmaps, closeup, weights, focus],
            api_visibility="private", **drawing)
        # pictures the page does not hold yet: off the critical path, newest request only
        gr.on([lam.release, threshold.release, alpha.release, scale.input, picked.input, focus.input],
              on_changes, [state, *controls, focus], [state, status, heatmaps, closeup, weights, focus],
              api_name="refresh", trigger_mode="always_last", **drawing)
        heatmaps.select(on_tile_select, [state, *controls],
                        [state, status, heatmaps, closeup, weights, focus, tabs],
                        api_visibility="private", **drawing)
        model_choice.input(on_model, [model_choice, state, top_k, alpha, scale],
                           [state, model_choice, lam, threshold, top_k, picked, focus, info,
                            status, scores, heatmaps, closeup, weights, image],
                           api_name="choose_model", concurrency_id="network").then(
            on_changes, [state, *controls, focus], [state, status, heatmaps, closeup, weights, focus],
            api_visibility="private", **drawing)
        download_button.click(on_downloads, [state, *controls, focus], [files, status],
                              api_name="downloads", concurrency_id="drawing",
                              concurrency_limit=DRAWING_CONCURRENCY, preprocess=False)
    return demo


def launch(demo, host="127.0.0.1", port=7860, share=False, prevent_thread_lock=False, quiet=False):
    """Queue (one network run at a time suits one GPU) and serve with upload limits.

    run_history=False: Gradio would otherwise keep every run's inputs and outputs (here the
    heatmaps, inline) in the browser's localStorage and rewrite that list on every event,
    which cost 0.34 s of browser time at the 8th upload, growing with each one; it would also
    keep the user's pictures in the browser after they leave."""
    demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=64)
    return demo.launch(server_name=host, server_port=port, share=share,
                       max_file_size=MAX_FILE_SIZE, state_session_capacity=256,
                       show_error=True, prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                       css=CSS, footer_links=["api", "gradio"], run_history=False)
