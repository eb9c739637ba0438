"""Score maps as pictures: upsample, colour on a stated range, overlay on the image.

Score maps are real-valued and can be negative. They are coloured by
clipping to an explicit [vmin, vmax] range (never by casting to uint8, which
wraps negatives around). With one range for all classes of an image
("global" scale) a class the model finds absent stays cold; "per-map" scale
stretches every map to its own min..max, which shows shape but not strength.

OpenCV does the resizing, colouring and blending, so a 448 px overlay costs
well under a millisecond and the app can redraw on every slider move.
"""
import cv2
import numpy as np
import torch
import torch.nn.functional as F

COLORMAP = cv2.COLORMAP_JET


def _rgb_lut(colormap):
    """OpenCV's colour map as a 256-entry RGB table for cv2.applyColorMap."""
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    return np.ascontiguousarray(cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB))


RGB_LUT = _rgb_lut(COLORMAP)


def upsample(maps, size):
    """(..., h, w) tensor or array -> float32 numpy (..., H, W), bilinear; size = (H, W)."""
    t = torch.as_tensor(maps, dtype=torch.float32)
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    up = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size).numpy()


def value_range(maps, scale="global"):
    """(vmin, vmax) arrays broadcastable against maps (N, h, w): one range or one per map."""
    m = np.asarray(maps, dtype=np.float64)
    if scale == "global":
        lo, hi = np.full(len(m), m.min()), np.full(len(m), m.max())
    elif scale == "per-map":
        lo, hi = m.reshape(len(m), -1).min(1), m.reshape(len(m), -1).max(1)
    else:
        raise ValueError(f"scale must be 'global' or 'per-map', got {scale!r}")
    return lo, np.maximum(hi, lo + 1e-12)


def colour_index(score_map, vmin, vmax):
    """(h, w) float map -> float32 map of colour indices 0..255; outside [vmin, vmax] clipped."""
    m = np.asarray(score_map, dtype=np.float32)
    step = np.float32(255.0 / max(float(vmax) - float(vmin), 1e-12))
    return np.clip((m - np.float32(vmin)) * step, 0.0, 255.0).astype(np.float32)


def colorize(score_map, vmin, vmax, size=None, nearest=False):
    """A score map coloured on [vmin, vmax] -> (H, W, 3) uint8 RGB (vmin coldest, vmax hottest).

    size=(H, W) upsamples first: bilinear (half-pixel centres, as upsample())
    or nearest, to show the feature grid itself. The map is turned into colour
    indices while small; bilinear interpolation commutes with that linear step.
    """
    index = colour_index(score_map, vmin, vmax)
    if size is not None:
        mode = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        index = cv2.resize(index, (int(size[1]), int(size[0])), interpolation=mode)
    return cv2.applyColorMap(cv2.convertScaleAbs(index), RGB_LUT)


def blend(image, heat, alpha=0.5):
    """(H, W, 3) uint8 image and colour map -> (1 - alpha) * image + alpha * heat, uint8."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    heat = np.ascontiguousarray(heat, dtype=np.uint8)
    return cv2.addWeighted(image, 1.0 - float(alpha), heat, float(alpha), 0.0)


def overlay(image, score_map, vmin, vmax, alpha=0.5, nearest=False):
    """A (h, w) score map upsampled to the RGB uint8 image, coloured on [vmin, vmax], blended."""
    image = np.asarray(image)
    return blend(image, colorize(score_map, vmin, vmax, image.shape[:2], nearest), alpha)
