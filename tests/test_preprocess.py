"""load_image / to_rgb on awkward inputs, and the Preprocessing arithmetic."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from csra import ImageError, Preprocessing, load_image, to_rgb


def saved(image, fmt="PNG", **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    buf.seek(0)
    return buf


def test_rgba_is_composited_on_white():
    im = Image.new("RGBA", (4, 3), (255, 0, 0, 0))
    im.putpixel((0, 0), (0, 0, 255, 255))
    rgb = load_image(saved(im))
    assert rgb.mode == "RGB" and rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (0, 0, 255)


def test_palette_grayscale_and_cmyk_become_rgb():
    pal = Image.new("P", (5, 5))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((2, 2), 1)
    assert load_image(saved(pal)).getpixel((2, 2)) == (10, 200, 30)
    gray = Image.new("L", (5, 5), 77)
    assert load_image(saved(gray)).getpixel((0, 0)) == (77, 77, 77)
    cmyk = Image.new("CMYK", (5, 5), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = load_image(saved(cmyk, "JPEG")).getpixel((2, 2))
    assert r > 200 and g < 50 and b < 50


def test_16_bit_grayscale_keeps_its_tones():
    a = np.zeros((4, 4), np.uint16)
    a[0, 0], a[1, 1] = 65535, 32768
    im = load_image(saved(Image.fromarray(a)))
    assert im.getpixel((0, 0)) == (255, 255, 255)
    assert im.getpixel((1, 1))[0] in (127, 128)
    assert im.getpixel((2, 2)) == (0, 0, 0)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    upright = load_image(saved(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert upright.size == (20, 40)
    r, g, b = upright.getpixel((10, 2))  # the left strip is now on top
    assert r > 200 and g < 60


def test_not_an_image_truncated_missing_and_too_large(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match=r"notes\.txt: not an image"):
        load_image(str(tmp_path / "notes.txt"))
    data = saved(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG").getvalue()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: cannot decode image, truncated or corrupt"):
        load_image(str(tmp_path / "cut.jpg"))
    with pytest.raises(ImageError, match="no such file"):
        load_image(str(tmp_path / "gone.png"))
    big = saved(Image.new("L", (300, 200)))
    with pytest.raises(ImageError, match="300x200 pixels is more than the limit of 50,000"):
        load_image(big, max_pixels=50_000)


def test_one_pixel_image_is_fine():
    im = load_image(saved(Image.new("RGB", (1, 1), (9, 8, 7))))
    x = Preprocessing(32)(im)
    assert x.shape == (3, 32, 32) and torch.allclose(x[:, 5, 5], torch.tensor([9, 8, 7]) / 255.0)


def test_arrays_of_several_kinds():
    assert to_rgb(np.full((3, 4), 0.5, np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(np.zeros((3, 4, 4), np.uint8)).getpixel((0, 0)) == (255, 255, 255)  # alpha 0
    with pytest.raises(ImageError, match="shape"):
        to_rgb(np.zeros((3, 4, 2), np.uint8))


def test_preprocessing_resizes_scales_and_normalises():
    im = Image.new("RGB", (50, 30), (255, 51, 0))
    p = Preprocessing(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    x = p(im)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([(1 - 0.5) / 0.5, (0.2 - 0.5) / 0.25, -0.5]))
    plain = Preprocessing(16)(im)  # the VOC recipe: [0, 1], no mean/std
    assert plain.min() >= 0 and plain.max() <= 1


def png_header(width, height, colour_type):
    """A PNG that claims width x height pixels of a colour type, with too little data: what
    a limit must refuse before decoding."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return io.BytesIO(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                      + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def test_decode_budget_refuses_before_decoding():
    """A 49-megapixel PNG cost +560 MB of server memory: the budget counts the decoded pixels
    and every copy the conversion to RGB makes, and refuses before anything is decoded."""
    from csra.preprocess import decode_bytes
    rgb, rgba = png_header(7000, 7000, 2), png_header(7000, 7000, 6)
    with Image.open(rgb) as im:
        assert decode_bytes(im) == 7000 * 7000 * 3                   # decoded once, no copy
    with Image.open(rgba) as im:
        assert decode_bytes(im) == 7000 * 7000 * 11                  # + RGBA, white, RGB
    budget = 300 * 2 ** 20
    with pytest.raises(ImageError, match=r"7000x7000 pixels \(RGBA\) need about 514 MB to decode, "
                                         r"more than the limit of 300 MB"):
        load_image(rgba, max_bytes=budget)
    with pytest.raises(ImageError, match="truncated or corrupt"):   # under it: decoding starts
        load_image(png_header(7000, 7000, 2), max_bytes=budget)
    small = load_image(saved(Image.new("RGBA", (30, 20), (0, 0, 0, 0))), max_bytes=10_000)
    assert small.getpixel((3, 3)) == (255, 255, 255)
    with pytest.raises(ImageError, match="MB to decode, more than the limit"):
        load_image(saved(Image.new("RGBA", (30, 20))), max_bytes=1000)


def test_an_rgb_image_is_not_copied_on_the_way():
    """load_image hands back the decoded RGB image itself (one full-size copy in memory);
    to_rgb still copies what it is given unless told otherwise."""
    im = Image.new("RGB", (8, 6), (1, 2, 3))
    assert to_rgb(im) is not im and to_rgb(im, copy=False) is im
    turned = Image.new("RGB", (8, 6))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = load_image(saved(turned, "JPEG", exif=exif.tobytes()))
    assert upright.size == (6, 8)
