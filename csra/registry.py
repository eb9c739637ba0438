"""Named model configurations, as mmpretrain.get_model offers them."""
from .checkpoint import load_checkpoint
from .classes import VOC_CLASSES
from .model import build_model

MMPRETRAIN_VOC07_URL = ("https://download.openmmlab.com/mmclassification/v0/csra/"
                        "resnet101-csra_1xb16_voc07-448px_20220722-29efb40a.pth")

MODEL_CONFIGS = {
    "resnet101-csra_1xb16_voc07-448px": dict(
        build=dict(backbone="resnet101", num_classes=20, num_heads=1, lam=0.1,
                   image_size=448, class_names=VOC_CLASSES),
        weights=MMPRETRAIN_VOC07_URL,
        paper=dict(mAP=94.98, CF1=89.16, OF1=90.80),  # mmpretrain's figures for these weights
    ),
}


def list_models():
    return sorted(MODEL_CONFIGS)


def get_model(name, pretrained=False, offline=None):
    """A named model; pretrained=True fetches its released weights, a str is a path or URL."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    entry = MODEL_CONFIGS[name]
    if pretrained is False or pretrained is None:
        return build_model(**entry["build"]).eval()
    source = entry["weights"] if pretrained is True else pretrained
    build = entry["build"]
    return load_checkpoint(source, lam=build["lam"], image_size=build["image_size"],
                           class_names=build["class_names"], offline=offline)
