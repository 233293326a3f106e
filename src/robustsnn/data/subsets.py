"""Deterministic subsets of a split: balanced evaluation samples and shuffled calibration images."""

from __future__ import annotations

import torch


def stratified_indices(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` samples taken class by class: the first ``n / K`` of each class.

    Test splits may be grouped by class (e.g. the CIFAR-10 subset), so "the first n images"
    would cover a few classes only. Samples are ranked within their class and taken by rank
    (ties broken by position); the result is sorted, i.e. in dataset order, and deterministic.
    """
    labels = labels.detach().reshape(-1).cpu()
    count = len(labels)
    n = max(0, min(int(n), count))
    rank = torch.empty(count, dtype=torch.int64)
    for cls in labels.unique():
        members = (labels == cls).nonzero().squeeze(1)
        rank[members] = torch.arange(len(members))
    order = torch.argsort(rank * count + torch.arange(count))
    return order[:n].sort().values


def shuffled_indices(count: int, n: int, seed: int) -> torch.Tensor:
    """``n`` indices drawn without replacement from ``range(count)`` with a seeded generator."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(count, generator=generator)[: min(n, count)]
