"""pick_device: auto = CUDA, else Apple MPS, else CPU; named devices checked; every --device takes mps.
The machines the tests run on have neither GPU: availability is monkeypatched."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import csra.device
from csra.device import pick_device

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def machine(monkeypatch):
    def make(cuda=False, mps=False, gpus=1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return make


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"),
                                               (True, False, "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    for name in ("auto", None, ""):
        assert pick_device(name) == torch.device(expected)


def test_named_devices(machine):
    machine(cuda=True, mps=True, gpus=2)
    assert pick_device("mps") == torch.device("mps")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="has 2 CUDA GPU"):
        pick_device("cuda:2")
    machine(cuda=False, mps=False)
    with pytest.raises(ValueError, match="--device mps: no Apple MPS GPU is available here"):
        pick_device("mps")
    with pytest.raises(ValueError, match="--device cuda: no CUDA GPU"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="not a device"):
        pick_device("gpu")
    with pytest.raises(ValueError, match="not supported here"):
        pick_device("meta")


def test_every_cli_takes_mps_and_reports_its_absence_in_one_line(machine, capsys, tmp_path):
    machine(cuda=False, mps=False)
    from csra import predict
    from training import evaluate, train
    torch.manual_seed(0)
    weights = csra.save_checkpoint(tmp_path / "w.pth", csra.build_model("resnet18", num_classes=2, image_size=32))
    for run in (lambda: predict.main([str(tmp_path), "--weights", str(weights), "--device", "mps"]),
                lambda: train.main(["--data-root", str(tmp_path), "--device", "mps"]),
                lambda: evaluate.main(["--weights", str(weights), "--data-root", str(tmp_path),
                                       "--device", "mps"])):
        assert run() == 2
        err = capsys.readouterr().err.strip()
        assert err == "error: --device mps: no Apple MPS GPU is available here (use --device cpu or auto)"
    import importlib.util
    spec = importlib.util.spec_from_file_location("app_script", ROOT / "app.py")
    app_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_script)
    assert app_script.parse_args(["--device", "mps"]).device == "mps"
    assert app_script.main(["--device", "mps", "--weights", str(weights), "--classifier", "none"]) == 2
    assert "no Apple MPS GPU" in capsys.readouterr().err


def test_mps_fallback_is_switched_on_before_torch_is_imported():
    code = ("import os, sys; import {mod}; "
            "print(os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
    for mod in ("training.train", "app.models"):
        out = subprocess.run([sys.executable, "-c", code.format(mod=mod)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.stdout.strip() == "1", out.stderr
    # a user's own choice wins
    out = subprocess.run([sys.executable, "-c", code.format(mod="csra")], cwd=ROOT, capture_output=True,
                         env={**env, "PYTORCH_ENABLE_MPS_FALLBACK": "0"}, text=True, timeout=300)
    assert out.stdout.strip() == "0"
