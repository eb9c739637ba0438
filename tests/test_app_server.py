"""The running app through gradio_client and plain HTTP on localhost: upload, the numbers the
browser rescores, pictures, bad inputs, hostile requests, model choice, downloads, memory.
A tiny random model (tests/conftest.py); nothing is downloaded."""
import base64
import csv
import io
import json
import re
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import csra
from app import page
from app.models import IMAGENET
from app.ui import BLANK
from tests.app_api import call_api
from tests.conftest import CAT, IMAGENET_LABEL, write_classifier_weights

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # pandas 3 notices in Gradio
VOC_LABEL = "VOC model (20 classes)"
CONTROLS = dict(lam=0.1, threshold=0.5, top_k=20, alpha=0.5, scale="global", picked=[], focus=None)
ANALYSE = ["status", "scores", "heatmaps", "closeup", "weights", "focus"]
REFRESH = ["status", "heatmaps", "closeup", "weights", "focus", "evidence"]


def analyse(client, path, model=VOC_LABEL, **controls):
    c = {**CONTROLS, **controls}
    out = client.predict(gradio_client.handle_file(str(path)), model, *c.values(), api_name="/analyse")
    return named(ANALYSE, out)


def named(outputs, out):
    """An answer's outputs by name; the scores view's value (JSON text) parsed."""
    answer = dict(zip(outputs, out))
    answer["scores"] = json.loads(answer["scores"]) if answer.get("scores") else None
    return answer


def refresh(client, **controls):
    c = {**CONTROLS, **controls}
    return dict(zip(REFRESH, client.predict(*c.values(), api_name="/refresh")))


def updated(value):
    """A component's new value, or None where the handler left it alone."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        return value.get("value")
    return value


def jpeg(uri):
    assert uri.startswith("data:image/jpeg;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert picture.format == "JPEG"
    return picture


def img_sources(html_text):
    return re.findall(r'<img src="([^"]+)"', html_text or "")


def probabilities(scores, lam):
    """What the browser computes: logit = base + lam * attention, then the sigmoid."""
    logits = np.array(scores["base"]) + lam * np.array(scores["attention"])
    return dict(zip(scores["names"], 1 / (1 + np.exp(-logits))))


def assert_serving(client):
    out = analyse(client, CAT)
    assert len(out["scores"]["rows"]) == 20, out["status"]
    assert "cat.jpg" in out["status"]


def test_upload_numbers_tiles_and_lambda(app):
    # a session of its own: in the module's session the same photo may already be analysed
    # (its upload has the same path), which the page answers without running the network
    client = gradio_client.Client(app.url, verbose=False)
    before = app.calls["backbone"]
    out = analyse(client, CAT, lam=0.1, threshold=0.5)
    assert app.calls["backbone"] == before + 1
    scores = out["scores"]
    rows = scores["rows"]
    assert sorted(r["class"] for r in rows) == sorted(csra.VOC_CLASSES)
    probs = [r["probability"] for r in rows]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    present = [r["class"] for r in rows if r["present"]]
    assert present == [r["class"] for r in rows if r["probability"] >= 0.5]
    # the first view: tiles of the present classes only, small JPEGs
    tiles = out["heatmaps"]["tiles"]
    assert [scores["names"][int(i)] for i in tiles] == present[:page.MAX_HEATMAPS]
    assert all(max(jpeg(uri).size) <= 256 for uri in tiles.values())
    assert "global" in out["heatmaps"]["legend"] and out["closeup"] == BLANK   # emptied
    # the server's rows and the browser's formula agree
    for r in rows:
        assert abs(probabilities(scores, 0.1)[r["class"]] - r["probability"]) < 1e-5

    # lambda 0.9 from the numbers the browser holds = a full forward at 0.9
    reference = csra.build_model("resnet18", num_classes=20, image_size=64).eval()
    reference.load_state_dict(app.model.state_dict())
    reference.lam = 0.9
    with torch.no_grad():
        logits = reference(reference.preprocessing(csra.load_image(CAT))[None])[0]
    expected = dict(zip(csra.VOC_CLASSES, torch.sigmoid(logits).tolist()))
    for name, p in probabilities(scores, 0.9).items():
        assert abs(p - expected[name]) < 2e-4, name

    # the server's part of a lambda move: pooling weights only, no backbone run
    calls = app.calls["backbone"]
    out9 = refresh(client, lam=0.9, threshold=0.5, focus=out["focus"])
    assert app.calls["backbone"] == calls
    assert "0.90" in out9["weights"] and len(img_sources(out9["weights"])) == 1
    assert len(img_sources(out9["closeup"])) == 4          # image | avg | attention | overlay
    again = refresh(client, lam=0.9, threshold=0.5, focus=out["focus"])
    assert all(updated(again[k]) is None for k in ("heatmaps", "closeup", "weights"))  # nothing redrawn


def test_one_network_run_at_a_time_and_parallel_redraws(app, client):
    analyse(client, CAT)          # Gradio makes a queue at the first event that uses it
    refresh(client, focus="dog")
    queues = app.demo._queue.event_queue_per_concurrency_id
    assert queues["network"].concurrency_limit == 1       # uploads and model switches
    assert queues["drawing"].concurrency_limit == 4       # pictures, selections, downloads


def test_threshold_picks_and_scale_change_what_is_drawn(client):
    out = analyse(client, CAT)
    names = out["scores"]["names"]
    few = refresh(client, threshold=0.99, picked=["dog"])
    assert updated(few["heatmaps"]) is not None
    assert few["heatmaps"]["picked"] == [names.index("dog")]
    per_map = refresh(client, threshold=0.99, picked=["dog"], scale="per-map")
    assert "per-map" in per_map["heatmaps"]["legend"]
    assert list(per_map["heatmaps"]["tiles"]) == [str(names.index("dog"))]
    horse = refresh(client, threshold=0.99, picked=["dog"], scale="per-map", focus="horse")
    assert "horse" in horse["closeup"] and updated(horse["heatmaps"]) is None


def test_picked_list_is_deduplicated_and_capped(app, client):
    """/refresh with ['cat'] * 1000 once drew 1000 heatmaps (98 s, +280 MB)."""
    out = analyse(client, CAT, threshold=0.99)
    names = out["scores"]["names"]
    flood = refresh(client, threshold=0.99, picked=["cat"] * 1000)
    assert flood["heatmaps"]["picked"] == [names.index("cat")]
    assert list(flood["heatmaps"]["tiles"]) == [str(names.index("cat"))]
    junk = refresh(client, threshold=0.99, picked=[f"no such class {i}" for i in range(10_000)])
    assert updated(junk["heatmaps"]) is None or junk["heatmaps"]["tiles"] == {}
    c = page.Controls(picked=["cat"] * 1000 + list(csra.VOC_CLASSES)).clean()
    assert c.picked == ("cat",) + tuple(n for n in csra.VOC_CLASSES if n != "cat")[:page.MAX_PICKED - 1]
    assert_serving(client)


@pytest.mark.parametrize("lam, threshold", [(float("nan"), 0.5), (0.1, float("nan")),
                                            (5.0, 0.5), (0.1, -1.0), (float("inf"), 0.5)])
def test_bad_lambda_or_threshold_gets_a_message_not_a_traceback(app, lam, threshold):
    with httpx.Client(base_url=app.url, timeout=60) as http:
        uploaded = http.post("gradio_api/upload", files={"files": ("cat.jpg", CAT.read_bytes())}).json()[0]
    text = call_api(app, "analyse", [{"path": uploaded, "orig_name": "cat.jpg",
                                       "meta": {"_type": "gradio.FileData"}},
                                      VOC_LABEL, lam, threshold, 20, 0.5, "global", [], None])
    assert "event: complete" in text, text[:500]
    data = json.loads(text.split("data: ", 1)[1].splitlines()[0])
    status = next(v for v in data if isinstance(v, str))
    name = "λ" if not (0 <= lam <= 1) else "threshold"
    assert status.startswith("⚠️") and f"{name} must be" in status, status
    assert "Traceback" not in text and "internal error" not in status
    with pytest.raises(page.BadControl, match="must be between 0 and 1"):
        page.Controls(lam=lam, threshold=threshold).clean()


def test_bad_lambda_on_refresh_gets_a_message(client):
    analyse(client, CAT)
    out = refresh(client, lam=5.0)
    assert out["status"] == "⚠️ λ must be between 0 and 1, got 5.0"
    assert all(updated(out[k]) is None for k in ("heatmaps", "closeup", "weights"))
    fixed = refresh(client, lam=0.5)                       # a good value clears the message
    assert fixed["status"].startswith("cat.jpg — ") and "0.50" in fixed["weights"]


def make_png(width, height):
    """A valid PNG header claiming width x height pixels, with (too little) data: tests the
    pixel limit, which must refuse it before decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def bad_inputs(folder):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    files = {}

    def save(name, image, **kw):
        image.save(folder / name, **kw)
        files[name] = folder / name

    (folder / "notes.png").write_text("this is text, not a picture")
    files["notes.png"] = folder / "notes.png"
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["truncated.jpg"] = folder / "truncated.jpg"
    save("one_pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)))
    (folder / "too_many_pixels.png").write_bytes(make_png(9000, 9000))
    files["too_many_pixels.png"] = folder / "too_many_pixels.png"
    (folder / "bomb.png").write_bytes(make_png(40000, 40000))
    files["bomb.png"] = folder / "bomb.png"
    rgba = np.dstack([photo, np.where(np.arange(60) < 30, 0, 255)[None].repeat(40, 0)])
    save("rgba.png", Image.fromarray(rgba.astype(np.uint8), "RGBA"))
    pal = Image.fromarray(photo).convert("P", palette=Image.ADAPTIVE, colors=16)
    save("palette.png", pal, transparency=0)
    save("gray.png", Image.fromarray(photo[..., 0]))
    gray16 = Image.fromarray(photo[..., 0].astype(np.uint16) * 257)
    assert gray16.mode == "I;16"
    save("gray16.png", gray16)
    save("cmyk.jpg", Image.fromarray(photo).convert("CMYK"))
    halves = np.zeros((40, 60, 3), np.uint8)
    halves[:, :30] = (255, 0, 0)     # stored: left red, right blue; EXIF 6 = turn 90° clockwise
    halves[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", Image.fromarray(halves), exif=exif, quality=95)
    (folder / "oversize.png").write_bytes(rng.integers(0, 256, 21 * 2 ** 20, dtype=np.uint8).tobytes())
    files["oversize.png"] = folder / "oversize.png"
    return files


REFUSED = {
    "notes.png": "not an image",
    "truncated.jpg": "truncated or corrupt",
    "too_many_pixels.png": "more than the limit",
    "bomb.png": "pixels",
}
WORKS = ["one_pixel.png", "rgba.png", "palette.png", "gray.png", "gray16.png", "cmyk.jpg",
         "exif_rotated.jpg"]


@pytest.fixture(scope="module")
def files(app):
    return bad_inputs(app.tmp / "inputs")


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_inputs_get_a_message_and_the_app_keeps_serving(client, files, name):
    out = analyse(client, files[name])
    assert out["status"].startswith("⚠️") and REFUSED[name] in out["status"], out["status"]
    assert name in out["status"] and "/tmp" not in out["status"]       # the file's own name
    assert out["scores"] is None and out["heatmaps"] is None
    assert out["focus"] is None                       # a plain value (see app/ui.py, Memory)
    assert_serving(client)


@pytest.mark.parametrize("name", WORKS)
def test_odd_but_valid_images_work(client, files, name):
    out = analyse(client, files[name])
    assert len(out["scores"]["rows"]) == 20 and not out["status"].startswith("⚠️"), out["status"]
    closeup = refresh(client, focus="dog")["closeup"]
    picture = np.asarray(jpeg(img_sources(closeup)[0]).convert("RGB")).astype(int)
    if name == "exif_rotated.jpg":      # upright: 40 wide x 60 high, red on top, blue below
        h, w, _ = picture.shape
        assert (h, w) == (448, 299)
        top, bottom = picture[: h // 3].mean((0, 1)), picture[-h // 3:].mean((0, 1))
        assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]
    if name == "rgba.png":              # the transparent left half is shown over white
        assert picture[:, :100].mean() > 240
    assert_serving(client)


def test_oversize_upload_is_refused_and_the_app_keeps_serving(app, client, files):
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        analyse(client, files["oversize.png"])                    # the client checks first
    with httpx.Client(base_url=app.url, timeout=60) as http:      # and so does the server
        response = http.post("gradio_api/upload",
                             files={"files": ("oversize.png", files["oversize.png"].read_bytes())})
    assert response.status_code == 413, response.text[:200]
    assert_serving(client)


MODEL_OUTPUTS = ["model", "lam", "threshold", "top_k", "picked", "focus", "info", "status", "scores",
                 "heatmaps", "closeup", "weights"]


def choose_model(client, label):
    out = client.predict(label, 20, 0.5, "global", 0.1, 0.5, [], None, api_name="/choose_model")
    return named(MODEL_OUTPUTS, out)


def test_model_choice_imagenet_classifier(app, client):
    analyse(client, CAT)
    out = choose_model(client, IMAGENET_LABEL)
    assert out["status"].startswith("⚠️") and "resnet18-imagenet.pth" in out["status"]
    assert updated(out["model"]) == VOC_LABEL                          # stays with the VOC model
    assert app.store.option(IMAGENET).model is None                    # no weights file yet
    assert_serving(client)

    write_classifier_weights(app.classifier_weights)
    before = app.calls["backbone"]
    out = choose_model(client, IMAGENET_LABEL)
    assert app.store.option(IMAGENET).model is not None and app.calls["backbone"] == before
    scores = out["scores"]
    assert len(scores["names"]) == 1000 and scores["kind"] == "softmax"
    assert "softmax over 1000 classes" in out["status"] and "resnet18" in out["info"]
    assert abs(sum(r["probability"] for r in scores["rows"]) - 1.0) < 1e-3
    assert updated(out["threshold"]) == pytest.approx(0.1)
    present = [r for r in scores["rows"] if r["probability"] >= 0.1][:page.MAX_HEATMAPS]
    assert len(out["heatmaps"]["tiles"]) == len(present)               # may be none at random weights
    out = choose_model(client, VOC_LABEL)
    assert len(out["scores"]["rows"]) == 20 and "sigmoid" in out["status"]


def test_downloads(client):
    analyse(client, CAT)
    paths, _ = client.predict(0.3, 0.5, 20, 0.5, "global", [], "cat", api_name="/downloads")
    by_suffix = {Path(p).suffix: Path(p) for p in paths}
    rows = list(csv.DictReader(io.StringIO(by_suffix[".csv"].read_text())))
    assert len(rows) == 20 and set(rows[0]) >= {"class", "probability", "present"}
    payload = json.loads(by_suffix[".json"].read_text())
    assert payload["lambda"] == pytest.approx(0.3) and payload["image"] == "cat.jpg"
    assert payload["model"]["backbone"] == "resnet18"
    with zipfile.ZipFile(by_suffix[".zip"]) as z:
        assert any(n.endswith("pooling_weights_cat.png") for n in z.namelist())
        assert all(Image.open(io.BytesIO(z.read(n))).format == "PNG" for n in z.namelist())


def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_memory_stays_flat_over_many_requests(app):
    light = gradio_client.Client(app.url, verbose=False, analytics_enabled=False,
                                 download_files=False)

    def rounds(n):
        for i in range(n):
            analyse(light, CAT, lam=(i % 10) / 10)
            refresh(light, lam=((i + 5) % 10) / 10, threshold=0.3 + (i % 3) / 10)
            refresh(light, lam=(i % 7) / 7, scale="per-map" if i % 2 else "global")

    rounds(15)                                  # warm-up: allocators, Gradio's caches
    start = rss_mb()
    rounds(40)                                  # 120 more requests
    grown = rss_mb() - start
    assert grown < 20, f"resident memory grew by {grown:.0f} MB over 120 requests"


def test_concurrent_analyses_of_the_same_image_all_succeed(app):
    """8 clients x 4 uploads of the same file at once: every answer complete (identical
    pictures were once re-saved by Gradio's cache while another response streamed them)."""
    errors, tiles = [], []

    def worker():
        c = gradio_client.Client(app.url, verbose=False, analytics_enabled=False,
                                 download_files=False)
        for _ in range(4):
            try:
                out = analyse(c, CAT)
                tiles.append(sorted(out["heatmaps"]["tiles"].items()))
            except Exception as err:  # noqa: BLE001 - counted, then reported
                errors.append(repr(err))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(tiles) == 32
    assert all(t == tiles[0] for t in tiles)               # the same picture bytes every time
