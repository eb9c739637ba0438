"""The CSRA authors' ViT checkpoints (timm-style keys) load onto torchvision's ViT and give the logits
their own network would: checked against a forward pass written out from their keys."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import csra
from csra import CheckpointError, load_checkpoint
from csra.backbone import vit_position_embedding

DIM, DEPTH, PATCH, HEADS, GRID = 768, 12, 16, 12, 14


def authors_vit_state(num_classes=20, num_heads=2, seed=0, grid=GRID):
    """Random weights in the layout of the authors' VIT_B16_224_CSRA (as saved with nn.DataParallel)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.02: torch.randn(*shape, generator=g) * s  # noqa: E731
    state = {"patch_embed.proj.weight": r(DIM, 3, PATCH, PATCH), "patch_embed.proj.bias": r(DIM),
             "cls_token": r(1, 1, DIM), "pos_embed": r(1, 1 + grid * grid, DIM),
             "norm.weight": 1 + r(DIM, s=0.1), "norm.bias": r(DIM)}
    for n in range(DEPTH):
        b = f"blocks.{n}."
        state.update({b + "norm1.weight": 1 + r(DIM, s=0.1), b + "norm1.bias": r(DIM),
                      b + "attn.qkv.weight": r(3 * DIM, DIM), b + "attn.qkv.bias": r(3 * DIM),
                      b + "attn.proj.weight": r(DIM, DIM), b + "attn.proj.bias": r(DIM),
                      b + "norm2.weight": 1 + r(DIM, s=0.1), b + "norm2.bias": r(DIM),
                      b + "mlp.fc1.weight": r(4 * DIM, DIM), b + "mlp.fc1.bias": r(4 * DIM),
                      b + "mlp.fc2.weight": r(DIM, 4 * DIM), b + "mlp.fc2.bias": r(DIM)})
    for k in range(num_heads):
        state[f"classifier.multi_head.{k}.head.weight"] = r(num_classes, DIM, 1, 1, s=1.0)
    return {"module." + k: v for k, v in state.items()}


def authors_logits(state, x, lam, temperatures):
    """Their VIT_CSRA forward (timm blocks + CSRA heads), written out from the keys."""
    s = {k.removeprefix("module."): v for k, v in state.items()}
    ln = lambda t, p: F.layer_norm(t, (DIM,), s[p + ".weight"], s[p + ".bias"], eps=1e-6)  # noqa: E731
    lin = lambda t, p: t @ s[p + ".weight"].T + s[p + ".bias"]  # noqa: E731
    t = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=PATCH)
    b, _, h, w = t.shape
    t = torch.cat([s["cls_token"].expand(b, -1, -1), t.flatten(2).transpose(1, 2)], 1) + s["pos_embed"]
    for n in range(DEPTH):
        p = f"blocks.{n}."
        qkv = lin(ln(t, p + "norm1"), p + "attn.qkv").reshape(b, -1, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        att = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) * (DIM // HEADS) ** -0.5, -1)
        t = t + lin((att @ qkv[2]).transpose(1, 2).reshape(b, -1, DIM), p + "attn.proj")
        t = t + lin(F.gelu(lin(ln(t, p + "norm2"), p + "mlp.fc1")), p + "mlp.fc2")
    f = ln(t, "norm")[:, 1:].transpose(1, 2)  # B, D, hw
    logits = 0
    for k, temp in enumerate(temperatures):
        wk = s[f"classifier.multi_head.{k}.head.weight"][:, :, 0, 0]
        score = torch.einsum("bdp,cd->bcp", f, wk) / wk.norm(dim=1)[None, :, None]
        att = score.amax(-1) if temp == 99 else (torch.softmax(temp * score, -1) * score).sum(-1)
        logits = logits + score.mean(-1) + lam * att
    return logits


def test_authors_vit_checkpoint_gives_their_logits(tmp_path):
    state = authors_vit_state(num_classes=14, num_heads=2)
    torch.save(state, tmp_path / "vit_wider.pth")
    model = load_checkpoint(tmp_path / "vit_wider.pth", lam=0.3)
    c = model.config
    assert (c.backbone, c.num_classes, c.num_heads, c.image_size) == ("vit_b_16", 14, 2, 224)
    assert c.mean == (0.5, 0.5, 0.5) and model.info["format"] == "authors-vit"
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        maps = model.head.score_maps(model.forward_features(x))
        theirs = authors_logits(state, x, 0.3, (1, 99))
    assert maps.shape == (1, 2, 14, GRID, GRID)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.head.logits_from_maps(maps, lam=0.0),
                               authors_logits(state, x, 0.0, (1, 99)), rtol=1e-4, atol=1e-4)


def test_authors_vit_with_80_classes_gets_coco_names_and_reloads_as_ours(tmp_path):
    torch.save(authors_vit_state(num_classes=80, num_heads=1, seed=2), tmp_path / "vit_coco.pth")
    model = load_checkpoint(tmp_path / "vit_coco.pth")
    assert model.class_names == csra.COCO_CLASSES
    csra.save_checkpoint(tmp_path / "ours.pth", model)
    again = load_checkpoint(tmp_path / "ours.pth")
    x = torch.rand(1, 3, 64, 64)  # another input size: position embeddings resampled to 4 x 4
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
        assert again.forward_features(x).shape == (1, DIM, 4, 4)


def test_authors_vit_trained_at_another_size_and_broken_files(tmp_path):
    state = authors_vit_state(num_classes=3, num_heads=1, grid=24)  # 384 px
    torch.save(state, tmp_path / "vit384.pth")
    assert load_checkpoint(tmp_path / "vit384.pth").config.image_size == 384
    state["module.blocks.3.attn.extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth: 1 ViT weights of unknown role: blocks\.3\.attn\.extra\.weight"):
        load_checkpoint(tmp_path / "odd.pth")
    small = {k: v for k, v in authors_vit_state(num_classes=3, num_heads=1).items() if ".11." not in k}
    torch.save(small, tmp_path / "depth11.pth")
    with pytest.raises(CheckpointError, match=r"a ViT of width 768, 11 blocks and 16 px patches is not one of"):
        load_checkpoint(tmp_path / "depth11.pth")


def test_position_resampling_keeps_the_class_entry_and_constant_grids():
    pos = torch.randn(1, 1 + 24 * 24, 5)
    out = vit_position_embedding(pos, 14, 14)
    assert out.shape == (1, 1 + 14 * 14, 5) and torch.equal(out[:, 0], pos[:, 0])
    assert vit_position_embedding(pos, 24, 24) is pos
    flat = torch.full((1, 1 + 24 * 24, 5), 2.0)
    torch.testing.assert_close(vit_position_embedding(flat, 14, 14), torch.full((1, 197, 5), 2.0))


def test_authors_vit_trained_at_448_px_keeps_its_28_by_28_positions_and_their_logits(tmp_path):
    """Their COCO ViTs are 448 px releases: the file's 28 x 28 position embedding is used as it is
    (before: squeezed to 14 x 14 at load and stretched back at run time, 1.2e-2 off their logits)."""
    state = authors_vit_state(num_classes=5, num_heads=1, seed=4, grid=28)
    torch.save(state, tmp_path / "vit448.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trained size: nothing is resampled, nothing said
        model = load_checkpoint(tmp_path / "vit448.pth", lam=0.5)
    assert model.config.image_size == 448
    assert torch.equal(model.backbone.encoder.pos_embedding, state["module.pos_embed"])
    x = torch.rand(1, 3, 448, 448, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours, theirs = model(x), authors_logits(state, x, 0.5, (1,))
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-4
    csra.save_checkpoint(tmp_path / "ours.pth", model)  # our own format keeps the 28 x 28 grid too
    again = load_checkpoint(tmp_path / "ours.pth")
    assert torch.equal(again.backbone.encoder.pos_embedding, state["module.pos_embed"])
    with pytest.warns(UserWarning, match=r"vit448\.pth: position embeddings of a 28x28 patch grid are resampled "
                                         r"to 14x14 for 224 px input \(the checkpoint's size: 448 px\)"):
        smaller = load_checkpoint(tmp_path / "vit448.pth", image_size=224)
    assert smaller.forward_features(torch.rand(1, 3, 224, 224)).shape == (1, DIM, 14, 14)
