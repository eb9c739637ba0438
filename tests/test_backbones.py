"""Every backbone family: the trunk is the torchvision network minus its pooling and classifier,
its map feeds the one CSRA head, and a training step moves the backbone's weights."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

import csra
from csra.backbone import Backbone, family_of, vit_position_embedding
from training.engine import Precision, train_step

SIZE = 64
# name -> (feature width, grid at 64 px, the network's own pooled classifier on our map)
SMALL = {
    "resnet18": (512, 2, lambda net, f: net.fc(f.mean((2, 3)))),
    "convnext_tiny": (768, 2, lambda net, f: net.classifier(f.mean((2, 3), keepdim=True))),
    "efficientnet_b0": (1280, 2, lambda net, f: net.classifier(f.mean((2, 3)))),
    "efficientnet_v2_s": (1280, 2, lambda net, f: net.classifier(f.mean((2, 3)))),
    "regnet_y_400mf": (440, 2, lambda net, f: net.fc(f.mean((2, 3)))),
    "mobilenet_v3_small": (576, 2, lambda net, f: net.classifier(f.mean((2, 3)))),
    "swin_t": (768, 2, lambda net, f: net.head(f.mean((2, 3)))),
}


def images(seed=0, size=SIZE):
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_family_is_listed_and_names_resolve():
    names = csra.list_backbones()
    assert {family_of(n) for n in names} == set(csra.FAMILIES)
    for name in ("resnet101", "resnext50_32x4d", "wide_resnet50_2", "convnext_tiny", "efficientnet_b3",
                 "efficientnet_v2_s", "regnet_y_400mf", "mobilenet_v3_large", "swin_t", "swin_v2_t", "vit_b_16"):
        assert name in names
    assert "densenet121" not in names and "alexnet" not in names
    with pytest.raises(ValueError, match="unknown backbone 'densenet121'; known: .*resnet101"):
        csra.build_model("densenet121")


@pytest.mark.parametrize("name", SMALL)
def test_trunk_is_the_torchvision_network_without_pooling_and_classifier(name):
    width, grid, classify = SMALL[name]
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None).eval()
    trunk = Backbone(name)
    trunk.load_torchvision_state_dict(net.state_dict(), "torchvision")  # classifier entries dropped
    trunk.eval()
    x = images()
    with torch.no_grad():
        f = trunk(x)
        assert f.shape == (2, width, grid, grid) and trunk.out_channels == width
        torch.testing.assert_close(classify(net, f), net(x), rtol=1e-4, atol=1e-4)


def test_vit_map_is_the_patch_tokens_on_their_grid():
    """At the network's own size the map is torchvision's encoder output minus the class token."""
    torch.manual_seed(0)
    net = torchvision.models.vit_b_16(weights=None, image_size=SIZE).eval()
    trunk = Backbone("vit_b_16").eval()
    state = dict(net.state_dict())
    # our trunk is built at the pretraining size (14 x 14 grid); give it net's 4 x 4 embeddings resampled up
    pos = state["encoder.pos_embedding"]
    state["encoder.pos_embedding"] = vit_position_embedding(pos, 14, 14)
    trunk.load_torchvision_state_dict(state, "torchvision")
    x = images()
    with torch.no_grad():
        tokens = net._process_input(x)
        tokens = net.encoder(torch.cat([net.class_token.expand(2, -1, -1), tokens], dim=1))
        expected = tokens[:, 1:].transpose(1, 2).reshape(2, 768, 4, 4)
        # resampling 4x4 -> 14x14 -> 4x4 is not exact, so feed the trunk net's own grid directly
        trunk.encoder.pos_embedding.data = pos.clone()
        f = trunk(x)
    assert f.shape == (2, 768, 4, 4)
    torch.testing.assert_close(f, expected, rtol=1e-4, atol=1e-4)


def test_vit_position_embedding_resamples_only_the_grid():
    pos = torch.randn(1, 1 + 14 * 14, 8)
    assert vit_position_embedding(pos, 14, 14) is pos
    out = vit_position_embedding(pos, 4, 6)
    assert out.shape == (1, 1 + 24, 8)
    torch.testing.assert_close(out[:, 0], pos[:, 0])
    constant = torch.ones(1, 1 + 14 * 14, 8) * 3.0
    torch.testing.assert_close(vit_position_embedding(constant, 5, 5), torch.full((1, 26, 8), 3.0))


@pytest.mark.parametrize("name", [*SMALL, "vit_b_16"])
def test_head_and_one_training_step_on_every_family(name):
    torch.manual_seed(1)
    model = csra.build_model(name, num_classes=3, num_heads=2, lam=0.3, image_size=SIZE).eval()
    x = images(1)
    with torch.no_grad():
        f = model.forward_features(x)
        grid = 4 if name == "vit_b_16" else 2
        assert f.shape == (2, model.backbone.out_channels, grid, grid)
        maps = model.head.score_maps(f)
        assert maps.shape == (2, 2, 3, grid, grid)
        torch.testing.assert_close(model.head.logits_from_maps(maps), model.head(f))
        torch.testing.assert_close(model(x), model.head(f))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = train_step(model, x, torch.tensor([[1.0, 0, 1], [0, 1, 0]]), optimizer, Precision("cpu"))
    assert torch.isfinite(loss)
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"backbone", "head"}


def test_pixel_statistics_follow_the_family():
    assert csra.build_model("resnet18", image_size=SIZE).config.mean == (0.0, 0.0, 0.0)
    assert csra.build_model("mobilenet_v3_small", image_size=SIZE).config.std == (0.229, 0.224, 0.225)
    assert csra.build_model("mobilenet_v3_small", image_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1)).config.std \
        == (1.0, 1.0, 1.0)


def test_pretrained_from_a_local_torchvision_file(tmp_path):
    torch.manual_seed(2)
    net = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(net.state_dict(), tmp_path / "mnv3.pth")
    model = csra.build_model("mobilenet_v3_small", num_classes=4, image_size=SIZE, pretrained=tmp_path / "mnv3.pth")
    torch.testing.assert_close(model.backbone.features[0][0].weight, net.features[0][0].weight)


def test_imagenet_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(csra.DownloadError, match=r"ImageNet weights for swin_t .*swin_t-.*\.pth"):
        csra.build_model("swin_t", pretrained="imagenet", offline=True)


def test_checkpoint_of_another_family_round_trips(tmp_path):
    torch.manual_seed(3)
    model = csra.build_model("efficientnet_b0", num_classes=3, image_size=SIZE, class_names=("a", "b", "c")).eval()
    csra.save_checkpoint(tmp_path / "m.pth", model)
    loaded = csra.load_checkpoint(tmp_path / "m.pth")
    assert loaded.config.backbone == "efficientnet_b0" and loaded.class_names == ("a", "b", "c")
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert F.sigmoid(loaded(x)).shape == (2, 3)


@pytest.mark.parametrize("name", ["convnext_tiny", "vit_b_16"])
def test_head_lr_multiplier_finds_the_head_by_name_on_any_backbone(name):
    import argparse

    from training.schedule import warmup_step_schedule
    from training.train import build_optimizer
    model = csra.build_model(name, num_classes=3, image_size=SIZE)
    args = argparse.Namespace(lr=0.01, head_lr_mult=10.0, momentum=0.9, weight_decay=1e-4)
    optimizer = build_optimizer(model, args)
    backbone, head = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in model.head.parameters()}
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}
    schedule = warmup_step_schedule(optimizer, iters_per_epoch=4, warmup_epochs=2, step_epochs=4, gamma=0.1)

    def take_steps(count):
        for _ in range(count):
            optimizer.step()
            schedule.step()

    take_steps(3)  # the 4th step is half-way through the 8 warm-up steps
    assert (backbone["lr"], head["lr"]) == pytest.approx((0.005, 0.05))
    take_steps(13)  # the 17th step is the first of epoch 5: the first decay
    assert (backbone["lr"], head["lr"]) == pytest.approx((0.001, 0.01))
