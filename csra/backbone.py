"""torchvision ResNets without their pooling and fc: images -> feature maps (stride 32)."""
import torchvision
from torch import nn

from .download import fetch
from .weights import place_weights, read_state_dict

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class ResNetBackbone(nn.Module):
    """The convolutional trunk of a torchvision ResNet, with torchvision's module names."""

    def __init__(self, name="resnet101"):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"backbone must be one of {', '.join(RESNETS)}, got {name!r}")
        net = getattr(torchvision.models, name)(weights=None)
        self.name = name
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = net.fc.in_features

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_torchvision_state_dict(self, state_dict, source="state dict"):
        """Load a torchvision ResNet state dict; its fc (if any) is dropped."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        place_weights(self, state_dict, source)


def imagenet_weights(name):
    """torchvision's default ImageNet weights enum entry for this ResNet."""
    return torchvision.models.get_model_weights(name).IMAGENET1K_V1


def build_backbone(name="resnet101", pretrained=None, offline=None):
    """pretrained: None, "imagenet" (torchvision weights, cached by torch.hub) or a path."""
    backbone = ResNetBackbone(name)
    if pretrained is None:
        return backbone
    if pretrained == "imagenet":
        weights = imagenet_weights(name)
        path = fetch(weights.url, what=f"ImageNet weights for {name}", offline=offline)
    else:
        path = pretrained
    backbone.load_torchvision_state_dict(read_state_dict(path, what=f"{name} weights"), path)
    return backbone
