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
