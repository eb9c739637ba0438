"""python -m training.train on synthetic data: it learns, it resumes exactly, it survives Ctrl-C,
it runs under torchrun, and it fails with one clear line."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import csra
from training import evaluate, train
from training.make_synthetic import make_synthetic
from training.schedule import last_lr, lr_factor, warmup_step_schedule
from training.voc import load_split

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "resnet18", "--pretrained", "none", "--img-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("small"), seed=5, num_train=48, num_test=16, size=64,
                          progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """resnet18 from scratch on 320 synthetic images at 112 px (4 x 4 score maps), 6 epochs.

    With seeds 0-3 this reached mAP 90-98 (baseline 37) and pointing-game hit rates of
    56-68% (random point 8.6%), so the margins asserted below hold with room to spare."""
    data = make_synthetic(tmp_path_factory.mktemp("synth"), seed=0, num_train=320, num_test=120, size=112,
                          progress=False)
    out = tmp_path_factory.mktemp("run")
    code = train.main(["--data-root", str(data), "--out", str(out), "--backbone", "resnet18",
                       "--pretrained", "none", "--img-size", "112", "--epochs", "6", "--batch-size", "16",
                       "--lr", "0.05", "--warmup-epochs", "1", "--lr-step", "4", "--workers", "0",
                       "--no-progress"])
    assert code == 0
    return data, out


def label_frequency_map(labels):
    """mAP of scoring every image with the class's frequency: AP = the positive rate among valid labels."""
    valid = labels != -1
    return 100 * np.mean([(labels[:, c] == 1).sum() / valid[:, c].sum() for c in range(labels.shape[1])])


def random_point_rate(split):
    """Chance that a uniformly random pixel lands in a present class's boxes, over all such pairs."""
    rates = []
    for ann, labels in zip(split.annotations, split.labels):
        for c in np.flatnonzero(labels == 1):
            inside = np.zeros((ann.height, ann.width), dtype=bool)
            for xmin, ymin, xmax, ymax in ann.boxes_of(c):
                inside[ymin - 1:ymax, xmin - 1:xmax] = True
            rates.append(inside.mean())
    return 100 * np.mean(rates)


def test_training_beats_the_label_frequency_baseline_by_far(trained):
    data, out = trained
    test_split = load_split(data, "test")
    baseline = label_frequency_map(test_split.labels)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    best_map = max(float(r["mAP"]) for r in rows)
    assert best_map > baseline + 30, (best_map, baseline)
    assert float(rows[-1]["train_loss"]) < 0.6 * float(rows[0]["train_loss"])
    model = csra.load_checkpoint(out / "best.pth")
    assert model.info["training"]["mAP"] == pytest.approx(best_map, abs=1e-3)
    assert model.class_names == test_split.classes and model.config.image_size == 112
    for name in ("loss.png", "map.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_pointing_game_beats_a_random_point_by_far(trained, capsys):
    data, out = trained
    # tolerance 0 (the peak inside a box): the 112 px images are small for TorchRay's 15 px
    assert evaluate.main(["--weights", str(out / "best.pth"), "--data-root", str(data), "--pointing-game",
                          "--tolerance", "0", "--workers", "0", "--no-progress", "--out", str(out / "eval")]) == 0
    report = json.loads((out / "eval" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    # the same checkpoint scored by the evaluate CLI and by the trainer
    assert report["metrics"]["mAP"] == pytest.approx(max(float(r["mAP"]) for r in rows), abs=1e-3)
    random_rate = random_point_rate(load_split(data, "test"))
    game = report["pointing_game"]
    assert game["random_point_rate"] == pytest.approx(random_rate, rel=1e-6)
    assert game["hit_rate"] > 2.5 * random_rate and game["hit_rate"] > random_rate + 20, (game, random_rate)
    assert (out / "eval" / "pointing_game.png").is_file()
    assert "pointing game (0 px):" in capsys.readouterr().out


def test_schedule_is_per_iteration_warmup_then_step_decay():
    n = 5  # iterations per epoch; 2 warm-up epochs; x0.1 every 4 epochs (the authors' VOC schedule)
    expected = [(t + 1) / 10 for t in range(10)] + [1.0] * 10 + [0.1] * 20 + [0.01] * 10
    got = [lr_factor(t, n, warmup_epochs=2, step_epochs=4, gamma=0.1) for t in range(10 * n)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert lr_factor(7, n, warmup_epochs=0, step_epochs=0) == 1.0
    # the LambdaLR the trainer steps after each optimizer step gives the same rates, per parameter group
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [weight], "lr": 0.01}, {"params": [], "lr": 0.1}], lr=0.01)
    schedule = warmup_step_schedule(optimizer, n, warmup_epochs=2, step_epochs=4, gamma=0.1)
    used = []
    for _ in range(10 * n):
        used.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
        assert last_lr(schedule) == pytest.approx(used[-1][0])
    np.testing.assert_allclose(used, np.outer(expected, [0.01, 0.1]), rtol=1e-12)


def resume_args(data, out, epochs):
    return ["--data-root", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "8",
            "--lr", "0.02", "--warmup-epochs", "2", "--lr-step", "1", "--lr-gamma", "0.5", "--workers", "1",
            "--seed", "7", *TINY]


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(small_data, tmp_path):
    assert train.main(resume_args(small_data, tmp_path / "whole", 2)) == 0
    assert train.main(resume_args(small_data, tmp_path / "split", 1)) == 0
    first = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert first["epoch"] == 1
    # resume: the recipe comes from the checkpoint; another worker count must not change the result
    assert train.main(["--resume", str(tmp_path / "split"), "--epochs", "2", "--workers", "0", "--no-progress"]) == 0
    whole = torch.load(tmp_path / "whole" / "last.pth", weights_only=True)
    resumed = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert resumed["epoch"] == whole["epoch"] == 2
    for a, b in zip(whole["history"], resumed["history"]):
        np.testing.assert_allclose(a["iteration_losses"], b["iteration_losses"], rtol=1e-5, atol=1e-7)
        assert a["lr"] == pytest.approx(b["lr"]) and a["mAP"] == pytest.approx(b["mAP"], abs=1e-6)
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    for key, state in whole["optimizer"]["state"].items():
        torch.testing.assert_close(resumed["optimizer"]["state"][key]["momentum_buffer"],
                                   state["momentum_buffer"], rtol=1e-4, atol=1e-6)
    # the optimizer state of epoch 1 was really used: epoch 2 starts with non-zero momentum
    assert all(s["momentum_buffer"].abs().sum() > 0 for s in first["optimizer"]["state"].values())
    assert len(list(csv.DictReader(open(tmp_path / "split" / "metrics.csv")))) == 2


def test_ctrl_c_mid_epoch_keeps_checkpoints_and_resume_finishes(small_data, tmp_path):
    """Independent of machine speed: SIGINT is sent once the process has printed its first finished
    epoch (so it lands in the middle of the run), then the test waits for the exit, however long."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.train", *resume_args(small_data, out, 1000)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stdout:  # "epoch 1/1000 ..." is printed after epoch 1's checkpoints are written
        seen.append(line)
        if line.startswith("epoch 1/1000"):
            break
    assert proc.poll() is None, "".join(seen) + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate()  # no time limit: a loaded machine is slow, not wrong
    assert proc.returncode == 130, err
    assert f"interrupted: the last finished epoch is saved in {out}" in err and "Traceback" not in err
    state = torch.load(out / "last.pth", weights_only=True)
    done = state["epoch"]
    assert 1 <= done < 1000
    assert f"epoch {done}/1000" in "".join(seen) + rest  # what was saved is what was reported
    assert csra.load_checkpoint(out / "best.pth").info["training"]["epoch"] <= done
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert train.main(["--resume", str(out), "--epochs", str(done + 1), "--no-progress"]) == 0
    final = torch.load(out / "last.pth", weights_only=True)
    assert final["epoch"] == done + 1 and [h["epoch"] for h in final["history"]] == list(range(1, done + 2))


def test_a_kill_while_plotting_the_last_epoch_is_finished_by_resume(small_data, tmp_path, capsys):
    """Killed (SIGKILL) after the last last.pth, during map.png: a stale map.png and the dead process's
    .map.PID.tmp.png stay behind. Resuming draws the figures and removes the temporary file (before:
    "nothing to do", both left as they were)."""
    from training.plots import plot_map
    assert train.main(resume_args(small_data, tmp_path, 1)) == 0
    history = torch.load(tmp_path / "last.pth", weights_only=True)["history"]
    plot_map(history, tmp_path / "expected.png")
    plot_map([], tmp_path / "map.png")  # the previous epoch's figure (here: none yet)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    partial = tmp_path / f".map.{dead.pid}.tmp.png"
    partial.write_bytes((tmp_path / "expected.png").read_bytes()[:100])
    capsys.readouterr()
    assert train.main(["--resume", str(tmp_path), "--no-progress"]) == 0
    assert not partial.exists()
    assert (tmp_path / "map.png").read_bytes() == (tmp_path / "expected.png").read_bytes()
    assert "has already trained 1 of 1 epochs; nothing to train" in capsys.readouterr().out


def test_ctrl_c_waits_for_a_checkpoint_being_saved(tmp_path):
    """The watcher thread holds the prompt back while `saving` is held, then exits with 130."""
    code = ("import sys, time\n"
            "from training.interrupt import PromptInterrupt\n"
            "with PromptInterrupt(lambda: 'interrupted: message') as guard:\n"
            "    with guard.saving:\n"
            "        print('saving', flush=True)\n"
            "        sys.stdin.readline()\n"  # the test decides when the save ends
            "        print('saved', flush=True)\n"
            "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "saving\n"
    proc.send_signal(signal.SIGINT)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate()
    assert proc.returncode == 130 and out == "saved\n" and err.strip() == "interrupted: message"


def test_resume_refuses_a_changed_recipe_and_a_best_checkpoint(small_data, tmp_path, capsys):
    assert train.main(resume_args(small_data, tmp_path, 1)) == 0
    assert train.main(["--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "--lr 0.1 differs from the run being resumed (0.02" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "best.pth")]) == 2
    assert "not a last.pth with resume state" in capsys.readouterr().err
    assert train.main(["--resume", "auto"]) == 2
    assert "--resume auto needs --out" in capsys.readouterr().err


def test_offline_imagenet_weights_give_one_clear_line(small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torch.hub's folder is TORCH_HOME/hub
    code = train.main(["--data-root", str(small_data), "--backbone", "resnet18", "--pretrained", "imagenet",
                       "--img-size", "64", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ImageNet weights for resnet18 is not cached")
    assert f"put it at {tmp_path / 'hub' / 'checkpoints'}" in err and "--pretrained none" in err


def test_torchrun_two_processes_gloo_trains(small_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "training.train", "--data-root", str(small_data), "--out", str(out), "--epochs", "1",
         "--batch-size", "8", "--limit", "24", "--workers", "0", "--device", "cpu", *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)  # a hang guard only
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and state["training"]["args"]["batch_size"] == 8
    # 24 images, 4 per process and step: 3 steps, all logged by rank 0
    assert len(state["history"][0]["iteration_losses"]) == 3
    assert csra.load_checkpoint(out / "best.pth").config.num_classes == 6


def test_missing_data_root_names_every_format_read(tmp_path, capsys):
    assert train.main(["--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --data-root is required")
    for name in ("VOC", "COCO", "CSV", "the CSRA authors' JSON lists"):
        assert name in err
    assert not (tmp_path / "run").exists()
