"""Our checkpoint format, the mmpretrain / authors' key mappings, and clear errors."""
import os

import pytest
import torch
import torchvision
from torch import nn

import csra
from csra import CheckpointError, build_model, load_checkpoint, save_checkpoint


def test_round_trip_gives_identical_logits_and_config(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5, num_heads=4, lam=0.3, image_size=96,
                        class_names=list("abcde")).eval()
    model.lam = 0.45  # changed after building: the saved lambda is the current one
    path = save_checkpoint(tmp_path / "run" / "best.pth", model, training={"epoch": 3, "mAP": 71.5})
    loaded = load_checkpoint(path)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.config == model.config.__class__(**{**vars(model.config), "lam": 0.45})
    assert loaded.class_names == tuple("abcde") and loaded.head.temperatures == (1, 2, 4, 99)
    assert loaded.info == {"source": str(path), "format": "csra-explorer",
                           "training": {"epoch": 3, "mAP": 71.5}}
    assert loaded.preprocessing == csra.Preprocessing(96, (0, 0, 0), (1, 1, 1))
    assert sorted(os.listdir(path.parent)) == ["best.pth"]  # no temp file left behind


def test_checkpoint_loads_with_weights_only_and_keeps_extra_entries(tmp_path):
    model = build_model("resnet18", num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "last.pth", model, optimizer=opt.state_dict(), epoch=1)
    raw = torch.load(tmp_path / "last.pth", weights_only=True)
    assert raw["format"] == "csra-explorer" and raw["epoch"] == 1
    assert set(raw["optimizer"]["state"]) == set(range(len(list(model.parameters()))))


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = build_model("resnet18", num_classes=2)
    path = save_checkpoint(tmp_path / "best.pth", model, training={"epoch": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, training={"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path).info["training"] == {"epoch": 1}
    assert os.listdir(tmp_path) == ["best.pth"]


def independent_logits(net, head_weights, lam, temperatures, x):
    """torchvision ResNet trunk + CSRA written out with einsum, for checking key mappings."""
    trunk = nn.Sequential(*list(net.children())[:-2]).eval()
    with torch.no_grad():
        f = trunk(x).flatten(2)  # B, D, HW
        total = 0
        for w, t in zip(head_weights, temperatures):
            w = w[:, :, 0, 0]
            s = torch.einsum("bdp,cd->bcp", f, w) / w.norm(dim=1)[None, :, None]
            att = s.amax(-1) if t == 99 else (torch.softmax(t * s, -1) * s).sum(-1)
            total = total + s.mean(-1) + lam * att
    return total


def test_mmpretrain_checkpoint_maps_onto_our_model(tmp_path):
    torch.manual_seed(1)
    net = torchvision.models.resnet101(weights=None).eval()
    head_weight = torch.randn(20, 2048, 1, 1)
    state = {"backbone." + k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state["head.csra_heads.0.head.weight"] = head_weight
    torch.save({"meta": {"epoch": 20, "CLASSES": list(csra.VOC_CLASSES)}, "state_dict": state},
               tmp_path / "mm.pth")
    model = load_checkpoint(tmp_path / "mm.pth")
    c = model.config
    assert (c.backbone, c.num_classes, c.num_heads, c.lam, c.image_size) == ("resnet101", 20, 1, 0.1, 448)
    assert c.class_names == csra.VOC_CLASSES and model.info["format"] == "mmpretrain"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
    assert torch.allclose(ours, independent_logits(net, [head_weight], 0.1, (1,), x), atol=1e-4)


def test_authors_checkpoint_with_module_prefix_and_four_heads(tmp_path):
    torch.manual_seed(2)
    net = torchvision.models.resnet50(weights=None).eval()
    heads = [torch.randn(80, 2048, 1, 1) for _ in range(4)]
    state = {"module." + k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state.update({f"module.classifier.multi_head.{i}.head.weight": w for i, w in enumerate(heads)})
    torch.save(state, tmp_path / "authors.pth")
    model = load_checkpoint(tmp_path / "authors.pth", lam=0.5)
    c = model.config
    assert (c.backbone, c.num_classes, c.num_heads, c.lam) == ("resnet50", 80, 4, 0.5)
    assert c.class_names == csra.COCO_CLASSES and model.info["format"] == "authors"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
    assert torch.allclose(ours, independent_logits(net, heads, 0.5, (1, 2, 4, 99), x), atol=1e-4)


def small_mmpretrain_state():
    net = torchvision.models.resnet18(weights=None)
    state = {"backbone." + k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state["head.csra_heads.0.head.weight"] = torch.randn(20, 512, 1, 1)
    return state


def test_every_key_must_be_used(tmp_path):
    state = small_mmpretrain_state()
    state["head.extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"extra\.pth: weights do not fit the model; 1 unused: head\.extra\.weight$"):
        load_checkpoint(tmp_path / "extra.pth")


def test_every_weight_must_be_placed(tmp_path):
    state = small_mmpretrain_state()
    del state["backbone.layer2.0.conv1.weight"]
    torch.save({"state_dict": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"1 missing: backbone\.layer2\.0\.conv1\.weight"):
        load_checkpoint(tmp_path / "missing.pth")


def test_wrong_shape_is_named(tmp_path):
    model = build_model("resnet18", num_classes=3)
    save_checkpoint(tmp_path / "ok.pth", model)
    payload = torch.load(tmp_path / "ok.pth", weights_only=True)
    payload["state_dict"]["head.classifiers.0.weight"] = torch.zeros(3, 256, 1, 1)
    torch.save(payload, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"shape\.pth: .*1 wrong shape: head\.classifiers\.0\.weight \(3, 256, 1, 1\) vs \(3, 512, 1, 1\)"):
        load_checkpoint(tmp_path / "shape.pth")


def test_truncated_file(tmp_path):
    save_checkpoint(tmp_path / "ok.pth", build_model("resnet18", num_classes=3))
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: truncated PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")


@pytest.mark.parametrize("content, why", [
    (b"", "empty file"),
    (b"\x89PNG\r\n\x1a\n not really", "not a PyTorch checkpoint file"),
])
def test_non_checkpoint_files(tmp_path, content, why):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match=why) as err:
        load_checkpoint(tmp_path / "x.pth")
    assert str(err.value).startswith(str(tmp_path / "x.pth")) and "\n" not in str(err.value)


def test_plain_classifier_state_dict_is_not_a_csra_checkpoint(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"r18\.pth: not a CSRA checkpoint \(no CSRA head weights; first keys: conv1\.weight"):
        load_checkpoint(tmp_path / "r18.pth")


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tmp_path, capsys):
    torch.save({"format": "csra-explorer", "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pth")
    assert "pickled code ran" not in capsys.readouterr().out


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
