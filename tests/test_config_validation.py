"""A checkpoint whose config cannot work is refused at load time with one line naming the file and
the field, by the library, so app.py, training.evaluate and csra.predict all say so without a
traceback (before: resnet9999 gave a 25-line traceback; std=0, lam=NaN, image_size=-5 loaded and
scored NaN with exit code 0)."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import csra
from csra import CheckpointError, ModelConfig, load_checkpoint
from csra import predict
from training import evaluate
from training.make_synthetic import make_synthetic

BAD_CONFIGS = [
    ("backbone", "resnet9999", "backbone"),
    ("std", [0.0, 1.0, 1.0], "std"),
    ("std", [1.0, float("nan"), 1.0], "std"),
    ("mean", [0.0, 0.0], "mean"),
    ("lam", float("nan"), "lam"),
    ("lam", float("inf"), "lam"),
    ("lam", "a lot", "lam"),
    ("image_size", -5, "image_size"),
    ("image_size", 0, "image_size"),
    ("image_size", 4.5, "image_size"),
    ("lam", -1.0, "lam"),  # before: loaded, and the app refused every upload until the slider moved
    ("lam", 1e30, "lam"),
    ("image_size", 1, "image_size"),  # smaller than the backbones' stride: no score map
    ("image_size", 200000, "image_size"),  # before: a MemoryError traceback in evaluate
    ("num_classes", 0, "num_classes"),
    ("num_heads", 3, "num_heads"),
    ("class_names", [1, 2] + [3] * 18, "class_names"),
]


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = csra.build_model("resnet18", num_classes=20, image_size=64)
    return csra.save_checkpoint(tmp_path_factory.mktemp("cfg") / "good.pth", model)


def with_config(good, tmp_path, field, value):
    obj = torch.load(good, weights_only=True)
    obj["config"][field] = value
    path = tmp_path / f"bad_{field}.pth"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("field,value,named", BAD_CONFIGS)
def test_library_refuses_a_bad_config_naming_file_and_field(good_checkpoint, tmp_path, field, value, named):
    path = with_config(good_checkpoint, tmp_path, field, value)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: bad config") and f"config.{named}" in message
    assert "\n" not in message


@pytest.mark.parametrize("kwargs,named", [
    (dict(std=(1.0, 0.0, 1.0)), "std"), (dict(lam=math.nan), "lam"), (dict(image_size=-64), "image_size"),
    (dict(num_classes=-1), "num_classes")])
def test_model_config_itself_refuses(kwargs, named):
    with pytest.raises(ValueError, match=f"config.{named}"):
        ModelConfig(**{"backbone": "resnet18", **kwargs})


def test_overrides_at_load_time_are_checked_too(good_checkpoint):
    with pytest.raises(CheckpointError, match=r"good\.pth: bad config.*config\.lam"):
        load_checkpoint(good_checkpoint, lam=float("nan"))
    with pytest.raises(CheckpointError, match=r"good\.pth: bad config.*config\.image_size"):
        load_checkpoint(good_checkpoint, image_size=0)
    with pytest.raises(CheckpointError, match=r"config\.lam = 11\.0: must be a number from 0 to 10"):
        load_checkpoint(good_checkpoint, lam=11)
    with pytest.raises(CheckpointError, match=r"config\.image_size = 4096: must be a whole number of pixels from "
                                              r"32 to 2048"):
        load_checkpoint(good_checkpoint, image_size=4096)
    assert load_checkpoint(good_checkpoint, lam=0.3).lam == pytest.approx(0.3)
    assert load_checkpoint(good_checkpoint, lam=10, image_size=2048).config.image_size == 2048


@pytest.mark.parametrize("field,value", [("backbone", "resnet9999"), ("std", [0.0, 1.0, 1.0]),
                                         ("lam", float("nan")), ("image_size", -5), ("lam", -1.0),
                                         ("image_size", 200000)])
def test_every_entry_point_gives_one_line(good_checkpoint, tmp_path, capsys, field, value):
    path = with_config(good_checkpoint, tmp_path, field, value)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "red").save(image)
    data = make_synthetic(tmp_path / "data", seed=1, num_train=2, num_test=4, size=48, progress=False)
    # app.py is a script beside the app/ package, loaded here by its path
    spec = importlib.util.spec_from_file_location("app_script", Path(__file__).parents[1] / "app.py")
    app_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_script)
    for run in (lambda: predict.main([str(image), "--weights", str(path), "--workers", "0", "--no-progress"]),
                lambda: evaluate.main(["--weights", str(path), "--data-root", str(data), "--workers", "0",
                                       "--out", str(tmp_path / "eval"), "--no-progress"]),
                lambda: app_script.main(["--weights", str(path), "--classifier", "none"])):
        assert run() == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        line = next(l for l in err.splitlines() if l.startswith("error:"))
        assert str(path) in line and f"config.{field}" in line
