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

from typing import Any

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    TARGET_MODES,
    Attack,
    Model,
    check_choice,
    choose_target,
    is_success,
    loss_and_grad,
    per_sample,
    project,
)
from robustsnn.attacks.losses import LOSSES, get_loss
from robustsnn.attacks.registry import ATTACKS


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Single-step L-inf attack of Goodfellow et al. (2015)."""

    supports_target = True

    def __init__(self, eps: float, loss: str = "ce", target: str | None = None) -> None:
        super().__init__(eps)
        self.loss = check_choice(loss, "fgsm loss", LOSSES)
        self.target = check_choice(target, "fgsm target", (None, *TARGET_MODES))
        self.name = "fgsm" if loss == "ce" else f"fgsm-{loss}"

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "loss": self.loss, "target": self.target}

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        loss_fn = get_loss(self.loss)
        if target is None and self.target is not None:
            with torch.no_grad():
                clean = model(x)
            target = choose_target(self.target, clean, y, generator)
        tgt = target
        logits, _, grad = loss_and_grad(model, x, lambda z: loss_fn(z, y, tgt))
        x_adv = project(x + self.eps * grad.sign(), x, self.eps)
        already = per_sample(is_success(logits, y, target), x)
        return torch.where(already, x, x_adv)
