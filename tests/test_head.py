"""CSRA head math against an independent, loop-based implementation."""
import math

import pytest
import torch

from csra import TEMPERATURES, CSRAHead


def reference_logits(features, weights, temperatures, lam):
    """Per image, class and head: plain Python loops over positions, float64."""
    B, D, H, W = features.shape
    out = torch.zeros(B, weights[0].shape[0], dtype=torch.float64)
    for b in range(B):
        for k, T in enumerate(temperatures):
            w = weights[k].double()
            for c in range(w.shape[0]):
                norm = math.sqrt(sum(float(v) ** 2 for v in w[c]))
                scores = [float(features[b, :, i, j].double() @ w[c]) / norm
                          for i in range(H) for j in range(W)]
                base = sum(scores) / len(scores)
                if T == 99:
                    att = max(scores)
                else:
                    top = max(T * s for s in scores)  # shift for a stable softmax
                    e = [math.exp(T * s - top) for s in scores]
                    att = sum(ei * s for ei, s in zip(e, scores)) / sum(e)
                out[b, c] += base + lam * att
    return out


def head_weights(head):
    return [conv.weight.detach()[:, :, 0, 0] for conv in head.classifiers]


@pytest.mark.parametrize("num_heads", [1, 2, 4, 6, 8])
@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5, 1.7])
def test_head_matches_loop_reference(num_heads, lam):
    g = torch.Generator().manual_seed(1000 * num_heads + int(lam * 10))
    head = CSRAHead(in_channels=6, num_classes=3, num_heads=num_heads, lam=lam)
    for conv in head.classifiers:
        conv.weight.data = torch.randn(conv.weight.shape, generator=g)
    features = torch.randn(2, 6, 3, 4, generator=g)
    expected = reference_logits(features, head_weights(head), TEMPERATURES[num_heads], lam)
    got = head(features).double()
    rel = ((got - expected).abs() / expected.abs().clamp_min(1e-3)).max().item()
    assert rel < 1e-5


def test_temperature_99_is_max_pooling_not_a_soft_softmax():
    head = CSRAHead(4, 2, num_heads=2, lam=1.0)  # temperatures (1, 99)
    maps = torch.zeros(1, 2, 2, 2, 2)
    maps[0, 1, 0] = torch.tensor([[0.0, 0.5], [0.49, 0.1]])  # softmax(99 s) would not be one-hot
    maps[0, 1, 1] = torch.tensor([[-3.0, -2.0], [-1.0, -4.0]])
    logits = head.logits_from_maps(maps, lam=1.0)
    # head 0 maps are zero; head 1: mean + 1.0 * max
    assert torch.allclose(logits[0], torch.tensor([1.09 / 4 + 0.5, -10.0 / 4 - 1.0]))


def test_temperatures_by_head_count_and_bad_count():
    assert CSRAHead(8, 2, num_heads=4).temperatures == (1, 2, 4, 99)
    assert CSRAHead(8, 2, num_heads=8).temperatures == (1, 2, 3, 4, 5, 6, 7, 99)
    for bad in (0, 3, 5, 7, 9):
        with pytest.raises(ValueError, match="num_heads must be one of"):
            CSRAHead(8, 2, num_heads=bad)


@pytest.mark.parametrize("num_heads", [1, 2, 4, 6, 8])
def test_logits_from_cached_maps_equal_head_forward(num_heads):
    torch.manual_seed(num_heads)
    head = CSRAHead(16, 5, num_heads=num_heads, lam=0.1)
    features = torch.randn(3, 16, 5, 5)
    maps = head.score_maps(features)
    assert maps.shape == (3, num_heads, 5, 5, 5)
    for lam in torch.rand(4).tolist():
        head.lam = lam
        assert torch.allclose(head.logits_from_maps(maps, lam), head(features), atol=1e-6)


def test_score_maps_are_divided_by_each_class_weight_norm():
    head = CSRAHead(3, 2, lam=0.0)
    head.classifiers[0].weight.data = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]).view(2, 3, 1, 1)
    features = torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(head.score_maps(features).flatten(), torch.tensor([7.0 / 5.0, 1.0]))


@pytest.mark.parametrize("num_heads", [1, 4])
def test_logit_is_score_map_pooled_by_effective_weights(num_heads):
    """logit = sum_k sum_p s(p) * (1/HW + lam * attention(p)), attention one-hot for T = 99."""
    torch.manual_seed(3)
    head = CSRAHead(8, 4, num_heads=num_heads)
    maps = head.score_maps(torch.randn(2, 8, 3, 3))
    att = head.attention_weights(maps)
    assert torch.allclose(att.flatten(3).sum(-1), torch.ones(2, num_heads, 4))
    lam = 0.37
    pooled = (maps * (1.0 / 9 + lam * att)).flatten(3).sum(-1).sum(1)
    assert torch.allclose(pooled, head.logits_from_maps(maps, lam), atol=1e-5)


def test_lambda_changes_logits_without_touching_weights():
    head = CSRAHead(8, 4, num_heads=2, lam=0.1)
    features = torch.randn(1, 8, 4, 4)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    low = head(features)
    head.lam = 0.9
    high = head(features)
    assert not torch.allclose(low, high)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
