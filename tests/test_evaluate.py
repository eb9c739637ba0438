"""python -m training.evaluate: table, JSON and PNGs; our checkpoints and mmpretrain-style ones."""
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import csra
from training import evaluate
from training.make_synthetic import make_synthetic
from training.metrics import multilabel_metrics
from training.voc import load_split
from csra import faithfulness

SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("evaldata"), seed=9, num_train=4, num_test=20, size=80,
                          progress=False)


def run(args, capsys):
    code = evaluate.main([*args, "--workers", "0", "--batch-size", "8", "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def reference_scores(data, logits_of):
    """Sigmoid scores computed here: images resized to SIZE x SIZE, [0, 1] pixels, any model function."""
    split = load_split(data, "test")
    prep = csra.Preprocessing(SIZE)
    with torch.no_grad():
        x = torch.stack([prep(csra.load_image(p)) for p in split.image_paths])
        return torch.sigmoid(logits_of(x)).numpy(), split.labels


def test_our_checkpoint_gives_table_json_and_pngs(data, tmp_path, capsys):
    torch.manual_seed(0)
    model = csra.build_model("resnet18", num_classes=6, num_heads=2, lam=0.3, image_size=SIZE,
                             class_names=load_split(data, "test").classes).eval()
    weights = csra.save_checkpoint(tmp_path / "best.pth", model, training={"epoch": 1})
    code, out, err = run(["--weights", str(weights), "--data-root", str(data), "--pointing-game"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval-test" / "metrics.json").read_text())  # default: beside the weights
    scores, labels = reference_scores(data, model)
    expected = multilabel_metrics(scores, labels)
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert report["metrics"][key] == pytest.approx(expected[key], abs=1e-4), key
    assert list(report["per_class_AP"].values()) == pytest.approx(expected["AP"], abs=1e-4)
    assert report["images"] == 20 and report["lam"] == 0.3 and report["format"] == "csra-explorer"
    game = report["pointing_game"]
    assert 0 <= game["hit_rate"] <= 100 and game["pairs"] == (labels == 1).sum() and game["tolerance"] == 15
    assert game["difficult_pairs"] == (labels == -1).sum()
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:2] == ["mAP", "CP"]))
    assert lines[header].split() == ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"]
    assert float(lines[header + 1].split()[0]) == pytest.approx(expected["mAP"], abs=0.006)
    assert "per-class AP:" in out and "magenta_cross" in out and "pointing game (15 px):" in out
    for name in ("per_class_ap.png", "pr_curves.png", "pointing_game.png"):
        assert (tmp_path / "eval-test" / name).read_bytes()[:4] == b"\x89PNG"


def test_lambda_override_changes_the_scores(data, tmp_path, capsys):
    torch.manual_seed(1)
    model = csra.build_model("resnet18", num_classes=6, lam=0.1, image_size=SIZE,
                             class_names=load_split(data, "test").classes).eval()
    weights = csra.save_checkpoint(tmp_path / "w.pth", model)
    assert run(["--weights", str(weights), "--data-root", str(data), "--lam", "0.9", "--out",
                str(tmp_path / "e")], capsys)[0] == 0
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    model.lam = 0.9
    expected = multilabel_metrics(*reference_scores(data, model))
    assert report["lam"] == 0.9 and report["metrics"]["mAP"] == pytest.approx(expected["mAP"], abs=1e-4)


def mmpretrain_like_checkpoint(path, classes=None):
    """A file laid out like mmpretrain's CSRA release: torchvision names under backbone., the head
    as head.csra_heads.0.head.weight, all inside 'state_dict'; returns a reference logits function."""
    torch.manual_seed(2)
    trunk = torchvision.models.resnet18()
    for m in trunk.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    head = torch.randn(6, 512, 1, 1)
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
    state["head.csra_heads.0.head.weight"] = head
    obj = {"state_dict": state, "meta": {"dataset_meta": {"classes": list(classes)}} if classes else {}}
    torch.save(obj, path)
    trunk.eval()

    def logits(x):  # CSRA with one head (T = 1), lambda 0.1, written out here
        f = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))))))
        s = F.conv2d(f, head) / head.flatten(1).norm(dim=1)[None, :, None, None]
        s = s.flatten(2)
        return s.mean(-1) + 0.1 * (torch.softmax(s, dim=-1) * s).sum(-1)
    return logits


@pytest.mark.parametrize("with_names", [True, False])
def test_mmpretrain_layout_checkpoint(data, tmp_path, capsys, with_names):
    classes = load_split(data, "test").classes
    logits = mmpretrain_like_checkpoint(tmp_path / "mm.pth", classes if with_names else None)
    code, out, err = run(["--weights", str(tmp_path / "mm.pth"), "--data-root", str(data), "--img-size",
                          str(SIZE), "--out", str(tmp_path / "e")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    expected = multilabel_metrics(*reference_scores(data, logits))
    assert report["format"] == "mmpretrain"
    assert report["metrics"]["mAP"] == pytest.approx(expected["mAP"], abs=1e-3)
    assert report["metrics"]["OF1"] == pytest.approx(expected["OF1"], abs=1e-3)


def test_classes_in_another_order_are_matched_by_name(data, tmp_path, capsys):
    classes = load_split(data, "test").classes
    torch.manual_seed(3)
    model = csra.build_model("resnet18", num_classes=6, image_size=SIZE, class_names=classes).eval()
    perm = [2, 0, 5, 1, 4, 3]
    shuffled = csra.build_model("resnet18", num_classes=6, image_size=SIZE,
                                class_names=[classes[i] for i in perm]).eval()
    state = model.state_dict()
    state["head.classifiers.0.weight"] = state["head.classifiers.0.weight"][perm]
    shuffled.load_state_dict(state)
    csra.save_checkpoint(tmp_path / "a.pth", model)
    csra.save_checkpoint(tmp_path / "b.pth", shuffled)
    for name in ("a", "b"):
        assert run(["--weights", str(tmp_path / f"{name}.pth"), "--data-root", str(data), "--out",
                    str(tmp_path / name)], capsys)[0] == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab")
    assert a["per_class_AP"] == pytest.approx(b["per_class_AP"], abs=1e-5)


def test_clear_errors(data, tmp_path, capsys):
    code, _, err = run(["--weights", str(tmp_path / "nope.pth"), "--data-root", str(data)], capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nope.pth'}: no such file"
    voc_model = csra.build_model("resnet18", num_classes=20, image_size=SIZE)  # VOC's 20 classes
    csra.save_checkpoint(tmp_path / "voc.pth", voc_model)
    code, _, err = run(["--weights", str(tmp_path / "voc.pth"), "--data-root", str(data)], capsys)
    assert code == 2 and "predicts 20 classes but the data has 6" in err and "Traceback" not in err
    code, _, err = run(["--weights", str(tmp_path / "voc.pth"), "--data-root", str(tmp_path / "none")], capsys)
    assert code == 2 and "does not exist" in err


def test_faithfulness_table_csv_and_plot(data, tmp_path, capsys):
    """--faithfulness: a row per method, the CSVs and the curves plot; its CSRA-map pointing game is
    the one --pointing-game reports for the same run, and a pair's figures are measure_image's."""
    torch.manual_seed(4)
    split = load_split(data, "test")
    model = csra.build_model("resnet18", num_classes=6, num_heads=2, lam=0.3, image_size=SIZE,
                             class_names=split.classes).eval()
    weights = csra.save_checkpoint(tmp_path / "best.pth", model)
    out = tmp_path / "f"
    code, text, err = run(["--weights", str(weights), "--data-root", str(data), "--limit", "6", "--faithfulness",
                           "--pointing-game", "--steps", "3", "--out", str(out)], capsys)
    assert code == 0, err
    labels = split.labels[:6]
    rows = list(csv.DictReader(open(out / "faithfulness.csv")))
    assert [r["method"] for r in rows] == list(faithfulness.METHODS)
    for r in rows:
        assert int(r["pairs"]) == (labels == 1).sum() and int(r["difficult_pairs"]) == (labels == -1).sum()
        assert 0 <= float(r["deletion_auc"]) <= 1 and 0 <= float(r["insertion_auc"]) <= 1
    report = json.loads((out / "metrics.json").read_text())
    by_method = {r["method"]: r for r in report["faithfulness"]["methods"]}
    assert by_method["csra"]["pointing"] == pytest.approx(report["pointing_game"]["accuracy"])
    assert report["faithfulness"]["fractions"] == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-3)
    pairs = list(csv.DictReader(open(out / "faithfulness_pairs.csv")))
    assert len(pairs) == len(faithfulness.METHODS) * (labels != 0).sum()
    # the first image's pairs, measured here with the library call the CLI makes
    reloaded = csra.load_checkpoint(weights)
    first = faithfulness.Pair
    ann = split.annotations[0]
    mine = [first(int(c), ann.boxes_of(int(c)), bool(labels[0, c] == -1)) for c in np.flatnonzero(labels[0] != 0)]
    _, records = faithfulness.measure_image(reloaded, csra.load_image(split.image_paths[0]), mine, steps=3,
                                            rng=np.random.default_rng([0, 0]))
    written = [p for p in pairs if p["image"] == split.image_paths[0].name]
    for r, w in zip(records, written):
        assert (r["method"], split.classes[r["class"]]) == (w["method"], w["class"])
        assert int(w["hit"]) == r["hit"] and (int(w["x"]), int(w["y"])) == r["point"]
        if not r["difficult"]:
            assert float(w["deletion_auc"]) == pytest.approx(r["deletion_auc"], abs=1e-5)
    assert (out / "faithfulness_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "faithfulness over" in text and "gradcam" in text and "insertion" in text


def test_faithfulness_needs_boxes(tmp_path, capsys):
    csv_data = make_synthetic(tmp_path / "csv", seed=1, num_train=2, num_test=3, size=48, progress=False,
                              format="csv")
    model = csra.build_model("resnet18", num_classes=6, image_size=SIZE)
    weights = csra.save_checkpoint(tmp_path / "w.pth", model)
    code, _, err = run(["--weights", str(weights), "--data-root", str(csv_data), "--faithfulness"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --faithfulness needs boxes, which csv data do not have")
