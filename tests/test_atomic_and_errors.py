"""atomic_path: all or nothing; one_line: a command-line message from any error."""
import os

import pytest

from csra.atomic import atomic_path
from csra.errors import one_line


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp != target
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "first"
    assert os.listdir(target.parent) == ["table.csv"]


def test_one_line_takes_the_first_line_or_the_worker_original():
    assert one_line(RuntimeError("bad  thing\n  details\nmore")) == "bad thing"
    assert one_line(ValueError()) == "ValueError"
    wrapped = RuntimeError("Caught DataError in DataLoader worker process 0.\n"
                           "Original Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                           "training.voc.DataError: img7.jpg: cannot decode image")
    assert one_line(wrapped) == "img7.jpg: cannot decode image"


def test_a_killed_save_leaves_a_temp_file_that_the_next_save_removes(tmp_path):
    """SIGKILL inside an atomic save leaves .last.<pid>.tmp.pth (89.5 MB for an R101); the next save
    beside it removes the leftovers of dead processes and keeps those of live ones."""
    import signal
    import subprocess
    import sys
    target = tmp_path / "last.pth"
    code = ("import sys, time; from csra.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000); print(tmp, flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    leftover = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.basename(leftover) == f".last.{proc.pid}.tmp.pth" and os.path.exists(leftover)
    live = tmp_path / f".last.{os.getppid()}.tmp.pth"  # a save in progress in a live process
    live.write_text("busy")
    other = tmp_path / f".metrics.{proc.pid}.tmp.csv"  # another target's leftover: removed when it is saved
    other.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == sorted(["last.pth", live.name, other.name])
    with atomic_path(tmp_path / "metrics.csv") as tmp:
        tmp.write_text("rows")
    assert sorted(os.listdir(tmp_path)) == sorted(["last.pth", "metrics.csv", live.name])
