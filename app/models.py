"""The models the page offers, shared by all sessions and loaded at most once each.

The served model (VOC, or the embedded ImageNet classifier when no VOC
weights can be had; see app.weights) is loaded at start-up; the "ImageNet
classifier + CSRA, no training" option is loaded the first time someone picks
it. A model that cannot be loaded (offline, no cached weights) gives a
ModelUnavailable with a message for the page, and is tried again next time.
"""
import threading
from dataclasses import dataclass, field

import torch
import torchvision

import csra
from csra.download import cache_path

VOC = "voc"
IMAGENET = "imagenet"


class ModelUnavailable(RuntimeError):
    """A model option that cannot be loaded now; the message says why and what to do."""


def device_text(device):
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


@dataclass
class ModelOption:
    key: str
    label: str
    load: object                       # () -> CSRAModel
    threshold: float = 0.5             # default "present" threshold for this kind of model
    model: object = None
    error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class ModelStore:
    """Model options by key; get() loads lazily (once, under a lock) onto the device."""

    def __init__(self, options, device="cpu", banner="", banner_details=""):
        self.device = torch.device(device)
        self.options = {o.key: o for o in options}
        self.banner = banner   # plain text for the top of the page ("" when there is nothing to say)
        self.banner_details = banner_details   # plain text, folded under the banner

    @property
    def labels(self):
        return [o.label for o in self.options.values()]

    def key_for(self, label_or_key):
        for o in self.options.values():
            if label_or_key in (o.key, o.label):
                return o.key
        raise KeyError(f"unknown model {label_or_key!r}")

    def label_for(self, key):
        return self.options[self.key_for(key)].label

    def option(self, key):
        return self.options[self.key_for(key)]

    def get(self, key):
        option = self.option(key)
        if option.model is not None:
            return option.model
        with option.lock:
            if option.model is None:
                try:
                    model = option.load()
                except (csra.DownloadError, csra.CheckpointError, ValueError, OSError) as err:
                    option.error = str(err)
                    raise ModelUnavailable(f"{option.label}: cannot load it — {err}") from None
                option.model = csra.prepare_for_inference(model, self.device)
                option.error = ""
        return option.model


def classifier_loader(name="resnet50", pretrained=True, image_size=None, lam=0.1):
    """A loader for csra.from_classifier(name): torchvision ImageNet weights via torch.hub's cache."""
    def load():
        return csra.from_classifier(name, pretrained=pretrained, lam=lam, image_size=image_size)
    return load


def default_classifier():
    """The "no training" option's classifier: resnet50 when torchvision's weights for it are
    already in torch.hub's cache, else the embedded EfficientNet-Lite0 (its weights come with
    an installed package, so it works offline)."""
    url = torchvision.models.ResNet50_Weights.DEFAULT.url
    return "resnet50" if cache_path(url).is_file() else "efficientnet_lite0"


def classifier_label(name):
    return f"ImageNet classifier + CSRA, no training ({name}, 1000 classes)"


def default_store(voc_model, classifier="resnet50", device="cpu", classifier_loader_fn=None,
                  banner="", banner_details=""):
    """The page's two options: the served model (a CSRA model trained on VOC or on what its
    checkpoint says, or the embedded ImageNet classifier), and an ImageNet classifier + CSRA
    with no training (left out when it is the served model itself)."""
    n = voc_model.config.num_classes
    if voc_model.config.variant == "classifier":
        label, threshold = classifier_label(voc_model.config.backbone), 0.1
    else:
        label = (f"VOC model ({n} classes)" if tuple(voc_model.class_names) == csra.VOC_CLASSES
                 else f"CSRA model ({n} classes)")
        threshold = 0.5
    options = [ModelOption(VOC, label, load=lambda: voc_model, threshold=threshold)]
    if classifier and classifier_label(classifier) != label:
        load = classifier_loader_fn or classifier_loader(classifier)
        options.append(ModelOption(IMAGENET, classifier_label(classifier), load=load, threshold=0.1))
    store = ModelStore(options, device, banner=banner, banner_details=banner_details)
    store.get(VOC)
    return store


def model_info(model, device):
    """A dict describing the model, for the page and the JSON download."""
    cfg = model.config
    info = getattr(model, "info", None) or {}
    training = {str(k): v for k, v in (info.get("training") or {}).items()
                if isinstance(v, (int, float, str, bool))}  # figures, not histories
    return {
        "backbone": cfg.backbone,
        "variant": cfg.variant,
        "num_classes": cfg.num_classes,
        "heads": len(cfg.temperatures),
        "temperatures": list(cfg.temperatures),
        "lambda": float(model.lam),
        "image_size": cfg.image_size,
        "weights": str(info.get("source", "built in memory (random or test weights)")),
        "weights_format": info.get("format", ""),
        "training": training,
        "device": device_text(torch.device(device)),
    }


def model_info_markdown(model, device):
    i = model_info(model, device)
    kind = ("ImageNet classifier's own layers reused as a CSRA head (no training); softmax over "
            "1000 classes; the classifier's bias is part of the base" if i["variant"] == "classifier"
            else "trained CSRA head; independent sigmoid per class (multi-label)")
    temps = ", ".join(str(t) for t in i["temperatures"])
    lines = [
        f"**Model**: {i['backbone']} + CSRA — {i['heads']} head(s), T = {temps}; "
        f"{i['num_classes']} classes; input {i['image_size']}×{i['image_size']} px; "
        f"λ = {i['lambda']:g} (from the weights). {kind}.",
        f"**Weights**: `{i['weights']}`" + (f" ({i['weights_format']})" if i["weights_format"] else ""),
        f"**Device**: {i['device']}",
    ]
    if i["training"]:
        figures = ", ".join(f"{k} = {_fmt(v)}" for k, v in list(i["training"].items())[:10])
        lines.append(f"**Training figures (from the checkpoint)**: {figures}")
    return "  \n".join(lines)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
