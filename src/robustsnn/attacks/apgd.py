"""APGD: Auto-PGD, a step-size-free PGD with momentum.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Algorithm 1. Starting at step size ``eta = 2 * eps`` from
a random point of the ball, each iteration takes a projected sign-gradient step ``z`` and then
a momentum step ``x_{k+1} = Proj(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))`` with
``a = 0.75`` (``a = 1`` at the first step). At checkpoints ``w_j = ceil(p_j * n_iter)`` with
``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` the step size is
halved, and the iterate restarted from the best point so far, when

1. the loss increased in fewer than ``rho = 0.75`` of the steps since the last checkpoint, or
2. the step size was not halved at the last checkpoint and the best loss has not improved.

The output is per sample the first iterate that fools the model (the sample is then frozen and
no longer queried), else the highest-loss iterate over all restarts.

Args:
    eps: L-inf radius in pixels.
    n_iter: iterations per restart (100).
    loss: "ce" (``apgd-ce``) or "dlr" (``apgd-dlr``).
    n_restarts: restarts from new random points, each on the samples not yet fooled (1).
    rho: fraction of loss increases below which the step size is halved (0.75).
    momentum: weight ``a`` of the new step against the previous one (0.75).

Shapes: ``x [N, ...]`` in [0, 1], ``y [N]`` -> ``x_adv`` like ``x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    Attack,
    Model,
    WorstCase,
    begin_run,
    check_choice,
    check_fraction,
    check_positive_int,
    is_success,
    loss_and_grad,
    per_sample,
    predict_logits,
    project,
    signed_step,
    unit_linf_noise,
)
from robustsnn.attacks.losses import LOSSES, AttackLoss, get_loss
from robustsnn.attacks.registry import ATTACKS


def checkpoints(n_iter: int) -> list[int]:
    """Iterations ``w_j = ceil(p_j * n_iter)`` (j >= 1) at which the step size may be halved."""
    points: list[int] = []
    p_prev, p = 0.0, 0.22
    while p <= 1.0:
        w = math.ceil(p * n_iter - 1e-9)  # tolerate float error in p
        if w > 0 and (not points or w > points[-1]) and w <= n_iter:
            points.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return points


def apgd_run(
    model: Model,
    x: Tensor,
    y: Tensor,
    loss_target: Tensor | None,
    loss_fn: AttackLoss,
    best: WorstCase,
    idx: Tensor,
    *,
    eps: float,
    n_iter: int,
    rho: float,
    momentum: float,
    generator: torch.Generator,
) -> None:
    """One APGD run on the samples ``idx`` (global indices); results go into ``best``.

    Success is always misclassification (``argmax != y``); ``loss_target``, when given, only
    enters the loss (APGD-T). Samples stop being queried once they are fooled.
    """
    x0 = x[idx]
    y0 = y[idx]
    t0 = None if loss_target is None else loss_target[idx]
    n = x0.shape[0]
    if n == 0:
        return

    def evaluate(rows: Tensor, x_at: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t_rows = None if t0 is None else t0[rows]
        y_rows = y0[rows]
        logits, loss, grad = loss_and_grad(model, x_at, lambda z: loss_fn(z, y_rows, t_rows), rows)
        success = is_success(logits, y_rows)
        best.update(idx[rows], x_at, loss, success)
        return loss, grad, success

    begin_run(model, n)
    x_adv = project(x0 + eps * unit_linf_noise(x0, generator), x0, eps)
    all_rows = torch.arange(n, device=x.device)
    loss, grad, success = evaluate(all_rows, x_adv)
    live = ~success

    step = torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev = x_adv.clone()
    x_max, grad_max, loss_max = x_adv.clone(), grad.clone(), loss.clone()
    loss_hist = torch.zeros(n_iter + 1, n, device=x.device, dtype=loss.dtype)
    loss_hist[0] = loss
    marks = set(checkpoints(n_iter))
    last_mark = 0
    reduced_last = torch.zeros(n, dtype=torch.bool, device=x.device)
    loss_max_last = loss_max.clone()

    for it in range(1, n_iter + 1):
        rows = live.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        xa, xo = x_adv[rows], x0[rows]
        a = momentum if it > 1 else 1.0
        z = signed_step(xa, grad[rows], per_sample(step[rows], xa), xo, eps)
        x_new = project(xa + a * (z - xa) + (1 - a) * (xa - x_prev[rows]), xo, eps)
        x_prev[rows] = xa
        x_adv[rows] = x_new
        loss_r, grad_r, success_r = evaluate(rows, x_new)
        grad[rows] = grad_r
        loss_hist[it, rows] = loss_r
        up = loss_r > loss_max[rows]
        up_rows = rows[up]
        x_max[up_rows], grad_max[up_rows], loss_max[up_rows] = x_new[up], grad_r[up], loss_r[up]
        live[rows[success_r]] = False

        if it in marks:
            span = it - last_mark
            increases = (loss_hist[last_mark + 1 : it + 1] > loss_hist[last_mark:it]).sum(0)
            oscillating = increases < rho * span
            stalled = ~reduced_last & (loss_max_last >= loss_max)
            halve = oscillating | stalled
            step = torch.where(halve, step / 2, step)
            x_adv[halve] = x_max[halve]
            grad[halve] = grad_max[halve]
            reduced_last = halve
            loss_max_last = loss_max.clone()
            last_mark = it


class APGDRestarts(Attack):
    """Shared part of APGD and APGD-T: restarts of :func:`apgd_run` on the samples not yet
    fooled, with the attack's ``eps``, ``n_iter``, ``n_restarts``, ``rho`` and ``momentum``."""

    n_iter: int
    n_restarts: int
    rho: float
    momentum: float

    def run_restarts(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        loss_target: Tensor | None,
        loss_fn: AttackLoss,
        best: WorstCase,
        generator: torch.Generator,
    ) -> bool:
        """Up to ``n_restarts`` APGD runs into ``best``; False once every sample is fooled."""
        for _ in range(self.n_restarts):
            idx = best.remaining()
            if idx.numel() == 0:
                return False
            apgd_run(
                model,
                x,
                y,
                loss_target,
                loss_fn,
                best,
                idx,
                eps=self.eps,
                n_iter=self.n_iter,
                rho=self.rho,
                momentum=self.momentum,
                generator=generator,
            )
        return True


@ATTACKS.register("apgd-ce")
class APGD(APGDRestarts):
    """Untargeted APGD of Croce & Hein (2020) with the CE (default) or DLR loss."""

    default_loss = "ce"
    param_names = ("eps", "n_iter", "loss", "n_restarts", "rho", "momentum")

    def __init__(
        self,
        eps: float,
        n_iter: int = 100,
        loss: str | None = None,
        n_restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
    ) -> None:
        super().__init__(eps)
        self.n_iter = check_positive_int(n_iter, "apgd n_iter")
        self.loss = check_choice(loss or self.default_loss, "apgd loss", LOSSES)
        self.n_restarts = check_positive_int(n_restarts, "apgd n_restarts")
        self.rho = check_fraction(rho, "apgd rho")
        self.momentum = check_fraction(momentum, "apgd momentum")
        self.name = f"apgd-{self.loss}"

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        best = WorstCase(x, is_success(predict_logits(model, x), y))
        self.run_restarts(model, x, y, None, get_loss(self.loss), best, generator)
        return best.x


@ATTACKS.register("apgd-dlr")
class APGDDLR(APGD):
    """APGD with the DLR loss (``APGD(loss="dlr")``)."""

    default_loss = "dlr"
