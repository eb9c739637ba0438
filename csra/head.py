"""The CSRA head: class-specific residual attention (Zhu & Wu, ICCV 2021).

For every class c a 1x1 convolution gives a score map s_c over the feature
positions. The class logit is

    mean_p s_c(p)  +  lam * sum_p softmax(T * s_c)(p) * s_c(p)

and T = 99 stands for max pooling. Several heads, each with its own
temperature and its own 1x1 classifier, are summed.
"""
import torch
from torch import nn

MAX_POOL_T = 99
TEMPERATURES = {
    1: (1,),
    2: (1, 99),
    4: (1, 2, 4, 99),
    6: (1, 2, 3, 4, 5, 99),
    8: (1, 2, 3, 4, 5, 6, 7, 99),
}


def temperatures_for(num_heads):
    if num_heads not in TEMPERATURES:
        raise ValueError(
            f"num_heads must be one of {sorted(TEMPERATURES)}, got {num_heads!r}")
    return TEMPERATURES[num_heads]


class CSRAHead(nn.Module):
    """Score maps from features, and logits from score maps and lambda.

    normalize=True divides each class map by the L2 norm of that class's
    weights (the paper's trained head). normalize=False with bias=True is the
    training-free variant: a classifier's linear layer reused as 1x1 conv,
    its bias added once to the logit.
    """

    def __init__(self, in_channels, num_classes, num_heads=1, lam=0.1,
                 temperatures=None, normalize=True, bias=False):
        super().__init__()
        self.temperatures = tuple(temperatures or temperatures_for(num_heads))
        self.lam = float(lam)
        self.normalize = normalize
        self.classifiers = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 1, bias=False) for _ in self.temperatures)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    @property
    def num_heads(self):
        return len(self.temperatures)

    def score_maps(self, features):
        """(B, D, h, w) -> (B, num_heads, C, h, w) class score maps."""
        maps = []
        for conv in self.classifiers:
            s = conv(features)
            if self.normalize:
                s = s / conv.weight.flatten(1).norm(dim=1)[:, None, None]
            maps.append(s)
        return torch.stack(maps, dim=1)

    def attention_weights(self, maps):
        """softmax(T * s_c) over positions per head, one-hot at the peak for T = 99."""
        flat = maps.flatten(3)
        weights = []
        for k, t in enumerate(self.temperatures):
            if t == MAX_POOL_T:
                peak = flat[:, k].argmax(dim=-1, keepdim=True)
                weights.append(torch.zeros_like(flat[:, k]).scatter_(-1, peak, 1.0))
            else:
                weights.append(torch.softmax(t * flat[:, k], dim=-1))
        return torch.stack(weights, dim=1).view_as(maps)

    def logits_from_maps(self, maps, lam=None):
        """(B, num_heads, C, h, w) score maps -> (B, C) logits at lam (default self.lam)."""
        lam = self.lam if lam is None else lam
        flat = maps.flatten(3)
        logits = 0.0
        for k, t in enumerate(self.temperatures):
            s = flat[:, k]
            if t == MAX_POOL_T:
                att = s.amax(dim=-1)
            else:
                att = (torch.softmax(t * s, dim=-1) * s).sum(dim=-1)
            logits = logits + s.mean(dim=-1) + lam * att
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def forward(self, features):
        return self.logits_from_maps(self.score_maps(features))
