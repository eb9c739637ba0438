"""csra.predict checks its outputs before predicting and never loses finished results; every CLI
option is validated by argparse with one usage line (before: tracebacks, silently ignored
values, or results thrown away after all the work)."""
import codecs
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import csra
from csra import predict
from training import evaluate, train

from .images import blob_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    torch.manual_seed(0)
    weights = csra.save_checkpoint(root / "tiny.pth", csra.build_model("resnet18", num_classes=20, image_size=64))
    images = root / "images"
    images.mkdir()
    for i in range(2):
        blob_image(i).save(images / f"img{i}.png")
    return root, weights, images


def run_predict(*args):
    return subprocess.run([sys.executable, "-m", "csra.predict", *map(str, args), "--no-progress",
                           "--workers", "0"], cwd=ROOT, capture_output=True, timeout=300)


def usage_error(argv):
    with pytest.raises(SystemExit) as info:
        predict.main(argv + ["--no-progress"])
    assert info.value.code == 2


def test_out_that_is_a_folder_is_refused_before_predicting(tiny, capsys, monkeypatch):
    root, weights, images = tiny
    called = []
    monkeypatch.setattr(predict, "predict_images", lambda *a, **k: called.append(1) or iter(()))
    folder = root / "a-folder.csv"
    folder.mkdir()
    usage_error([str(images), "--weights", str(weights), "--out", str(folder)])
    err = capsys.readouterr().err
    assert f"--out {folder}: is a folder" in err and "Traceback" not in err
    parent_file = root / "plain-file"
    parent_file.write_text("x")
    usage_error([str(images), "--weights", str(weights), "--out", str(parent_file / "p.csv")])
    assert f"{parent_file} is a file, not a folder" in capsys.readouterr().err
    heat_file = root / "heat.png"
    heat_file.write_text("x")
    usage_error([str(images), "--weights", str(weights), "--heatmaps", str(heat_file)])
    assert f"--heatmaps {heat_file}: is a file, not a folder" in capsys.readouterr().err
    assert called == []  # refused before any work


def test_unwritable_out_keeps_the_results_on_stdout(tiny, capsys, monkeypatch):
    root, weights, images = tiny
    out = root / "later.csv"

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict, "write_csv", fail)
    code = predict.main([str(images), "--weights", str(weights), "--out", str(out), "--no-progress",
                         "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 2 and "No space left on device" in captured.err
    assert "the results follow on stdout" in captured.err
    rows = captured.out.splitlines()
    assert rows[0].split() == ["image", "labels"] and len(rows) == 3
    assert not out.exists() and not [p for p in root.iterdir() if p.name.startswith(".later")]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse non-UTF-8 names")
def test_non_utf8_file_names_are_written_safely(tiny, tmp_path):
    _, weights, images = tiny
    folder = tmp_path / "odd"
    folder.mkdir()
    name = b"caf\xe9-latin1.png"  # not valid UTF-8
    blob_image(7).save(os.path.join(os.fsencode(folder), name), format="PNG")
    blob_image(8).save(folder / "plain.png")
    for suffix in (".csv", ".json"):
        out = tmp_path / f"preds{suffix}"
        proc = run_predict(folder, "--weights", weights, "--out", out, "--heatmaps", tmp_path / "maps",
                           "--threshold", "0")
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        text = out.read_text(encoding="utf-8")  # valid UTF-8
        if suffix == ".csv":
            rows = list(csv.reader(text.splitlines()))[1:]
            images_written = [r[0] for r in rows]
        else:
            images_written = [p["image"] for p in json.loads(text)["predictions"]]
        assert sorted(images_written) == sorted([str(folder / "caf\\xe9-latin1.png"), str(folder / "plain.png")])
    proc = run_predict(folder, "--weights", weights)  # the table on stdout
    assert proc.returncode == 0 and "caf\\xe9-latin1.png" in proc.stdout.decode("utf-8")
    assert len(list((tmp_path / "maps").glob("caf*.png"))) == 20


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="needs file names of any bytes")
def test_names_that_differ_only_in_odd_bytes_stay_apart(tiny, tmp_path, capsys):
    """caf<E9>, caf<E8> (Latin-1, not UTF-8), caf\ufffd (U+FFFD itself) and caf\\xe9 (a backslash):
    four files, four rows, each name read back to its bytes (before: the first three all became
    caf\ufffd.png, so their results could not be told apart)."""
    _, weights, _ = tiny
    folder = tmp_path / "odd"
    folder.mkdir()
    names = [b"caf\xe9.png", b"caf\xe8.png", "caf\ufffd.png".encode(), b"caf\\xe9.png"]
    for k, name in enumerate(names):
        blob_image(k).save(os.path.join(os.fsencode(folder), name), format="PNG")
    written = {}
    for suffix in (".csv", ".json"):
        out = tmp_path / f"preds{suffix}"
        assert predict.main([str(folder), "--weights", str(weights), "--out", str(out), "--workers", "0",
                             "--no-progress"]) == 0
        text = out.read_text(encoding="utf-8")
        written[suffix] = [r[0] for r in list(csv.reader(text.splitlines()))[1:]] if suffix == ".csv" \
            else [p["image"] for p in json.loads(text)["predictions"]]
    assert predict.main([str(folder), "--weights", str(weights), "--workers", "0", "--no-progress"]) == 0
    written["table"] = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    for rows in written.values():
        assert len(set(rows)) == 4
        assert sorted(codecs.escape_decode(row.encode("utf-8"))[0] for row in rows) == \
               sorted(os.path.join(os.fsencode(folder), name) for name in names)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no folder can be made")
def test_a_heatmap_folder_that_cannot_be_made_is_one_line(tiny):
    _, weights, images = tiny
    proc = run_predict(images, "--weights", weights, "--heatmaps", "/proc/x")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and "/proc/x" in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_results_to_a_full_stdout_are_one_line(tiny):
    _, weights, images = tiny
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "csra.predict", str(images), "--weights", str(weights),
                               "--no-progress", "--workers", "0"], cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                              timeout=300)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2, err
    assert err == "error: cannot write the results to standard output (No space left on device)"


PREDICT_BAD = [(["--threshold", "-1"], "--threshold"), (["--threshold", "nan"], "--threshold"),
               (["--threshold", "1.5"], "--threshold"), (["--lam", "1e30"], "--lam"), (["--lam", "nan"], "--lam"),
               (["--lam", "-0.1"], "--lam"), (["--batch-size", "0"], "--batch-size"),
               (["--workers", "-1"], "--workers"), (["--batch-size", "two"], "--batch-size")]


@pytest.mark.parametrize("args,option", PREDICT_BAD, ids=[" ".join(a) for a, _ in PREDICT_BAD])
def test_predict_options_are_validated(tiny, capsys, args, option):
    _, weights, images = tiny
    with pytest.raises(SystemExit) as info:
        predict.main([str(images), "--weights", str(weights), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {option}: " in err and "Traceback" not in err


TRAIN_BAD = [(["--batch-size", "0"], "--batch-size"), (["--img-size", "0"], "--img-size"),
             (["--img-size", "-64"], "--img-size"), (["--crop-scale", "2", "1"], "--crop-scale"),
             (["--crop-scale", "0.9", "0.5"], "--crop-scale"), (["--workers", "-1"], "--workers"),
             (["--limit", "0"], "--limit"), (["--epochs", "0"], "--epochs"), (["--lam", "nan"], "--lam"),
             (["--lr", "-1"], "--lr"), (["--val-every", "0"], "--val-every"),
             # before: a numpy traceback, an OOM kill, 100000 worker processes
             (["--seed", "-1"], "--seed"), (["--seed", str(2 ** 32)], "--seed"),
             (["--img-size", "100000"], "--img-size"), (["--workers", "100000"], "--workers")]


@pytest.mark.parametrize("args,option", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_train_options_are_validated(tmp_path, capsys, args, option):
    with pytest.raises(SystemExit) as info:
        train.main(["--data-root", str(tmp_path), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and option in err and "Traceback" not in err
    assert len([l for l in err.splitlines() if l.startswith("python -m training.train: error:")]) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,option", [(["--batch-size", "0"], "--batch-size"),
                                         (["--threshold", "nan"], "--threshold"), (["--limit", "0"], "--limit"),
                                         (["--img-size", "-5"], "--img-size"), (["--lam", "inf"], "--lam"),
                                         (["--img-size", "200000"], "--img-size"),
                                         (["--workers", "100000"], "--workers")])
def test_evaluate_options_are_validated(tmp_path, capsys, args, option):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--weights", "w.pth", "--data-root", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {option}: " in err
