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
    init: "random" (the reference's uniform start) or "given": start from the point handed to
        the call (``start=``, e.g. the closest call earlier attacks found: at a sample that
        sits on the boundary, a spike-count tie, a fresh random start throws that away); the
        first restart starts there exactly, later ones within ``first_step * eps / 2`` of it.
    first_step: the first step size as a fraction of ``eps`` (1, the reference's; a smaller
        one keeps a given start's neighbourhood instead of leaving it at the first step).
"""

from __future__ import annotations

import math
from typing import Any

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
from robustsnn.errors import UserError

_TINY = 1e-12
ZERO_GRAD_MODES = ("random", "stay")
INIT_MODES = ("random", "given")


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
    supports_start = True

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        loss: str = "ce",
        restarts: int = 1,
        zero_grad: str = "random",
        init: str = "random",
        first_step: float = 1.0,
    ) -> None:
        super().__init__(eps)
        self.init = check_choice(init, "sapgd init", INIT_MODES)
        self.first_step = float(first_step)
        if not 0.0 < self.first_step <= 1.0:
            raise UserError(f"sapgd first_step must be in (0, 1], got {first_step!r}")
        self.steps = check_positive_int(steps, "sapgd steps")
        self.loss = check_choice(loss, "sapgd loss", LOSSES)
        self.restarts = check_positive_int(restarts, "sapgd restarts")
        self.zero_grad = check_choice(zero_grad, "sapgd zero_grad", ZERO_GRAD_MODES)
        self.name = "sapgd" if self.loss == "ce" else f"sapgd-{self.loss}"
        #: step sizes of the last run's iterations (for tests and logs)
        self.last_etas: list[float] = []

    @property
    def wants_start(self) -> bool:
        """With ``init="given"`` every call needs start points."""
        return self.init == "given"

    def params(self) -> dict[str, Any]:
        """Constructor parameters; ``init`` and ``first_step`` only where not the defaults
        (so every earlier log and statistics file reads as before)."""
        params = super().params()
        if self.init != "random" or self.first_step != 1.0:
            params.update(init=self.init, first_step=self.first_step)
        return params

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
        start = self.given_start
        if self.init == "given" and start is None:
            raise UserError(
                "sapgd init='given' needs start points (start=...): the evaluation gives each "
                "sample's closest call; elsewhere use init='random'"
            )
        for restart in range(self.restarts):
            idx = best.remaining()
            if idx.numel() == 0:
                break
            begin = None
            if self.init == "given" and start is not None:
                begin = start[idx]
                if restart > 0:  # later restarts: near the given point, not on it
                    jitter = 0.5 * self.first_step * self.eps
                    begin = begin + jitter * unit_linf_noise(begin, generator)
            self._run(model, x, y, idx, best, loss_fn, generator, begin)
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
        begin: Tensor | None = None,
    ) -> None:
        """One SA-PGD run on the samples ``idx`` (global), results into ``best``; from
        ``begin`` (rows of ``idx``) instead of a random start when given."""
        run = SAPGDRun(self, model, x, y, idx, best, loss_fn, generator, begin)
        run.advance(self.steps)
        self.last_etas = run.etas


class SAPGDRun:
    """One SA-PGD run that can be advanced in slices and shrunk between them.

    The schedule (step size ``eta`` and its halvings) is fixed by ``attack.steps`` up front,
    so advancing to ``steps`` in one call or in several slices walks the same trajectory: what
    a per-sample race over members needs (:mod:`robustsnn.attacks.race`), which runs every
    candidate a few iterations, drops the weak ones per sample (:meth:`retain`) and continues
    the rest. ``best`` (a :class:`WorstCase` over the batch; ``idx`` are global indices into
    it) receives every iterate's loss and success, as in :meth:`SAPGD.perturb`.
    """

    def __init__(
        self,
        attack: SAPGD,
        model: Model,
        x: Tensor,
        y: Tensor,
        idx: Tensor,
        best: WorstCase,
        loss_fn: AttackLoss,
        generator: torch.Generator,
        begin: Tensor | None = None,
    ) -> None:
        self.attack, self.model, self.best, self.loss_fn = attack, model, best, loss_fn
        self.generator = generator
        self.idx = idx
        eps = attack.eps
        begin_run(model, idx.numel())
        self.rows = torch.arange(idx.numel(), device=x.device)  # positions in this run
        self.x0, self.y0 = x[idx], y[idx]
        if begin is None:
            begin = self.x0 + eps * unit_linf_noise(self.x0, generator)
        self.x_adv = project(begin, self.x0, eps)
        self.success, grad = self._score(self.x_adv, True)
        assert grad is not None
        self.grad = grad
        self.eta = eps * getattr(attack, "first_step", 1.0)
        self.halve_after = set(halving_iterations(attack.steps))
        self.m = self.v = torch.zeros_like(self.x0)
        self.k = 0
        #: step sizes of the iterations run so far (for tests and logs)
        self.etas: list[float] = []

    @property
    def finished(self) -> bool:
        """All iterations run, or no row left to attack."""
        return self.k >= self.attack.steps or not bool((~self.success).any())

    def positions(self) -> Tensor:
        """Global indices (into the batch of ``best``) of the rows this run still holds."""
        return self.idx[self.rows]

    def _score(self, x_at: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        rows = self.rows
        y_at = self.y0[rows]
        if with_grad:
            logits, loss, grad = loss_and_grad(
                self.model, x_at, lambda z: self.loss_fn(z, y_at, None), rows
            )
        else:
            with torch.no_grad():
                logits = logits_of(self.model, x_at).detach()
                loss, grad = self.loss_fn(logits, y_at, None), None
        success = is_success(logits, y_at)
        self.best.update(self.idx[rows], x_at, loss, success)
        return success, grad

    def retain(self, keep: Tensor) -> None:
        """Keep only the rows where ``keep`` (a mask over :meth:`positions`) is True."""
        self.rows, self.x_adv, self.grad = self.rows[keep], self.x_adv[keep], self.grad[keep]
        self.m, self.v, self.success = self.m[keep], self.v[keep], self.success[keep]

    def advance(self, until: int) -> None:
        """Run iterations ``k`` up to ``until`` (at most the schedule's ``steps``)."""
        eps, steps = self.attack.eps, self.attack.steps
        while self.k < min(until, steps):
            k = self.k
            keep = ~self.success
            if not bool(keep.any()):
                return
            self.retain(keep)
            grad = self.grad
            gh, vh = normalised_moments(grad)
            self.m = gh if k == 0 else 0.5 * self.m + gh
            self.v = vh if k == 0 else 0.8 * self.v + vh
            eta = self.eta
            step = (self.m / (self.v.sqrt() + _TINY) * eta).clamp(-eta, eta)
            if self.attack.zero_grad == "random":
                flat = per_sample(grad.flatten(1).abs().amax(1) == 0, grad)
                if bool(flat.any()):
                    step = torch.where(
                        flat, eta * random_sign(grad.shape, self.generator, grad), step
                    )
            self.x_adv = project(self.x_adv + step, self.x0[self.rows], eps)
            self.etas.append(eta)
            last = k == steps - 1
            self.success, new_grad = self._score(self.x_adv, not last)
            if new_grad is not None:
                self.grad = new_grad
            if k + 1 in self.halve_after:
                self.eta /= 2
            self.k = k + 1
