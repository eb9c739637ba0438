"""The CSRA authors' ViT checkpoints (timm-style keys) mapped onto torchvision's ViT trunk.

Their VIT_CSRA (pipeline/vit_csra.py) is timm's ViT with the CSRA heads beside it:
patch_embed.proj, cls_token, pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}, norm, and classifier.multi_head.N.head.weight. torchvision names the
same tensors differently (its attention keeps q, k, v stacked the same way in
in_proj_weight), so the mapping is a renaming. The network is told by its width, depth
and patch size, the input size by the position embedding's grid (14 x 14 patches of 16
px: 224 px; their COCO releases: 28 x 28, 448 px), which is kept as it is (the loader
gives the trunk the file's grid). They fed (0.5, 0.5) normalised pixels.
"""
import re

from .weights import CheckpointError

# (embedding width, blocks, patch size) -> torchvision network
VIT_NAMES = {(768, 12, 16): "vit_b_16", (768, 12, 32): "vit_b_32", (1024, 24, 16): "vit_l_16",
             (1024, 24, 32): "vit_l_32", (1280, 32, 14): "vit_h_14"}
BLOCK_PARTS = {"norm1": "ln_1", "attn.qkv.weight": "self_attention.in_proj_weight",
               "attn.qkv.bias": "self_attention.in_proj_bias", "attn.proj": "self_attention.out_proj",
               "norm2": "ln_2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
TOP_LEVEL = {"patch_embed.proj.weight": "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias",
             "cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
             "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias"}
BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def is_authors_vit(state_dict):
    return "patch_embed.proj.weight" in state_dict


def _trunk_key(key):
    if key in TOP_LEVEL:
        return TOP_LEVEL[key]
    m = BLOCK_KEY.match(key)
    if m:
        for theirs, ours in BLOCK_PARTS.items():
            if m.group(2) == theirs or m.group(2).startswith(theirs + "."):
                return f"encoder.layers.encoder_layer_{m.group(1)}.{ours}{m.group(2)[len(theirs):]}"
    return None


def convert_authors_vit(state_dict, head_keys, source="checkpoint"):
    """(our backbone.* state dict, config kwargs) of an authors' ViT trunk; head_keys are handled by the caller."""
    missing = [k for k in ("cls_token", "pos_embed") if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source}: a ViT checkpoint without {' and '.join(missing)}")
    width = state_dict["cls_token"].shape[-1]
    patch = state_dict["patch_embed.proj.weight"].shape[-1]
    depth = len({m.group(1) for k in state_dict if (m := BLOCK_KEY.match(k))})
    name = VIT_NAMES.get((width, depth, patch))
    if name is None:
        raise CheckpointError(f"{source}: a ViT of width {width}, {depth} blocks and {patch} px patches is not one "
                              f"of torchvision's ({', '.join(VIT_NAMES.values())})")
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key in head_keys:
            continue
        ours = _trunk_key(key)
        if ours is None:
            unknown.append(key)
            continue
        converted["backbone." + ours] = value
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} ViT weights of unknown role: {', '.join(unknown[:5])}")
    trained_grid = int(round((state_dict["pos_embed"].shape[1] - 1) ** 0.5))
    config = dict(backbone=name, image_size=trained_grid * patch, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return converted, config
