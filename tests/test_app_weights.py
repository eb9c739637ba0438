"""Which weights the app serves, and the command line's message when it has none."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import csra
from app import models
from app.weights import MMPRETRAIN_VOC07_URL, NoWeights, choose_weights, load_voc_model, \
    newest_run_checkpoint

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
    model, choice = load_voc_model(root=tmp_path, offline=True)
    assert model.config.num_classes == 4 and choice.source == str(new)
    assert model.info["training"]["best_mAP"] == 12.5
    model, choice = load_voc_model(weights=str(old), root=tmp_path, offline=True)
    assert model.config.num_classes == 3 and "--weights" in choice.reason


def test_without_runs_the_official_checkpoint_is_next(tmp_path, monkeypatch):
    assert choose_weights(None, tmp_path).source == MMPRETRAIN_VOC07_URL
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(NoWeights) as err:
        load_voc_model(root=tmp_path, offline=True)
    text = str(err.value)
    assert MMPRETRAIN_VOC07_URL in text and str(tmp_path / "torch") in text


def run_app(args, cwd, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSRA_")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_offline_without_weights_exits_with_instructions(tmp_path):
    torch_home = tmp_path / "torch-cache"
    done = run_app([], tmp_path, {"CSRA_OFFLINE": "1", "TORCH_HOME": str(torch_home)})
    assert done.returncode != 0
    err = done.stderr
    assert "no model weights" in err and "Traceback" not in err
    assert "python -m training.train" in err and "--weights PATH_OR_URL" in err
    assert MMPRETRAIN_VOC07_URL in err
    assert str(torch_home / "hub" / "checkpoints") in err         # where to put the download


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


def test_device_choice():
    assert models.pick_device("cpu").type == "cpu"
    assert models.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            models.pick_device("cuda")
