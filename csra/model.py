"""A CSRA model: a torchvision backbone (csra.backbone) plus a CSRA head, with its configuration."""
import math
import numbers
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from .arguments import LAM_MAX, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .backbone import build_backbone, family_of
from .classes import default_class_names
from .head import TEMPERATURES, CSRAHead, temperatures_for
from .preprocess import Preprocessing


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and feed it images, stored in checkpoints."""
    backbone: str = "resnet101"
    num_classes: int = 20
    num_heads: int = 1
    lam: float = 0.1
    image_size: int = 448
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    class_names: tuple = field(default=())
    variant: str = "csra"  # "csra": trained CSRA head; "classifier": an ImageNet classifier's fc reused
    temperatures: tuple = ()  # default: the paper's list for num_heads

    def __post_init__(self):
        if self.variant not in ("csra", "classifier"):
            raise ValueError(f"config.variant must be 'csra' or 'classifier', got {self.variant!r}")
        self.check()
        if (self.variant == "csra" or not self.temperatures) and self.num_heads not in TEMPERATURES:
            raise ValueError(f"config.num_heads = {self.num_heads!r} "
                             f"(num_heads must be one of {sorted(TEMPERATURES)})")
        self.temperatures = tuple(self.temperatures) or temperatures_for(self.num_heads)
        if self.variant == "csra" and self.temperatures != temperatures_for(self.num_heads):
            raise ValueError(f"a trained CSRA head with {self.num_heads} heads uses temperatures "
                             f"{temperatures_for(self.num_heads)}, not {self.temperatures}")
        self.num_heads = len(self.temperatures)
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        self.class_names = tuple(self.class_names) or default_class_names(self.num_classes)
        if len(self.class_names) != self.num_classes or not all(isinstance(n, str) for n in self.class_names):
            raise ValueError(f"config.class_names: {len(self.class_names)} names for {self.num_classes} classes "
                             "(one string per class needed)")

    def check(self):
        """ValueError naming the first field that no model can work with (config.FIELD: why)."""
        def whole(value):
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)

        def real(value):
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        problems = [
            ("backbone", isinstance(self.backbone, str) and self.backbone, "a backbone name"),
            ("num_classes", whole(self.num_classes) and self.num_classes >= 1, "a whole number >= 1"),
            ("num_heads", whole(self.num_heads) and self.num_heads >= 1, "a whole number >= 1"),
            ("lam", real(self.lam) and 0 <= self.lam <= LAM_MAX, f"a number from 0 to {LAM_MAX:g}"),
            ("image_size", whole(self.image_size) and MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE,
             f"a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}"),
            ("mean", _triple(self.mean) and all(real(v) for v in self.mean), "three finite numbers"),
            ("std", _triple(self.std) and all(real(v) and v > 0 for v in self.std),
             "three finite numbers > 0"),
        ]
        for name, ok, wanted in problems:
            if not ok:
                raise ValueError(f"config.{name} = {getattr(self, name)!r}: must be {wanted}")

    def to_dict(self):
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _triple(value):
    return isinstance(value, (tuple, list)) and len(value) == 3


class CSRAModel(nn.Module):
    """backbone -> features (B, D, h, w) -> CSRA head -> logits (B, C)."""

    def __init__(self, backbone, head, config):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = config

    @property
    def lam(self):
        return self.head.lam

    @lam.setter
    def lam(self, value):
        self.head.lam = float(value)

    @property
    def class_names(self):
        return self.config.class_names

    @property
    def score_kind(self):
        """'softmax' for a wrapped ImageNet classifier (one label per image), else 'sigmoid' (multi-label)."""
        return "softmax" if self.config.variant == "classifier" else "sigmoid"

    def scores(self, logits):
        """Probabilities: a softmax over the classes for a wrapped classifier, else a sigmoid per class."""
        return torch.softmax(logits, dim=1) if self.score_kind == "softmax" else torch.sigmoid(logits)

    @property
    def preprocessing(self):
        return Preprocessing(self.config.image_size, self.config.mean, self.config.std)

    def forward_features(self, x):
        return self.backbone(x)

    def forward_head(self, features):
        return self.head(features)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


# Pixel statistics a backbone family is fed with when the caller gives none: the CSRA authors
# feed ResNets [0, 1] pixels and their ViT (0.5, 0.5) normalised ones; every other family gets
# the ImageNet statistics its torchvision weights were trained with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FAMILY_PIXELS = {"resnet": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


def default_pixels(backbone):
    """(mean, std) of the input pixels for this backbone when none are given."""
    return FAMILY_PIXELS.get(family_of(backbone), (IMAGENET_MEAN, IMAGENET_STD))


def build_model(backbone="resnet101", num_classes=20, num_heads=1, lam=0.1, pretrained=None,
                image_size=448, mean=None, std=None, class_names=(), offline=None):
    """A torchvision backbone (any name of csra.list_backbones()) + CSRA model.

    pretrained: None (random init), "imagenet" (torchvision's ImageNet weights
    for the backbone) or the path of a torchvision-format state dict of that
    network. The head always starts from random weights. mean/std default to
    the backbone family's (default_pixels).
    """
    default_mean, default_std = default_pixels(backbone)
    config = ModelConfig(backbone, num_classes, num_heads, lam, image_size,
                         default_mean if mean is None else mean, default_std if std is None else std,
                         class_names)
    trunk = build_backbone(backbone, pretrained, offline=offline)
    head = CSRAHead(trunk.out_channels, num_classes, num_heads, lam)
    return CSRAModel(trunk, head, config)


def model_from_config(config):
    """A randomly initialised model of this configuration (weights are loaded afterwards)."""
    if config.variant == "classifier":
        from .classifier import from_classifier
        return from_classifier(config.backbone, pretrained=False, lam=config.lam,
                               temperature=config.temperatures[0], image_size=config.image_size)
    return build_model(**{k: getattr(config, k) for k in (
        "backbone", "num_classes", "num_heads", "lam", "image_size", "mean", "std", "class_names")})
