"""Your own data end to end: make_synthetic --format csv -> train -> best.pth with the CSV's class names
-> evaluate and predict read it; and the papers' recipes follow the data."""
import argparse
import csv
import json

import numpy as np
import pytest

import csra
import csra.predict
from training import evaluate, make_synthetic, train
from training.datasets import DataSplit


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("mine")
    assert make_synthetic.main(["--out", str(data), "--format", "csv", "--num-train", "16", "--num-test", "8",
                                "--size", "64", "--seed", "4"]) == 0
    out = tmp_path_factory.mktemp("run")
    code = train.main(["--data-root", str(data), "--out", str(out), "--backbone", "resnet18", "--pretrained", "none",
                       "--img-size", "64", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress",
                       "--offline"])
    assert code == 0
    return data, out


def test_a_csv_dataset_trains_to_a_checkpoint_with_its_class_names(csv_run, capsys):
    data, out = csv_run
    model = csra.load_checkpoint(out / "best.pth")
    names = tuple((data / "classes.txt").read_text().split())
    assert model.class_names == names and model.config.backbone == "resnet18"
    assert model.info["training"]["args"]["dataset"] == "csv"

    assert evaluate.main(["--weights", str(out / "best.pth"), "--data-root", str(data), "--workers", "0",
                          "--no-progress", "--out", str(out / "eval")]) == 0
    report = json.loads((out / "eval" / "metrics.json").read_text())
    assert report["dataset"] == "csv" and report["classes"] == list(names) and report["images"] == 8
    assert (out / "eval" / "per_class_ap.png").stat().st_size > 0

    assert csra.predict.main([str(data / "images"), "--weights", str(out / "best.pth"), "--out",
                              str(out / "preds.csv"), "--workers", "0", "--no-progress"]) == 0
    with open(out / "preds.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "labels", *names] and len(rows) == 1 + 24


def test_a_bad_csv_is_one_line_and_exit_2(tmp_path, capsys):
    make_synthetic.make_synthetic(tmp_path, num_train=4, num_test=2, size=32, progress=False, format="csv")
    with open(tmp_path / "train.csv", "a") as f:
        f.write("images/000001.jpg,purple_blob,\n")
    assert train.main(["--data-root", str(tmp_path), "--backbone", "resnet18", "--pretrained", "none",
                       "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.csv" in err and "'purple_blob' (line 6)" in err
    assert "known classes (from classes.txt): red_circle, blue_square" in err


def split_with(classes, fmt):
    return DataSplit(None, "train", fmt, None, tuple(classes), [], np.zeros((0, len(classes))))


def test_recipes_follow_the_data_and_the_command_line_wins():
    args = argparse.Namespace(backbone="resnet101", img_size=448, num_heads=1, lam=0.1, lr_step=4)
    assert train.apply_recipe(args, set(), split_with(csra.COCO_CLASSES, "coco")) == "coco"
    assert (args.num_heads, args.lam, args.lr_step, args.img_size, args.backbone) == (4, 0.5, 5, 448, "resnet101")
    args = argparse.Namespace(backbone="swin_t", img_size=448, num_heads=1, lam=0.2, lr_step=4)
    assert train.apply_recipe(args, {"lam", "backbone"}, split_with(csra.COCO_CLASSES, "json")) == "coco"
    assert (args.num_heads, args.lam, args.backbone) == (4, 0.2, "swin_t")
    args = argparse.Namespace(backbone="resnet101", img_size=448, num_heads=4, lam=0.5, lr_step=5)
    assert train.apply_recipe(args, set(), split_with(("a", "b"), "csv")) == "voc07"
    assert (args.num_heads, args.lam, args.lr_step) == (1, 0.1, 4)


def test_warning_for_a_class_without_positives(tmp_path, capsys):
    make_synthetic.make_synthetic(tmp_path, num_train=6, num_test=2, size=32, progress=False, format="csv")
    with open(tmp_path / "classes.txt", "a") as f:
        f.write("never_seen\n")
    assert train.main(["--data-root", str(tmp_path), "--backbone", "resnet18", "--pretrained", "none",
                       "--img-size", "32", "--epochs", "1", "--batch-size", "3", "--workers", "0",
                       "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "warning: 1 class(es) with no positive image in" in capsys.readouterr().err
