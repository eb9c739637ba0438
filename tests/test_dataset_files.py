"""Dataset files as the tools that make them write them: VOC annotations as VOC2007 ships them
(source, owner, pose, truncated, difficult), the VOC2012 layout (no test split), COCO files with
gapped category ids and crowd annotations, text files saved by spreadsheets (UTF-8 byte-order
mark, CRLF). Each loads right, or fails in one line naming the file and the line or entry (before:
read silently wrong, or a traceback)."""
import copy
import json
import os

import numpy as np
import pytest

from csra import VOC_CLASSES
from training import evaluate, train
from training.datasets import DataError, detect_format, open_dataset

from .images import blob_image

# VOC2007's Annotations/*.xml layout, tabs and all (000001.xml's header, our sizes and objects)
VOC_XML = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>{id}.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t\t<flickrid>341012865</flickrid>
\t</source>
\t<owner>
\t\t<flickrid>Fried Camels</flickrid>
\t\t<name>Jinky the Fruit Bat</name>
\t</owner>
\t<size>
\t\t<width>48</width>
\t\t<height>40</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
VOC_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Left</pose>
\t\t<truncated>{truncated}</truncated>
\t\t<difficult>{difficult}</difficult>
\t\t<bndbox>
\t\t\t<xmin>{box[0]}</xmin>
\t\t\t<ymin>{box[1]}</ymin>
\t\t\t<xmax>{box[2]}</xmax>
\t\t\t<ymax>{box[3]}</ymax>
\t\t</bndbox>
\t</object>
"""
SCENES = {  # image id -> [(class, truncated, difficult)]
    "000001": [("dog", 1, "0"), ("person", 1, "0")],
    "000002": [("train", 0, "0")],
    "000004": [("car", 1, "1"), ("car", 0, "1"), ("bicycle", 0, "0")],
    "000005": [("chair", 0, "0"), ("chair", 1, "1")],
}


def spreadsheet_text(path, lines):
    """What Excel's 'CSV UTF-8' and Notepad write: a byte-order mark, CRLF line ends."""
    path.write_bytes("\r\n".join(lines).encode("utf-8-sig") + b"\r\n")


def voc_folder(root, splits, scenes=SCENES, year="VOC2007"):
    """VOCdevkit/YEAR with JPEGs, VOC-format XML and the split files given ({name: ids})."""
    voc = root / "VOCdevkit" / year
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for k, (image_id, objects) in enumerate(scenes.items()):
        blob_image(k).save(voc / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(VOC_OBJECT.format(name=n, truncated=t, difficult=d, box=(2 + i, 3, 30, 38))
                      for i, (n, t, d) in enumerate(objects))
        (voc / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(id=image_id, objects=xml))
    for name, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def expected_labels(scenes, classes=VOC_CLASSES):
    """1: a non-difficult object; -1: only difficult ones; 0: none (VOC's devkit convention)."""
    out = np.zeros((len(scenes), len(classes)), dtype=np.int8)
    for row, objects in enumerate(scenes.values()):
        for name, _, difficult in objects:
            c = classes.index(name)
            hard = difficult.lower() in ("1", "true")
            out[row, c] = 1 if not hard or out[row, c] == 1 else -1
    return out


def one_line_error(call, *starts):
    with pytest.raises(DataError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.startswith(starts), message
    return message


# ------------------------------------------------------------------- VOC

def test_voc_as_shipped_with_difficult_written_as_words(tmp_path):
    scenes = dict(SCENES, **{"000004": [("car", 1, "true"), ("car", 0, "True"), ("bicycle", 0, "false")],
                             "000005": [("chair", 0, "0"), ("chair", 1, "1")]})
    voc = voc_folder(tmp_path, {"trainval": list(scenes)}, scenes)
    split = open_dataset(tmp_path, "trainval")
    assert split.format == "voc" and split.classes == VOC_CLASSES and split.ids == list(scenes)
    np.testing.assert_array_equal(split.labels, expected_labels(scenes))  # cars of 000004: only difficult
    assert split.labels[2, VOC_CLASSES.index("car")] == -1
    xml = voc / "Annotations" / "000002.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>yes</difficult>"))
    message = one_line_error(lambda: open_dataset(tmp_path, "trainval"), "split 'trainval' of ")
    assert f"{xml}: <difficult>yes</difficult> of a train (must be 0, 1, false or true)" in message


def test_voc_text_files_with_a_byte_order_mark_and_crlf(tmp_path):
    voc = voc_folder(tmp_path, {"test": []})
    spreadsheet_text(voc / "ImageSets" / "Main" / "test.txt", list(SCENES))
    spreadsheet_text(voc / "classes.txt", VOC_CLASSES)
    split = open_dataset(tmp_path, "test")
    assert split.ids == list(SCENES) and split.classes == VOC_CLASSES and split.classes[0] == "aeroplane"
    np.testing.assert_array_equal(split.labels, expected_labels(SCENES))


def test_voc2012_layout_falls_back_from_test_to_val_and_says_so(tmp_path):
    ids = list(SCENES)
    voc = voc_folder(tmp_path, {"train": ids[:2], "val": ids[2:], "trainval": ids}, year="VOC2012")
    split = open_dataset(voc, "test")  # VOC2012 has no test split
    assert split.ids == ids[2:] and split.source == voc / "ImageSets" / "Main" / "val.txt"
    assert split.notes == (f"no 'test' split: using 'val' ({voc / 'ImageSets' / 'Main' / 'val.txt'})",)
    assert open_dataset(voc, "trainval").notes == ()
    # the devkit folder holds only VOC2012: name it (before: "expected VOC2007/...")
    for root in (tmp_path, tmp_path / "VOCdevkit"):
        message = one_line_error(lambda: open_dataset(root, "test"), f"no VOC2007 folder in {root}, but {voc}")
        assert f"--data-root {voc}" in message


def test_voc_folder_without_imagesets_is_named_by_detection(tmp_path):
    voc = voc_folder(tmp_path, {"test": list(SCENES)})
    (voc / "ImageSets" / "Main" / "test.txt").unlink()
    (voc / "ImageSets" / "Main").rmdir()
    for call in (lambda: detect_format(voc), lambda: open_dataset(voc, "test")):  # before: "no dataset in"
        one_line_error(call, f"{voc} is missing the folder(s) ImageSets/Main of the VOC layout")


# ------------------------------------------------------------------- CSV

def csv_folder(root, rows, classes=("dog", "cat")):
    (root / "images").mkdir(parents=True)
    for k in range(3):
        blob_image(k).save(root / "images" / f"{k}.jpg")
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (root / "train.csv").write_text("".join(f"{row}\n" for row in ["image,labels", *rows]))
    return root


def test_csv_from_a_spreadsheet_with_bom_and_crlf(tmp_path):
    rows = ["images/0.jpg,dog", "images/1.jpg,cat;dog", "images/2.jpg,"]
    root = csv_folder(tmp_path / "data", rows)
    spreadsheet_text(root / "classes.txt", ["dog", "cat"])
    spreadsheet_text(root / "train.csv", ["image,labels", *rows])
    split = open_dataset(root, "train")  # before: unknown class 'dog' (classes: \ufeffdog, cat)
    assert split.classes == ("dog", "cat") and split.labels.tolist() == [[1, 0], [1, 1], [0, 0]]


def test_a_semicolon_in_a_class_name_is_named(tmp_path):
    root = csv_folder(tmp_path / "data", ["images/0.jpg,dog"], classes=("dog", "hot;dog"))
    one_line_error(lambda: open_dataset(root, "train"),
                   f"{root / 'classes.txt'}:2: class name 'hot;dog' holds ';', which separates labels")


def test_csv_image_paths_must_stay_inside_the_data_root(tmp_path):
    outside = tmp_path / "outside.jpg"
    blob_image(9).save(outside)
    (tmp_path / "elsewhere").mkdir()
    blob_image(8).save(tmp_path / "elsewhere" / "x.jpg")
    root = csv_folder(tmp_path / "a" / "data", [
        "images/0.jpg,dog", "../../outside.jpg,dog", f"{outside},cat", "linked/x.jpg,cat", "images/../images/1.jpg,cat"])
    os.symlink(tmp_path / "elsewhere", root / "linked")
    message = one_line_error(lambda: open_dataset(root, "train"), f"{root / 'train.csv'}: 3 problem(s): ")
    for line, path in ((3, "../../outside.jpg"), (4, str(outside)), (5, "linked/x.jpg")):
        assert f"line {line}: {path} is outside the data root {root}" in message
    assert "line 6" not in message and "line 2" not in message


# ------------------------------------------------------------------- COCO

def coco_instances():
    """An instances_*.json as COCO 2017 writes it: info, licenses, gapped category ids (1, 3, 18),
    a polygon and a crowd (RLE) annotation, and one image without annotations."""
    image = lambda i, name: {"license": 4, "file_name": name, "coco_url": f"http://images.cocodataset.org/val2017/{name}",  # noqa: E731
                             "height": 40, "width": 48, "date_captured": "2013-11-14 17:02:52",
                             "flickr_url": "http://farm7.staticflickr.com/6116/6255196340_da26cf2c9e_z.jpg", "id": i}
    return {
        "info": {"description": "COCO 2017 Dataset", "url": "http://cocodataset.org", "version": "1.0", "year": 2017,
                 "contributor": "COCO Consortium", "date_created": "2017/09/01"},
        "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4, "name": "Attribution License"}],
        "images": [image(397133, "000000397133.jpg"), image(37777, "000000037777.jpg"),
                   image(252219, "000000252219.jpg"), image(87038, "000000087038.jpg")],
        "annotations": [
            {"segmentation": [[10.5, 12.0, 30.1, 12.0, 30.1, 35.2]], "area": 233.8, "iscrowd": 0, "image_id": 397133,
             "bbox": [10.5, 12.0, 19.6, 23.2], "category_id": 18, "id": 1768},
            {"segmentation": [[1.0, 2.0, 8.0, 2.0, 8.0, 9.0]], "area": 24.5, "iscrowd": 0, "image_id": 397133,
             "bbox": [1.0, 2.0, 7.0, 7.0], "category_id": 1, "id": 1769},
            {"segmentation": {"counts": [272, 2, 4, 4, 4, 4, 2, 9], "size": [40, 48]}, "area": 96, "iscrowd": 1,
             "image_id": 87038, "bbox": [4.0, 5.0, 12.0, 8.0], "category_id": 1, "id": 900100087038},
            {"segmentation": [[20.0, 20.0, 40.0, 20.0, 40.0, 30.0]], "area": 100.0, "iscrowd": 0, "image_id": 37777,
             "bbox": [20.0, 20.0, 20.0, 10.0], "category_id": 3, "id": 2001}],
        "categories": [{"supercategory": "person", "id": 1, "name": "person"},
                       {"supercategory": "vehicle", "id": 3, "name": "car"},
                       {"supercategory": "animal", "id": 18, "name": "dog"}],
    }


def coco_folder(root, train=None, val=None):
    for folder, data in (("train2017", train or coco_instances()), ("val2017", val or coco_instances())):
        (root / folder).mkdir(parents=True)
        for k, image in enumerate(data["images"] if isinstance(data.get("images"), list) else []):
            if isinstance(image, dict) and isinstance(image.get("file_name"), str):
                blob_image(k).save(root / folder / image["file_name"])
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(data))
    return root


def test_coco_with_gapped_ids_and_crowd_counts_what_it_leaves_out(tmp_path):
    root = coco_folder(tmp_path)
    split = open_dataset(root, "test")
    assert split.classes == ("person", "car", "dog")  # ids 1, 3, 18: three outputs, no gaps
    # images by id (37777, 87038, 397133), the crowd person present, 252219 (no annotation) left out
    assert [p.name for p in split.image_paths] == ["000000037777.jpg", "000000087038.jpg", "000000397133.jpg"]
    assert split.labels.tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 1]]
    assert split.annotations[2].boxes_of(2) == [(11, 13, 30, 35)]  # [x, y, w, h] -> VOC's 1-based corners
    val = root / "annotations" / "instances_val2017.json"
    assert split.notes == (f"no 'test' split: using 'val' ({val})",
                           f"{val}: 1 of 4 images have no annotation and are left out (as the CSRA authors' "
                           "prepare_coco.py does)")


@pytest.mark.parametrize("change,named", [
    (lambda d: d["categories"].append({"supercategory": "vehicle", "id": 4, "name": "car"}),
     "category entries 1 and 3 both have the name 'car'"),
    (lambda d: d["categories"].append({"supercategory": "animal", "id": 1, "name": "cat"}),
     "category entries 0 and 3 both have id 1"),
], ids=["duplicate name", "duplicate id"])
def test_coco_repeated_categories_are_refused(tmp_path, change, named):
    data = coco_instances()
    change(data)
    root = coco_folder(tmp_path, val=data)
    message = one_line_error(lambda: open_dataset(root, "val"), str(root / "annotations" / "instances_val2017.json"))
    assert named in message


MALFORMED = [
    (lambda d: d.update(annotations=None), "'annotations' is null, not a list"),
    (lambda d: d["annotations"][1].update(image_id=[397133]),
     "annotation entry 1 (id 1769): image_id must be a whole number, got [397133]"),
    (lambda d: d["annotations"][0].update(category_id=[18]),
     "annotation entry 0 (id 1768): category_id must be a whole number, got [18]"),
    (lambda d: d["annotations"][3].update(bbox=["20", "20", "20", "10"]),
     'annotation entry 3 (id 2001): bbox must be [x, y, width, height] (four numbers), got ["20", "20"'),
    (lambda d: d["annotations"][2].update(bbox=None),
     "annotation entry 2 (id 900100087038): bbox must be [x, y, width, height] (four numbers), got null"),
    (lambda d: d["images"][0].update(width="abc"), 'image entry 0: width must be a number >= 0, got "abc"'),
    (lambda d: d["images"][1].update(file_name=None), "image entry 1: file_name must be a file name, got null"),
]


@pytest.mark.parametrize("change,named", MALFORMED, ids=[
    "annotations null", "image_id list", "category_id list", "bbox strings", "bbox null", "width abc",
    "file_name null"])
def test_malformed_coco_is_one_line_naming_the_entry(tmp_path, capsys, change, named):
    data = copy.deepcopy(coco_instances())
    change(data)
    root = coco_folder(tmp_path, train=data)
    path = root / "annotations" / "instances_train2017.json"
    assert named in one_line_error(lambda: open_dataset(root, "train"), f"{path}: ")
    # the training CLI: exit 2, one line, no traceback (before: TypeError/ValueError tracebacks)
    assert train.main(["--data-root", str(root), "--out", str(tmp_path / "run"), "--pretrained", "none",
                       "--backbone", "resnet18", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}: ") and named in err


def test_train_and_evaluate_print_what_the_data_left_out(tmp_path, capsys):
    root = coco_folder(tmp_path / "coco")
    out = tmp_path / "run"
    assert train.main(["--data-root", str(root), "--out", str(out), "--pretrained", "none", "--backbone",
                       "resnet18", "--img-size", "32", "--epochs", "1", "--batch-size", "3", "--workers", "0",
                       "--no-progress"]) == 0
    err = capsys.readouterr().err
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        assert f"note: {path}: 1 of 4 images have no annotation and are left out" in err
    assert "note: no 'trainval' split: using 'train'" in err and "note: no 'test' split: using 'val'" in err
    assert evaluate.main(["--weights", str(out / "best.pth"), "--data-root", str(root), "--workers", "0",
                          "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    err = capsys.readouterr().err
    assert f"note: {root / 'annotations' / 'instances_val2017.json'}: 1 of 4 images have no annotation" in err
