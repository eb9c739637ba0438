"""Images the tests draw: soft coloured blobs on noise, deterministic from a seed."""
import numpy as np
from PIL import Image


def blob_image(seed, size=(48, 40), mode="RGB", blobs=3, radius=(4, 14), noise=10):
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w, 3))
    for _ in range(blobs):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(*radius)
        a += rng.uniform(0, 255, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    image = Image.fromarray(np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8))
    return image.convert(mode)
