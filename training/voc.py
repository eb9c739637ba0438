"""PASCAL VOC 2007 layout: splits, XML annotations (labels and boxes), a torch Dataset.

The layout is VOC2007/{JPEGImages,Annotations,ImageSets/Main}. --data-root may
name the VOC2007 folder itself, the VOCdevkit folder holding it, or the folder
holding VOCdevkit; another year's folder (VOC2012) is read when --data-root names
it. An optional classes.txt in the VOC2007 folder (one name a line) gives the
classes, in order; without it they are VOC's 20. A split without its file falls
back to its alias (test -> val, trainval -> train; SPLIT_ALIASES), and the
split's notes say so.

Labels per image and class: 1 present, 0 absent, -1 present only as
"difficult" objects (ignored by the metrics; negative in training). Every
file of a split is checked before training starts; problems raise DataError
with one message naming the files (and how many), never a traceback.
"""
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from csra import ImageError, VOC_CLASSES, load_image

SUBDIRS = ("JPEGImages", "Annotations", "ImageSets/Main")
CLASSES_FILE = "classes.txt"
JPEG_MAGIC = b"\xff\xd8\xff"
SHOWN = 5  # problems listed by name in one message
# A split that has no file of its own is read from its alias, so the training script's defaults
# (trainval, test) fit VOC2012 (train, val, trainval) and the other formats' train/val files.
SPLIT_ALIASES = {"trainval": ("trainval", "train"), "train": ("train", "trainval"),
                 "test": ("test", "val"), "val": ("val", "test")}
FLAGS = {"0": False, "1": True, "false": False, "true": True}  # VOC's <difficult>, as written by tools


class DataError(ValueError):
    """The dataset is missing or broken; the message names the files."""


class VOCLayoutError(DataError):
    """A VOC layout is there but cannot be read as it is (folders missing, or another year's folder)."""


def split_names(split):
    return SPLIT_ALIASES.get(split, (split,))


def fallback_notes(split, used, source):
    """The line that says a split was read from its alias (empty when it was not)."""
    return (f"no '{split}' split: using '{used}' ({source})",) if used != split else ()


@dataclass
class VOCObject:
    class_index: int
    difficult: bool
    box: tuple  # (xmin, ymin, xmax, ymax), VOC's 1-based inclusive pixel coordinates


@dataclass
class Annotation:
    width: int
    height: int
    objects: list = field(default_factory=list)

    def boxes_of(self, class_index):
        return [o.box for o in self.objects if o.class_index == class_index]


def find_voc_root(data_root):
    """The VOC2007-style folder inside data_root (itself, VOCdevkit/VOC2007 or VOC2007)."""
    root = Path(data_root).expanduser()
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder")
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if all((candidate / d).is_dir() for d in SUBDIRS):
            return candidate
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if candidate.is_dir() and any((candidate / d).exists() for d in SUBDIRS):
            missing = [d for d in SUBDIRS if not (candidate / d).is_dir()]
            raise VOCLayoutError(f"{candidate} is missing the folder(s) {', '.join(missing)} of the VOC layout")
    others = sorted(p for p in [*root.glob("VOC20*"), *root.glob("VOCdevkit/VOC20*")]
                    if all((p / d).is_dir() for d in SUBDIRS))
    if others:
        raise VOCLayoutError(f"no VOC2007 folder in {root}, but {', '.join(map(str, others))}: to use it, give it "
                             f"as the data root (--data-root {others[0]})")
    raise DataError(
        f"no VOC dataset in {root}: expected {root}/VOCdevkit/VOC2007/ (or VOC2007/ or the VOC2007 "
        f"folder itself) with {', '.join(SUBDIRS)}; get VOC07 with `python -m training.download_voc "
        f"--out {root}` or make a synthetic set with `python -m training.make_synthetic --out {root}`")


def read_lines(path):
    """The non-blank lines of a text file, stripped; a UTF-8 byte-order mark (as spreadsheets and
    Windows editors write) is not part of the first line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    return [(k, line.strip()) for k, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_class_names(path):
    """The class names of a classes.txt, one a line: none twice, none holding ';' (it separates labels)."""
    lines = read_lines(path)
    if not lines:
        raise DataError(f"{path}: lists no class names")
    seen = {}
    for lineno, name in lines:
        if ";" in name:
            raise DataError(f"{path}:{lineno}: class name {name!r} holds ';', which separates labels (in CSV "
                            "files and predictions) and cannot be part of a name")
        if name in seen:
            raise DataError(f"{path}:{lineno}: class {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = lineno
    return tuple(seen)


def read_classes(voc_root):
    """Class names from classes.txt, else VOC's 20 classes."""
    path = Path(voc_root) / CLASSES_FILE
    return read_class_names(path) if path.is_file() else tuple(VOC_CLASSES)


def read_split(voc_root, split):
    """(image ids, the split name read): the split's file, else its alias's (SPLIT_ALIASES)."""
    folder = Path(voc_root) / "ImageSets" / "Main"
    used = next((name for name in split_names(split) if (folder / f"{name}.txt").is_file()), None)
    if used is None:
        have = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem)
        raise DataError(f"{folder / split}.txt: no such split file (tried {', '.join(split_names(split))}; "
                        f"splits here: {', '.join(have) or 'none'})")
    path = folder / f"{used}.txt"
    ids = [line.split()[0] for _, line in read_lines(path)]
    if not ids:
        raise DataError(f"{path}: the split lists no images")
    return ids, used


def parse_annotation(path, class_index):
    """An Annotation from one VOC XML file; raises DataError naming the file."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"{path}: no such annotation file") from None
    except (ET.ParseError, OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable XML ({err})") from None
    try:
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        objects = []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in class_index:
                raise DataError(f"{path}: unknown class {name!r} (classes: {', '.join(class_index)})")
            bb = obj.find("bndbox")
            box = tuple(int(round(float(bb.findtext(k)))) for k in ("xmin", "ymin", "xmax", "ymax"))
            flag = (obj.findtext("difficult") or "0").strip()
            if flag.lower() not in FLAGS:
                raise DataError(f"{path}: <difficult>{flag}</difficult> of a {name} (must be 0, 1, false or true)")
            difficult = FLAGS[flag.lower()]
            objects.append(VOCObject(class_index[name], difficult, box))
    except DataError:
        raise
    except (AttributeError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a VOC annotation (missing or bad size/object/bndbox: {err})") from None
    return Annotation(width, height, objects)


def labels_from_objects(objects, num_classes):
    """1 if a non-difficult object of the class is there, -1 if only difficult ones, else 0."""
    labels = np.zeros(num_classes, dtype=np.int8)
    for o in objects:
        if o.difficult:
            if labels[o.class_index] == 0:
                labels[o.class_index] = -1
        else:
            labels[o.class_index] = 1
    return labels


def summarize_problems(problems, what="problem(s)"):
    """"N WHAT: the first SHOWN problems; and K more", for a one-line DataError."""
    shown = "; ".join(problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return f"{len(problems)} {what}: {shown}{more}"


@dataclass
class VOCSplit:
    """One split's image ids, files, labels (N, C) and annotations, all checked."""
    voc_root: Path
    split: str
    classes: tuple
    ids: list
    image_paths: list
    annotations: list
    labels: np.ndarray
    notes: tuple = ()  # lines to show the user (a split read from its alias)
    format = "voc"
    crops = None  # every image whole (see training.datasets for formats with crops)

    @property
    def root(self):
        return self.voc_root

    @property
    def source(self):
        return self.voc_root / "ImageSets" / "Main" / f"{self.split}.txt"

    def __len__(self):
        return len(self.ids)


def load_split(data_root, split, limit=None):
    """Read and check a split: every image exists and looks like a JPEG, every XML parses.

    limit keeps the first `limit` images (quick runs). Raises DataError with a
    summary of all problems found.
    """
    voc_root = find_voc_root(data_root)
    classes = read_classes(voc_root)
    class_index = {name: i for i, name in enumerate(classes)}
    ids, used = read_split(voc_root, split)
    if limit:
        ids = ids[:limit]
    problems, annotations, image_paths = [], [], []
    for image_id in ids:
        image = voc_root / "JPEGImages" / f"{image_id}.jpg"
        image_paths.append(image)
        try:
            with open(image, "rb") as f:
                head = f.read(3)
            if head != JPEG_MAGIC:
                problems.append(f"{image} is not a JPEG" if head else f"{image} is empty")
        except FileNotFoundError:
            problems.append(f"missing image {image}")
        except OSError as err:
            problems.append(f"cannot read {image} ({err.strerror})")
        try:
            annotations.append(parse_annotation(voc_root / "Annotations" / f"{image_id}.xml", class_index))
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise DataError(f"split '{used}' of {voc_root}: " + summarize_problems(problems)
                        + "; nothing was trained")
    labels = np.stack([labels_from_objects(a.objects, len(classes)) for a in annotations])
    found = VOCSplit(voc_root, used, classes, ids, image_paths, annotations, labels)
    found.notes = fallback_notes(split, used, found.source)
    return found


class VOCDataset(Dataset):
    """Items (image tensor, labels in {1, 0, -1} as float tensor, index) of a checked split of any
    format (training.datasets.open_dataset; crops, where a split has them, cut the image first).

    transform turns an RGB PIL image into the model's input tensor. With a
    seed, the random augmentation of an item is a function of (seed, epoch,
    index) only: the same whatever the number of loader workers or processes,
    so a resumed run sees exactly the images an uninterrupted one would.
    """

    def __init__(self, split, transform, seed=None):
        self.split = split
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        path = self.split.image_paths[index]
        try:
            image = load_image(str(path))
        except ImageError as err:
            raise DataError(f"unreadable image in split '{self.split.split}': {err}") from None
        crop = self.split.crops[index] if self.split.crops is not None else None
        if crop is not None:
            x, y, w, h = crop
            image = image.crop((x, y, x + w, y + h))
        if self.seed is not None:
            torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
        return self.transform(image), torch.from_numpy(self.split.labels[index].astype(np.float32)), index
