"""Square Attack (L-inf): a score-based black-box attack by random search.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020, Algorithm 1 with the L-inf proposal
distribution. The start is a random vertex of the ball made of vertical stripes (each column
of each channel at ``x +- eps``). Each iteration picks, per sample, a random square window of
side ``s`` and sets it, per channel, to ``x + eps`` or ``x - eps``; the proposal is kept when
it lowers the margin loss ``z_y - max_{i != y} z_i``. A sample stops being queried once its
margin is negative. ``s = round(sqrt(p * H * W))`` shrinks with the schedule of ``p``: starting
at ``p_init`` it is halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
(rescaled from a 10,000-query budget to ``n_queries``).

Only forward passes are used (``torch.no_grad``); gradients play no role, which makes the
attack a check against gradient masking. After each call, ``self.last_curve`` holds
``(queries, accuracy)`` pairs, accuracy over the batch given when every sample may use at most
that many queries (query 0 is the clean input; monotone non-increasing), and
``self.last_queries`` holds per sample the number of queries that fooled it (0: misclassified
clean, -1: never fooled).

Args:
    eps: L-inf radius in pixels.
    n_queries: query budget per sample including the initial one (5000).
    p_init: initial fraction of pixels changed per step (0.8 for L-inf).

Shapes: ``x [N, C, H, W]`` in [0, 1], ``y [N]`` -> ``x_adv`` like ``x``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    Attack,
    Model,
    check_fraction,
    check_positive_int,
    logits_of,
    project,
    random_int,
    random_sign,
)
from robustsnn.attacks.losses import margin
from robustsnn.attacks.registry import ATTACKS
from robustsnn.errors import UserError

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64))
_SCHEDULE_TAIL = ((6000, 128), (8000, 256))
_RESAMPLE_TRIES = 10


def square_fraction(p_init: float, iteration: int, n_queries: int) -> float:
    """Fraction ``p`` of pixels changed at ``iteration`` (the paper's piecewise schedule)."""
    it = int(iteration / n_queries * 10000)
    for bound, divisor in (*_SCHEDULE, *_SCHEDULE_TAIL):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


@ATTACKS.register("square")
class Square(Attack):
    """Black-box L-inf Square Attack of Andriushchenko et al. (2020)."""

    def __init__(self, eps: float, n_queries: int = 5000, p_init: float = 0.8) -> None:
        super().__init__(eps)
        self.n_queries = check_positive_int(n_queries, "square n_queries")
        self.p_init = check_fraction(p_init, "square p_init")
        if self.p_init == 0:
            raise UserError("square p_init must be > 0")
        self.name = "square"
        self.last_curve: list[tuple[int, float]] = []
        self.last_queries: Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "n_queries": self.n_queries, "p_init": self.p_init}

    @torch.no_grad()
    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        if x.dim() != 4:
            raise UserError(f"square attack needs images [N, C, H, W], got shape {tuple(x.shape)}")
        n, channels, height, width = x.shape
        queries = torch.full((n,), -1, dtype=torch.long, device=x.device)
        margin_best = margin(logits_of(model, x), y)
        queries[margin_best <= 0] = 0
        curve = [(0, int((margin_best > 0).sum()) / n)]
        x_best = x.clone()

        idx = (margin_best > 0).nonzero().squeeze(1)
        if idx.numel():
            stripes = random_sign((idx.numel(), channels, 1, width), generator, x)
            x_init = project(x[idx] + self.eps * stripes, x[idx], self.eps)
            x_best[idx] = x_init
            margin_best[idx] = margin(logits_of(model, x_init), y[idx])
            queries[idx[margin_best[idx] <= 0]] = 1
        curve.append((1, int((margin_best > 0).sum()) / n))

        rows = torch.arange(height, device=x.device).view(1, 1, height, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, 1, width)
        for q in range(2, self.n_queries + 1):
            idx = (margin_best > 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            p = square_fraction(self.p_init, q - 2, self.n_queries)
            side = max(int(round(math.sqrt(p * height * width))), 1)
            side = max(min(side, min(height, width) - 1), 1)
            top = random_int(height - side + 1, idx.numel(), generator, x).view(-1, 1, 1, 1)
            left = random_int(width - side + 1, idx.numel(), generator, x).view(-1, 1, 1, 1)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            x_cur, x_clean = x_best[idx], x[idx]
            x_new = x_cur
            todo = torch.ones(idx.numel(), dtype=torch.bool, device=x.device)
            for _ in range(_RESAMPLE_TRIES):
                signs = random_sign((idx.numel(), channels, 1, 1), generator, x)
                vertex = project(x_clean + self.eps * signs, x_clean, self.eps)
                proposal = torch.where(window, vertex, x_cur)
                x_new = torch.where(todo.view(-1, 1, 1, 1), proposal, x_new)
                todo = (x_new - x_cur).flatten(1).abs().amax(1) < 1e-7
                if not bool(todo.any()):
                    break
            margin_new = margin(logits_of(model, x_new), y[idx])
            improved = margin_new < margin_best[idx]
            x_best[idx[improved]] = x_new[improved]
            margin_best[idx[improved]] = margin_new[improved]
            queries[idx[margin_best[idx] <= 0]] = q
            curve.append((q, int((margin_best > 0).sum()) / n))

        self.last_curve = curve
        self.last_queries = queries.cpu()
        return x_best
