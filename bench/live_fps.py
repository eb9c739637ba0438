"""The live camera tab, end to end: Debian's Chromium with a fake camera on the running app.

    python bench/live_fps.py [--seconds 20] [--model embedded|resnet101] [--device auto|cpu|cuda]

Makes a camera clip from the photos in assets/ (pans and zooms, 640x480 at 30 frames/s,
written as Y4M: a text header, then raw I420 frames) and starts Chromium with
--use-fake-device-for-media-stream --use-fake-ui-for-media-stream
--use-file-for-fake-video-capture=CLIP, so getUserMedia gets that clip as its camera and the
permission prompt is granted. It serves the model on 127.0.0.1 from this process, opens the
page at 1400x1000, opens the "Live camera" tab, presses Start camera and lets it stream for
--seconds (the first 3 s are a warm-up and not counted). It reports, from the page's own
records (app/explorer.js, state.live):

  frames/s           frames shown per second (answers on screen over the timed window)
  camera -> overlay  the camera frame's capture time (requestVideoFrameCallback's
                     captureTime, else the time the frame was presented) -> the overlay of
                     that frame decoded and put on screen; split into
    camera -> sent     the frame's age when it is taken, plus drawing it into the canvas
                       and encoding the JPEG ("of which draw+JPEG")
    call               the server function's round trip (HTTP, Gradio, the handler)
    answer -> on screen  decoding the answer's JPEG
  handler (server)   the tab's server function: decode, network, overlay, JPEG
  forward (server)   the network alone on each frame (backbone + CSRA head score maps)

Median, p90 and mean over the frames of the timed window. The table's first line gives the
load average: on a shared machine the figures move with it.

The last line is `RESULT fps=<frames/s> latency_ms=<median> forward_ms=<median>`.
--path gradio runs the same per-frame function through Gradio's documented streaming
(gr.Image(sources=["webcam"], streaming=True).stream(...)) on a minimal page instead, for
comparison; it reports frames/s and the server's per-frame time (that path gives the page
no capture times, so no latency).
"""
import argparse
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import csra  # noqa: E402
from csra.device import DEVICE_CHOICES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CSRA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu"]
PHOTOS = ["cat_and_person.jpg", "astronaut.jpg", "coffee.jpg", "grace_hopper.jpg", "rocket.jpg"]
WARMUP_S = 3.0


def fake_camera_args(clip):
    """Chromium flags: the clip as the camera, and camera permission granted without a prompt."""
    return ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"]


def pan_zoom_frames(count, size=(640, 480), photos=PHOTOS, folder=ROOT / "assets"):
    """count RGB frames of size (width, height): slow pans and zooms over the photos, a new
    photo every 30 frames."""
    w, h = size
    pictures = [np.asarray(csra.load_image(folder / name)) for name in photos]
    for k in range(count):
        picture = pictures[(k // 30) % len(pictures)]
        t = (k % 30) / 29.0
        ph, pw = picture.shape[:2]
        zoom = 1.0 - 0.35 * t                              # the window shrinks: zooming in
        cw = min(pw, ph * w / h) * zoom
        ch = cw * h / w
        x = (pw - cw) * (0.2 + 0.6 * t)                     # and pans left to right
        y = (ph - ch) * 0.5
        crop = picture[int(y):int(y + ch), int(x):int(x + cw)]
        yield cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def write_y4m(path, frames, size, fps=30):
    """Y4M (what Chromium's fake camera reads): a header line, then per frame 'FRAME' and the
    I420 planes (Y at full size, then U and V at half size)."""
    w, h = size
    if w % 2 or h % 2:
        raise ValueError("Y4M 4:2:0 needs an even width and height")
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        n = 0
        for rgb in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes())
            n += 1
    return n


def camera_clip(path, seconds=4, size=(640, 480), fps=30):
    """A Y4M clip of pans and zooms over assets/ (Chromium loops it)."""
    return write_y4m(path, pan_zoom_frames(int(seconds * fps), size), size, fps)


def live_frame_side(model):
    from app import live
    return live.frame_side(model)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_model(name):
    torch.manual_seed(0)
    if name == "embedded":
        from app.weights import EMBEDDED_LAM
        return (csra.from_classifier("efficientnet_lite0", lam=EMBEDDED_LAM).eval(),
                "embedded efficientnet_lite0 + CSRA (ImageNet, 1000 classes, 224 px)")
    return (csra.build_model("resnet101", num_classes=20, image_size=448,
                             class_names=csra.VOC_CLASSES).eval(),
            "resnet101 + CSRA, 448 px, random weights")


def stats(values):
    values = np.asarray(values, dtype=float)
    return float(np.median(values)), float(np.percentile(values, 90)), float(values.mean()), len(values)


def run_page(url, clip, seconds):
    """The app's page: Live camera tab, Start camera, stream; the page's records."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS + fake_camera_args(clip))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_function("() => window.csraExplorer")
        page.get_by_role("tab", name="Live camera").click()   # the tab is drawn when opened
        page.locator("#csra-live .csra-live-start").click()
        page.wait_for_function("() => csraExplorer.state.live.frames > 0", timeout=120_000)
        time.sleep(WARMUP_S)
        start = page.evaluate("() => performance.now()")
        time.sleep(seconds)
        end = page.evaluate("() => performance.now()")
        live = page.evaluate("""([a, b]) => { const L = csraExplorer.state.live; const keep = [];
            L.shown.forEach((t, i) => { if (t >= a && t <= b) keep.push(i); });
            return {shown: keep.map(i => L.shown[i]), latency: keep.map(i => L.latency[i]),
                    forward: keep.map(i => L.forward[i]), handler: keep.map(i => L.handler[i]),
                    sent: keep.map(i => L.sent[i]), encoded: keep.map(i => L.encoded[i]),
                    call: keep.map(i => L.answered[i]),
                    drawn: keep.map(i => L.latency[i] - L.sent[i] - L.answered[i]),
                    line: document.querySelector('#csra-live .csra-live-line').textContent}; }""",
                             [start, end])
        page.locator("#csra-live .csra-live-stop").click()
        browser.close()
    live["window_ms"] = end - start
    return live


def run_gradio_stream(model, clip, seconds, stream_every):
    """Gradio's documented streaming on a minimal page: gr.Image(webcam, streaming) ->
    .stream(the same per-frame function) -> gr.Image. The camera is asked for frames of the
    size the app's tab sends (app.live.frame_side), not mirrored. Frames/s = output image
    changes."""
    import gradio as gr
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from app import live, page as page_module
    controls = page_module.Controls(lam=float(model.lam), threshold=0.1).clean()
    server_ms, forward_ms, sizes = [], [], set()

    def on_frame(frame):
        if frame is None:
            return None
        start = time.perf_counter()
        sizes.add(f"{frame.shape[1]}x{frame.shape[0]}")
        picture, out = live.process_frame(model, Image.fromarray(frame), controls)
        server_ms.append(1000 * (time.perf_counter() - start))
        forward_ms.append(out["forward_ms"])
        return picture

    side = live.frame_side(model)
    constraints = {"video": {"width": {"ideal": side}, "height": {"ideal": round(side * 3 / 4)}}}
    with gr.Blocks() as demo:
        camera = gr.Image(sources=["webcam"], streaming=True, elem_id="cam",
                          webcam_options=gr.WebcamOptions(mirror=False, constraints=constraints))
        shown = gr.Image(elem_id="out")
        camera.stream(on_frame, [camera], [shown], stream_every=stream_every, time_limit=600,
                      concurrency_limit=1)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                        quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS + fake_camera_args(clip))
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.evaluate("""() => { window.__changes = []; new MutationObserver(() => {
                const img = document.querySelector('#out img'); const src = img && img.src;
                if (src && src !== window.__last) { window.__last = src; window.__changes.push(performance.now()); }
              }).observe(document.body, {subtree: true, childList: true, attributes: true}); }""")
            page.get_by_text("Click to Access Webcam").click()
            page.locator("#cam button").filter(has_text="Record").first.click()
            page.wait_for_function("() => window.__changes.length > 0", timeout=120_000)
            time.sleep(WARMUP_S)
            start = page.evaluate("() => performance.now()")
            n0 = len(server_ms)
            time.sleep(seconds)
            end = page.evaluate("() => performance.now()")
            changes = page.evaluate("([a, b]) => window.__changes.filter(t => t >= a && t <= b)",
                                    [start, end])
            server = server_ms[n0:]
            forward = forward_ms[n0:]
            browser.close()
    finally:
        demo.close()
    return {"shown": changes, "handler": server, "forward": forward, "window_ms": end - start,
            "sizes": sorted(sizes)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="timed streaming (after a 3 s warm-up)")
    p.add_argument("--model", default="embedded", choices=("embedded", "resnet101"))
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--path", default="page", choices=("page", "gradio"),
                   help="page (default): the app's Live camera tab; gradio: Gradio's own webcam "
                        "streaming on a minimal page, for comparison")
    p.add_argument("--stream-every", type=float, default=0.05,
                   help="--path gradio: seconds between the frames Gradio's webcam sends")
    p.add_argument("--frame-side", type=int, default=None,
                   help="--path page: longest side of the frames the page sends (default: "
                        "app.live.frame_side, 320 for a 224 px model)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the server (default: torch's, one per core)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = csra.pick_device(args.device)
    model, what = load_model(args.model)
    folder = Path(tempfile.mkdtemp(prefix="csra-live-fps-"))
    try:
        clip = folder / "camera.y4m"
        frames = camera_clip(clip)
        if args.path == "page":
            from app import live as live_module
            from app.models import default_store
            if args.frame_side:
                live_module.MIN_FRAME_SIDE = args.frame_side
            from app.ui import build_demo, launch
            store = default_store(model, classifier=None, device=device)
            demo = build_demo(store, examples=[])
            port = free_port()
            launch(demo, port=port, prevent_thread_lock=True, quiet=True)
            try:
                live = run_page(f"http://127.0.0.1:{port}/", clip, args.seconds)
            finally:
                demo.close()
            side = live_module.frame_side(model)
            path = f"the app's Live camera tab (page script + server function), {side} px frames"
        else:
            model = csra.prepare_for_inference(model, device)
            live = run_gradio_stream(model, clip, args.seconds, args.stream_every)
            path = (f"Gradio's webcam streaming, stream_every={args.stream_every}, "
                    f"camera asked for {live_frame_side(model)} px frames")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    shown = live["shown"]
    fps = (len(shown) - 1) / ((shown[-1] - shown[0]) / 1000) if len(shown) > 1 else 0.0
    load = os.getloadavg()
    print(f"{what}; {path}; device {device}; torch threads {torch.get_num_threads()}; "
          f"Chromium 1400x1000, fake camera 640x480 at 30 frames/s ({frames} frames, looped); "
          f"{args.seconds:g} s timed; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if live.get("sizes"):
        print(f"frames the server got: {', '.join(live['sizes'])}")
    print(f"{'what':<24}{'median':>9}{'p90':>9}{'mean':>9}{'n':>6}")
    print(f"{'frames/s':<24}{fps:>9.1f}{'':>9}{'':>9}{len(shown):>6}")
    rows = [("camera -> overlay ms", live.get("latency")),
            ("  camera -> sent", live.get("sent")), ("    of which draw+JPEG", live.get("encoded")),
            ("  call (round trip)", live.get("call")),
            ("  answer -> on screen", live.get("drawn")),
            ("handler (server) ms", live["handler"]), ("forward (server) ms", live["forward"])]
    for name, values in rows:
        if values:
            median, p90, mean, n = stats(values)
            print(f"{name:<24}{median:>9.1f}{p90:>9.1f}{mean:>9.1f}{n:>6}")
    latency = f"{stats(live['latency'])[0]:.0f}" if live.get("latency") else "n/a"
    forward = stats(live["forward"])[0] if live["forward"] else float("nan")
    print(f"RESULT fps={fps:.1f} latency_ms={latency} forward_ms={forward:.0f}")


if __name__ == "__main__":
    main()
