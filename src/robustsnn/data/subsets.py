"""Deterministic subsets of a split: balanced evaluation samples and shuffled calibration images."""

from __future__ import annotations

import torch


def stratified_indices(labels: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``ceil(n / K)`` indices of each class, in order, interleaved, cut to ``n``.

    Test splits may be grouped by class (e.g. the CIFAR-10 subset), so "the first n images"
    would be a few classes only; this keeps evaluations balanced and deterministic.
    """
    labels = labels.reshape(-1)
    n = min(int(n), labels.numel())
    classes = torch.unique(labels).tolist()
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    order: list[int] = []
    depth = 0
    while len(order) < n:
        added = False
        for idx in per_class:
            if depth < len(idx):
                order.append(int(idx[depth]))
                added = True
                if len(order) == n:
                    break
        if not added:
            break
        depth += 1
    return torch.tensor(order, dtype=torch.long)


def shuffled_indices(count: int, n: int, seed: int) -> torch.Tensor:
    """``n`` indices drawn without replacement from ``range(count)`` with a seeded generator."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(count, generator=generator)[: min(n, count)]
