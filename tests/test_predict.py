"""python -m csra.predict on a folder of generated images, with a tiny checkpoint made here.

Reference scores come from a separate, one-image-at-a-time forward pass of the
checkpoint loaded by csra.load_checkpoint; the CLI batches, so agreement is to
float32 rounding (1e-6), and the CSV's 6 decimals add 5e-7.
"""
import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import csra
from csra import predict
from csra.visualize import overlay, value_range

from .images import blob_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = csra.build_model("resnet18", num_classes=20, lam=0.1, image_size=64).eval()
    weights = csra.save_checkpoint(root / "tiny.pth", model)

    images = root / "images"
    (images / "a" / "b").mkdir(parents=True)
    (images / "b").mkdir()
    (images / ".hidden").mkdir()
    good = [images / "photo.jpg", images / "rgba.png", images / "a" / "red.png",
            images / "a" / "b" / "gray.JPG", images / "b" / "photo.jpg"]
    blob_image(1).save(good[0], quality=95)
    blob_image(2, (40, 56), "RGBA").save(good[1])
    blob_image(3, (70, 30)).save(good[2])
    blob_image(4, mode="L").save(good[3], format="JPEG")
    blob_image(5, (33, 33)).save(good[4])
    blob_image(6).save(images / ".hidden" / "skipme.png")
    (images / "notes.txt").write_text("not an image, and not an image extension either")
    corrupt = images / "broken.jpg"
    corrupt.write_bytes(good[0].read_bytes()[:300])  # a truncated JPEG

    good_only = root / "good-only"
    good_only.mkdir()
    for i in range(3):
        blob_image(10 + i).save(good_only / f"img{i}.png")

    reference = csra.load_checkpoint(weights)
    return SimpleNamespace(root=root, weights=weights, images=images, good=sorted(good),
                           corrupt=corrupt, good_only=good_only, model=reference)


def reference_scores(model, path, lam=None):
    """Sigmoid scores and score maps of one image, computed on its own (batch of one)."""
    x = model.preprocessing(csra.load_image(str(path)))[None]
    with torch.no_grad():
        maps = model.head.score_maps(model.forward_features(x))
        return torch.sigmoid(model.head.logits_from_maps(maps, lam=lam))[0].numpy(), maps[0]


def run(capsys, *args):
    code = predict.main([str(a) for a in args] + ["--no-progress", "--workers", "0"])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_folder_with_a_corrupt_file_gives_csv_rows_error_report_and_exit_1(tiny, capsys):
    out = tiny.root / "preds.csv"
    code, stdout, stderr = run(capsys, tiny.images, "--weights", tiny.weights, "--out", out,
                               "--threshold", "0.55", "--batch-size", "3")
    assert code == 1
    header, rows = read_csv(out)
    assert header == ["image", "labels", *csra.VOC_CLASSES]
    assert sorted(Path(r[0]) for r in rows) == tiny.good  # hidden folder, .txt and the corrupt file left out
    labelled = 0
    for row in rows:
        expected, _ = reference_scores(tiny.model, row[0])
        scores = np.array(row[2:], dtype=np.float64)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=2e-6)
        order = [csra.VOC_CLASSES[c] for c in np.argsort(-expected) if expected[c] >= 0.55]
        assert row[1] == ";".join(order)
        labelled += bool(order)
    assert 0 < labelled  # the threshold picks something, so the label column is really tested
    error_lines = [line for line in stderr.splitlines() if line.startswith("skipped")]
    assert len(error_lines) == 1 and str(tiny.corrupt) in error_lines[0]
    assert "5 images predicted, 1 skipped" in stderr
    assert "Traceback" not in stderr


def test_all_good_images_exit_0_and_print_a_table(tiny, capsys):
    files = sorted(tiny.good_only.iterdir())
    code, stdout, stderr = run(capsys, *files, "--weights", tiny.weights, "--threshold", "0.5")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split() == ["image", "labels"]
    assert [line.split()[0] for line in lines[1:]] == [str(f) for f in files]
    for line, f in zip(lines[1:], files):
        expected, _ = reference_scores(tiny.model, f)
        best = int(np.argmax(expected))
        assert f"{csra.VOC_CLASSES[best]} {expected[best]:.3f}" in line


def test_json_output_and_lambda_changes_scores_as_logits_from_maps_says(tiny, capsys):
    results = {}
    for lam in ("0", "0.8"):
        out = tiny.root / f"preds-lam{lam}.json"
        code, _, _ = run(capsys, tiny.images, "--weights", tiny.weights, "--out", out, "--lam", lam)
        assert code == 1  # the corrupt file is still there
        results[lam] = json.loads(out.read_text())
    data = results["0.8"]
    assert data["lam"] == 0.8 and data["score"] == "sigmoid" and data["classes"] == list(csra.VOC_CLASSES)
    assert [f["image"] for f in data["failed"]] == [str(tiny.corrupt)]
    assert "truncated or corrupt" in data["failed"][0]["error"]
    assert sorted(Path(p["image"]) for p in data["predictions"]) == tiny.good
    for lam in ("0", "0.8"):
        for p in results[lam]["predictions"]:
            expected, _ = reference_scores(tiny.model, p["image"], lam=float(lam))
            got = np.array([p["scores"][c] for c in csra.VOC_CLASSES])
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
            assert p["labels"] == [csra.VOC_CLASSES[c] for c in np.argsort(-expected) if expected[c] >= 0.5]
    first = lambda lam: np.array(list(results[lam]["predictions"][0]["scores"].values()))
    assert np.abs(first("0.8") - first("0")).max() > 1e-3  # lambda really changed the scores


def test_heatmaps_are_pngs_of_the_predicted_classes_score_maps(tiny, capsys):
    out_dir = tiny.root / "heatmaps"
    code, _, stderr = run(capsys, tiny.images, "--weights", tiny.weights, "--heatmaps", out_dir,
                          "--threshold", "0.55", "--out", tiny.root / "h.json")
    assert code == 1
    data = json.loads((tiny.root / "h.json").read_text())
    expected_names = set()
    stems = {}
    for p in data["predictions"]:
        stem = Path(p["image"]).stem
        stems[stem] = stems.get(stem, 0) + 1
    assert stems["photo"] == 2  # two photo.jpg in different folders must not overwrite each other
    pngs = sorted(out_dir.glob("*.png"))
    for p in data["predictions"]:
        for label in p["labels"]:
            matches = [f for f in pngs if f.name.endswith(f"_{label}.png")
                       and f.name.startswith(Path(p["image"]).stem)]
            assert matches, (p["image"], label)
            expected_names.update(f.name for f in matches)
    n_labels = sum(len(p["labels"]) for p in data["predictions"])
    assert len(pngs) == n_labels > 0
    # one picture checked pixel by pixel against an overlay built here from a single-image forward
    p = next(p for p in data["predictions"] if p["labels"] and Path(p["image"]).name == "red.png")
    label = p["labels"][0]
    picture = np.asarray(Image.open(out_dir / f"red_{label}.png"))
    image = np.asarray(csra.load_image(p["image"]))
    assert picture.shape == image.shape  # small images are drawn at their own size
    _, maps = reference_scores(tiny.model, p["image"])
    maps = maps.sum(0).numpy()
    vmin, vmax = value_range(maps, "global")
    c = csra.VOC_CLASSES.index(label)
    expected = overlay(image, maps[c], vmin[c], vmax[c])
    assert np.abs(picture.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(picture, image)


def test_workers_and_batch_size_do_not_change_the_results(tiny, capsys):
    outs = []
    for workers, batch in (("0", "1"), ("2", "4")):
        out = tiny.root / f"w{workers}.csv"
        code = predict.main([str(tiny.images), "--weights", str(tiny.weights), "--out", str(out),
                             "--workers", workers, "--batch-size", batch, "--no-progress"])
        assert code == 1
        outs.append(read_csv(out))
    (h0, r0), (h1, r1) = outs
    assert h0 == h1 and [r[:2] for r in r0] == [r[:2] for r in r1]
    np.testing.assert_allclose(np.array([r[2:] for r in r0], float), np.array([r[2:] for r in r1], float),
                               atol=2e-6)
    assert "broken.jpg" in capsys.readouterr().err


def test_bad_weights_file_is_a_one_line_error_with_exit_2(tiny):
    bad = tiny.root / "not-a-checkpoint.pth"
    bad.write_bytes(b"\x00garbage" * 10)
    proc = subprocess.run([sys.executable, "-m", "csra.predict", str(tiny.good_only), "--weights", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    assert proc.stdout == ""


def test_other_weight_errors_are_exit_2_too(tiny, capsys):
    code, _, err = run(capsys, tiny.good_only, "--weights", tiny.root / "missing.pth")
    assert code == 2 and "missing.pth: no such file" in err and "Traceback" not in err
    wrong = tiny.root / "plain_resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    code, _, err = run(capsys, tiny.good_only, "--weights", wrong)
    assert code == 2 and "not a CSRA checkpoint" in err and len(err.strip().splitlines()) == 1


def test_usage_errors_exit_2(tiny, capsys):
    for args in ([str(tiny.good_only)],  # neither --weights nor --classifier
                 [str(tiny.good_only), "--weights", str(tiny.weights), "--out", "preds.txt"],
                 [str(tiny.good_only), "--weights", str(tiny.weights), "--batch-size", "0"]):
        with pytest.raises(SystemExit) as info:
            predict.main(args)
        assert info.value.code == 2
    empty = tiny.root / "empty"
    empty.mkdir()
    code, _, err = run(capsys, empty, "--weights", tiny.weights)
    assert code == 2 and "no image files" in err


def test_missing_input_is_reported_and_the_rest_is_predicted(tiny, capsys):
    out = tiny.root / "missing.csv"
    code, _, err = run(capsys, tiny.good_only, tiny.root / "nope.jpg", "--weights", tiny.weights, "--out", out)
    assert code == 1
    assert "nope.jpg: no such file or folder" in err
    assert len(read_csv(out)[1]) == 3


def test_classifier_variant_gives_softmax_over_1000_classes(tiny, capsys, monkeypatch):
    torch.manual_seed(3)
    net = torchvision.models.resnet18(weights=None).eval()
    state = tiny.root / "resnet18-classifier.pth"
    torch.save(net.state_dict(), state)
    out = tiny.root / "classifier.json"
    code, _, err = run(capsys, tiny.good_only, "--classifier", "resnet18", "--weights", state,
                       "--out", out, "--lam", "0", "--threshold", "0.0005")
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["score"] == "softmax" and len(data["classes"]) == 1000
    categories = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
    prep = csra.from_classifier("resnet18", pretrained=False).preprocessing
    for p in data["predictions"]:
        scores = np.array([p["scores"][c] for c in categories])
        assert abs(scores.sum() - 1) < 1e-4
        # lam = 0: exactly the classifier's softmax on the 224 px ImageNet-normalised input
        with torch.no_grad():
            expected = torch.softmax(net(prep(csra.load_image(p["image"]))[None]), 1)[0].numpy()
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
        # near-uniform random softmax: compare the label set, and the order by the CLI's own scores
        assert set(p["labels"]) == {categories[c] for c in np.flatnonzero(expected >= 0.0005)}
        label_scores = [p["scores"][n] for n in p["labels"]]
        assert label_scores == sorted(label_scores, reverse=True) and len(label_scores) > 0
    # without --weights the ImageNet weights are needed: offline this is a one-line error, exit 2
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tiny.root / "empty-torch-home"))
    code, _, err = run(capsys, tiny.good_only, "--classifier", "resnet18")
    assert code == 2 and "CSRA_OFFLINE" in err and "empty-torch-home" in err
    assert len(err.strip().splitlines()) == 1


def test_find_images_recurses_skips_hidden_and_deduplicates(tiny):
    files, missing = predict.find_images([tiny.images, tiny.good[0], tiny.images / "notes.txt",
                                          tiny.root / "absent"])
    assert missing == [tiny.root / "absent"]
    assert files[: len(tiny.good) + 1] == sorted(tiny.good + [tiny.corrupt])
    assert files[-1] == tiny.images / "notes.txt"  # named explicitly: tried (and reported) whatever it is
    assert len(files) == len(set(files)) == len(tiny.good) + 2
