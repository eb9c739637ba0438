"""The one batch-inference loop: images in batches -> class score maps (and logits at any lambda).

    files, _ = find_images(["photos/"])
    loader = DataLoader(ImageFiles(files, model.preprocessing), batch_size=8, collate_fn=collate)
    for batch in score_map_batches(model, loader, device):
        indices, failed = batch.extra
        scores = torch.sigmoid(batch.logits())

Used by csra.predict, training.evaluate (through training.engine.predict, also the per-epoch
validation) and training.evaluate_imagenet. The loop runs the backbone once per batch; logits
for any lambda are read off the score maps it keeps.
"""
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .errors import one_line
from .preprocess import load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def find_images(paths, extensions=IMAGE_EXTENSIONS):
    """(image files, paths that do not exist). Folders are searched recursively by extension
    (`extensions`; csra.predict adds the video ones), skipping hidden files and folders; a file
    named on the command line is always tried."""
    files, missing, seen = [], [], set()
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(f for f in path.rglob("*")
                           if f.suffix.lower() in extensions and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
        elif path.exists():
            found = [path]
        else:
            missing.append(path)
            continue
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, missing


class ImageFiles(Dataset):
    """Item i: (preprocessed image tensor, i, None), or (None, i, error message) if unreadable."""

    def __init__(self, files, preprocessing):
        self.files = list(files)
        self.preprocessing = preprocessing

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            return self.preprocessing(load_image(str(self.files[i]))), i, None
        except Exception as err:  # a bad file must never stop the run; ImageError names the file
            message = one_line(err)
            if str(self.files[i]) not in message:
                message = f"{self.files[i]}: {message}"
            return None, i, message


def collate(items):
    """ImageFiles items -> (stacked tensors of the readable images or None,
    (their indices, [(index, message)] of the unreadable ones))."""
    good = [(x, i) for x, i, err in items if err is None]
    failed = [(i, err) for _, i, err in items if err is not None]
    batch = torch.stack([x for x, _ in good]) if good else None
    return batch, ([i for _, i in good], failed)


@dataclass
class Batch:
    """One batch's class score maps, (B, heads, C, h, w) float32 (None when no image of the batch
    could be read), and the loader's other fields."""
    maps: torch.Tensor
    extra: tuple
    head: torch.nn.Module

    def logits(self, lam=None):
        """(B, C) logits at lambda `lam` (default: the model's), from the kept maps."""
        with torch.inference_mode():
            return self.head.logits_from_maps(self.maps, lam=lam)

    def class_maps(self):
        """(B, C, h, w): each class's score maps summed over the heads (the heatmaps)."""
        return self.maps.sum(dim=1)


def score_map_batches(model, batches, device, autocast=None, channels_last=False):
    """For each (images, *extra) from `batches` (a DataLoader, maybe in a progress bar): a Batch
    with the score maps of the images (maps None where images is None: none could be read)."""
    model.eval()
    device = torch.device(device)
    autocast = autocast or contextlib.nullcontext
    for images, *extra in batches:
        if images is None:
            yield Batch(None, tuple(extra), model.head)
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast():
            maps = model.head.score_maps(model.forward_features(images))
        yield Batch(maps.float(), tuple(extra), model.head)


def safe_stem(text, limit=60):
    """A file-name stem made of letters, digits, '.', '-' and '_' (at most `limit` characters)."""
    return re.sub(r"[^\w.-]+", "_", str(text)).strip("_")[:limit] or "image"
