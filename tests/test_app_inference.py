"""The app's numbers: cached score maps, rescoring at any lambda, logit split, pooling weights."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image

import csra
from app import inference, page
from app.inference import analyse, pooling_weights, scores_at, shown_classes, threshold_logit


def photo(w=80, h=60, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def two_head_model():
    torch.manual_seed(0)
    return csra.build_model("resnet18", num_classes=5, num_heads=2, image_size=64, lam=0.2).eval()


@pytest.fixture(scope="module")
def classifier_model():
    torch.manual_seed(1)
    return csra.from_classifier("resnet18", pretrained=False, image_size=64, lam=0.3)


def reference_logits(model, image, lam):
    """CSRA logits from the features by hand: per head, normalised 1x1 conv maps,
    mean + lam * (softmax(T s) . s, or max for T = 99), summed over heads."""
    with torch.no_grad():
        x = model.preprocessing(image)[None]
        f = model.forward_features(x)[0]                          # (D, h, w)
        flat = f.flatten(1)                                       # (D, HW)
        total = torch.zeros(model.config.num_classes, dtype=torch.float64)
        for conv, t in zip(model.head.classifiers, model.head.temperatures):
            w = conv.weight.flatten(1).double()                   # (C, D)
            s = w @ flat.double()                                 # (C, HW)
            if model.head.normalize:
                s = s / w.norm(dim=1, keepdim=True)
            att = s.max(dim=1).values if t == 99 else (torch.softmax(t * s, dim=1) * s).sum(1)
            total += s.mean(dim=1) + lam * att
        if model.head.bias is not None:
            total += model.head.bias.double()
    return total.numpy()


def test_analysis_shapes_and_ranges(two_head_model):
    a = analyse(two_head_model, photo(80, 60), name="x.png")
    assert a.maps.shape == (2, 5, 2, 2) and a.maps.dtype == torch.float32
    assert a.attention.shape == a.maps.shape
    assert a.image.dtype == np.uint8 and a.image.shape == (336, 448, 3)   # longest side 448
    assert a.original_size == (80, 60)
    sums = a.attention.sum(dim=(-1, -2))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    peaks = a.attention[1].flatten(1)                                    # T = 99: one-hot
    assert torch.equal(peaks.max(dim=1).values, torch.ones(5))
    assert torch.equal((peaks > 0).sum(dim=1), torch.ones(5, dtype=torch.long))
    s = scores_at(a, 0.5)
    assert s.kind == "sigmoid" and s.logits.shape == (5,)
    assert ((s.probabilities > 0) & (s.probabilities < 1)).all()


@pytest.mark.parametrize("lam", [0.0, 0.35, 1.0])
def test_lambda_rescore_equals_full_forward(two_head_model, lam):
    image = photo(seed=3)
    a = analyse(two_head_model, image)
    s = scores_at(a, lam)
    np.testing.assert_allclose(s.logits, reference_logits(two_head_model, image, lam),
                               rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        direct = two_head_model.head.logits_from_maps(a.maps[None], lam=lam)[0].numpy()
    np.testing.assert_allclose(s.logits, direct, rtol=1e-5, atol=1e-5)
    model = copy.deepcopy(two_head_model)                     # the shared model's lam stays put
    model.lam = lam
    with torch.no_grad():
        full = model.eval()(model.preprocessing(image)[None])[0].numpy()
    np.testing.assert_allclose(s.logits, full, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.probabilities, 1 / (1 + np.exp(-full)), rtol=1e-4, atol=1e-6)


def test_split_and_pooling_weights_rebuild_the_logit(two_head_model, classifier_model):
    for model in (two_head_model, classifier_model):
        a = analyse(model, photo(seed=5))
        for lam in (0.0, 0.25, 0.9):
            s = scores_at(a, lam)
            np.testing.assert_allclose(s.base + s.attention, s.logits, rtol=1e-5, atol=1e-5)
            rebuilt = np.array([sum(float((a.maps[k, c] * torch.from_numpy(w)).sum())
                                    for k, w in enumerate(pooling_weights(a, c, lam)))
                                for c in range(len(a.class_names))])
            if model.head.bias is not None:
                rebuilt += model.head.bias.detach().numpy()
            np.testing.assert_allclose(rebuilt, s.logits, rtol=1e-4, atol=1e-3)
            w = pooling_weights(a, 0, lam)
            np.testing.assert_allclose(w.sum(axis=(1, 2)), 1 + lam, rtol=1e-5)
        np.testing.assert_allclose(pooling_weights(a, 0, 0.0), 1 / np.prod(a.grid))


def test_classifier_scores_are_a_softmax_with_the_bias(classifier_model):
    image = photo(seed=7)
    a = analyse(classifier_model, image)
    s = scores_at(a, 0.3)
    assert s.kind == "softmax" and s.logits.shape == (1000,)
    assert abs(s.probabilities.sum() - 1) < 1e-5
    np.testing.assert_allclose(s.logits, reference_logits(classifier_model, image, 0.3),
                               rtol=1e-4, atol=1e-3)
    view = page.refresh(a, page.Controls(lam=0.3, threshold=0.1, top_k=7))
    assert len(view.rows) == 7                               # 1000 classes: top-k rows only
    assert view.scores["kind"] == "softmax" and len(view.scores["base"]) == 1000


def test_a_lambda_change_never_runs_the_backbone(two_head_model, tmp_path):
    calls = {"backbone": 0, "head": 0}
    hooks = [two_head_model.backbone.register_forward_hook(
                 lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1)),
             two_head_model.head.classifiers[0].register_forward_hook(
                 lambda *_: calls.__setitem__("head", calls["head"] + 1))]
    try:
        path = tmp_path / "in.png"
        photo(seed=9).save(path)
        a, first = page.upload(two_head_model, path, page.Controls(lam=0.1))
        assert calls == {"backbone": 1, "head": 1}
        views = [page.refresh(a, page.Controls(lam=lam, threshold=t, scale=sc, focus=f))
                 for lam, t, sc, f in [(0.0, 0.5, "global", None), (0.7, 0.3, "per-map", "class_2"),
                                       (1.0, 0.9, "global", "class_4")]]
        assert calls == {"backbone": 1, "head": 1}
    finally:
        for h in hooks:
            h.remove()
    tables = [[row["probability"] for row in v.scores["rows"]] for v in [first] + views]
    assert tables[0] != tables[2]                           # the scores did move with lambda


def test_shown_classes_threshold_limit_and_picks():
    s = inference.Scores(lam=0.1, logits=np.zeros(5), probabilities=np.array([.2, .9, .6, .95, .1]),
                         base=np.zeros(5), attention=np.zeros(5), kind="sigmoid")
    assert shown_classes(s, 0.5) == [3, 1, 2]
    assert shown_classes(s, 0.5, limit=2) == [3, 1]
    assert shown_classes(s, 0.5, picked=[0, 1]) == [3, 1, 2, 0]
    assert shown_classes(s, 0.99, picked=[4]) == [4]
    for t in (0.1, 0.5, 0.83):
        assert abs(1 / (1 + np.exp(-threshold_logit(t, "sigmoid"))) - t) < 1e-12
    assert threshold_logit(0.5, "softmax") is None


def test_display_image_never_rounds_a_side_to_zero():
    """A 1x5000 PNG gave "internal error (ValueError: height and width must be > 0)"."""
    assert inference.display_image(Image.new("RGB", (1, 5000))).shape == (448, 1, 3)
    assert inference.display_image(Image.new("L", (5000, 2))).shape == (1, 448, 3)
    assert inference.display_image(Image.new("RGB", (3, 2000))).shape == (448, 1, 3)


def test_display_image_keeps_aspect_and_orientation():
    assert inference.display_image(Image.new("RGB", (60, 40))).shape == (299, 448, 3)
    assert inference.display_image(Image.new("RGB", (40, 60))).shape == (448, 299, 3)
    assert inference.display_image(Image.new("RGB", (1, 1))).shape == (448, 448, 3)
