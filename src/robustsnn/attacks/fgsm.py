"""FGSM: Fast Gradient Sign Method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
One step of size ``eps`` along the sign of the input gradient of the loss:
``x_adv = clip(x + eps * sign(grad_x L(model(x), y)))``.

Args:
    eps: L-inf radius in pixels.
    loss: "ce" (default, as in the paper) or "dlr".
    target: None (untargeted), "least-likely" or "random"; explicit labels may also be passed
        as ``target=`` when calling. Targeted, the step descends the target's cross-entropy.

Shapes: ``x [N, ...]`` in [0, 1], ``y [N]`` -> ``x_adv`` like ``x``. Samples already
misclassified (or already at their target) are returned unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    TARGET_MODES,
    Attack,
    Model,
    check_choice,
    is_success,
    loss_and_grad,
    per_sample,
    resolve_target,
    signed_step,
)
from robustsnn.attacks.losses import LOSSES, AttackLoss, get_loss
from robustsnn.attacks.registry import ATTACKS


def sign_step(
    model: Model,
    x_start: Tensor,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    loss_fn: AttackLoss,
    step: float,
    eps: float,
) -> Tensor:
    """One step of size ``step`` from ``x_start`` along the sign of the loss gradient, projected
    onto the eps-ball around ``x``; samples ``x_start`` already fools are kept at ``x_start``."""
    logits, _, grad = loss_and_grad(model, x_start, lambda z: loss_fn(z, y, target))
    x_adv = signed_step(x_start, grad, step, x, eps)
    already = per_sample(is_success(logits, y, target), x)
    return torch.where(already, x_start, x_adv)


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Single-step L-inf attack of Goodfellow et al. (2015)."""

    supports_target = True
    param_names = ("eps", "loss", "target")

    def __init__(self, eps: float, loss: str = "ce", target: str | None = None) -> None:
        super().__init__(eps)
        self.loss = check_choice(loss, "fgsm loss", LOSSES)
        self.target = check_choice(target, "fgsm target", (None, *TARGET_MODES))
        self.name = "fgsm" if loss == "ce" else f"fgsm-{loss}"

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        target = resolve_target(self.target, model, x, y, target, generator)
        return sign_step(model, x, x, y, target, get_loss(self.loss), self.eps, self.eps)
