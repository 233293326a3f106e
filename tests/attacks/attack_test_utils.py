"""Tiny models and exact robustness of linear classifiers, shared by the attack tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

SHAPE = (3, 4, 4)


def linear_problem(
    num_classes: int, n: int = 256, seed: int = 0, shape: tuple[int, ...] = SHAPE
) -> tuple[nn.Sequential, Tensor, Tensor]:
    """A random linear classifier on images ``[n, *shape]`` with labels = clean predictions."""
    g = torch.Generator().manual_seed(seed)
    dim = 1
    for s in shape:
        dim *= s
    linear = nn.Linear(dim, num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(num_classes, dim, generator=g))
        linear.bias.copy_(torch.randn(num_classes, generator=g))
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(n, *shape, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def exact_worst_margin(model: nn.Sequential, x: Tensor, y: Tensor, eps: float | Tensor) -> Tensor:
    """Exact minimum over the eps-ball within [0, 1] of ``z_y - max_{k != y} z_k``, per sample.

    For each class pair the margin is linear, so its minimum over the box is attained by taking
    each pixel to the end of ``[max(0, x - eps), min(1, x + eps)]`` that lowers it; the worst
    case of the multi-class margin is the minimum over the pairs.
    """
    linear = model[1]
    assert isinstance(linear, nn.Linear)
    weight, bias = linear.weight.detach(), linear.bias.detach()
    flat = x.flatten(1)
    radius = torch.as_tensor(eps, dtype=flat.dtype).reshape(-1, 1)
    low, high = (flat - radius).clamp(0, 1), (flat + radius).clamp(0, 1)
    diff = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # [n, K, D]
    margins = torch.minimum(diff * low[:, None], diff * high[:, None]).sum(-1)
    margins = margins + (bias[y][:, None] - bias[None])
    margins[torch.arange(len(y)), y] = float("inf")
    return margins.min(1).values


def exact_robust_count(model: nn.Sequential, x: Tensor, y: Tensor, eps: float) -> int:
    """Number of samples no perturbation within eps (and [0, 1]) misclassifies."""
    return int((exact_worst_margin(model, x, y, eps) > 0).sum())


def exact_min_distance(model: nn.Sequential, x: Tensor, y: Tensor, iters: int = 40) -> Tensor:
    """Smallest L-inf radius at which each sample can be misclassified (bisection)."""
    low, high = torch.zeros(len(y)), torch.ones(len(y))
    for _ in range(iters):
        mid = (low + high) / 2
        robust = exact_worst_margin(model, x, y, mid) > 0
        low, high = torch.where(robust, mid, low), torch.where(robust, high, mid)
    return high


def median_eps(model: nn.Sequential, x: Tensor, y: Tensor) -> float:
    """A radius at which half of the samples are robust, halfway between two samples' minimal
    distances (so no sample sits on the boundary up to rounding): the hardest test."""
    dist = exact_min_distance(model, x, y).sort().values
    half = len(dist) // 2
    return float((dist[half - 1] + dist[half]) / 2)


def robust_count(model: nn.Module, x_adv: Tensor, y: Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum())


class Center(nn.Module):
    """Normalization as a model's first layer (x - 0.5) / 0.25."""

    def forward(self, x: Tensor) -> Tensor:
        return (x - 0.5) / 0.25


def small_convnet(num_classes: int = 4, seed: int = 0) -> nn.Sequential:
    """A tiny conv net on 3x8x8 images (with dropout, so train/eval mode matters)."""
    model = nn.Sequential(
        Center(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.0),
        nn.Linear(4 * 4 * 4, num_classes),
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


# Reduced budgets so that tests over the whole registry stay fast.
FAST_PARAMS: dict[str, dict[str, int]] = {
    "apgd-ce": {"n_iter": 10},
    "apgd-dlr": {"n_iter": 10},
    "apgd-t": {"n_iter": 5, "n_target_classes": 2},
    "fab-t": {"n_iter": 5, "n_target_classes": 2},
    "square": {"n_queries": 40},
    "pgd": {"steps": 5},
    "pgd-dlr": {"steps": 5},
    "sapgd": {"steps": 8},
}
