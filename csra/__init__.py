"""CSRA: class-specific residual attention for multi-label image recognition."""
import os

# Apple MPS: run the few operations MPS lacks on the CPU; torch reads this when first imported.
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

from .backbone import RESNETS, ResNetBackbone, build_backbone
from .backbone import FAMILIES, Backbone, list_backbones
from .checkpoint import load_checkpoint, save_checkpoint
from .classes import COCO_CLASSES, VOC_CLASSES
from .classifier import CLASSIFIERS, from_classifier
from .device import DeviceError, pick_device, prepare_for_inference
from .download import DownloadError
from .head import MAX_POOL_T, TEMPERATURES, CSRAHead
from .model import CSRAModel, ModelConfig, build_model
from .preprocess import ImageError, Preprocessing, load_image, to_rgb
from .registry import MODEL_CONFIGS, get_model, list_models
from .weights import CheckpointError

__all__ = [
    "RESNETS", "ResNetBackbone", "build_backbone", "load_checkpoint", "save_checkpoint",
    "COCO_CLASSES", "VOC_CLASSES", "CLASSIFIERS", "from_classifier", "DeviceError", "pick_device", "prepare_for_inference",
    "DownloadError", "MAX_POOL_T", "TEMPERATURES", "CSRAHead",
    "CSRAModel", "ModelConfig", "build_model", "ImageError", "Preprocessing", "load_image",
    "to_rgb", "MODEL_CONFIGS", "get_model", "list_models", "CheckpointError",
    "FAMILIES", "Backbone", "list_backbones",
]
