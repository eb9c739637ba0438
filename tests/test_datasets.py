"""Every dataset format through training.datasets.open_dataset: the same images give the same labels
in VOC, CSV, COCO and the authors' JSON layouts, and broken files give one line naming file and line."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from csra import Preprocessing
from training.augment import EvalTransform
from training.datasets import (DataError, ImageLabelDataset, classes_without_positives, detect_format,
                               open_dataset)
from training.make_synthetic import CLASSES, make_synthetic


def same_scenes(tmp_path_factory, layout):
    """The same 34 synthetic scenes (seed 3) written in the given layout."""
    return make_synthetic(tmp_path_factory.mktemp(layout), seed=3, num_train=24, num_test=10, size=64,
                          progress=False, format=layout)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return same_scenes(tmp_path_factory, "voc")


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory):
    return same_scenes(tmp_path_factory, "csv")


def write_csv(root, name, rows, header=("image", "labels", "ignore")):
    with open(root / name, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def copy_images(src, dst, count=4):
    (dst / "images").mkdir(parents=True)
    for k in range(1, count + 1):
        shutil.copy(src / "images" / f"{k:06d}.jpg", dst / "images" / f"{k:06d}.jpg")


def test_csv_layout_holds_the_same_images_and_labels_as_the_voc_layout(voc, csv_data):
    assert (csv_data / "classes.txt").read_text().split() == list(CLASSES)
    for split in ("trainval", "test"):
        a, b = open_dataset(voc, split), open_dataset(csv_data, split)
        assert (a.format, b.format) == ("voc", "csv") and a.classes == b.classes == CLASSES
        np.testing.assert_array_equal(a.labels, b.labels)
        assert (b.labels == -1).any() or split == "test"
        for pa, pb in zip(a.image_paths[:3], b.image_paths[:3]):
            assert pa.read_bytes() == pb.read_bytes()
    assert open_dataset(csv_data, "train").source.name == "train.csv"


def test_formats_are_detected_and_can_be_forced(voc, csv_data, tmp_path):
    assert detect_format(voc) == "voc" and detect_format(csv_data) == "csv"
    with pytest.raises(DataError, match=r"no dataset in .*train\.csv.*instances_\*\.json.*make_synthetic --format csv"):
        detect_format(tmp_path)
    with pytest.raises(DataError, match=r"does not exist"):
        open_dataset(tmp_path / "nowhere", "test")
    with pytest.raises(DataError, match=r"no VOC dataset"):
        open_dataset(csv_data, "test", format="voc")
    with pytest.raises(DataError, match=r"unknown dataset format 'yolo'; known: voc, coco, csv, json"):
        open_dataset(csv_data, "test", format="yolo")


def test_csv_names_with_spaces_sorted_classes_ignore_and_unlabelled_rows(csv_data, tmp_path):
    copy_images(csv_data, tmp_path)
    write_csv(tmp_path, "train.csv", [("images/000001.jpg", "traffic light; dog", ""),
                                      ("images/000002.jpg", "", "cat"),
                                      ("images/000003.jpg", "cat", "dog")])
    write_csv(tmp_path, "val.csv", [("images/000004.jpg", "dog")], header=("image", "labels"))
    train = open_dataset(tmp_path, "trainval")  # no trainval.csv: train.csv
    assert train.classes == ("cat", "dog", "traffic light")  # no classes.txt: sorted names of train.csv
    np.testing.assert_array_equal(train.labels, [[0, 1, 1], [-1, 0, 0], [1, -1, 0]])
    test = open_dataset(tmp_path, "test")  # no test.csv: val.csv
    assert test.source.name == "val.csv" and test.labels.tolist() == [[0, 1, 0]]
    assert classes_without_positives(test) == ["cat", "traffic light"]
    (tmp_path / "classes.txt").write_text("traffic light\ndog\ncat\nbird\n")
    train = open_dataset(tmp_path, "train")
    assert train.classes == ("traffic light", "dog", "cat", "bird")
    assert train.labels[0].tolist() == [1, 1, 0, 0]
    assert classes_without_positives(train) == ["bird"]


def test_csv_errors_name_the_file_and_line(csv_data, tmp_path):
    copy_images(csv_data, tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    write_csv(tmp_path, "train.csv", [("images/000001.jpg", "cat", ""), ("images/000002.jpg", "Dog;cat", ""),
                                      ("images/000003.jpg", "horse", "")])
    with pytest.raises(DataError) as err:
        open_dataset(tmp_path, "train")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'train.csv'}: ")
    assert "2 unknown class name(s) 'Dog' (line 3), 'horse' (line 4)" in message
    assert "the 2 known classes (from classes.txt): cat, dog" in message

    write_csv(tmp_path, "train.csv", [("images/000001.jpg", "cat", ""), ("images/000002.jpg", "dog", ""),
                                      ("./images/000001.jpg", "dog", "")])
    with pytest.raises(DataError, match=r"train\.csv: 1 problem\(s\): line 4: \./images/000001\.jpg repeats line 2"):
        open_dataset(tmp_path, "train")

    write_csv(tmp_path, "train.csv", [("images/000001.jpg", "cat", ""), ("images/missing1.jpg", "dog", ""),
                                      ("images/missing2.jpg", "dog", ""), ("classes.txt", "dog", "")])
    with pytest.raises(DataError, match=r"train\.csv: 3 of 4 images missing or unreadable: missing .*missing1\.jpg; "
                                        r"missing .*missing2\.jpg; not an image .*classes\.txt"):
        open_dataset(tmp_path, "train")

    write_csv(tmp_path, "train.csv", [])
    with pytest.raises(DataError, match=r"train\.csv: the split 'train' lists no images"):
        open_dataset(tmp_path, "train")
    write_csv(tmp_path, "train.csv", [("images/000001.jpg", "cat")], header=("file", "classes"))
    with pytest.raises(DataError, match=r"train\.csv:1: the header must be image,labels\[,ignore\], got file,classes"):
        open_dataset(tmp_path, "train")
    write_csv(tmp_path, "train.csv", [("images/000001.jpg", "cat", "cat")])
    with pytest.raises(DataError, match=r"line 2: cat both in labels and ignore"):
        open_dataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"no CSV file for split 'nosuch' \(tried nosuch; files here: classes\.txt, train\.csv"):
        open_dataset(tmp_path, "nosuch")


def voc_to_coco(voc_split, dst, folder):
    """A COCO instances file of a VOC split; category ids 10, 20, ...; difficult objects as crowd."""
    (dst / "images" / folder).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k, (path, ann) in enumerate(zip(voc_split.image_paths, voc_split.annotations)):
        shutil.copy(path, dst / "images" / folder / path.name)
        images.append({"id": 1000 - k, "file_name": path.name, "width": ann.width, "height": ann.height})
        for o in ann.objects:
            x0, y0, x1, y1 = o.box
            annotations.append({"id": len(annotations) + 1, "image_id": 1000 - k, "category_id": 10 * (o.class_index + 1),
                                "iscrowd": int(o.difficult), "bbox": [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1]})
    images.append({"id": 5, "file_name": "unannotated.jpg", "width": 9, "height": 9})
    categories = [{"id": 10 * (c + 1), "name": n} for c, n in enumerate(voc_split.classes)][::-1]
    (dst / "annotations").mkdir(exist_ok=True)
    path = dst / "annotations" / f"instances_{folder}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_coco_instances_give_voc_labels_with_crowd_as_present_in_category_order(voc, tmp_path):
    for split, folder in (("trainval", "train2017"), ("test", "val2017")):
        voc_to_coco(open_dataset(voc, split), tmp_path, folder)
    assert detect_format(tmp_path) == "coco"
    for split in ("trainval", "test"):
        a, b = open_dataset(voc, split), open_dataset(tmp_path, split)
        assert b.format == "coco" and b.classes == CLASSES  # category id order, not file order
        # images sorted by id (ids count down), the one without annotations left out
        order = np.argsort([1000 - k for k in range(len(a))])
        assert [p.name for p in b.image_paths] == [a.image_paths[i].name for i in order]
        np.testing.assert_array_equal(b.labels, np.abs(a.labels[order]))  # difficult = crowd -> present
        assert [x.boxes_of(c) for x in b.annotations for c in range(6)] == \
               [a.annotations[i].boxes_of(c) for i in order for c in range(6)]
    assert open_dataset(tmp_path, "val2017").source.name == "instances_val2017.json"


def test_coco_errors_name_the_file_and_entry(voc, tmp_path):
    path = voc_to_coco(open_dataset(voc, "test"), tmp_path, "val2014")
    data = json.loads(path.read_text())
    data["annotations"][2]["category_id"] = 77
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances_val2014\.json: 1 problem\(s\): annotation entry 2 \(id 3\): "
                                        r"category_id 77 is not in categories"):
        open_dataset(tmp_path, "test")
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"instances_val2014\.json:1: not valid JSON"):
        open_dataset(tmp_path, "test")


def test_authors_json_lists_in_their_three_conventions(voc, tmp_path):
    test = open_dataset(voc, "test")
    # their VOC test file: -1 absent, 0 difficult, 1 present; absolute paths
    ternary = {1: 1, -1: 0, 0: -1}
    entries = [{"img_path": str(p), "target": [ternary[int(v)] for v in row]}
               for p, row in zip(test.image_paths, test.labels)]
    (tmp_path / "test_voc07.json").write_text(json.dumps(entries))
    # a train file: 1/0, paths relative to the folder
    (tmp_path / "images").mkdir()
    for p in test.image_paths:
        shutil.copy(p, tmp_path / "images" / p.name)
    entries = [{"img_path": f"images/{p.name}", "target": [max(int(v), 0) for v in row]}
               for p, row in zip(test.image_paths, test.labels)]
    (tmp_path / "trainval_voc07.json").write_text(json.dumps(entries))
    assert detect_format(tmp_path) == "json"
    a = open_dataset(tmp_path, "test")
    np.testing.assert_array_equal(a.labels, test.labels)
    assert a.classes == ("class_0", "class_1", "class_2", "class_3", "class_4", "class_5")
    b = open_dataset(tmp_path, "trainval")
    np.testing.assert_array_equal(b.labels, np.clip(test.labels, 0, 1))
    assert b.image_paths[0] == tmp_path / "images" / test.image_paths[0].name
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    assert open_dataset(tmp_path, "test").classes == CLASSES
    # their WIDER test file: 99 unspecified (ignored), and a person box to crop
    entries = [{"img_path": str(test.image_paths[0]), "target": [1, 0, 99, 0, 0, 1], "bbox": [4, 6, 20, 30]},
               {"img_path": str(test.image_paths[0]), "target": [0, 99, 1, 0, 0, 0], "bbox": [30, 2, 10, 12]}]
    (tmp_path / "val_wider.json").write_text(json.dumps(entries))
    (tmp_path / "test_voc07.json").unlink()
    wider = open_dataset(tmp_path, "test")
    assert wider.labels.tolist() == [[1, 0, -1, 0, 0, 1], [0, -1, 1, 0, 0, 0]]
    ds = ImageLabelDataset(wider, lambda image: image.size)
    assert ds[0][0] == (20, 30) and ds[1][0] == (10, 12)


def test_authors_json_errors_name_the_file_and_entry(voc, tmp_path):
    path = str(open_dataset(voc, "test").image_paths[0])
    (tmp_path / "train_x.json").write_text(json.dumps([{"img_path": path, "target": [1, 0]},
                                                       {"img_path": path, "target": [0, 1]},
                                                       {"img_path": path, "target": [1]},
                                                       {"path": path}]))
    with pytest.raises(DataError, match=r"train_x\.json: 3 problem\(s\): entry 1: .* repeats entry 0; entry 2: target "
                                        r"of 1 numbers, entry 0 has 2; entry 3: needs img_path"):
        open_dataset(tmp_path, "train")
    (tmp_path / "train_x.json").write_text(json.dumps([{"img_path": path, "target": [1, 2]}]))
    with pytest.raises(DataError, match=r"train_x\.json: target values \[2\]"):
        open_dataset(tmp_path, "train")


def test_limit_and_the_one_dataset_class_serve_every_format(csv_data):
    split = open_dataset(csv_data, "test", limit=3)
    assert len(split) == 3
    x, labels, index = ImageLabelDataset(split, EvalTransform(Preprocessing(32)))[2]
    assert x.shape == (3, 32, 32) and index == 2
    np.testing.assert_array_equal(labels.numpy(), split.labels[2])
    Image.open(split.image_paths[2]).verify()
