"""torchvision classification networks without their pooling and classifier: images -> (B, D, h, w).

FAMILIES is the one place that says how each family yields its feature map:
which of the network's modules the trunk keeps (under torchvision's own names,
so torchvision state dicts load as they are), which entries of a classifier
state dict are dropped, the feature width D, and how the kept modules turn an
image into the map. A CSRA head then works the same on every family.
"""
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .download import fetch
from .weights import place_weights, read_state_dict

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
RESNET_MODULES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _apply_in_order(trunk, x):
    for name in trunk.family.modules:
        x = getattr(trunk, name)(x)
    return x


def _swin_map(trunk, x):
    """Swin's stages and norm work channels-last (B, h, w, D): permute to (B, D, h, w)."""
    return trunk.norm(trunk.features(x)).permute(0, 3, 1, 2)


def _vit_map(trunk, x):
    """Patch tokens after the encoder, class token dropped, back on their h x w grid."""
    x = trunk.conv_proj(x)
    b, d, h, w = x.shape
    tokens = torch.cat([trunk.class_token.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    encoder = trunk.encoder
    tokens = encoder.ln(encoder.layers(encoder.dropout(tokens + vit_position_embedding(encoder.pos_embedding, h, w))))
    return tokens[:, 1:].transpose(1, 2).reshape(b, d, h, w)


def position_grid(pos):
    """g of (1, 1 + g*g, D) ViT position embeddings (a class entry, then a g x g patch grid), else None."""
    if not torch.is_tensor(pos) or pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[1] < 2:
        return None
    grid = math.isqrt(pos.shape[1] - 1)
    return grid if grid * grid == pos.shape[1] - 1 else None


def vit_position_embedding(pos, h, w):
    """(1, 1 + g*g, D) position embeddings for an h x w patch grid: the grid part resampled bicubically."""
    grid = position_grid(pos)
    if (h, w) == (grid, grid):
        return pos
    cls, patches = pos[:, :1], pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.flatten(2).transpose(1, 2)], dim=1)


@dataclass(frozen=True)
class Family:
    pattern: str  # regular expression on torchvision model names
    modules: tuple  # the network's modules the trunk keeps, in forward order
    classifier: tuple  # state-dict prefixes of the parts the trunk drops
    width: object  # net -> D, the channels of the feature map
    feature_map: object = _apply_in_order  # (trunk, images) -> (B, D, h, w)


FAMILIES = {
    "resnet": Family(r"(resnet\d+|resnext\d+_\w+|wide_resnet\d+_2)", RESNET_MODULES, ("fc.",),
                     lambda net: net.fc.in_features),
    "convnext": Family(r"convnext_\w+", ("features",), ("classifier.",),
                       lambda net: net.classifier[-1].in_features),
    "efficientnet": Family(r"efficientnet_(b\d|v2_[sml])", ("features",), ("classifier.",),
                           lambda net: net.classifier[-1].in_features),
    "regnet": Family(r"regnet_[xy]_\w+", ("stem", "trunk_output"), ("fc.",), lambda net: net.fc.in_features),
    "mobilenet_v3": Family(r"mobilenet_v3_(small|large)", ("features",), ("classifier.",),
                           lambda net: net.classifier[0].in_features),
    "swin": Family(r"swin_(v2_)?[tsb]", ("features", "norm"), ("head.",), lambda net: net.head.in_features,
                   _swin_map),
    "vit": Family(r"vit_[bhl]_\d+", ("conv_proj", "class_token", "encoder"), ("heads.",),
                  lambda net: net.hidden_dim, _vit_map),
}


def family_of(name):
    """The FAMILIES key of a torchvision model name, or None."""
    for key, family in FAMILIES.items():
        if re.fullmatch(family.pattern, str(name)):
            return key
    return None


def list_backbones():
    """Every torchvision model name build_model accepts as backbone."""
    names = torchvision.models.list_models(module=torchvision.models)
    return sorted(n for n in names if family_of(n))


class Backbone(nn.Module):
    """The feature trunk of torchvision model `name`, with torchvision's module names."""

    def __init__(self, name="resnet101"):
        super().__init__()
        key = family_of(name)
        if key is None or name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
        net = torchvision.models.get_model(name, weights=None)
        self.name, self.family = name, FAMILIES[key]
        for module in self.family.modules:
            setattr(self, module, getattr(net, module))
        self.out_channels = self.family.width(net)

    def forward(self, x):
        return self.family.feature_map(self, x)

    def take_position_grid(self, pos):
        """A ViT trunk takes the grid of position embeddings `pos` about to be loaded into it (28 x 28 for a
        448 px checkpoint) instead of torchvision's 14 x 14, so they are used unchanged at their own size
        (and resampled at run time for another one only). Returns that grid, or None (not a ViT, or `pos`
        does not fit: place_weights names the problem)."""
        if self.family is not FAMILIES["vit"]:
            return None
        own = self.encoder.pos_embedding
        if position_grid(pos) is None or pos.shape[2] != own.shape[2]:
            return None
        if pos.shape != own.shape:
            self.encoder.pos_embedding = nn.Parameter(own.new_empty(pos.shape))
        return position_grid(pos)

    def load_torchvision_state_dict(self, state_dict, source="state dict"):
        """Load a torchvision classifier's state dict; its classifier entries are dropped."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(self.family.classifier)}
        place_weights(self, state_dict, source)


def ResNetBackbone(name="resnet101"):
    """A ResNet trunk (kept for callers of the first API); any name of list_backbones() works."""
    if name not in RESNETS:
        raise ValueError(f"backbone must be one of {', '.join(RESNETS)}, got {name!r}")
    return Backbone(name)


def imagenet_weights(name):
    """torchvision's first ImageNet weights of this network (IMAGENET1K_V1, the CSRA authors' ResNet init)."""
    return torchvision.models.get_model_weights(name).IMAGENET1K_V1


def build_backbone(name="resnet101", pretrained=None, offline=None):
    """pretrained: None, "imagenet" (torchvision weights, cached by torch.hub) or a path."""
    backbone = Backbone(name)
    if pretrained is None:
        return backbone
    if pretrained == "imagenet":
        weights = imagenet_weights(name)
        path = fetch(weights.url, what=f"ImageNet weights for {name}", offline=offline)
    else:
        path = pretrained
    backbone.load_torchvision_state_dict(read_state_dict(path, what=f"{name} weights"), path)
    return backbone
