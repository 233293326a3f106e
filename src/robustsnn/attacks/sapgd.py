"""SA-PGD: stable adaptive PGD (Wang et al., arXiv 2512.22522, the attack paired with ASSG).

From the APGD-style random start (uniform noise scaled to L-inf norm ``eps``), each iteration
takes an Adam-like step built from per-sample normalised moments, so the trajectory does not
depend on the gradient's scale (which differs by orders of magnitude between surrogates)::

    gh = g / mean|g|           m = gh (k = 0),  0.5 m + gh   (later)
    vh = g^2 / mean(g^2)       v = vh (k = 0),  0.8 v + vh   (later)
    x <- Proj(x + clamp(eta * m / (sqrt(v) + 1e-12), -eta, eta))

The step size follows a fixed halving schedule (no loss-based checks, no restart from the best
point): ``eta = eps`` halves after ``K = max(floor(0.22 N), 1)`` iterations, then after
``K <- max(K - max(floor(0.03 N), 1), max(floor(0.06 N), 1))`` more, and so on (N = 100:
after iterations 22, 41, 57, 70, 80, 87, 93, 99). The first step is ``eps * sign(g)``
wherever the gradient is nonzero (``sqrt(mean g^2) >= mean|g|``, then clipped).

A sample counts as fooled if **any** iterate fools it; that iterate is returned and the sample
is no longer queried. Otherwise the highest-loss iterate is returned.

Deviations from the reference code, both deliberate: the 0/0 of an all-zero gradient (frequent
with narrow surrogates) is guarded, and such a sample takes a random-sign step of size ``eta``
instead of standing still (``zero_grad="random"``; ``"stay"`` keeps the reference's
behaviour without its NaN); restarts (default 1, the reference's) run on the samples still
standing, each from a new random start with a fresh estimator state.

Args:
    eps: L-inf radius in pixels.
    steps: iterations N (100).
    loss: "ce" (default) or "dlr".
    restarts: independent runs on the samples not yet fooled (1).
    zero_grad: "random" or "stay" (see above).
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
    check_positive_int,
    is_success,
    logits_of,
    loss_and_grad,
    per_sample,
    predict_logits,
    project,
    random_sign,
    unit_linf_noise,
)
from robustsnn.attacks.losses import LOSSES, AttackLoss, get_loss
from robustsnn.attacks.registry import ATTACKS

_TINY = 1e-12
ZERO_GRAD_MODES = ("random", "stay")


def halving_iterations(steps: int) -> list[int]:
    """Iterations (1-based, counted after the step) after which SA-PGD halves its step size."""
    points: list[int] = []
    span = max(math.floor(0.22 * steps), 1)
    shrink, floor_ = max(math.floor(0.03 * steps), 1), max(math.floor(0.06 * steps), 1)
    done = 0
    while done + span <= steps:
        done += span
        points.append(done)
        span = max(span - shrink, floor_)
    return points


def normalised_moments(grad: Tensor) -> tuple[Tensor, Tensor]:
    """``(g / mean|g|, g^2 / mean(g^2))`` per sample, 0 where a sample's gradient is all 0."""
    flat = grad.flatten(1)
    l1 = flat.abs().mean(1)
    l2 = flat.square().mean(1)
    return grad / per_sample(l1 + _TINY, grad), grad.square() / per_sample(l2 + _TINY, grad)


@ATTACKS.register("sapgd")
class SAPGD(Attack):
    """Stable adaptive PGD with per-sample normalised moments and a fixed halving schedule."""

    param_names = ("eps", "steps", "loss", "restarts", "zero_grad")

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        loss: str = "ce",
        restarts: int = 1,
        zero_grad: str = "random",
    ) -> None:
        super().__init__(eps)
        self.steps = check_positive_int(steps, "sapgd steps")
        self.loss = check_choice(loss, "sapgd loss", LOSSES)
        self.restarts = check_positive_int(restarts, "sapgd restarts")
        self.zero_grad = check_choice(zero_grad, "sapgd zero_grad", ZERO_GRAD_MODES)
        self.name = "sapgd" if self.loss == "ce" else f"sapgd-{self.loss}"
        #: step sizes of the last run's iterations (for tests and logs)
        self.last_etas: list[float] = []

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        del target
        loss_fn = get_loss(self.loss)
        best = WorstCase(x, is_success(predict_logits(model, x), y))
        for _ in range(self.restarts):
            idx = best.remaining()
            if idx.numel() == 0:
                break
            self._run(model, x, y, idx, best, loss_fn, generator)
        return best.x

    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        idx: Tensor,
        best: WorstCase,
        loss_fn: AttackLoss,
        generator: torch.Generator,
    ) -> None:
        """One SA-PGD run on the samples ``idx`` (global), results into ``best``."""
        eps, steps = self.eps, self.steps
        begin_run(model, idx.numel())
        rows = torch.arange(idx.numel(), device=x.device)  # positions in this run
        x0, y0 = x[idx], y[idx]
        x_adv = project(x0 + eps * unit_linf_noise(x0, generator), x0, eps)

        def score(x_at: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
            y_at = y0[rows]
            if with_grad:
                logits, loss, grad = loss_and_grad(
                    model, x_at, lambda z: loss_fn(z, y_at, None), rows
                )
            else:
                with torch.no_grad():
                    logits = logits_of(model, x_at).detach()
                    loss, grad = loss_fn(logits, y_at, None), None
            success = is_success(logits, y_at)
            best.update(idx[rows], x_at, loss, success)
            return success, grad

        success, grad = score(x_adv, True)
        assert grad is not None
        eta, halve_after = eps, set(halving_iterations(steps))
        m = v = torch.zeros_like(x0)
        self.last_etas = []
        for k in range(steps):
            keep = ~success
            if not bool(keep.any()):
                return
            rows, x_adv, grad = rows[keep], x_adv[keep], grad[keep]
            m, v = m[keep], v[keep]
            gh, vh = normalised_moments(grad)
            m = gh if k == 0 else 0.5 * m + gh
            v = vh if k == 0 else 0.8 * v + vh
            step = (m / (v.sqrt() + _TINY) * eta).clamp(-eta, eta)
            if self.zero_grad == "random":
                flat = per_sample(grad.flatten(1).abs().amax(1) == 0, grad)
                if bool(flat.any()):
                    step = torch.where(flat, eta * random_sign(grad.shape, generator, grad), step)
            x_adv = project(x_adv + step, x0[rows], eps)
            self.last_etas.append(eta)
            last = k == steps - 1
            success, new_grad = score(x_adv, not last)
            if new_grad is not None:
                grad = new_grad
            if k + 1 in halve_after:
                eta /= 2
