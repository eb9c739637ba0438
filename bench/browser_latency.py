"""The page's latency as a user feels it: Debian's Chromium (Playwright) on the running app.

    python bench/browser_latency.py [--events 12] [--device auto|cpu|cuda]

Serves resnet101 + CSRA at 448 px with random weights (nothing is downloaded) on
127.0.0.1 from this process, opens the page at 1400x1000, and times, from the input
event to the DOM change (measured in the page with performance.now()):

  page load             navigation -> the explorer ready
  upload -> scores      the file input's change -> the scores summary shows the new image
  upload -> heatmap     the file input's change -> the first heatmap tile's <img> in the DOM
  lambda -> scores      the lambda slider's input event -> the summary and table redrawn
  lambda -> chart       the lambda slider's input event -> the chart's SVG replaced
  threshold -> table    the threshold slider's input event -> the table redrawn

and, in the same server process, the model's forward on the same images (decode excluded):
backbone + head score maps, the step an upload cannot avoid. It is timed twice:

  backbone (page open)  right after each upload, on the image just uploaded, while the page
                        sits idle in Chromium: the conditions the upload itself ran under
                        (the browser and Gradio's server share the same cores). RESULT's
                        backbone_ms is this one.
  backbone (no browser) before Chromium starts, the server idle: the machine's best case.

Uploads are 500 px photos made from assets/, each under a new name; the threshold is 0.3 so
that every upload draws the full set of 12 tiles (the worst case). The last line is

    RESULT upload_ms=<median upload -> scores and first heatmap> lambda_ms=<median lambda ->
    scores and chart> backbone_ms=<median forward, page open> ratio=<upload_ms / backbone_ms>
"""
import argparse
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.benchmark import Timer

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import csra  # noqa: E402
from csra.device import DEVICE_CHOICES  # noqa: E402
from app.inference import score_maps  # noqa: E402
from app.models import VOC, default_store, device_text  # noqa: E402
from app.weights import EMBEDDED_LAM  # noqa: E402
from app.ui import EXAMPLES, build_demo, example_paths, launch  # noqa: E402

CHROMIUM = os.environ.get("CSRA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu"]

WATCH_UPLOAD = """(name) => { window.__upload = new Promise((done) => {
    const input = document.querySelector('#csra-upload input[type=file]');
    let t0 = null, scores = null, tile = null, handler = null, parts = null;
    const finish = () => { if (scores !== null && tile !== null) { observer.disconnect();
        done({scores: scores - t0, tile: tile - t0, handler, parts}); } };
    input.addEventListener('change', () => { t0 = performance.now(); }, {capture: true, once: true});
    const observer = new MutationObserver(() => {
        if (t0 === null) return;
        if (tile === null && csraExplorer.state.data?.name === name &&
            document.querySelector('#csra-heatmaps .csra-tile img')) tile = performance.now();
        finish();
    });
    observer.observe(document.querySelector('#csra-heatmaps'), {childList: true, subtree: true});
    window.addEventListener('csra-drawn', function on() {
        if (t0 !== null && csraExplorer.state.data?.name === name) {
            scores = performance.now(); window.removeEventListener('csra-drawn', on);
            handler = csraExplorer.state.data.handler_ms; parts = csraExplorer.state.timing;
            if (document.querySelector('#csra-heatmaps .csra-tile img') && tile === null) tile = scores;
            finish();
        }
    });
}); }"""

MOVE = """([id, value, part]) => new Promise((done) => {
    const input = document.querySelector(`#${id} input[type=range]`);
    const target = document.querySelector(`#csra-scores ${part}`);
    let changed = null;
    const observer = new MutationObserver(() => { if (changed === null) changed = performance.now(); });
    observer.observe(target, {childList: true, subtree: true});
    const t0 = performance.now();
    window.addEventListener('csra-drawn', function on() {
        const r = csraExplorer.state.last;
        if (r && Math.abs((id === 'csra-lambda' ? r.lam : r.thr) - value) < 1e-9) {
            const drawn = performance.now();
            window.removeEventListener('csra-drawn', on); observer.disconnect();
            done({scores: drawn - t0, part: (changed ?? drawn) - t0});
        }
    });
    input.value = String(value);
    input.dispatchEvent(new Event('input', {bubbles: true}));
})"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photos(folder, count):
    """count 500 px JPEGs made from the example photos, each under a new name."""
    sources = example_paths(EXAMPLES)
    paths = []
    for i in range(count):
        image = csra.load_image(sources[i % len(sources)])
        image.thumbnail((500, 500))
        path = Path(folder) / f"photo_{i:02d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def summary(name, values):
    values = np.asarray(values, dtype=float)
    return name, float(np.median(values)), float(np.percentile(values, 90)), len(values)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=12, help="timed events of each kind (>= 10)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--model", default="embedded", choices=("embedded", "resnet101"),
                   help="embedded (default): what python app.py serves on a fresh install; "
                        "resnet101: the VOC recipe's network at 448 px, random weights")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    device = csra.pick_device(args.device)
    torch.manual_seed(0)
    if args.model == "embedded":
        model = csra.from_classifier("efficientnet_lite0", lam=EMBEDDED_LAM).eval()
        what = "embedded efficientnet_lite0 + CSRA (ImageNet, 1000 classes)"
    else:
        model = csra.build_model("resnet101", num_classes=20, image_size=448,
                                 class_names=csra.VOC_CLASSES).eval()
        what = "resnet101 + CSRA, 448 px, random weights"
    store = default_store(model, classifier=None, device=device)
    demo = build_demo(store, examples=[])
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    folder = Path(tempfile.mkdtemp(prefix="csra-browser-latency-"))
    rows = []
    try:
        uploads = photos(folder, args.events + 1)
        served = store.get(VOC)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def forward_ms(path):
            timer = Timer("score_maps(model, image); sync()",
                          globals={"score_maps": score_maps, "model": served, "sync": sync,
                                   "image": csra.load_image(path)},
                          num_threads=torch.get_num_threads())  # the server's, not Timer's 1
            return timer.timeit(1).median * 1000

        forward_ms(uploads[0])                                   # warm-up
        alone = [forward_ms(uploads[1 + i % args.events]) for i in range(args.events)]

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            loads = []
            for _ in range(args.events):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url, wait_until="commit")
                page.wait_for_function("() => window.csraExplorer && "
                                       "document.querySelector('#csra-upload input[type=file]')")
                loads.append(page.evaluate("() => performance.now()"))  # since navigation start
                page.close()
            rows.append(summary("page load", loads))

            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_function("() => window.csraExplorer")
            box = page.locator("#csra-threshold input[type=number]")
            box.fill("0.3")
            box.press("Enter")
            upload_scores, upload_tile, backbone, handler, overhead = [], [], [], [], []
            parts = {}     # the page's own split of an upload (explorer.js, state.timing)
            for i, path in enumerate(uploads):
                page.evaluate(WATCH_UPLOAD, path.name)
                page.locator("#csra-upload input[type=file]").set_input_files(str(path))
                t = page.evaluate("window.__upload")
                time.sleep(1.0)                   # the chained requests (close-up) finish
                if i:                                            # the first one warms up
                    upload_scores.append(t["scores"])
                    upload_tile.append(t["tile"])
                    handler.append(t["handler"])
                    overhead.append(t["scores"] - t["handler"])
                    for key, value in (t["parts"] or {}).items():
                        parts.setdefault(key, []).append(value)
                    backbone.append(forward_ms(path))            # page open, idle
            rows += [summary("upload -> scores", upload_scores),
                     summary("upload -> first heatmap", upload_tile),
                     summary("handler (server)", handler),
                     summary("overhead", overhead),
                     summary("first heatmap - handler", np.subtract(upload_tile, handler))]
            labels = {"upload_ms": "  file -> Gradio upload", "call_ms": "  analyse call (server)",
                      "draw_ms": "  drawing (browser)"}
            rows += [summary(labels[k], v) for k, v in parts.items() if k in labels]

            lam_scores, lam_chart, thr_table = [], [], []
            for i in range(args.events + 1):
                lam = round(0.05 + 0.9 * ((i * 7) % 19) / 18, 2)      # a new value each time
                threshold = round(0.2 + 0.6 * ((i * 5) % 13) / 12, 2)
                t = page.evaluate(MOVE, ["csra-lambda", lam, ".csra-chart"])
                u = page.evaluate(MOVE, ["csra-threshold", threshold, ".csra-table"])
                if i:
                    lam_scores.append(t["scores"])
                    lam_chart.append(t["part"])
                    thr_table.append(u["part"])
            rows += [summary("lambda -> scores", lam_scores), summary("lambda -> chart", lam_chart),
                     summary("threshold -> table", thr_table)]
            browser.close()
        rows += [summary("backbone (page open)", backbone), summary("backbone (no browser)", alone)]
    finally:
        demo.close()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"{what}; device {device_text(device)}; Chromium 1400x1000; torch {torch.__version__}")
    print(f"{'event':<26}{'median ms':>11}{'p90 ms':>10}{'n':>5}")
    for name, median, p90, n in rows:
        print(f"{name:<26}{median:>11.1f}{p90:>10.1f}{n:>5}")
    by = {name: median for name, median, _, _ in rows}
    p90s = {name: p90 for name, _, p90, _ in rows}
    upload_ms = max(by["upload -> scores"], by["upload -> first heatmap"])
    lambda_ms = max(by["lambda -> scores"], by["lambda -> chart"])
    backbone_ms = by["backbone (page open)"]
    print(f"RESULT upload_ms={upload_ms:.0f} lambda_ms={lambda_ms:.1f} "
          f"backbone_ms={backbone_ms:.0f} ratio={upload_ms / backbone_ms:.2f} "
          f"overhead_ms={by['overhead']:.0f} overhead_p90_ms={p90s['overhead']:.0f} "
          f"handler_ms={by['handler (server)']:.0f} "
          f"heatmap_minus_handler_ms={by['first heatmap - handler']:.0f}")


if __name__ == "__main__":
    main()
