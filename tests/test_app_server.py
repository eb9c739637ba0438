"""The running app through gradio_client on localhost: upload, scores, lambda, bad inputs,
model choice, downloads, memory. A tiny random model built here; nothing is downloaded."""
import csv
import io
import json
import os
import socket
import struct
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import csra  # noqa: E402
from app.models import IMAGENET, default_store  # noqa: E402
from app.ui import build_demo, launch  # noqa: E402

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # pandas 3 notices in Gradio
ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "cat.jpg"
VOC_LABEL = "VOC model (20 classes)"
CONTROLS = dict(lam=0.1, threshold=0.5, top_k=20, alpha=0.5, scale="global", picked=[], focus=None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tmp, classifier_weights):
    """A tiny VOC-shaped model; the ImageNet option loads resnet18 weights from a file that
    the tests create when they want it to work (missing file = 'cannot load')."""
    torch.manual_seed(0)
    model = csra.build_model("resnet18", num_classes=20, image_size=64,
                             class_names=csra.VOC_CLASSES).eval()
    calls = {"backbone": 0}
    model.backbone.register_forward_hook(lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1))
    store = default_store(model, classifier="resnet18", classifier_loader_fn=lambda: csra.from_classifier(
        "resnet18", pretrained=str(classifier_weights), image_size=64, offline=True))
    demo = build_demo(store)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    return SimpleNamespace(demo=demo, url=f"http://127.0.0.1:{port}/", model=model, calls=calls,
                           store=store)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny model: one thread is fastest, and immune to a busy CPU
    tmp = tmp_path_factory.mktemp("app")
    running = start_app(tmp, tmp / "resnet18-imagenet.pth")
    running.tmp = tmp
    running.classifier_weights = tmp / "resnet18-imagenet.pth"
    yield running
    running.demo.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(app):
    return gradio_client.Client(app.url, verbose=False, analytics_enabled=False,
                                download_files=str(app.tmp / "downloads"))


def analyse(client, path, model=VOC_LABEL, **controls):
    c = {**CONTROLS, **controls}
    out = client.predict(gradio_client.handle_file(str(path)), model, *c.values(), api_name="/analyse")
    names = ["status", "table", "chart", "legend", "gallery", "comparison", "weights", "weights_text",
             "focus"]
    return dict(zip(names, out))


def refresh(client, **controls):
    c = {**CONTROLS, **controls}
    out = client.predict(*c.values(), api_name="/refresh")
    return dict(zip(["status", "table", "chart", "legend", "gallery", "comparison", "weights",
                     "weights_text"], out))


def probabilities(result):
    return {row[0]: row[1] for row in result["table"]["data"]}


def assert_serving(client):
    out = analyse(client, CAT)
    assert len(out["table"]["data"]) == 20, out["status"]
    assert "cat.jpg" in out["status"]


def test_upload_scores_heatmaps_and_lambda(app, client):
    before = app.calls["backbone"]
    out = analyse(client, CAT, lam=0.1, threshold=0.5)
    assert app.calls["backbone"] == before + 1
    rows = out["table"]["data"]
    assert [r[0] for r in rows] != [] and sorted(r[0] for r in rows) == sorted(csra.VOC_CLASSES)
    probs = [r[1] for r in rows]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    present = [r[0] for r in rows if r[5]]
    assert present == [r[0] for r in rows if r[1] >= 0.5]
    assert [g["caption"].split(" · ")[0] for g in out["gallery"]] == present[:12]
    assert all(Path(g["image"]).is_file() for g in out["gallery"])
    assert out["chart"].startswith("<svg") and "global" in out["legend"]
    assert len(out["comparison"]) == 4 and Path(out["weights"]).is_file()

    # lambda 0.9 from the cached maps: new scores, equal to a full forward at 0.9, no backbone run
    calls = app.calls["backbone"]
    out9 = refresh(client, lam=0.9, threshold=0.5)
    assert app.calls["backbone"] == calls
    p1, p9 = probabilities(out), probabilities(out9)
    assert p1 != p9
    reference = csra.build_model("resnet18", num_classes=20, image_size=64).eval()
    reference.load_state_dict(app.model.state_dict())
    reference.lam = 0.9
    with torch.no_grad():
        logits = reference(reference.preprocessing(csra.load_image(CAT))[None])[0]
    expected = dict(zip(csra.VOC_CLASSES, torch.sigmoid(logits).tolist()))
    for name, p in p9.items():
        assert abs(p - expected[name]) < 2e-4, name
    assert "λ = 0.90" in out9["status"] and "0.90" in out9["weights_text"]


def test_one_network_run_at_a_time_and_parallel_redraws(app):
    queues = app.demo._queue.event_queue_per_concurrency_id
    assert queues["network"].concurrency_limit == 1       # uploads and model switches
    assert queues["drawing"].concurrency_limit == 4       # slider redraws, selections, downloads


def test_threshold_and_scale_change_what_is_drawn(client):
    analyse(client, CAT)
    few = refresh(client, threshold=0.99, picked=["dog"])
    assert [g["caption"].split(" · ")[0] for g in few["gallery"]] == ["dog"]
    per_map = refresh(client, threshold=0.99, picked=["dog"], scale="per-map")
    assert "per-map" in per_map["legend"]
    focus = refresh(client, focus="horse")
    assert focus["comparison"][0]["caption"].startswith("horse")


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
    assert out["table"]["data"] == [] and out["gallery"] == []
    assert_serving(client)


@pytest.mark.parametrize("name", WORKS)
def test_odd_but_valid_images_work(client, files, name):
    out = analyse(client, files[name])
    assert len(out["table"]["data"]) == 20 and not out["status"].startswith("⚠️"), out["status"]
    picture = np.asarray(Image.open(out["comparison"][0]["image"]).convert("RGB")).astype(int)
    if name == "exif_rotated.jpg":      # upright: 40 wide x 60 high, red on top, blue below
        h, w, _ = picture.shape
        assert (h, w) == (448, 299)
        top, bottom = picture[: h // 3].mean((0, 1)), picture[-h // 3:].mean((0, 1))
        assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]
    if name == "rgba.png":              # the transparent left half is shown over white
        assert picture[:, :100].mean() > 240
    assert_serving(client)


def test_oversize_upload_is_refused_and_the_app_keeps_serving(client, files):
    with pytest.raises(Exception) as err:
        analyse(client, files["oversize.png"])
    assert "size" in str(err.value).lower() or "413" in str(err.value)
    assert_serving(client)


IMAGENET_LABEL = "ImageNet classifier + CSRA, no training (resnet18, 1000 classes)"


def choose_model(client, label):
    out = client.predict(label, *CONTROLS.values(), api_name="/choose_model")
    names = ["model", "lam", "threshold", "top_k", "picked", "focus", "info", "status", "table",
             "chart", "legend", "gallery", "comparison", "weights", "weights_text"]
    return dict(zip(names, out))


def test_model_choice_imagenet_classifier(app, client):
    analyse(client, CAT)
    out = choose_model(client, IMAGENET_LABEL)
    assert out["status"].startswith("⚠️") and "resnet18-imagenet.pth" in out["status"]
    assert not app.store.loaded(IMAGENET)                            # no weights file yet
    assert_serving(client)

    torch.manual_seed(3)
    torch.save(_classifier_state(csra.from_classifier("resnet18", pretrained=False)),
               app.classifier_weights)
    before = app.calls["backbone"]
    out = choose_model(client, IMAGENET_LABEL)
    assert app.store.loaded(IMAGENET) and app.calls["backbone"] == before  # VOC model not rerun
    table = out["table"]["data"]
    assert len(table) == 20 and "softmax over 1000 classes" in out["status"]
    assert sum(r[1] for r in table) <= 1.0 + 1e-6
    assert "bias" in out["chart"] and "resnet18" in out["info"]
    assert len(out["gallery"]) >= 0 and len(out["comparison"]) == 4
    out = choose_model(client, VOC_LABEL)
    assert len(out["table"]["data"]) == 20 and "sigmoid" in out["status"]


def _classifier_state(wrapped):
    """A torchvision resnet18 state dict from the wrapped model's trunk and head."""
    import torchvision
    net = torchvision.models.resnet18(weights=None)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    state = {}
    for i, name in enumerate(names):
        for k, v in wrapped.backbone[i].state_dict().items():
            state[f"{name}.{k}"] = v
    state["fc.weight"] = wrapped.head.classifiers[0].weight.detach()[:, :, 0, 0]
    state["fc.bias"] = wrapped.head.bias.detach()
    assert set(state) == set(net.state_dict())
    return state


def test_downloads(client):
    analyse(client, CAT)
    paths = client.predict(0.3, 0.5, 20, 0.5, "global", [], "cat", api_name="/downloads")
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
