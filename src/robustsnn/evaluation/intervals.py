"""Confidence intervals for accuracies: every reported accuracy carries n and a 95% interval.

An accuracy measured on n samples is a binomial proportion; the Wilson score interval (Wilson
1927) keeps its coverage near the nominal level for small n and for proportions near 0 or 1
(where robust accuracies live), unlike the normal approximation, and never leaves [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal distribution."""


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for ``successes`` out of ``n`` (``(0, 1)`` if n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def accuracy_summary(successes: int, n: int) -> dict[str, Any]:
    """``{"accuracy", "n", "ci95": [low, high], "method": "wilson"}`` for JSON results."""
    low, high = wilson_interval(successes, n)
    return {
        "accuracy": successes / n if n else None,
        "n": n,
        "ci95": [low, high],
        "method": "wilson",
    }


def format_accuracy(accuracy: float | None, n: int, *, digits: int = 1) -> str:
    """``"40.7% [35.3, 46.4] n=300"``: percent, Wilson 95% interval and n, for tables."""
    if accuracy is None or n <= 0:
        return "n/a"
    successes = round(accuracy * n)
    low, high = wilson_interval(successes, n)
    return f"{100 * accuracy:.{digits}f}% [{100 * low:.{digits}f}, {100 * high:.{digits}f}] n={n}"


def paired_ratio_interval(
    numerator: Sequence[bool],
    denominator: Sequence[bool],
    *,
    resamples: int = 4000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any] | None:
    """The ratio of two accuracies measured on the **same** samples, with a paired bootstrap
    percentile interval (e.g. an SNN's robust accuracy over its ANN's, image by image).

    Resampling images (not the two accuracies independently) keeps the correlation between
    the two models' outcomes on each image, which an unpaired interval would ignore. Returns
    ``{"ratio", "ci95": [low, high], "n", "method"}``, or None when the denominator counts no
    success (the ratio is undefined). Deterministic for a given ``seed``.
    """
    import torch

    a = torch.tensor([bool(v) for v in numerator], dtype=torch.float64)
    b = torch.tensor([bool(v) for v in denominator], dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.numel()} vs {b.numel()}")
    n = int(a.numel())
    if n == 0 or float(b.sum()) == 0:
        return None
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(n, (resamples, n), generator=generator)
    num, den = a[rows].sum(1), b[rows].sum(1)
    ratios = (num / den)[den > 0]
    tail = (1 - level) / 2
    low, high = torch.quantile(ratios, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return {
        "ratio": float(a.sum() / b.sum()),
        "ci95": [float(low), float(high)],
        "n": n,
        "method": f"paired bootstrap ({resamples} resamples, percentile)",
    }


def format_ratio(summary: dict[str, Any] | None) -> str:
    """``"0.82x [0.65, 1.01]"`` (or ``"n/a"``)."""
    if not summary:
        return "n/a"
    low, high = summary["ci95"]
    return f"{summary['ratio']:.2f}x [{low:.2f}, {high:.2f}]"
