"""training.evaluate_imagenet on a tiny class-per-folder tree made here (random resnet18, 64 px).

The folders' classes are chosen from the random model's own predictions (some
its top-1 at lambda 0, some its top-1 at lambda 1, some its 3rd guess), so the
accuracies are neither 0 nor 100 and move with lambda. The reference is an
independent evaluation: one full forward pass per image and per lambda.
"""
import csv
import json
import math

import pytest
import torch
import torchvision
from PIL import Image

import csra
from training import evaluate_imagenet as ev

from . import images

LAMS = [0.0, 0.5, 1.0, 3.0]
CATEGORIES = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]


def blob_image(seed, size=(72, 56)):
    return images.blob_image(seed, size, blobs=4, radius=(3, 12), noise=20)


def folder_name(index, style):
    """The three ways a class folder may be named."""
    if style == 0:
        return ev.load_wnids()[index]
    if style == 1:
        return str(index)
    return CATEGORIES[index].replace(" ", "_")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    weights = root / "resnet18.pth"
    torch.save(net.state_dict(), weights)
    model = csra.from_classifier("resnet18", pretrained=str(weights), image_size=64)

    data = root / "val"
    labels = {}
    for i in range(14):
        image = blob_image(i)
        x = model.preprocessing(image)[None]
        with torch.no_grad():
            maps = model.head.score_maps(model.forward_features(x))
            ranked0 = model.head.logits_from_maps(maps, lam=0.0)[0].argsort(descending=True)
            ranked1 = model.head.logits_from_maps(maps, lam=1.0)[0].argsort(descending=True)
        label = int([ranked0[0], ranked1[0], ranked0[2], ranked0[400]][i % 4])
        folder = data / folder_name(label, i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i}.png"
        image.save(path)
        labels[path] = label
    (data / "n01440764").mkdir()
    (data / "n01440764" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root, data, weights, model, labels


def independent_accuracy(model, labels, lam):
    """(top-1, top-5) % with a separate full forward pass per image at this lambda."""
    model.lam = lam
    top1 = top5 = 0
    with torch.no_grad():
        for path, label in labels.items():
            logits = model(model.preprocessing(csra.load_image(str(path)))[None])[0]
            ranked = logits.argsort(descending=True)[:5].tolist()
            top1 += ranked[0] == label
            top5 += label in ranked
    return 100.0 * top1 / len(labels), 100.0 * top5 / len(labels)


@pytest.fixture(scope="module")
def reference(tree):
    _, _, _, model, labels = tree
    return {lam: independent_accuracy(model, labels, lam) for lam in LAMS}


def test_accuracies_equal_an_independent_per_lambda_evaluation(tree, reference, capsys):
    root, data, weights, model, labels = tree
    out = root / "out"
    code = ev.main(["--data", str(data), "--model", "resnet18", "--weights", str(weights),
                    "--img-size", "64", "--lam", *map(str, LAMS), "--batch-size", "4",
                    "--workers", "0", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1  # the unreadable image is reported, the rest evaluated
    assert "broken.jpg" in captured.err
    result = json.loads((out / "results.json").read_text())
    assert result["images"] == len(labels) == 14 and result["model"] == "resnet18"
    assert len(result["failed"]) == 1
    rows = {r["lam"]: r for r in result["results"]}
    assert list(rows) == LAMS
    for lam in LAMS:
        assert (rows[lam]["top1"], rows[lam]["top5"]) == pytest.approx(reference[lam], abs=1e-9)
    # the tree was built so that these are informative
    assert 0 < reference[0.0][0] < 100 and reference[0.0][0] < reference[0.0][1]
    assert len({reference[lam] for lam in LAMS}) > 1
    # table on stdout, CSV and plot on disk
    table = captured.out.splitlines()
    assert table[0].split()[:3] == ["lambda", "top-1", "%"]
    assert [float(line.split()[0]) for line in table[1:]] == LAMS
    assert float(table[2].split()[1]) == pytest.approx(rows[0.5]["top1"], abs=0.01)
    with open(out / "results.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["lam"]) for r in csv_rows] == LAMS
    assert [float(r["top5"]) for r in csv_rows] == pytest.approx([rows[l]["top5"] for l in LAMS])
    with Image.open(out / "accuracy_vs_lambda.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300


def test_backbone_runs_once_per_batch_not_once_per_lambda(tree, reference):
    root, data, weights, model, labels = tree
    files, targets, _ = ev.image_folder(data, model.class_names)
    backbone_calls, map_calls = [], []
    hook = model.backbone.register_forward_hook(lambda m, i, o: backbone_calls.append(i[0].shape[0]))
    score_maps = model.head.score_maps
    model.head.score_maps = lambda f: (map_calls.append(1), score_maps(f))[1]
    try:
        correct, images, failures = ev.evaluate(model, files, targets, LAMS, batch_size=5, progress=False)
    finally:
        hook.remove()
        del model.head.score_maps
    batches = math.ceil(len(files) / 5)
    assert len(backbone_calls) == len(map_calls) == batches
    assert sum(backbone_calls) == images == len(files) - 1 == 14
    assert len(failures) == 1 and "broken.jpg" in failures[0]
    for lam in LAMS:  # the counts agree with the reference here too
        got = (100 * correct[lam][0] / images, 100 * correct[lam][1] / images)
        assert got == pytest.approx(reference[lam])


def test_wnid_list_is_the_sorted_imagenet_1k_list():
    wnids = ev.load_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    # a few entries whose class is known from torchvision's category names
    for index, wnid, name in ((0, "n01440764", "tench"), (1, "n01443537", "goldfish"),
                              (207, "n02099601", "golden retriever"), (999, "n15075141", "toilet tissue")):
        assert wnids[index] == wnid and CATEGORIES[index] == name


def test_folder_names_map_to_classes():
    lookup = ev.class_lookup(CATEGORIES)
    assert lookup("n01443537") == 1
    assert lookup("207") == 207 and lookup("0") == 0
    assert lookup("great_white_shark") == 2 and lookup("Great White Shark") == 2
    assert lookup("Cardigan") == 264 and lookup("cardigan") == 474  # exact case decides
    for bad, why in (("n99999999", "not one of the 1000"), ("1000", "out of range"),
                     ("CARDIGAN", "ambiguous"), ("cats", "not a wnid")):
        with pytest.raises(ValueError, match=why):
            lookup(bad)


def test_bad_folder_names_and_offline_weights_are_one_line_errors(tree, tmp_path, capsys, monkeypatch):
    root, data, weights, model, labels = tree
    odd = tmp_path / "odd"
    (odd / "cats").mkdir(parents=True)
    blob_image(0).save(odd / "cats" / "a.png")
    code = ev.main(["--data", str(odd), "--model", "resnet18", "--weights", str(weights), "--img-size", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "cats" in err and len(err.strip().splitlines()) == 1

    monkeypatch.setenv("CSRA_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    code = ev.main(["--data", str(data), "--model", "resnet50"])
    err = capsys.readouterr().err
    assert code == 2 and "CSRA_OFFLINE" in err and str(tmp_path / "torch-home") in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_centre_crop_preprocessing_keeps_aspect():
    prep = csra.Preprocessing(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 50, 100))  # black left quarter: cut away by a centre crop
    x = ev.resize_centre_crop(prep)(image)
    assert x.shape == (3, 64, 64)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))  # all white: (1 - 0.5) / 0.25
    assert prep(image).min() < 0  # the square resize keeps the black part
