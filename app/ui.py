"""The Gradio page: components, layout and events. The work itself is in app/page.py.

One ModelStore is shared by every session; each session keeps its own
Analysis (the image's cached score maps) in a gr.State, so moving a slider
only rescores those maps. Errors in an input (not an image, too many pixels,
a model that cannot be loaded) become a message in the page; the app keeps
serving.
"""
import atexit
import logging
import time
import traceback
from pathlib import Path

import gradio as gr

import csra

from . import page
from .exports import DownloadFolders, write_downloads
from .models import VOC, ModelUnavailable, model_info, model_info_markdown

log = logging.getLogger("csra.app")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLES = ["cat_and_person.jpg", "cat.jpg", "astronaut.jpg", "grace_hopper.jpg",
            "camera_gray.jpg", "coffee.jpg", "rocket.jpg"]
MAX_FILE_SIZE = "20mb"
SESSION_TTL_S = 3600
NETWORK_CONCURRENCY = 1   # network runs at a time (one GPU, or all CPU cores, per run)
DRAWING_CONCURRENCY = 4   # slider redraws at a time: no network, a few ms each

CSS = """
.csra-chart text { fill: var(--body-text-color); }
#csra-status { min-height: 2.5em; }
"""


def hand_over_undecoded(image_component):
    """Make a gr.Image pass an uploaded file's path on without opening it, so that every file
    is decoded by csra.load_image (EXIF orientation, modes, pixel limit, one-line errors)
    rather than failing inside Gradio with PIL's message. (A patched instance, not a
    subclass: Gradio writes a .pyi stub next to the source of every Component subclass.)"""
    decode = image_component.preprocess

    def preprocess(payload):
        if payload is None:
            return None
        if payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        try:
            return decode(payload)
        except Exception as err:  # a pasted/webcam image Gradio could not decode
            raise gr.Error(f"cannot read this image ({err})") from None

    image_component.preprocess = preprocess
    return image_component


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

    def controls(lam, threshold, top_k, alpha, scale, picked, focus):
        return page.Controls(lam, threshold, top_k, alpha, scale, tuple(picked or ()), focus)

    def view_outputs(view):
        return [view.status, view.table, view.chart, view.legend, view.gallery, view.comparison,
                view.weights_picture, view.weights_text]

    def message_view(text):
        return page.PageView(status=text)

    def problem(err):
        text = str(err)
        gr.Warning(text)
        return f"⚠️ {text}"

    def unexpected(err):
        log.error("unexpected error:\n%s", traceback.format_exc())
        return problem(f"internal error ({type(err).__name__}: {err}); the details are in "
                       "the server log — try another image")

    def run_upload(path, model_key, c):
        """(Analysis or None, PageView) for an image path; errors become the page's status."""
        if path is None:
            return None, message_view("Upload, paste or take a picture, or click an example.")
        try:
            model = store.get(model_key)
            start = time.perf_counter()
            analysis, view = page.upload(model, path, c, model_key=model_key)
            view.status += f" _(network + drawing {time.perf_counter() - start:.2f} s)_"
            return analysis, view
        except csra.ImageError as err:
            return None, message_view(problem(err))
        except ModelUnavailable as err:
            return None, message_view(problem(err))
        except Exception as err:  # never let one request take the page down
            return None, message_view(unexpected(err))

    def focus_update(view, analysis):
        if analysis is None:
            return gr.update()
        return gr.update(value=view.focus)

    def on_image(path, model_label, lam, threshold, top_k, alpha, scale, picked, focus):
        c = controls(lam, threshold, top_k, alpha, scale, picked, None)
        analysis, view = run_upload(path, store.key_for(model_label), c)
        return [analysis, *view_outputs(view), focus_update(view, analysis)]

    def on_controls(analysis, lam, threshold, top_k, alpha, scale, picked, focus):
        if analysis is None:
            return [gr.skip()] * 8
        try:
            return view_outputs(page.refresh(analysis, controls(lam, threshold, top_k, alpha,
                                                                scale, picked, focus)))
        except Exception as err:
            return [unexpected(err)] + [gr.skip()] * 7

    def on_gallery_select(analysis, lam, threshold, top_k, alpha, scale, picked,
                          evt: gr.SelectData):
        if analysis is None:
            return [gr.skip()] * 9
        caption = (evt.value or {}).get("caption") if isinstance(evt.value, dict) else None
        name = caption.split(" · ")[0] if caption else None
        view = page.refresh(analysis, controls(lam, threshold, top_k, alpha, scale, picked, name))
        return [gr.update(value=view.focus), *view_outputs(view)]

    def on_model(model_label, analysis, lam, threshold, top_k, alpha, scale, picked, focus):
        key = store.key_for(model_label)
        try:
            model = store.get(key)
        except ModelUnavailable as err:
            text = problem(str(err) + " — staying with the model that was loaded")
            previous = analysis.model_key if analysis is not None else VOC
            return [analysis, gr.update(value=store.label_for(previous)), gr.skip(), gr.skip(),
                    gr.skip(), gr.skip(), gr.skip(), gr.skip(), text] + [gr.skip()] * 7
        option = store.option(key)
        names = list(model.class_names)
        c = page.Controls(model.lam, option.threshold, top_k, alpha, scale, (), None)
        new_analysis, view = (None, message_view(
            f"Model: {option.label}. Upload an image or click an example."))
        if analysis is not None and analysis.source:
            new_analysis, view = run_upload(analysis.source, key, c)
            if new_analysis is not None:
                new_analysis.name = analysis.name
        return [new_analysis, gr.update(),
                gr.update(value=float(model.lam)), gr.update(value=option.threshold),
                gr.update(visible=len(names) > page.FULL_TABLE_LIMIT),
                gr.update(choices=names, value=[]),
                gr.update(choices=names, value=view.focus if new_analysis is not None else None),
                model_info_markdown(model, store.device), *view_outputs(view)]

    def on_downloads(analysis, lam, threshold, top_k, alpha, scale, picked, focus):
        if analysis is None:
            gr.Warning("Nothing to download yet: upload an image first.")
            return None
        c = controls(lam, threshold, top_k, alpha, scale, picked, focus)
        view = page.refresh(analysis, c)
        return write_downloads(downloads.new(), analysis, view.scores, c.threshold,
                               page.download_pictures(analysis, view),
                               model_info(analysis.model, store.device))

    with gr.Blocks(title=title, delete_cache=(1800, 3600)) as demo:
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        if store.banner:   # e.g. why the VOC model is not served (app/weights.py)
            gr.Markdown(f"⚠️ {store.banner}", elem_id="csra-banner")
        gr.Markdown(
            f"# {title}: what does CSRA see?\n"
            "Class-specific residual attention (Zhu & Wu, ICCV 2021) scores every class from its "
            "own score map over the image: an average over all positions plus λ times an "
            "attention-weighted sum. Upload an image to see the scores, where each class looks, "
            "and what λ changes.")
        with gr.Row():
            with gr.Column(scale=2, min_width=340):
                model_choice = gr.Radio(store.labels, value=store.label_for(VOC), label="Model")
                image = hand_over_undecoded(gr.Image(
                    type="filepath", image_mode=None, label="Image", height=320,
                    sources=["upload", "clipboard", "webcam"], elem_id="csra-image"))
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image],
                                label="Examples (click one)", examples_per_page=len(examples))
                lam = gr.Slider(0.0, 1.0, value=float(first.lam), step=0.01,
                                label="λ (lambda): weight of the attention part",
                                elem_id="csra-lambda")
                gr.Markdown(page.LAMBDA_TEXT)
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01,
                                      label="threshold: a class is present when p ≥ this",
                                      elem_id="csra-threshold")
                top_k = gr.Slider(5, 100, value=20, step=1, label="rows shown (top-k classes)",
                                  visible=len(first_names) > page.FULL_TABLE_LIMIT)
            with gr.Column(scale=3, min_width=420):
                status = gr.Markdown("Upload, paste or take a picture, or click an example.",
                                     elem_id="csra-status")
                table = gr.Dataframe(headers=page.TABLE_HEADERS,
                                     datatype=["str", "number", "number", "number", "number", "bool"],
                                     interactive=False, max_height=360, elem_id="csra-scores",
                                     label="Scores — click a column header to sort")
                chart = gr.HTML(elem_id="csra-chart", label="Logit = base + λ × attention")
        gr.Markdown("## Heatmaps: where each class scores")
        with gr.Row():
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="heatmap opacity")
            scale = gr.Radio(list(page.render.SCALES), value="global", label="colour scale")
            picked = gr.Dropdown(first_names, value=[], multiselect=True,
                                 label="also show these classes")
        legend = gr.HTML(elem_id="csra-legend")
        gallery = gr.Gallery(label="Present classes (click one to look closer)", columns=4,
                             format="jpeg", object_fit="contain",
                             elem_id="csra-heatmaps", allow_preview=True)
        gr.Markdown("## One class up close: average pooling vs attention")
        focus = gr.Dropdown(first_names, value=None, label="class", elem_id="csra-focus")
        comparison = gr.Gallery(label="image | average-pooling contribution | attention | overlay",
                                columns=4, format="jpeg", object_fit="contain",
                                elem_id="csra-compare")
        with gr.Row():
            weights_picture = gr.Image(label="Effective pooling weights 1/HW + λ·softmax(T·s)",
                                       format="png", interactive=False, height=260,
                                       elem_id="csra-weights")
            weights_text = gr.Markdown(elem_id="csra-weights-text")
        gr.Markdown("## Downloads")
        with gr.Row():
            download_button = gr.Button("Prepare downloads: scores (CSV, JSON) + overlays (PNG zip)")
            files = gr.File(label="Files", file_count="multiple", interactive=False, height=140)
        info = gr.Markdown(model_info_markdown(first, store.device), elem_id="csra-info")

        control_inputs = [lam, threshold, top_k, alpha, scale, picked, focus]
        views = [status, table, chart, legend, gallery, comparison, weights_picture, weights_text]

        image.change(on_image, [image, model_choice, *control_inputs], [state, *views, focus],
                     api_name="analyse", concurrency_id="network")
        gr.on([lam.change, threshold.change, top_k.change, alpha.change, scale.change,
               picked.input, focus.input],
              on_controls, [state, *control_inputs], views, api_name="refresh",
              concurrency_id="drawing", concurrency_limit=DRAWING_CONCURRENCY,
              show_progress="hidden")
        gallery.select(on_gallery_select, [state, lam, threshold, top_k, alpha, scale, picked],
                       [focus, *views], api_visibility="private", concurrency_id="drawing",
                       concurrency_limit=DRAWING_CONCURRENCY, show_progress="hidden")
        model_choice.input(on_model, [model_choice, state, *control_inputs],
                            [state, model_choice, lam, threshold, top_k, picked, focus, info,
                             *views], api_name="choose_model", concurrency_id="network")
        download_button.click(on_downloads, [state, *control_inputs], files, api_name="downloads",
                              concurrency_id="drawing", concurrency_limit=DRAWING_CONCURRENCY)
    return demo


def launch(demo, host="127.0.0.1", port=7860, share=False, prevent_thread_lock=False, quiet=False):
    """Queue (one network run at a time suits one GPU) and serve with upload limits."""
    demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=64)
    return demo.launch(server_name=host, server_port=port, share=share,
                       max_file_size=MAX_FILE_SIZE, state_session_capacity=256,
                       show_error=True, prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                       css=CSS, footer_links=["api", "gradio"])
