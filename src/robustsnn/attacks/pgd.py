"""PGD: projected gradient descent (ascent on the loss) in the L-inf ball.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. From a uniformly random start in the eps-ball, repeat
``x <- Proj(x + step_size * sign(grad_x L(x)))`` for ``steps`` steps. The paper's evaluation
uses 20 steps of size ``2.5 * eps / steps`` with a random start.

The output of :class:`PGD` (the evaluation's attack) is the per-sample worst case found over
all iterates and restarts: the first iterate that fools the model (then the sample is frozen
and no longer queried), else the iterate with the highest loss; not merely the last iterate.

:func:`pgd_last_iterate` is the other mode, the inner maximisation of adversarial training
(Madry et al.'s, TRADES', the paper's finetuning adversary): every sample takes every step
and the last iterate is returned, whether or not an earlier one already fooled the model.
Freezing samples at their first success, as the evaluation does, trains against a weaker
distribution (docs/RESULTS.md section 11b). The two modes share the primitives of
:mod:`robustsnn.attacks.base` (random start, gradient, signed step, projection, default step).

Args:
    eps: L-inf radius in pixels.
    steps: gradient steps per restart (20).
    step_size: step in pixels; ``2.5 * eps / steps`` when None (:func:`default_step_size`).
    random_start: start from a uniform random point of the ball (True) or from ``x``.
    loss: "ce" (cross-entropy) or "dlr" (Croce & Hein 2020); targeted variants when targeted.
    target: None (untargeted), "least-likely" or "random"; labels may also be passed as
        ``target=`` at call time. Targeted success means predicting the target.
    restarts: independent runs; each restart attacks only the samples not yet fooled.

Shapes: ``x [N, ...]`` in [0, 1], ``y [N]`` (and ``target [N]``) -> ``x_adv`` like ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    TARGET_MODES,
    Attack,
    LossOfLogits,
    Model,
    WorstCase,
    begin_run,
    check_choice,
    check_fraction,
    check_positive_int,
    choose_target,
    default_step_size,
    is_success,
    logits_of,
    loss_and_grad,
    predict_logits,
    random_start,
    signed_step,
)
from robustsnn.attacks.losses import LOSSES, get_loss
from robustsnn.attacks.registry import ATTACKS


def pgd_last_iterate(
    model: Model,
    x: Tensor,
    x_start: Tensor,
    loss_of: LossOfLogits,
    *,
    eps: float,
    steps: int,
    step_size: float,
) -> Tensor:
    """PGD's last-iterate mode: ``steps`` signed-gradient steps of ``step_size`` on
    ``loss_of(model(x'))`` from ``x_start``, each projected onto the eps-ball around ``x`` and
    [0, 1]; returns the last iterate of every sample (detached).

    The training adversaries' inner maximisation. Unlike :class:`PGD` it keeps no per-sample
    bookkeeping: no clean forward pass, no scoring pass, no early exit, every sample takes every
    step. The caller draws ``x_start`` (e.g. :func:`~robustsnn.attacks.base.random_start`) and
    sets the model's mode; ``loss_of`` maps logits to a loss to maximise (per sample, or a
    scalar such as a batch-mean KL).
    """
    x_adv = x_start.detach()
    for _ in range(steps):
        _, _, grad = loss_and_grad(model, x_adv, loss_of)
        x_adv = signed_step(x_adv, grad, step_size, x, eps)
    return x_adv.detach()


@ATTACKS.register("pgd")
class PGD(Attack):
    """L-inf PGD of Madry et al. (2018) with per-sample worst-case bookkeeping."""

    supports_target = True
    default_loss = "ce"
    param_names = ("eps", "steps", "step_size", "random_start", "loss", "target", "restarts")

    def __init__(
        self,
        eps: float,
        steps: int = 20,
        step_size: float | None = None,
        random_start: bool = True,
        loss: str | None = None,
        target: str | None = None,
        restarts: int = 1,
    ) -> None:
        super().__init__(eps)
        self.steps = check_positive_int(steps, "pgd steps")
        if step_size is None:
            step_size = default_step_size(self.eps, self.steps)
        self.step_size = check_fraction(step_size, "pgd step_size")
        self.random_start = bool(random_start)
        self.loss = check_choice(loss or self.default_loss, "pgd loss", LOSSES)
        self.target = check_choice(target, "pgd target", (None, *TARGET_MODES))
        self.restarts = check_positive_int(restarts, "pgd restarts")
        self.name = "pgd" if self.loss == "ce" else f"pgd-{self.loss}"

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        loss_fn = get_loss(self.loss)
        clean = predict_logits(model, x)
        if target is None and self.target is not None:
            target = choose_target(self.target, clean, y, generator)
        best = WorstCase(x, is_success(clean, y, target))
        for _ in range(self.restarts):
            idx = best.remaining()
            if idx.numel() == 0:
                break
            x0 = x[idx]
            begin_run(model, idx.numel())
            rows = torch.arange(idx.numel(), device=x.device)  # positions in this run
            x_adv = random_start(x0, self.eps, generator) if self.random_start else x0.clone()
            for step in range(self.steps + 1):
                y_i = y[idx]
                t_i = None if target is None else target[idx]

                def loss_of(z: Tensor, y_i: Tensor = y_i, t_i: Tensor | None = t_i) -> Tensor:
                    return loss_fn(z, y_i, t_i)

                if step < self.steps:
                    logits, loss, grad = loss_and_grad(model, x_adv, loss_of, rows)
                else:  # the last iterate only needs to be scored
                    with torch.no_grad():
                        logits = logits_of(model, x_adv).detach()
                        loss = loss_of(logits)
                success = is_success(logits, y_i, t_i)
                best.update(idx, x_adv, loss, success)
                if step == self.steps:
                    break
                keep = ~success
                if not bool(keep.any()):
                    break
                idx, x0, rows = idx[keep], x0[keep], rows[keep]
                x_adv = signed_step(x_adv[keep], grad[keep], self.step_size, x0, self.eps)
        return best.x


@ATTACKS.register("pgd-dlr")
class PGDDLR(PGD):
    """PGD with the DLR loss of Croce & Hein (2020) (``PGD(loss="dlr")``)."""

    default_loss = "dlr"
