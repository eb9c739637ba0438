"""A small synthetic multi-label dataset in the VOC layout, drawn procedurally.

    python -m training.make_synthetic --out data/synth [--seed 0] [--num-train 1600]
                                      [--num-test 400] [--size 160] [--format voc|csv]

Each image is a noisy, textured background with 1-4 objects at random places
and sizes; the 6 classes differ in shape and colour (colour jittered, shapes
rotated). About 1 object in 12 is tiny and marked difficult, as VOC marks hard
objects, so the "ignored" label path is exercised. Output: JPEGImages/*.jpg,
Annotations/*.xml (VOC XML with boxes), ImageSets/Main/{trainval,test}.txt and
classes.txt, directly in --out (use it as --data-root). With --format csv:
images/*.jpg, train.csv and test.csv (image,labels,ignore; difficult-only
classes go to ignore) and classes.txt, the layout for your own data. The same
seed gives the same images in both layouts.
"""
import argparse
import csv
import math
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou
from tqdm import tqdm

# name -> (shape, RGB colour)
SHAPES = {
    "red_circle": ("circle", (220, 40, 40)),
    "blue_square": ("square", (40, 80, 225)),
    "green_triangle": ("triangle", (40, 190, 60)),
    "yellow_star": ("star", (235, 215, 40)),
    "magenta_cross": ("cross", (205, 50, 200)),
    "cyan_diamond": ("diamond", (40, 210, 215)),
}
CLASSES = tuple(SHAPES)
FORMATS = ("voc", "csv")
MAX_OBJECTS = 4
DIFFICULT_RATE = 1 / 12


def _polygon(shape, cx, cy, r, angle):
    """Vertices of a shape of 'radius' r centred at (cx, cy), rotated by angle (radians)."""
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.pi / 4 + np.arange(4) * np.pi / 2]
    elif shape == "diamond":  # a rhombus, longer than wide
        pts = [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in -np.pi / 2 + np.arange(3) * 2 * np.pi / 3]
    elif shape == "star":
        pts = [((1.0 if k % 2 == 0 else 0.45) * math.cos(a), (1.0 if k % 2 == 0 else 0.45) * math.sin(a))
               for k, a in enumerate(-np.pi / 2 + np.arange(10) * np.pi / 5)]
    elif shape == "cross":
        w = 0.33
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
               (-1, w), (-1, -w), (-w, -w)]
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _background(rng, width, height):
    """Grey-ish gradient + blotches + pixel noise, as a uint8 array."""
    base = rng.uniform(60, 190)
    tint = rng.uniform(-15, 15, size=3)
    gx, gy = rng.uniform(-40, 40, size=2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = base + tint + (gx * xx / width + gy * yy / height)[..., None]
    coarse = rng.normal(0, 18, size=(max(height // 16, 2), max(width // 16, 2), 1)).astype(np.float32)
    img = img + np.asarray(Image.fromarray(coarse[..., 0]).resize((width, height), Image.BILINEAR))[..., None]
    img = img + rng.normal(0, 10, size=(height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_scene(rng, size):
    """One image (PIL) and its objects [(class name, difficult, (xmin, ymin, xmax, ymax))]."""
    width = size if rng.random() < 0.5 else int(size * rng.uniform(0.75, 1.0))
    height = size if width != size else int(size * rng.uniform(0.75, 1.0))
    image = Image.fromarray(_background(rng, width, height))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):  # distractor strokes in grey
        g = int(rng.integers(40, 220))
        draw.line([tuple(rng.uniform(0, [width, height])) for _ in range(2)], fill=(g, g, g),
                  width=int(rng.integers(1, 3)))
    objects, placed = [], []
    short = min(width, height)
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        shape, colour = SHAPES[name]
        difficult = rng.random() < DIFFICULT_RATE
        r = short * (rng.uniform(0.04, 0.06) if difficult else rng.uniform(0.09, 0.21))
        for _attempt in range(30):
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            angle = rng.uniform(0, 2 * np.pi) if shape != "circle" else 0.0
            if shape == "circle":
                pts = [(cx - r, cy - r), (cx + r, cy + r)]
            else:
                pts = _polygon(shape, cx, cy, r, angle)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = (max(int(math.floor(min(xs))) + 1, 1), max(int(math.floor(min(ys))) + 1, 1),
                   min(int(math.ceil(max(xs))), width), min(int(math.ceil(max(ys))), height))
            if not placed or box_iou(torch.tensor([box], dtype=torch.float64),
                                     torch.tensor(placed, dtype=torch.float64)).max() < 0.15:
                break
        else:
            continue
        fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
        if shape == "circle":
            draw.ellipse(pts, fill=fill)
        else:
            draw.polygon(pts, fill=fill)
        placed.append(box)
        objects.append((name, bool(difficult), box))
    return image, objects


def annotation_xml(image_id, width, height, objects):
    lines = ["<annotation>", "  <folder>VOC2007</folder>", f"  <filename>{image_id}.jpg</filename>",
             "  <source><database>csra-explorer synthetic shapes</database></source>",
             f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
             "  <segmented>0</segmented>"]
    for name, difficult, (xmin, ymin, xmax, ymax) in objects:
        lines += ["  <object>", f"    <name>{escape(name)}</name>", "    <pose>Unspecified</pose>",
                  "    <truncated>0</truncated>", f"    <difficult>{int(difficult)}</difficult>",
                  f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
                  f"<ymax>{ymax}</ymax></bndbox>", "  </object>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def csv_row(image, objects):
    """(image, labels, ignore) of one CSV row: classes with a non-difficult object are labels, classes
    with only difficult ones are ignored (VOC's rule)."""
    present = {name for name, difficult, _ in objects if not difficult}
    ignored = {name for name, difficult, _ in objects if difficult} - present
    return image, ";".join(c for c in CLASSES if c in present), ";".join(c for c in CLASSES if c in ignored)


def make_synthetic(out, seed=0, num_train=1600, num_test=400, size=160, progress=True, format="voc"):
    """Write the dataset into out (created) in the VOC or the CSV layout; returns out as a Path.

    The same seed draws the same images in both layouts.
    """
    if num_train < 1 or num_test < 1:
        raise ValueError("--num-train and --num-test must be at least 1")
    if size < 32:
        raise ValueError("--size must be at least 32 pixels")
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    out = Path(out)
    image_dir = out / ("JPEGImages" if format == "voc" else "images")
    for sub in ((image_dir, out / "Annotations", out / "ImageSets" / "Main") if format == "voc" else (image_dir,)):
        sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(1, num_train + num_test + 1)]
    rows = []
    for image_id in tqdm(ids, desc="drawing", unit="img", disable=not progress):
        image, objects = draw_scene(rng, size)
        image.save(image_dir / f"{image_id}.jpg", quality=90)
        if format == "voc":
            xml = annotation_xml(image_id, image.width, image.height, objects)
            (out / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
        else:
            rows.append(csv_row(f"images/{image_id}.jpg", objects))
    if format == "voc":
        (out / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids[:num_train]) + "\n")
        (out / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids[num_train:]) + "\n")
    else:
        for name, part in (("train", rows[:num_train]), ("test", rows[num_train:])):
            with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([("image", "labels", "ignore"), *part])
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.make_synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write (the --data-root of train/evaluate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=1600, help="images in the trainval split")
    p.add_argument("--num-test", type=int, default=400, help="images in the test split")
    p.add_argument("--size", type=int, default=160, help="longer image side in pixels")
    p.add_argument("--format", default="voc", choices=FORMATS,
                   help="voc: the VOC2007 layout; csv: images/ + train.csv, test.csv, classes.txt")
    args = p.parse_args(argv)
    try:
        out = make_synthetic(args.out, args.seed, args.num_train, args.num_test, args.size, format=args.format)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.num_train} {'trainval' if args.format == 'voc' else 'train'} + {args.num_test} test "
          f"images of {len(CLASSES)} classes ({args.format} layout) to {out}; "
          f"train with: python -m training.train --data-root {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
