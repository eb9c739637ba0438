"""Backbones, the model API, the registry and the ImageNet-weights path."""
import pytest
import torch
import torchvision

import csra
from csra import RESNETS, build_model, get_model


@pytest.mark.parametrize("name", RESNETS)
def test_every_backbone_builds_with_stride_32(name):
    model = build_model(name, num_classes=7, num_heads=2).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = model.forward_features(x)
        maps = model.head.score_maps(features)
        logits = model(x)
    channels = 512 if name in ("resnet18", "resnet34") else 2048
    assert features.shape == (1, channels, 2, 3)
    assert maps.shape == (1, 2, 7, 2, 3)
    assert logits.shape == (1, 7)


def test_448_input_gives_14x14_maps():
    model = build_model("resnet18", num_classes=3).eval()
    with torch.no_grad():
        assert model.forward_features(torch.rand(1, 3, 448, 448)).shape[-2:] == (14, 14)


def test_forward_is_head_of_features_and_lambda_is_settable():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=4, lam=0.1).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert torch.equal(model(x), model.head(features))
        maps = model.head.score_maps(features)
        model.lam = 0.6
        assert model.head.lam == 0.6 and model.lam == 0.6
        assert torch.allclose(model(x), model.head.logits_from_maps(maps, 0.6), atol=1e-6)


def test_prepare_for_inference_keeps_logits_and_score_maps():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5, num_heads=2, lam=0.3)
    model.train()  # batch norm in training mode would change the outputs: it must come back in eval mode
    x = torch.rand(2, 3, 96, 64)
    reference = build_model("resnet18", num_classes=5, num_heads=2, lam=0.3)
    reference.load_state_dict(model.state_dict())
    reference.eval()
    ready = csra.prepare_for_inference(model, "cpu")
    assert ready is model and not ready.training
    conv = ready.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(ready(x), reference(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ready.head.score_maps(ready.forward_features(x)),
                                   reference.head.score_maps(reference.forward_features(x)), rtol=1e-4, atol=1e-5)


def test_backbone_weights_from_a_torchvision_state_dict(tmp_path):
    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pth")  # with its fc, as torchvision ships it
    model = build_model("resnet18", num_classes=3, pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_var, net.bn1.running_var)


def test_backbone_state_dict_of_the_wrong_resnet_is_a_clear_error(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(csra.CheckpointError) as err:
        build_model("resnet18", num_classes=3, pretrained=str(tmp_path / "r34.pth"))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'r34.pth'}: weights do not fit")
    assert "96 unused: layer1.2.conv1.weight" in message and "\n" not in message


def test_imagenet_weights_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    with pytest.raises(csra.DownloadError) as err:
        build_model("resnet101", pretrained="imagenet")
    message = str(err.value)
    assert "resnet101-63fe2227.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


def test_imagenet_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    net = torchvision.models.resnet18(weights=None)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = csra.download.cache_path(url)
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    model = build_model("resnet18", pretrained="imagenet")
    assert torch.equal(model.backbone.conv1.weight, net.conv1.weight)


def test_unknown_backbone_and_bad_head_count_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; known: .*resnet18"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="num_heads must be one of"):
        build_model("resnet18", num_heads=3)


def test_registry_names_the_voc07_model():
    assert "resnet101-csra_1xb16_voc07-448px" in csra.list_models()
    model = get_model("resnet101-csra_1xb16_voc07-448px")
    c = model.config
    assert (c.backbone, c.num_classes, c.num_heads, c.lam, c.image_size) == ("resnet101", 20, 1, 0.1, 448)
    assert c.class_names == csra.VOC_CLASSES and c.mean == (0, 0, 0) and c.std == (1, 1, 1)
    with pytest.raises(ValueError, match="unknown model"):
        get_model("resnet9000-csra")


def test_registry_pretrained_offline_names_the_mmpretrain_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    with pytest.raises(csra.DownloadError, match="resnet101-csra_1xb16_voc07-448px_20220722-29efb40a.pth"):
        get_model("resnet101-csra_1xb16_voc07-448px", pretrained=True)
