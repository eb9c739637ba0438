"""csra.visualize against a float reference written here, and honest colours for negative maps."""
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from csra import visualize


def reference_overlay(image, score_map, vmin, vmax, alpha):
    """Upsample in float (torch, half-pixel centres), clip to [vmin, vmax], colour, blend in float."""
    H, W = image.shape[:2]
    up = F.interpolate(torch.as_tensor(score_map, dtype=torch.float64)[None, None], size=(H, W),
                       mode="bilinear", align_corners=False)[0, 0].numpy()
    unit = np.clip((up - vmin) / (vmax - vmin), 0, 1)
    bgr = cv2.applyColorMap(np.rint(unit * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float64)
    return np.rint((1 - alpha) * image.astype(np.float64) + alpha * heat)


def test_overlay_matches_the_float_reference():
    rng = np.random.default_rng(0)
    for shape, grid in [((90, 130), (7, 9)), ((448, 299), (14, 14)), ((31, 200), (2, 3))]:
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        m = rng.normal(size=grid).astype(np.float32) * 3
        lo, hi = float(m.min()), float(m.max())
        got = visualize.overlay(image, m, lo, hi, alpha=0.45)
        assert got.shape == (*shape, 3) and got.dtype == np.uint8
        # a colour index may round one step the other way, and the blend rounds once
        diff = np.abs(got.astype(float) - reference_overlay(image, m, lo, hi, 0.45))
        assert diff.max() <= 4 and diff.mean() < 0.1


def test_upsample_is_bilinear_with_half_pixel_centres():
    m = np.array([[0.0, 4.0]], np.float32)
    up = visualize.upsample(m, (1, 4))
    np.testing.assert_allclose(up, [[0.0, 1.0, 3.0, 4.0]])
    batch = visualize.upsample(np.zeros((3, 2, 2, 2)), (5, 7))
    assert batch.shape == (3, 2, 5, 7)


def test_negative_maps_are_coloured_without_wrap_around():
    m = np.linspace(-5.0, -1.0, 64, dtype=np.float32).reshape(8, 8)
    coloured = visualize.colorize(m, vmin=-5.0, vmax=5.0)
    # every value is below the middle of the range: all blue-ish, none red
    assert (coloured[..., 2].astype(int) > coloured[..., 0].astype(int)).all()
    # below vmin is the coldest colour (a uint8 cast of -1 would be 255, the hottest)
    below = visualize.colorize(np.full((2, 2), -300.0), -5.0, 5.0)
    coldest = visualize.colorize(np.full((2, 2), -5.0), -5.0, 5.0)
    hottest = visualize.colorize(np.full((2, 2), 5.0), -5.0, 5.0)
    np.testing.assert_array_equal(below, coldest)
    assert coldest[0, 0, 2] > coldest[0, 0, 0] and hottest[0, 0, 0] > hottest[0, 0, 2]


def test_value_range_global_vs_per_map():
    maps = np.stack([np.full((2, 2), 1.0), np.array([[-3.0, 0.0], [0.0, 5.0]])])
    lo, hi = visualize.value_range(maps, "global")
    assert lo.tolist() == [-3.0, -3.0] and hi.tolist() == [5.0, 5.0]
    lo, hi = visualize.value_range(maps, "per-map")
    assert lo.tolist() == [1.0, -3.0] and hi[1] == 5.0 and hi[0] > lo[0]  # flat map: no zero range


def test_nearest_upsampling_keeps_the_grid_cells():
    m = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    pic = visualize.colorize(m, 0.0, 1.0, size=(4, 4), nearest=True)
    cold, hot = visualize.RGB_LUT[0, 0], visualize.RGB_LUT[255, 0]
    assert (pic[:2, :2] == cold).all() and (pic[:2, 2:] == hot).all() and (pic[2:, :2] == hot).all()
