"""R+FGSM: FGSM from a random vertex.

Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel, "Ensemble Adversarial Training:
Attacks and Defenses", ICLR 2018, eq. (7):
``x' = x + alpha * sign(N(0, I))``, then ``x_adv = x' + (eps - alpha) * sign(grad_x' L(x', y))``.
The random step escapes the sharp curvature of the loss at the data point that makes plain
FGSM underestimate adversarially trained models.

Args:
    eps: L-inf radius in pixels.
    alpha: size of the random step; ``eps / 2`` when None (the paper's choice).
    loss: "ce" (default) or "dlr".
    target: None (untargeted), "least-likely" or "random" (or labels passed as ``target=``).

Shapes: ``x [N, ...]`` in [0, 1], ``y [N]`` -> ``x_adv`` like ``x``. A random point that
already fools the model is kept as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    TARGET_MODES,
    Attack,
    Model,
    check_choice,
    check_fraction,
    project,
    random_sign,
    resolve_target,
)
from robustsnn.attacks.fgsm import sign_step
from robustsnn.attacks.losses import LOSSES, get_loss
from robustsnn.attacks.registry import ATTACKS
from robustsnn.errors import UserError


@ATTACKS.register("rfgsm")
class RFGSM(Attack):
    """Random step of size ``alpha`` then an FGSM step of size ``eps - alpha``."""

    supports_target = True
    param_names = ("eps", "alpha", "loss", "target")

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        loss: str = "ce",
        target: str | None = None,
    ) -> None:
        super().__init__(eps)
        if alpha is None:
            alpha = self.eps / 2
        self.alpha = check_fraction(alpha, "rfgsm alpha")
        if self.alpha > self.eps:
            raise UserError(f"rfgsm alpha ({alpha}) must not exceed eps ({self.eps})")
        self.loss = check_choice(loss, "rfgsm loss", LOSSES)
        self.target = check_choice(target, "rfgsm target", (None, *TARGET_MODES))
        self.name = "rfgsm" if loss == "ce" else f"rfgsm-{loss}"

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        loss_fn = get_loss(self.loss)
        target = resolve_target(self.target, model, x, y, target, generator)
        x_rand = project(x + self.alpha * random_sign(x.shape, generator, x), x, self.eps)
        return sign_step(model, x_rand, x, y, target, loss_fn, self.eps - self.alpha, self.eps)
