"""The app's pictures and downloads: overlays, honest colours, scales, tiles sent once,
comparison, exports."""
import csv
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import csra
from csra import visualize
from app import exports, page, render
from app.inference import analysis_from_maps, scores_at


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return csra.build_model("resnet18", num_classes=3, num_heads=2, image_size=64,
                            class_names=("cat", "dog", "car")).eval()


def hand_made(model, lam_image=None):
    """An analysis with chosen maps: 'cat' strong at the top-left, 'dog' weak and negative,
    'car' in between; 4x4 grid, 2 heads with the same maps."""
    cat = torch.full((4, 4), -1.0)
    cat[0, 0] = 6.0
    dog = torch.linspace(-3.0, -1.0, 16).view(4, 4)
    car = torch.zeros(4, 4)
    car[2, 3] = 2.0
    maps = torch.stack([cat, dog, car])[None].repeat(2, 1, 1, 1)
    image = np.full((120, 160, 3), 128, np.uint8) if lam_image is None else lam_image
    return analysis_from_maps(model, maps, image, name="hand.png")


def redness(rgb):
    """Mean red minus blue: hot colours of the jet map score high, cold ones low."""
    rgb = np.asarray(rgb, np.float64)
    return float((rgb[..., 0] - rgb[..., 2]).mean())


def jet_index(rgb):
    """Index 0..255 of the nearest colour of the jet map, per pixel (inverts colorize)."""
    lut = visualize.colorize(np.arange(256, dtype=np.float32)[None], 0, 255)[0].astype(np.float64)
    d = ((np.asarray(rgb, np.float64)[..., None, :] - lut) ** 2).sum(-1)
    return d.argmin(-1)


def hottest(rgb):
    """Red minus blue at the hottest 1% of pixels."""
    rgb = np.asarray(rgb, np.float64)
    return float(np.percentile(rgb[..., 0] - rgb[..., 2], 99))


def test_global_scale_keeps_an_absent_class_cold(model):
    a = hand_made(model)
    s = scores_at(a, 0.1)
    assert s.probabilities[0] > 0.5 > s.probabilities[1]          # cat present, dog absent
    g = render.heatmaps(a, [0, 1], scale="global", alpha=1.0)
    p = render.heatmaps(a, [0, 1], scale="per-map", alpha=1.0)
    cat_g, dog_g = (hottest(img) for img in g.values())
    cat_p, dog_p = (hottest(img) for img in p.values())
    assert cat_g > 150 and dog_g < -100        # global: the absent class's hottest spot is blue
    assert cat_p > 150 and dog_p > 150         # per-map: both stretched to look equally hot


def test_pooling_weight_picture_moves_with_lambda(model):
    a = hand_made(model)
    pics = [render.pooling_weight_picture(a, 0, lam) for lam in (0.0, 0.1, 1.0)]
    assert all(p.dtype == np.uint8 and p.ndim == 3 for p in pics)
    assert pics[0].shape[1] > 2 * pics[0].shape[0] - 40              # two heads side by side
    # undo the blend over the flat grey image, then read the colour map's index back
    peaks = [jet_index((p[30::2, :p.shape[1] // 2 - 3:2].astype(np.float64) - 0.4 * 128) / 0.6).max()
             for p in pics]
    assert peaks[0] < 8                        # lambda 0: uniform weights, all at the cold end
    assert peaks[0] < peaks[1] < peaks[2]      # the peak warms up as lambda grows
    assert peaks[2] > 240                      # lambda 1 reaches the top of the fixed range
    text = render.pooling_weight_text(a, 0, 0.5)
    assert "1/16" in text and "1 + λ = 1.50" in text


def test_comparison_panels_per_head(model):
    a = hand_made(model)
    panels = render.comparison_panels(a, 0, scale="global", alpha=0.5)
    assert len(panels) == 8                                          # 4 per head, 2 heads
    assert all(img.shape == a.image.shape for img, _ in panels)
    captions = [c for _, c in panels]
    assert "T = 1" in captions[0] and "T = 99" in captions[4]
    assert "max pooling" in captions[6]
    # the average-pooling contribution of the cat's peak cell (top-left) is the hottest
    contribution = panels[1][0]
    assert redness(contribution[:30, :40]) > redness(contribution[60:, 80:])


def test_tiles_are_encoded_once_and_sent_once(model, monkeypatch):
    a = hand_made(model)
    encoded = []
    real = render.data_uri
    monkeypatch.setattr(render, "data_uri", lambda rgb, *k: encoded.append(rgb.shape) or real(rgb, *k))
    first = render.heatmap_tiles(a, [0, 2], "global", 0.5)
    assert len(encoded) == 2 and set(first) == {"0", "2"}
    assert Image.open(io.BytesIO(__import__("base64").b64decode(first["0"].split(",")[1]))).size == (256, 192)
    assert render.heatmap_tiles(a, [2, 0], "global", 0.5) == first and len(encoded) == 2
    render.heatmap_tiles(a, [0], "per-map", 0.5)                      # a new look: drawn again
    assert len(encoded) == 3
    # the page's side: a second identical request sends nothing; a new class only its tile
    c = page.Controls(lam=0.1, threshold=0.99, picked=("dog",), focus="cat")
    b = hand_made(model)
    view = page.first_view(b, c.clean())
    assert set(view.heatmaps["tiles"]) == {"1"}                       # none present; dog picked
    later = page.changes(b, c)
    assert later.heatmaps is None and later.closeup and later.weights   # close-up drawn lazily
    again = page.changes(b, c)
    assert (again.heatmaps, again.closeup, again.weights) == (None, None, None)
    more = page.changes(b, page.Controls(lam=0.1, threshold=0.99, picked=("dog", "car"), focus="cat"))
    assert set(more.heatmaps["tiles"]) == {"2"} and more.closeup is None
    moved = page.changes(b, page.Controls(lam=0.8, threshold=0.99, picked=("dog", "car"), focus="cat"))
    assert moved.weights and "0.80" in moved.weights and moved.closeup is None


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_browser_numbers_rebuild_logits_from_maps(model, lam):
    """The payload the browser rescores: base + lam * attention = the head's logits_from_maps."""
    a = hand_made(model)
    payload = page.scores_payload(a, page.Controls(lam=lam).clean())
    with torch.no_grad():
        reference = model.head.logits_from_maps(a.maps[None], lam=lam)[0].numpy()
    rebuilt = np.array(payload["base"]) + lam * np.array(payload["attention"])
    np.testing.assert_allclose(rebuilt, reference, rtol=1e-5, atol=1e-5)
    assert [r["class"] for r in payload["rows"]] == [a.class_names[i] for i in np.argsort(-reference)]
    json.dumps(payload, allow_nan=False)                               # plain JSON for the page


def test_downloads_csv_json_and_png_zip(model, tmp_path):
    a = hand_made(model)
    controls = page.Controls(lam=0.4, threshold=0.5, focus="car")
    view = page.refresh(a, controls)
    s = scores_at(a, 0.4)
    rows = list(csv.DictReader(io.StringIO(exports.scores_csv(a, s, 0.5))))
    assert [r["class"] for r in rows] == [a.class_names[i] for i in s.order()]
    assert abs(float(rows[0]["logit"]) - (float(rows[0]["base"]) + float(rows[0]["lambda_attention"]))) < 1e-4
    payload = json.loads(exports.scores_json(a, s, 0.5, {"backbone": "resnet18"}))
    assert payload["lambda"] == pytest.approx(0.4) and payload["present"] == view.shown
    folder = exports.DownloadFolders(keep=2, root=tmp_path / "dl")
    (tmp_path / "dl").mkdir()
    paths = exports.write_downloads(folder.new(), a, s, 0.5, page.download_pictures(a, controls))
    assert [p.rsplit("_", 1)[-1] for p in paths] == ["scores.csv", "scores.json", "overlays.zip"]
    with zipfile.ZipFile(paths[2]) as z:
        names = z.namelist()
        assert any("overlay_cat" in n for n in names) and any("pooling_weights_car" in n for n in names)
        first = Image.open(io.BytesIO(z.read(names[0])))
        assert first.format == "PNG" and first.size == (160, 120)
    for _ in range(3):
        folder.new()
    assert len(list((tmp_path / "dl").iterdir())) == 2                  # old folders are removed
