"""csra.faithfulness: deletion/insertion curves, the pointing game, Grad-CAM through Captum, check_map.

Tiny models and tiny images. The known-evidence model reads one quadrant only, so which map is
right is known by construction; the pointing game is checked against TorchRay's mask-and-disk
rule written out here; Grad-CAM is tied to the CSRA map by an identity that holds exactly for a
classifier that ends in global average pooling + a linear layer.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import csra
from csra import faithfulness as fa
from csra.head import CSRAHead
from csra.model import CSRAModel, ModelConfig
from csra.visualize import upsample

SIDE = 32


def noise_image(side=SIDE, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8))


# ------------------------------------------------------------------ a model whose evidence is known

class QuadrantTexture(nn.Module):
    """|Laplacian| of the grey image averaged over 8 x 8 cells (a 4 x 4 grid at 32 px), kept in the
    top-left 2 x 2 cells only: whatever happens elsewhere in the image, the features do not change."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3))
        mask = torch.zeros(1, 1, 4, 4)
        mask[..., :2, :2] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        energy = F.conv2d(x.mean(1, keepdim=True), self.kernel, padding=1).abs()
        return F.avg_pool2d(energy, SIDE // 4) * self.mask


def quadrant_model(image):
    """CSRA model (sigmoid, lambda 0) whose one class logit is a * (texture in the top-left quadrant)
    + b, with a and b set so the image scores logit +3 and its blurred baseline -3."""
    head = CSRAHead(1, 1, lam=0.0, temperatures=(1,), normalize=False, bias=True)
    config = ModelConfig(backbone="quadrant", num_classes=1, lam=0.0, image_size=SIDE, class_names=("quadrant",))
    model = CSRAModel(QuadrantTexture(), head, config).eval()
    x = model.preprocessing(image)[None]
    with torch.no_grad():
        sharp, blurred = model.backbone(torch.cat([x, fa.blur_baseline(x)])).mean(dim=(1, 2, 3))
        a = 6.0 / float(sharp - blurred)
        head.classifiers[0].weight.fill_(a)
        head.bias.fill_(-3.0 - a * float(blurred))
    return model


def test_the_true_map_beats_the_inverted_map_and_a_random_order():
    image = noise_image()
    model = quadrant_model(image)
    run = fa.first_pass(model, model.preprocessing(image)[None], 0.0)
    assert run.untouched[0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), abs=1e-4)
    assert run.blurred[0] == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item(), abs=1e-4)
    true = np.zeros((4, 4), np.float32)
    true[:2, :2] = 1
    maps = {"true": (0, true), "inverted": (0, 1 - true)}
    maps.update({f"random{k}": (0, fa.random_map((4, 4), np.random.default_rng(k))) for k in range(3)})
    fractions, curves = fa.perturbation_curves(model, run, maps, lam=0.0, steps=8)
    deletion = {k: fa.auc(d, fractions) for k, (d, _) in curves.items()}
    insertion = {k: fa.auc(i, fractions) for k, (_, i) in curves.items()}
    for other in ("inverted", "random0", "random1", "random2"):
        assert deletion["true"] < deletion[other] - 0.1, deletion
        assert insertion["true"] > insertion[other] + 0.1, insertion
    # the model's own maps (its score map and Grad-CAM read the quadrant only) come out the same way
    check = fa.check_map(model, image, 0, steps=8, methods=("csra", "gradcam", "random"))
    for method in ("csra", "gradcam"):
        assert check.methods[method].map[2:].max() == 0 and check.methods[method].map[:, 2:].max() == 0
        assert check.methods[method].deletion_auc < check.methods["random"].deletion_auc - 0.1
        assert check.methods[method].insertion_auc > check.methods["random"].insertion_auc + 0.1


# ------------------------------------------------------------------ curves: ends, AUC, inner points

@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return csra.build_model("resnet18", num_classes=3, num_heads=2, lam=0.3, image_size=SIDE).eval()


def test_curve_ends_auc_and_an_inner_point_against_a_direct_computation(small_model):
    model, image, c, steps, lam = small_model, noise_image(seed=1), 2, 5, 0.7
    check = fa.check_map(model, image, c, lam=lam, steps=steps, methods=("random", "csra"))
    x = model.preprocessing(image)[None]
    baseline = fa.blur_baseline(x)

    def probability(images):
        with torch.no_grad():
            return torch.sigmoid(model.head.logits_from_maps(model.head.score_maps(model.backbone(images)),
                                                             lam=lam))[:, c].numpy()

    untouched, blurred = probability(x)[0], probability(baseline)[0]
    np.testing.assert_allclose(check.fractions, np.arange(steps + 1) / steps, atol=1e-3)
    assert check.fractions[0] == 0 and check.fractions[-1] == 1
    assert check.probability == pytest.approx(untouched, abs=1e-5)
    assert check.baseline_probability == pytest.approx(blurred, abs=1e-5)
    for result in check.methods.values():
        assert result.deletion[0] == pytest.approx(untouched, abs=1e-5)
        assert result.deletion[-1] == pytest.approx(blurred, abs=1e-5)
        assert result.insertion[0] == pytest.approx(blurred, abs=1e-5)
        assert result.insertion[-1] == pytest.approx(untouched, abs=1e-5)
        assert result.deletion_auc == pytest.approx(np.trapezoid(result.deletion, check.fractions), abs=1e-12)
        assert result.insertion_auc == pytest.approx(np.trapezoid(result.insertion, check.fractions), abs=1e-12)
    # inner points by hand, for a map at the input's resolution with no ties: the order is unique
    saliency = np.random.default_rng(3).random((SIDE, SIDE)).astype(np.float32)
    run = fa.first_pass(model, x, lam)
    fractions, curves = fa.perturbation_curves(model, run, {"m": (c, saliency)}, lam, steps, batch_size=4)
    order = np.argsort(-saliency.ravel(), kind="stable")
    for i in range(1, steps):
        k = int(round(i * SIDE * SIDE / steps))
        first = torch.zeros(SIDE * SIDE, dtype=torch.bool)
        first[torch.from_numpy(order[:k])] = True
        first = first.view(1, 1, SIDE, SIDE)
        deleted, inserted = torch.where(first, baseline, x), torch.where(first, x, baseline)
        assert fractions[i] == k / (SIDE * SIDE)
        assert curves["m"][0][i] == pytest.approx(probability(deleted)[0], abs=1e-5)
        assert curves["m"][1][i] == pytest.approx(probability(inserted)[0], abs=1e-5)


def test_auc_is_the_trapezoid():
    y = np.array([0.9, 0.5, 0.4, 0.1])
    assert fa.auc(y) == pytest.approx(np.trapezoid(y, np.linspace(0, 1, 4)))
    x = np.array([0.0, 0.1, 0.5, 1.0])
    assert fa.auc(y, x) == pytest.approx(0.1 * 0.7 + 0.4 * 0.45 + 0.5 * 0.25)


def test_batches_are_small_and_should_stop_cancels_between_them(small_model):
    model, sizes = small_model, []
    hook = model.backbone.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    try:
        fa.check_map(model, noise_image(), 0, steps=4, methods=("csra", "random"), batch_size=3)
        # the image and its baseline; then 2 methods x 2 curves x 3 inner points in batches of <= 3
        assert sizes == [2, 3, 3, 3, 3]
        sizes.clear()
        calls = []
        with pytest.raises(fa.Cancelled):
            fa.check_map(model, noise_image(), 0, steps=4, methods=("csra", "random"), batch_size=3,
                         should_stop=lambda: calls.append(1) or len(calls) > 3)
        assert sizes == [2, 3, 3] and len(calls) == 4
    finally:
        hook.remove()


def test_an_image_two_curves_need_runs_once(small_model):
    """The same class and pixels (two maps ranking alike) are one forward; another class is not."""
    model, sizes = small_model, []
    run = fa.first_pass(model, model.preprocessing(noise_image())[None], 0.3)
    saliency = np.random.default_rng(5).random((7, 7)).astype(np.float32)
    hook = model.backbone.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    try:
        _, alone = fa.perturbation_curves(model, run, {"a": (0, saliency)}, 0.3, steps=4, batch_size=16)
        assert sizes == [6]                                   # 2 curves x 3 inner points
        sizes.clear()
        _, twice = fa.perturbation_curves(model, run, {"a": (0, saliency), "b": (0, saliency.copy()),
                                                       "c": (1, saliency)}, 0.3, steps=4, batch_size=16)
        assert sizes == [12]                                  # "b" is "a"'s images; "c" is its own
    finally:
        hook.remove()
    for key in ("a", "b"):
        np.testing.assert_allclose(twice[key], alone["a"], atol=1e-6)
    assert not np.allclose(twice["c"][0][1:-1], twice["a"][0][1:-1])


def test_check_map_answer_is_complete_and_serialisable(small_model):
    import json
    check = fa.check_map(small_model, noise_image(), 1, steps=3, methods=fa.METHODS)
    assert list(check.methods) == list(fa.METHODS) and check.kind == "sigmoid" and check.steps == 3
    assert check.lam == pytest.approx(0.3) and check.class_name == small_model.class_names[1]
    grid = small_model.head.score_maps(small_model.forward_features(
        small_model.preprocessing(noise_image())[None])).shape[-2:]
    assert check.methods["csra"].map.shape == tuple(grid) and check.methods["centre"].map.shape == (15, 15)
    back = json.loads(json.dumps(check.to_dict()))
    assert back["methods"]["gradcam"]["deletion_auc"] == pytest.approx(check.methods["gradcam"].deletion_auc)
    with pytest.raises(ValueError, match="unknown map method"):
        fa.check_map(small_model, noise_image(), 0, methods=("csra", "lime"))
    with pytest.raises(ValueError, match="class_index"):
        fa.check_map(small_model, noise_image(), 3)
    with pytest.raises(ValueError, match="steps"):
        fa.check_map(small_model, noise_image(), 0, steps=0)


def test_pooling_weights_map_is_what_the_logit_pools_with(small_model):
    model = small_model
    x = model.preprocessing(noise_image())[None]
    with torch.no_grad():
        maps = model.head.score_maps(model.forward_features(x))[0]
        lam = 0.45
        logits = model.head.logits_from_maps(maps[None], lam=lam)[0]
        for c in range(3):
            heads = [(1.0 / maps[k, c].numel() + lam * model.head.attention_weights(maps[None])[0, k, c]) * maps[k, c]
                     for k in range(maps.shape[0])]
            assert float(sum(h.sum() for h in heads)) == pytest.approx(float(logits[c]), abs=1e-5)
            total = fa.pooling_weight_map(model.head, maps, c, lam)
            assert float(total.sum()) == pytest.approx(maps.shape[0] * (1 + lam), abs=1e-5)


# ------------------------------------------------------------------ Grad-CAM: Captum, the identity, every family

def test_gradcam_of_an_average_pooling_classifier_is_relu_of_the_csra_map_over_hw(tmp_path):
    """Grad-CAM's channel weights are the mean gradient, W_c / (h w) for mean-pool + linear, so
    Captum's LayerGradCam on the plain torchvision network equals ReLU(W_c f) / (h w) = ReLU(s_c) / (h w)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    for m in net.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    model = csra.from_classifier("resnet18", pretrained=str(tmp_path / "resnet18.pth"), lam=0.0, image_size=96)
    x = torch.rand(2, 3, 96, 96)
    classes = [3, 917]
    from captum.attr import LayerGradCam
    theirs = LayerGradCam(net, net.layer4).attribute(x, target=classes, relu_attributions=True)[:, 0]
    with torch.no_grad():
        maps = model.head.score_maps(model.forward_features(x))[:, 0]       # (B, C, h, w), raw W f
        features = model.forward_features(x)
    h, w = maps.shape[-2:]
    assert (h, w) == (3, 3)
    expected = torch.stack([F.relu(maps[b, c]) / (h * w) for b, c in enumerate(classes)])
    torch.testing.assert_close(theirs, expected, rtol=1e-4, atol=1e-6)
    ours = torch.stack([fa.gradcam_maps(model.head, features[b:b + 1], [c], 0.0)[0] for b, c in enumerate(classes)])
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    assert float(expected.max()) > 0 and float((expected == 0).float().mean()) < 1


@pytest.mark.parametrize("heads, lam", [(1, 0.0), (2, 0.3), (4, 1.5)])
def test_gradcam_on_the_feature_layer_is_relu_of_the_csra_map_for_any_head_and_lambda(heads, lam):
    """The CSRA logit of class c is a function of s_kc = W_kc f / |W_kc| only, and shifting every s_kc
    by t shifts the logit by (1 + lam) t: the gradients summed over positions are (1 + lam) per head.
    So Grad-CAM's channel weights are (1 + lam) sum_k W_kc / (|W_kc| h w), and its map is
    (1 + lam) ReLU(sum_k s_kc) / (h w): the page's map, clipped at 0 and scaled, whatever the heads."""
    torch.manual_seed(heads)
    model = csra.build_model("resnet18", num_classes=5, num_heads=heads, lam=lam, image_size=96).eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        features = model.forward_features(x)
        maps = model.head.score_maps(features)[0]
    h, w = maps.shape[-2:]
    got = fa.gradcam_maps(model.head, features, range(5), lam)
    expected = torch.stack([(1 + lam) * F.relu(fa.class_map(maps, c)) / (h * w) for c in range(5)])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert float(expected.max()) > 0


SERVED = {  # the kinds of model the project serves, tiny
    "resnet18 + CSRA, 2 heads": lambda: csra.build_model("resnet18", num_classes=4, num_heads=2, lam=0.2,
                                                         image_size=64),
    "vit_b_16 + CSRA": lambda: csra.build_model("vit_b_16", num_classes=4, lam=0.2, image_size=32),
    "from_classifier resnet18": lambda: csra.from_classifier("resnet18", pretrained=False, lam=0.1, image_size=64),
    "embedded efficientnet_lite0": lambda: csra.from_classifier("efficientnet_lite0", lam=0.1, image_size=64),
}


@pytest.mark.parametrize("name", list(SERVED))
def test_every_served_family_gets_gradcam_on_its_forward_features(name):
    """check_map runs on each, and its Grad-CAM (the head on model.forward_features' output) equals
    Captum's LayerGradCam on model.backbone with the whole network run from the image."""
    torch.manual_seed(0)
    model = SERVED[name]().eval()
    image = noise_image(model.config.image_size, seed=len(name))
    check = fa.check_map(model, image, 1, steps=2, methods=fa.METHODS)
    x = model.preprocessing(image)[None]
    from captum.attr import LayerGradCam
    whole = LayerGradCam(fa.logits_at(model, model.lam), model.backbone).attribute(
        x, target=1, relu_attributions=True)[0, 0].detach().numpy()
    assert check.methods["gradcam"].map.shape == whole.shape == check.methods["csra"].map.shape, name
    np.testing.assert_allclose(check.methods["gradcam"].map, whole, rtol=1e-4, atol=1e-7 * max(1, np.abs(whole).max()))
    assert check.kind == model.score_kind


def test_import_csra_does_not_import_captum():
    code = ("import sys, csra, csra.faithfulness; assert 'captum' not in sys.modules, 'captum imported'; "
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ------------------------------------------------------------------ the pointing game and its energy variant

BOX = (11, 11, 20, 20)  # VOC 1-based inclusive: 0-based pixels 10..19


def torchray_hit(point, boxes, width, height, tolerance=15):
    """TorchRay's rule written out: the class mask (its boxes, 1-based inclusive) meets the disk of
    pixels closer than tolerance to the point."""
    mask = np.zeros((height, width), bool)
    for xmin, ymin, xmax, ymax in boxes:
        mask[ymin - 1:ymax, xmin - 1:xmax] = True
    v, u = np.mgrid[0:height, 0:width]
    return bool((mask & ((v - point[1]) ** 2 + (u - point[0]) ** 2 < tolerance ** 2)).any())


@pytest.mark.parametrize("point, hit", [((33, 15), True), ((34, 15), False), ((35, 15), False),
                                        ((19 + 14, 19), True), ((19 + 16, 19), False),
                                        ((10 - 14, 15), True), ((10 - 16, 15), False),
                                        ((19 + 9, 19 + 11), True), ((19 + 9, 19 + 12), False),
                                        ((15, 15), True)])
def test_pointing_tolerance_edge(point, hit):
    """14 px from the box: a hit; 15 px (TorchRay's distance < 15) and 16 px: misses."""
    assert fa.point_hits(*point, [BOX]) is hit
    assert torchray_hit(point, [BOX], 60, 60) is hit


def test_pointing_game_against_torchrays_rule_and_a_loop():
    rng = np.random.default_rng(2)
    points, boxes, classes, inside, near = [], [], [], 0, 0
    for _ in range(300):
        bs = []
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.integers(1, 80, size=2)
            bs.append((int(x0), int(y0), int(x0 + rng.integers(0, 20)), int(y0 + rng.integers(0, 20))))
        x, y = (int(v) for v in rng.integers(0, 100, size=2))
        # VOC boxes are 1-based inclusive; pixel (x, y) is 0-based
        inside += any(xmin <= x + 1 <= xmax and ymin <= y + 1 <= ymax for xmin, ymin, xmax, ymax in bs)
        near += torchray_hit((x, y), bs, 100, 100)
        points.append((x, y))
        boxes.append(bs)
        classes.append(0)
    got = fa.pointing_game(points, boxes, tolerance=0)
    assert got["hits"] == inside and got["total"] == 300 and got["hit_rate"] == pytest.approx(100 * inside / 300)
    got = fa.pointing_game(points, boxes, classes)
    assert got["hits"] == near and got["accuracy"] == pytest.approx(100 * near / 300) and near > inside
    assert fa.point_in_boxes(0, 0, [(1, 1, 1, 1)]) and not fa.point_in_boxes(1, 0, [(1, 1, 1, 1)])


def test_pointing_accuracy_is_the_mean_over_classes():
    """A hand-made table: 'cat' 3 of 3 hits, 'dog' 0 of 1, 'cow' 1 of 2: per class 100, 0, 50 percent,
    accuracy (TorchRay) 50, pooled 4 of 6."""
    hits = [True, True, True, False, True, False]
    classes = ["cat", "cat", "cat", "dog", "cow", "cow"]
    got = fa.pointing_accuracy(hits, classes)
    assert got["per_class"] == {"cat": {"hits": 3, "total": 3, "accuracy": 100.0},
                                "dog": {"hits": 0, "total": 1, "accuracy": 0.0},
                                "cow": {"hits": 1, "total": 2, "accuracy": 50.0}}
    assert got["accuracy"] == pytest.approx(50.0) and got["hit_rate"] == pytest.approx(400 / 6)
    empty = fa.pointing_accuracy([], [])
    assert np.isnan(empty["accuracy"]) and empty["total"] == 0


def test_energy_pointing_game():
    width, height = 40, 30
    inside = fa.box_mask([BOX], width, height)
    assert inside.sum() == 100 and inside[10:20, 10:20].all()
    only_box = inside.astype(np.float32) * np.random.default_rng(0).uniform(0.5, 2, (height, width)).astype(np.float32)
    assert fa.energy_share(only_box, [BOX], width, height) == pytest.approx(1.0)
    flat = np.ones((3, 4), np.float32)  # uniform: the share is the box's area
    assert fa.energy_share(flat, [BOX], width, height) == pytest.approx(100 / (width * height))
    negative_outside = np.where(inside, 1.0, -5.0).astype(np.float32)  # only the positive mass counts
    assert fa.energy_share(negative_outside, [BOX], width, height) == pytest.approx(1.0)
    assert np.isnan(fa.energy_share(-flat, [BOX], width, height))


def test_box_cover_fraction_counts_the_union_once_and_follows_the_tolerance():
    boxes = [(1, 1, 10, 10), (6, 6, 15, 15)]  # 100 + 100 - 25 pixels of 20 x 20
    assert fa.box_cover_fraction(boxes, 20, 20) == pytest.approx(175 / 400)
    near = np.mean([[torchray_hit((x, y), boxes, 30, 25, 4) for x in range(30)] for y in range(25)])
    assert fa.box_cover_fraction(boxes, 30, 25, tolerance=4) == pytest.approx(near)


@pytest.mark.parametrize("seed", range(5))
def test_map_peak_is_the_peak_of_the_upsampled_map(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(2, 9, size=2))
    k = 2 * int(rng.integers(2, 6)) + 1  # odd scale: a pixel centre sits exactly on every cell centre
    m = rng.normal(size=(h, w)).astype(np.float32)
    up = upsample(m, (h * k, w * k))
    x, y = fa.map_peak(m, w * k, h * k)
    assert up[y, x] == pytest.approx(up.max(), abs=1e-6)
    row, col = np.unravel_index(np.argmax(m), m.shape)
    assert (y // k, x // k) == (row, col)


def test_centre_map_peaks_at_the_image_centre():
    for width, height in ((500, 375), (640, 480), (77, 51)):
        assert fa.map_peak(fa.centre_map(), width, height) == (width // 2, height // 2)


def test_measure_image_scores_difficult_pairs_apart(small_model):
    image = noise_image()
    pairs = [fa.Pair(0, [(1, 1, 16, 16)]), fa.Pair(2, [(17, 17, 32, 32)]), fa.Pair(1, [(5, 5, 8, 8)], difficult=True)]
    fractions, records = fa.measure_image(small_model, image, pairs, steps=3, rng=np.random.default_rng(0))
    assert len(records) == 3 * len(fa.METHODS) and len(fractions) == 4
    assert all((r["deletion"] is None) == r["difficult"] for r in records)
    rows = {r["method"]: r for r in fa.summarize(records)}
    assert all(r["pairs"] == 2 and r["difficult_pairs"] == 1 for r in rows.values())
    csra_records = [r for r in records if r["method"] == "csra" and not r["difficult"]]
    assert rows["csra"]["deletion_auc"] == pytest.approx(np.mean([r["deletion_auc"] for r in csra_records]))
    # the centre map peaks at pixel (16, 16): within 15 px of all three boxes, inside the second only
    assert rows["centre"]["pointing"] == 100.0 and rows["centre"]["pointing_difficult"] == 100.0
    _, records = fa.measure_image(small_model, image, pairs, methods=("centre",), curves=False, tolerance=0)
    assert [r["hit"] for r in records] == [False, True, False]
    assert fa.summarize(records, ("centre",))[0]["pointing"] == 50.0
