"""training.make_synthetic: VOC layout, determinism, boxes that frame the drawn shapes."""
import hashlib

import numpy as np
from PIL import Image

from training.make_synthetic import CLASSES, SHAPES, main, make_synthetic
from training.voc import find_voc_root, load_split


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = make_synthetic(tmp_path / "a", seed=3, num_train=12, num_test=4, size=64, progress=False)
    b = make_synthetic(tmp_path / "b", seed=3, num_train=12, num_test=4, size=64, progress=False)
    c = make_synthetic(tmp_path / "c", seed=4, num_train=12, num_test=4, size=64, progress=False)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_layout_splits_labels_and_boxes(tmp_path):
    assert main(["--out", str(tmp_path), "--num-train", "150", "--num-test", "50", "--size", "96"]) == 0
    assert find_voc_root(tmp_path) == tmp_path
    train, test = load_split(tmp_path, "trainval"), load_split(tmp_path, "test")
    assert len(train) == 150 and len(test) == 50 and not set(train.ids) & set(test.ids)
    assert train.classes == CLASSES == tuple((tmp_path / "classes.txt").read_text().split())
    labels = np.concatenate([train.labels, test.labels])
    counts = [len(a.objects) for a in train.annotations + test.annotations]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) == 4
    assert (labels == 1).any(axis=0).all()  # every class appears
    assert (labels == -1).any()  # some classes are only there as difficult objects
    assert ((labels == 1).sum(1) >= 1).mean() > 0.9

    centre_colour_matches, non_difficult = 0, 0
    for split in (train, test):
        for path, ann in zip(split.image_paths, split.annotations):
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
            assert image.shape[:2] == (ann.height, ann.width) and max(ann.width, ann.height) == 96
            for obj in ann.objects:
                xmin, ymin, xmax, ymax = obj.box
                assert 1 <= xmin < xmax <= ann.width and 1 <= ymin < ymax <= ann.height
                if obj.difficult:
                    continue
                non_difficult += 1
                # the drawn shape's colour sits at the box centre (objects barely overlap)
                cx, cy = (xmin + xmax) // 2 - 1, (ymin + ymax) // 2 - 1
                colour = np.array(SHAPES[CLASSES[obj.class_index]][1])
                centre = image[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
                centre_colour_matches += np.abs(centre - colour).max() < 60
    assert centre_colour_matches / non_difficult > 0.9


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--num-train", "0"]) == 2
    assert "--num-train" in capsys.readouterr().err
