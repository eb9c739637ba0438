"""Score maps as pictures: upsample, colour on a stated range, overlay on the image.

Score maps are real-valued and can be negative. They are coloured by
clipping to an explicit [vmin, vmax] range (never by casting to uint8, which
wraps negatives around). With one range for all classes of an image
("global" scale) a class the model finds absent stays cold; "per-map" scale
stretches every map to its own min..max, which shows shape but not strength.
"""
import cv2
import numpy as np
import torch
import torch.nn.functional as F

COLORMAP = cv2.COLORMAP_JET


def upsample(maps, size):
    """(..., h, w) tensor or array -> float32 numpy (..., H, W), bilinear; size = (H, W)."""
    t = torch.as_tensor(maps, dtype=torch.float32)
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    up = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size).numpy()


def value_range(maps, scale="global"):
    """(vmin, vmax) arrays broadcastable against maps (N, h, w): one range or one per map."""
    m = np.asarray(maps, dtype=np.float32)
    if scale == "global":
        lo, hi = np.full(len(m), m.min()), np.full(len(m), m.max())
    elif scale == "per-map":
        lo, hi = m.reshape(len(m), -1).min(1), m.reshape(len(m), -1).max(1)
    else:
        raise ValueError(f"scale must be 'global' or 'per-map', got {scale!r}")
    return lo, np.maximum(hi, lo + 1e-12)


def colorize(score_map, vmin, vmax, colormap=COLORMAP):
    """(H, W) float map -> (H, W, 3) uint8 RGB, vmin -> coldest colour, vmax -> hottest."""
    unit = np.clip((np.asarray(score_map, np.float32) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.rint(unit * 255).astype(np.uint8), colormap)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def blend(image, heat, alpha=0.5):
    """(H, W, 3) uint8 image and colour map -> (1 - alpha) * image + alpha * heat, uint8."""
    out = (1.0 - alpha) * np.asarray(image, np.float32) + alpha * np.asarray(heat, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay(image, score_map, vmin, vmax, alpha=0.5, colormap=COLORMAP):
    """A (h, w) score map upsampled to the RGB uint8 image, coloured on [vmin, vmax], blended."""
    image = np.asarray(image)
    heat = colorize(upsample(score_map, image.shape[:2]), vmin, vmax, colormap)
    return blend(image, heat, alpha)
