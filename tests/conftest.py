"""Shared fixtures for the app's tests: a running page serving a tiny random model (nothing is
downloaded), a gradio_client for it, and Debian's Chromium through Playwright."""
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "cat.jpg"
CHROMIUM = os.environ.get("CSRA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the tests in reverse order (every test must pass in any order)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture(autouse=True)
def torch_hub_follows_torch_home():
    """Fails a test that leaves torch.hub's folder changed or pinned (torch.hub.set_dir stays in force
    for the rest of the process, so later tests' TORCH_HOME would be ignored): set TORCH_HOME with
    monkeypatch instead."""
    before = torch.hub.get_dir()
    yield
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TORCH_HOME", os.path.join(os.sep, "torch-home-probe"))
        follows = torch.hub.get_dir() == os.path.join(os.sep, "torch-home-probe", "hub")
    assert follows and torch.hub.get_dir() == before, \
        f"torch.hub's folder is left at {torch.hub.get_dir()} (was {before}; set TORCH_HOME, not torch.hub.set_dir)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(classifier_weights, num_classes=20, class_names=None, banner="", banner_details="",
              limits=None):
    """Serve a tiny random ResNet-18 CSRA model (VOC's 20 classes unless told otherwise); the
    ImageNet option loads resnet18 weights from classifier_weights, a file the tests create
    when they want it to work (missing file = 'cannot load'). Counts backbone runs. limits:
    an app.limits.ServeLimits (default: the page's own)."""
    import csra
    from app.models import default_store
    from app.ui import build_demo, launch

    torch.manual_seed(0)
    if class_names is None and num_classes == 20:
        class_names = csra.VOC_CLASSES
    model = csra.build_model("resnet18", num_classes=num_classes, image_size=64,
                             class_names=class_names).eval()
    calls = {"backbone": 0}
    model.backbone.register_forward_hook(
        lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1))
    store = default_store(model, classifier="resnet18", classifier_loader_fn=lambda: csra.from_classifier(
        "resnet18", pretrained=str(classifier_weights), image_size=64, offline=True))
    if banner:
        store.banner, store.banner_details = banner, banner_details
    demo = build_demo(store) if limits is None else build_demo(store, limits=limits)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    return SimpleNamespace(demo=demo, url=f"http://127.0.0.1:{port}/", model=model, calls=calls,
                           store=store, classifier_weights=Path(classifier_weights))


IMAGENET_LABEL = "ImageNet classifier + CSRA, no training (resnet18, 1000 classes)"


def write_classifier_weights(path, seed=3):
    """A random torchvision resnet18 state dict at path: what start_app's ImageNet option
    loads (until this file exists, that option 'cannot load')."""
    import torchvision

    import csra
    torch.manual_seed(seed)
    wrapped = csra.from_classifier("resnet18", pretrained=False)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    state = {f"{name}.{k}": v for i, name in enumerate(names)
             for k, v in wrapped.backbone[i].state_dict().items()}
    state["fc.weight"] = wrapped.head.classifiers[0].weight.detach()[:, :, 0, 0]
    state["fc.bias"] = wrapped.head.bias.detach()
    assert set(state) == set(torchvision.models.resnet18(weights=None).state_dict())
    torch.save(state, path)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a busy CPU cannot stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def app(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("app")
    running = start_app(tmp / "resnet18-imagenet.pth")
    running.tmp = tmp
    yield running
    running.demo.close()


@pytest.fixture(scope="module")
def app80(tmp_path_factory, one_thread):
    """80 classes (COCO-sized), with a banner: the page must stay usable at this size."""
    tmp = tmp_path_factory.mktemp("app80")
    running = start_app(tmp / "missing.pth", num_classes=80,
                        class_names=[f"class <{i}> & co" if i == 7 else f"class_{i:02d}"
                                     for i in range(80)],
                        banner="Serving the embedded <demo> model: scores are not meaningful")
    running.tmp = tmp
    yield running
    running.demo.close()


@pytest.fixture(scope="module")
def client(app):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(app.url, verbose=False, analytics_enabled=False,
                                download_files=str(app.tmp / "downloads"))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not installed ({CHROMIUM} missing; CI installs it with "
                    "apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
