"""Every dataset format behind one function: open_dataset(root, split, format=None).

Formats (labels per image and class: 1 present, 0 absent, -1 ignored by the metrics):
  csv   your own data: ROOT/train.csv, ROOT/test.csv (optional ROOT/val.csv) with the columns
        image,labels[,ignore]; image is a path relative to ROOT that stays inside ROOT (symlinks
        resolved), labels and ignore list class names separated by ';'. ROOT/classes.txt (one
        name a line, no ';' in a name) fixes the class order, else the sorted names of
        train.csv. A row with no labels is an image with no class present. Text files may
        start with a UTF-8 byte-order mark and end lines with CRLF (as spreadsheets save them).
  coco  COCO 2014/2017: ROOT/annotations/instances_{train,val}{2014,2017}.json with the images in
        ROOT/{train,val}YEAR/ or ROOT/images/{train,val}YEAR/. Classes in the order of their
        category ids (COCO's 80; ids and names must be unique). As the CSRA authors'
        prepare_coco.py does, every annotation makes its class present, crowd ones (iscrowd=1)
        included, and images without any annotation are left out (the split's notes count them).
        Every entry is checked for its fields' types.
  json  the CSRA authors' prepared lists, ROOT/<split>*.json = [{"img_path": ..., "target": [...]}]
        (optionally "bbox": [x, y, w, h], a crop, as in their WIDER files). Targets are read as
        the authors write them: 1/0 (train files); 1/0/-1 with 0 = difficult and -1 = absent
        (their VOC test file); 1/0/99 with 99 = unspecified (their WIDER test file). Relative
        image paths are looked up under ROOT, then under the current folder. Classes: ROOT/
        classes.txt, else VOC's 20 or COCO's 80 names by count, else class_0, class_1, ...
  voc   the PASCAL VOC 2007 layout (training.voc).

Split names: "trainval" falls back to "train" and "test" to "val" (and back), so the training
script's defaults fit every format; the split's notes say when that happened. Everything is
checked up front; problems raise DataError with one line naming the file (and line or entry)
and how many problems there are.
"""
import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from csra.classes import default_class_names

from .voc import (SHOWN, Annotation, DataError, VOCDataset, VOCLayoutError, VOCObject, fallback_notes,
                  find_voc_root, load_split, read_class_names, split_names, summarize_problems)

FORMAT_NAMES = {"voc": "PASCAL VOC", "coco": "COCO", "csv": "CSV", "json": "the CSRA authors' JSON lists"}
FORMATS = tuple(FORMAT_NAMES)
CLASSES_FILE = "classes.txt"
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
COCO_YEARS = ("2017", "2014")

# the one Dataset class: items (image tensor, labels, index) of any split
ImageLabelDataset = VOCDataset


@dataclass
class DataSplit:
    """One checked split of any format: image files, labels (N, C) in {1, 0, -1}, class names."""
    root: Path
    split: str
    format: str
    source: Path  # the file the split was read from
    classes: tuple
    image_paths: list
    labels: np.ndarray
    annotations: list = None  # boxes per image (COCO, VOC), for the pointing game
    crops: list = None  # (x, y, w, h) or None per image: the part of the image to use
    notes: tuple = ()  # lines to show the user (a split read from its alias, images left out)

    def __len__(self):
        return len(self.image_paths)


def detect_format(root):
    """The format of the dataset in root (see the module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} {'is not a folder' if root.exists() else 'does not exist'}")
    if any((root / f"{name}.csv").is_file() for name in ("train", "trainval", "test", "val")):
        return "csv"
    if list((root / "annotations").glob("instances_*.json")):
        return "coco"
    voc_problem = None
    try:
        find_voc_root(root)
        return "voc"
    except VOCLayoutError as err:  # VOC-like, but not readable as it is: say why, unless JSON lists are here
        voc_problem = err
    except DataError:
        pass
    if list(root.glob("*.json")):
        return "json"
    if voc_problem:
        raise voc_problem
    raise DataError(f"no dataset in {root}: expected train.csv + test.csv (csv), annotations/instances_*.json "
                    "(coco), VOC2007/{JPEGImages,Annotations,ImageSets} (voc) or the CSRA authors' *.json lists "
                    "(json); make an example with `python -m training.make_synthetic --format csv --out DIR`")


def open_dataset(root, split, format=None, limit=None):
    """The checked split `split` of the dataset in root; format None: detected."""
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")
    format = format or detect_format(root)
    if format == "voc":
        return load_split(root, split, limit)
    readers = {"csv": read_csv_split, "coco": read_coco_split, "json": read_json_split}
    return readers[format](Path(root).expanduser(), split, limit)


def classes_without_positives(split):
    """Names of the classes no image of the split has (warn before training on it)."""
    return [c for c, n in zip(split.classes, (split.labels == 1).sum(0)) if n == 0]


def check_images(paths, where):
    """Raise DataError if some files are missing, empty or not images (count + the first few)."""
    problems = []
    for path in tqdm(paths, desc="checking images", unit="img", leave=False, disable=len(paths) < 5000):
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except FileNotFoundError:
            problems.append(f"missing {path}")
            continue
        except OSError as err:
            problems.append(f"cannot read {path} ({err.strerror})")
            continue
        if not head:
            problems.append(f"empty {path}")
        elif not head.startswith(IMAGE_MAGIC):
            problems.append(f"not an image {path}")
    if problems:
        raise DataError(f"{where}: " + summarize_problems(problems, f"of {len(paths)} images missing or unreadable"))


def _find_split_file(root, split, candidates, what):
    """(the first existing file of candidates(name) over the split's aliases, that name)."""
    for name in split_names(split):
        found = [p for p in candidates(name) if p.is_file()]
        if len(found) > 1:
            raise DataError(f"{root}: several {what} files for split {split!r}: "
                            + ", ".join(p.name for p in found))
        if found:
            return found[0], name
    have = sorted({p.name for p in root.glob("*") if p.is_file()})
    raise DataError(f"{root}: no {what} file for split {split!r} (tried {', '.join(split_names(split))}; "
                    f"files here: {', '.join(have[:10]) or 'none'})")


def _finish(root, split, format, source, classes, paths, labels, limit, annotations=None, crops=None, notes=()):
    if not paths:
        raise DataError(f"{source}: the split {split!r} lists no images")
    if limit:
        paths, labels = paths[:limit], labels[:limit]
        annotations = annotations[:limit] if annotations is not None else None
        crops = crops[:limit] if crops is not None else None
    check_images(paths, f"{source}")
    labels = np.asarray(labels, dtype=np.int8).reshape(len(paths), len(classes))
    return DataSplit(root, split, format, source, tuple(classes), list(paths), labels, annotations, crops,
                     tuple(notes))


# ------------------------------------------------------------------- csv

def _names(cell):
    return [n.strip() for n in (cell or "").split(";") if n.strip()]


def _read_csv_rows(path):
    """[(line number, image, labels, ignore)] of a CSV split file; raises DataError on its layout."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(k, row) for k, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected the header image,labels[,ignore])")
    header = [c.strip().lower() for c in rows[0][1]]
    if header[:2] != ["image", "labels"] or header[2:] not in ([], ["ignore"]):
        raise DataError(f"{path}:{rows[0][0]}: the header must be image,labels[,ignore], got {','.join(rows[0][1])}")
    out, problems = [], []
    for lineno, row in rows[1:]:
        if len(row) > len(header):
            problems.append(f"line {lineno}: {len(row)} columns, the header has {len(header)} "
                            "(quote names that hold a comma)")
            continue
        row = row + [""] * (len(header) - len(row))
        image = row[0].strip()
        if not image:
            problems.append(f"line {lineno}: no image path")
            continue
        out.append((lineno, image, _names(row[1]), _names(row[2]) if len(header) > 2 else []))
    if problems:
        raise DataError(f"{path}: " + summarize_problems(problems))
    return out


def csv_classes(root):
    """classes.txt's names, else the sorted names used in train.csv (or trainval.csv)."""
    if (root / CLASSES_FILE).is_file():
        return read_class_names(root / CLASSES_FILE), root / CLASSES_FILE
    path, _ = _find_split_file(root, "train", lambda name: [root / f"{name}.csv"], "CSV")
    names = sorted({n for _, _, labels, ignore in _read_csv_rows(path) for n in labels + ignore})
    if not names:
        raise DataError(f"{path}: no class name in any row, and no {CLASSES_FILE} to list them")
    return tuple(names), path


def read_csv_split(root, split, limit=None):
    path, used = _find_split_file(root, split, lambda name: [root / f"{name}.csv"], "CSV")
    classes, class_source = csv_classes(root)
    inside = root.resolve()
    index = {name: i for i, name in enumerate(classes)}
    rows = _read_csv_rows(path)
    problems, unknown, seen, paths, labels = [], {}, {}, [], []
    for lineno, image, present, ignored in rows:
        for name in present + ignored:
            if name not in index:
                unknown.setdefault(name, lineno)
        both = sorted(set(present) & set(ignored))
        if both:
            problems.append(f"line {lineno}: {', '.join(both)} both in labels and ignore")
        if not (root / image).resolve().is_relative_to(inside):
            problems.append(f"line {lineno}: {image} is outside the data root {root} (image paths are relative "
                            "to it and stay inside it, symlinks resolved)")
            continue
        key = Path(image).as_posix()
        if key in seen:
            problems.append(f"line {lineno}: {image} repeats line {seen[key]}")
            continue
        seen[key] = lineno
        row = np.zeros(len(classes), dtype=np.int8)
        row[[index[n] for n in ignored if n in index]] = -1
        row[[index[n] for n in present if n in index]] = 1
        paths.append(root / image)
        labels.append(row)
    if unknown:
        listed = ", ".join(f"{n!r} (line {k})" for n, k in list(unknown.items())[:SHOWN])
        problems.insert(0, f"{len(unknown)} unknown class name(s) {listed}"
                           + (" ..." if len(unknown) > SHOWN else "")
                           + f"; the {len(classes)} known classes (from {class_source.name}): "
                           + ", ".join(classes[:30]) + (" ..." if len(classes) > 30 else ""))
    if problems:
        raise DataError(f"{path}: " + summarize_problems(problems))
    return _finish(root, split, "csv", path, classes, paths, labels, limit,
                   notes=fallback_notes(split, used, path))


# ------------------------------------------------------------------- coco

def coco_annotation_file(root, split):
    def candidates(name):
        if re.fullmatch(r"(train|val)\d{4}", name):
            return [root / "annotations" / f"instances_{name}.json"]
        files = [root / "annotations" / f"instances_{name}{year}.json" for year in COCO_YEARS]
        return [p for p in files if p.is_file()][:1]
    return _find_split_file(root / "annotations", split, candidates, "COCO instances")


def _load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# COCO entry fields: name -> (check, what it must be, required); an entry of a section is called ENTRY
COCO_ID = (_whole, "a whole number", True)
COCO_ENTRY = {"categories": "category", "images": "image", "annotations": "annotation"}
COCO_FIELDS = {
    "categories": {"id": COCO_ID, "name": (lambda v: isinstance(v, str) and v.strip(), "a name", True)},
    "images": {"id": COCO_ID, "file_name": (lambda v: isinstance(v, str) and v, "a file name", True),
               "width": (lambda v: _number(v) and v >= 0, "a number >= 0", False),
               "height": (lambda v: _number(v) and v >= 0, "a number >= 0", False)},
    "annotations": {"image_id": COCO_ID, "category_id": COCO_ID,
                    "bbox": (lambda v: isinstance(v, list) and len(v) == 4 and all(map(_number, v)),
                             "[x, y, width, height] (four numbers)", False)},
}


def _coco_entry_problems(section, entries):
    """'ENTRY entry K: FIELD must be WHAT, got JSON' for every entry whose fields do not fit COCO_FIELDS."""
    problems = []
    for k, entry in enumerate(entries):
        where = f"{COCO_ENTRY[section]} entry {k}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: {json.dumps(entry)[:40]} is not an object")
            continue
        where += f" (id {json.dumps(entry['id'])[:20]})" if section == "annotations" and "id" in entry else ""
        for name, (ok, wanted, required) in COCO_FIELDS[section].items():
            if name not in entry:
                if required:
                    problems.append(f"{where}: no {name}")
            elif not ok(entry[name]):
                problems.append(f"{where}: {name} must be {wanted}, got {json.dumps(entry[name])[:40]}")
    return problems


def _repeats(section, entries, field, what):
    """'ENTRY entries J and K both have WHAT VALUE' for each repeated value of the field."""
    first, problems = {}, []
    for k, entry in enumerate(entries):
        value = entry[field]
        if value in first:
            problems.append(f"{COCO_ENTRY[section]} entries {first[value]} and {k} both have {what} {value!r}")
        first.setdefault(value, k)
    return problems


def read_coco_split(root, split, limit=None):
    path, used = coco_annotation_file(root, split)
    image_dir_name = path.stem.removeprefix("instances_")
    data = _load_json(path)
    if not isinstance(data, dict) or not set(COCO_FIELDS) <= set(data):
        raise DataError(f"{path}: not a COCO instances file (needs images, annotations and categories)")
    bad = [f"'{key}' is {json.dumps(data[key])[:20]}, not a list" for key in COCO_FIELDS
           if not isinstance(data[key], list)]
    problems = bad or [problem for key in COCO_FIELDS for problem in _coco_entry_problems(key, data[key])]
    if problems:
        raise DataError(f"{path}: " + summarize_problems(problems))
    problems = (_repeats("categories", data["categories"], "id", "id")
                + _repeats("categories", data["categories"], "name", "the name")
                + _repeats("images", data["images"], "id", "id"))
    categories = sorted(data["categories"], key=lambda c: c["id"])
    classes = tuple(c["name"] for c in categories)
    class_of = {c["id"]: k for k, c in enumerate(categories)}
    images = {im["id"]: im for im in data["images"]}
    objects = {}
    for k, ann in enumerate(data["annotations"]):
        image_id, category, bbox = ann["image_id"], ann["category_id"], ann.get("bbox")
        if category not in class_of:
            problems.append(f"annotation entry {k} (id {ann.get('id')}): category_id {category} is not in "
                            f"categories ({', '.join(map(str, list(class_of)[:10]))} ...)")
        elif image_id not in images:
            problems.append(f"annotation entry {k} (id {ann.get('id')}): image_id {image_id} is not in images")
        else:
            objects.setdefault(image_id, []).append((class_of[category], bbox))
    if problems:
        raise DataError(f"{path}: " + summarize_problems(problems))
    folder = next((d for d in (root / image_dir_name, root / "images" / image_dir_name) if d.is_dir()), None)
    if folder is None:
        raise DataError(f"{path}: no image folder {root / image_dir_name} (or {root / 'images' / image_dir_name})")
    paths, labels, annotations = [], [], []
    for image_id in sorted(objects):  # the authors' order; images without annotations are left out
        image = images[image_id]
        row = np.zeros(len(classes), dtype=np.int8)
        boxes = []
        for c, bbox in objects[image_id]:
            row[c] = 1
            if bbox is not None:
                x, y, w, h = bbox
                boxes.append(VOCObject(c, False, (int(x) + 1, int(y) + 1, int(round(x + w)), int(round(y + h)))))
        paths.append(folder / image["file_name"])
        labels.append(row)
        annotations.append(Annotation(int(image.get("width", 0)), int(image.get("height", 0)), boxes))
    notes = fallback_notes(split, used, path)
    if len(objects) < len(images):
        notes += (f"{path}: {len(images) - len(objects)} of {len(images)} images have no annotation and are left "
                  "out (as the CSRA authors' prepare_coco.py does)",)
    return _finish(root, split, "coco", path, classes, paths, labels, limit, annotations, notes=notes)


# ------------------------------------------------------------------- the authors' json lists

def json_split_file(root, split):
    return _find_split_file(root, split, lambda name: sorted(
        p for p in root.glob("*.json") if p.stem == name or p.stem.startswith(f"{name}_")), "JSON")


def authors_targets(targets, path):
    """The authors' target values -> ours {1, 0, -1}, by the convention the file's values show."""
    values = set(np.unique(targets).tolist())
    if 99 in values:  # WIDER test: 99 = unspecified, ignored
        table = {1: 1, 0: 0, 99: -1}
    elif -1 in values:  # VOC test: -1 absent, 0 difficult (ignored), 1 present
        table = {1: 1, 0: -1, -1: 0}
    else:
        table = {1: 1, 0: 0}
    bad = values - set(table)
    if bad:
        raise DataError(f"{path}: target values {sorted(bad)} beside {sorted(values & set(table))}; expected 1/0, "
                        "1/0/-1 (-1 absent, 0 difficult) or 1/0/99 (99 unspecified)")
    out = np.zeros(targets.shape, dtype=np.int8)
    for value, ours in table.items():
        out[targets == value] = ours
    return out


def read_json_split(root, split, limit=None):
    path, used = json_split_file(root, split)
    entries = _load_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a list of {{\"img_path\", \"target\"}} entries, got a "
                        f"{type(entries).__name__}")
    problems, seen, paths, targets, crops = [], {}, [], [], []
    width = None
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("img_path"), str) \
                or not isinstance(entry.get("target"), list):
            problems.append(f"entry {k}: needs img_path (text) and target (a list)")
            continue
        target, bbox = entry["target"], entry.get("bbox")
        width = len(target) if width is None else width
        if len(target) != width or not all(isinstance(v, (int, float)) for v in target):
            problems.append(f"entry {k}: target of {len(target)} numbers, entry 0 has {width}")
            continue
        key = (entry["img_path"], tuple(bbox) if isinstance(bbox, list) else None)
        if key in seen:
            problems.append(f"entry {k}: {entry['img_path']} repeats entry {seen[key]}")
            continue
        seen[key] = k
        written = Path(entry["img_path"])
        tried = [written] if written.is_absolute() else [root / written, Path.cwd() / written]
        paths.append(next((p for p in tried if p.is_file()), tried[0]))
        targets.append(target)
        crops.append(tuple(bbox) if isinstance(bbox, list) and len(bbox) == 4 else None)
    if problems:
        raise DataError(f"{path}: " + summarize_problems(problems))
    if not targets:
        raise DataError(f"{path}: the split {split!r} lists no images")
    labels = authors_targets(np.asarray(targets), path)
    if (root / CLASSES_FILE).is_file():
        classes = read_class_names(root / CLASSES_FILE)
        if len(classes) != labels.shape[1]:
            raise DataError(f"{root / CLASSES_FILE}: {len(classes)} names for targets of {labels.shape[1]} classes")
    else:
        classes = default_class_names(labels.shape[1])
    return _finish(root, split, "json", path, classes, paths, labels, limit,
                   crops=crops if any(c is not None for c in crops) else None, notes=fallback_notes(split, used, path))
