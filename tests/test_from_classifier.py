"""csra.from_classifier: CSRA on a torchvision ImageNet classifier, no training.

The reference numbers are computed here, by hand, from the torchvision
model's own modules (its trunk, its final linear layer), never through
csra's head. Random weights throughout; BatchNorm statistics are randomised
too so that eval-mode BatchNorm is not the identity.
"""
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision

import csra
from csra.download import cache_path

# one member of each supported family: (name, trunk by hand, final linear layer)
FAMILIES = {
    "resnet18": (lambda n, x: n.layer4(n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))))),
                 lambda n: n.fc),
    "efficientnet_b0": (lambda n, x: n.features(x), lambda n: n.classifier[1]),
    "densenet121": (lambda n, x: F.relu(n.features(x)), lambda n: n.classifier),
    "regnet_x_400mf": (lambda n, x: n.trunk_output(n.stem(x)), lambda n: n.fc),
}


def random_classifier(name, seed=0):
    torch.manual_seed(seed)
    net = torchvision.models.get_model(name, weights=None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
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
