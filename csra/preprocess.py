"""The one image preprocessing used by training, evaluation, the app and the CLIs.

Images are decoded to RGB (EXIF orientation applied, transparency over
white, 16-bit scaled down), resized to a square of image_size, scaled to
[0, 1] and then normalised with the mean/std stored in the checkpoint (the
VOC recipe of the paper and mmpretrain uses mean 0 and std 1: plain [0, 1]).
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # about 7000 x 7000; larger images are refused before decoding


class ImageError(ValueError):
    """An input that cannot be turned into an RGB image; the message says why."""


def _named(source):
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "image"


def load_image(source, max_pixels=MAX_PIXELS, max_bytes=None):
    """Open a path or file object as an RGB PIL image, or raise ImageError.

    max_pixels: larger images are refused before decoding. max_bytes (None: no limit): images
    whose decoding and conversion to RGB would hold more than this many bytes at once
    (decode_bytes) are refused before decoding too."""
    name = _named(source)
    try:
        with Image.open(source) as image:
            w, h = image.size
            if w * h > max_pixels:
                raise ImageError(f"{name}: {w}x{h} pixels is more than the limit of {max_pixels:,}")
            if max_bytes is not None and (need := decode_bytes(image)) > max_bytes:
                raise ImageError(f"{name}: {w}x{h} pixels ({image.mode}) need about "
                                 f"{need / 2 ** 20:,.0f} MB to decode, more than the limit of "
                                 f"{max_bytes / 2 ** 20:,.0f} MB")
            image.load()
            return to_rgb(image, copy=False)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(not_an_image(source, f"{name}: not an image (unknown or unsupported format)")) from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: too many pixels (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(not_an_image(source, f"{name}: cannot decode image, truncated or corrupt ({err})")) from None


def not_an_image(source, message):
    """`message`, or that `source` is a video when its first bytes say so."""
    container = video_format(source) if isinstance(source, (str, os.PathLike)) else None
    if container:
        return f"{_named(source)}: a video ({container}), not a still image (csra.video.predict_video reads it)"
    return message


def video_format(path):
    """The video container a file's first bytes announce ('MP4', 'AVI', ...), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
            return None  # AVIF/HEIF stills share the MP4 box format
        return "QuickTime" if brand == b"qt  " else "MP4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "QuickTime"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "MPEG"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "ASF/WMV"
    if head[:3] == b"FLV":
        return "FLV"
    if head[:4] == b"OggS":
        return "Ogg"
    return None


# Bytes per pixel that to_rgb holds at its peak, by the decoded mode: the decoded image plus
# the copies its conversion makes (alpha: an RGBA copy, a white RGBA background, the RGB
# result; 16-bit and float: numpy float64 arrays).
_PEAK_BYTES_PER_PIXEL = {"1": 4, "L": 4, "P": 4, "RGB": 3, "YCbCr": 6, "CMYK": 7, "LAB": 6,
                         "HSV": 6, "RGBA": 11, "LA": 13, "PA": 13, "La": 13, "RGBa": 11,
                         "I": 33, "F": 33, "I;16": 29, "I;16B": 29, "I;16L": 29, "I;16N": 29}
_TRANSPARENT_PALETTE_BYTES_PER_PIXEL = 12
_ORIENTATION = 0x0112


def decode_bytes(image):
    """About how many bytes decoding an opened (not yet loaded) image and turning it into RGB
    (to_rgb) hold at once: the decoded pixels and the copies of the conversion, plus one copy
    of the decoded pixels when its EXIF orientation turns it."""
    w, h = image.size
    mode = image.mode
    per_pixel = _PEAK_BYTES_PER_PIXEL.get(mode, 33)
    if mode == "P" and _palette_alpha(image):
        per_pixel = _TRANSPARENT_PALETTE_BYTES_PER_PIXEL
    if _orientation(image) != 1:
        per_pixel += len(image.getbands()) * (4 if mode in ("I", "F") else 2 if mode.startswith("I;16") else 1)
    return w * h * per_pixel


def _orientation(image):
    try:
        return int(image.getexif().get(_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: Pillow's exif_transpose ignores it too
        return 1


def _palette_alpha(image):
    return "transparency" in image.info or getattr(image.palette, "mode", "RGB") in ("RGBA", "LA", "PA")


def to_rgb(image, copy=True):
    """Any PIL image or HxW[xC] numpy array -> 8-bit RGB PIL image, upright.

    copy=False lets an RGB image that needs no turning come back as the same object (no
    second full-size copy: load_image decodes a fresh image anyway)."""
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if _orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    elif copy:
        image = image.copy()
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _array_to_pil(np.asarray(image))
    if image.mode == "P":
        image = image.convert("RGBA" if _palette_alpha(image) else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)     # in place: over opaque white
        del rgba
    if image.size[0] < 1 or image.size[1] < 1:
        raise ImageError("image has no pixels")
    return image if image.mode == "RGB" and "transparency" not in image.info else image.convert("RGB")


def _array_to_pil(array):
    """uint8/uint16/int/float arrays, gray or RGB(A), to an 8-bit PIL image."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ImageError(f"cannot read an image from an array of shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if np.issubdtype(array.dtype, np.floating) and a.max(initial=0) <= 1.0:
            a = a * 255.0
        elif a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit range
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


@dataclass(frozen=True)
class Preprocessing:
    """Resize to image_size x image_size, scale to [0, 1], then (x - mean) / std."""
    image_size: int = 448
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)

    def resize(self, image):
        return image.resize((self.image_size, self.image_size), Image.BILINEAR)

    def to_tensor(self, image):
        """An RGB PIL image (already at its final size) -> normalised (3, H, W) float tensor."""
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
        x = x.permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def __call__(self, image):
        """RGB PIL image of any size -> (3, image_size, image_size) model input."""
        return self.to_tensor(self.resize(image))
