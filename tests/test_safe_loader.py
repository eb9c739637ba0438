"""Released checkpoints whose pickle holds more than tensors load without running any of it.

mmpretrain's VOC07 file was written by mmcls 0.x with torch's legacy (non-zip) format; files of
that family carry numpy scalars/arrays, library objects (mmengine's HistoryBuffer) or an
optimizer in their metadata. torch.load(weights_only=True) refuses those globals; the loader
retries with an inert placeholder for exactly those names and drops them. Code-running names
(os, subprocess, builtins.exec, ...) stay refused.
"""
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torchvision

import csra
from csra import CheckpointError, load_checkpoint
from csra.weights import Placeholder, read_state_dict, safe_load


def mmpretrain_state(arch="resnet18", classes=20, seed=0):
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    state = {"backbone." + k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    width = 2048 if arch in ("resnet50", "resnet101", "resnet152") else 512
    state["head.csra_heads.0.head.weight"] = torch.randn(classes, width, 1, 1)
    return state


def save_legacy(obj, path):
    """As mmcls 0.x's publish_model.py wrote its releases: torch's pre-1.6 (non-zip) format."""
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # really the legacy pickle stream, not a zip archive
    return path


def assert_same_weights(model, state):
    ours = model.state_dict()
    for key, value in state.items():
        if key.startswith("backbone."):
            assert torch.equal(ours[key], value), key
    assert torch.equal(ours["head.classifiers.0.weight"], state["head.csra_heads.0.head.weight"])


def test_real_resnet101_layout_in_legacy_format_with_mmcv_meta(tmp_path):
    state = mmpretrain_state("resnet101")
    meta = {"mmcls_version": "0.23.0", "epoch": 20, "iter": 6260, "CLASSES": list(csra.VOC_CLASSES),
            "config": "model = dict(type='ImageClassifier', ...)"}
    path = save_legacy({"meta": meta, "state_dict": state}, tmp_path / "csra_voc07.pth")
    model = load_checkpoint(path)
    assert model.config.backbone == "resnet101" and model.info["format"] == "mmpretrain"
    assert model.class_names == csra.VOC_CLASSES
    assert_same_weights(model, state)


@pytest.mark.parametrize("numpy_module", ["numpy._core.multiarray", "numpy.core.multiarray"])
def test_numpy_scalars_and_arrays_in_meta_are_dropped(tmp_path, numpy_module):
    state = mmpretrain_state()
    meta = {"epoch": 20, "best_score": np.float64(0.945), "iter": np.int64(6260),
            "history": np.arange(5, dtype=np.float32), "CLASSES": list(csra.VOC_CLASSES)}
    path = save_legacy({"meta": meta, "state_dict": state}, tmp_path / "np.pth")
    raw = path.read_bytes()
    if numpy_module == "numpy.core.multiarray":  # what numpy < 2 wrote (2022 releases)
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        path.write_bytes(raw)
    assert numpy_module.encode() in raw
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        torch.load(path, weights_only=True)  # the failure this loader works around
    loaded = safe_load(path)
    assert loaded["meta"]["epoch"] == 20 and loaded["meta"]["CLASSES"] == list(csra.VOC_CLASSES)
    assert not {"best_score", "iter", "history"} & set(loaded["meta"])  # placeholders dropped
    assert_same_weights(load_checkpoint(path), state)


def fake_module(monkeypatch, dotted, cls):
    """Make `cls` picklable as dotted.<its name> (the package path included), for this test only."""
    cls.__module__ = dotted
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    setattr(sys.modules[dotted], cls.__name__, cls)
    return lambda: [monkeypatch.delitem(sys.modules, ".".join(parts[:i])) for i in range(1, len(parts) + 1)]


def test_instance_of_an_unknown_class_in_meta(tmp_path, monkeypatch):
    """A throwaway class: gone (its library not installed) when the file is loaded."""
    state = mmpretrain_state()
    recorder = types.new_class("Recorder")
    forget = fake_module(monkeypatch, "somelib.hooks", recorder)
    obj = recorder()
    obj.log = ["loss 0.1"]
    path = save_legacy({"meta": {"epoch": 3, "hook": obj, "hooks": [obj, "kept"]}, "state_dict": state},
                       tmp_path / "cls.pth")
    forget()
    loaded = safe_load(path)
    assert loaded["meta"] == {"epoch": 3, "hooks": ["kept"]}
    assert_same_weights(load_checkpoint(path), state)


class HistoryBuffer:
    """Stands in for mmengine.logging.history_buffer.HistoryBuffer (pickled under that name)."""

    def __init__(self):
        self._log_history = np.array([0.5, 0.4])
        self._count_history = np.array([1, 1])


def test_mmengine_message_hub_and_optimizer(tmp_path, monkeypatch):
    state = mmpretrain_state()
    forget = fake_module(monkeypatch, "mmengine.logging.history_buffer", HistoryBuffer)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.rand(4, 3)).sum().backward()
    opt.step()
    checkpoint = {
        "meta": {"epoch": 12, "dataset_meta": {"classes": list(csra.VOC_CLASSES)}, "seed": np.int64(7)},
        "state_dict": state,
        "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"epoch": 12}},
        "optimizer": opt.state_dict(),
    }
    path = save_legacy(checkpoint, tmp_path / "mmengine.pth")
    torch.save(checkpoint, tmp_path / "mmengine_zip.pth")
    forget()
    for p in (path, tmp_path / "mmengine_zip.pth"):
        loaded = safe_load(p)
        assert loaded["message_hub"] == {"log_scalars": {}, "runtime_info": {"epoch": 12}}
        assert loaded["meta"] == {"epoch": 12, "dataset_meta": {"classes": list(csra.VOC_CLASSES)}}
        assert torch.equal(loaded["optimizer"]["state"][0]["momentum_buffer"],
                           opt.state_dict()["state"][0]["momentum_buffer"])
        model = load_checkpoint(p)
        assert model.class_names == csra.VOC_CLASSES
        assert_same_weights(model, state)


def marker_payloads(marker):
    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class CheckCall:
        def __reduce__(self):
            return (subprocess.check_call, (["touch", str(marker)],))

    class Exec:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    return {"os.system": System(), "subprocess.check_call": CheckCall(), "builtins.exec": Exec()}


@pytest.mark.parametrize("name", ["os.system", "subprocess.check_call", "builtins.exec"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_code_running_globals_stay_refused(tmp_path, name, legacy):
    marker = tmp_path / "pwned"
    payload = marker_payloads(marker)[name]
    checkpoint = {"meta": {"epoch": 1, "numpy": np.float64(1.0), "evil": payload},
                  "state_dict": mmpretrain_state()}
    path = tmp_path / "evil.pth"
    if legacy:
        save_legacy(checkpoint, path)
    else:
        torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: .*refused"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_non_tensor_inside_the_state_dict_is_refused(tmp_path, monkeypatch):
    state = mmpretrain_state()
    state["backbone.conv1.weight"] = np.float64(1.0)  # becomes a placeholder: not a weight
    path = save_legacy({"meta": {}, "state_dict": state}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth: .*backbone\.conv1\.weight.* not a tensor"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"odd\.pth: .*not a tensor"):
        read_state_dict(path)
    state["backbone.conv1.weight"] = [1.0, 2.0]  # plain values are no weights either
    torch.save({"state_dict": state}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth: .*backbone\.conv1\.weight.* not a tensor"):
        load_checkpoint(tmp_path / "list.pth")


def test_placeholder_records_nothing_and_calls_nothing():
    p = Placeholder("touch", ["x"], key=1)
    p.__setstate__({"anything": 1})
    assert vars(p) == {}
    assert isinstance(Placeholder.__new__(Placeholder, 1, 2), Placeholder)
    # nothing stays registered after a load
    assert not any(isinstance(g, tuple) and g[0] is Placeholder
                   for g in torch.serialization.get_safe_globals())
