"""APGD-T: targeted Auto-PGD with the targeted DLR loss.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, section 3.3 and AutoAttack's standard version: for each of
the ``n_target_classes`` classes with the highest clean logits after the top one, run APGD
(:func:`robustsnn.attacks.apgd.apgd_run`) maximizing the targeted DLR loss
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``. Each target class attacks only the samples
still correctly classified; success is misclassification (into any class).

Args:
    eps: L-inf radius in pixels.
    n_iter: APGD iterations per target class and restart (100).
    n_target_classes: number of target classes tried, capped at K - 1 (9).
    n_restarts: restarts per target class (1).
    loss: "dlr" (targeted DLR, default) or "ce" (targeted cross-entropy).
    rho, momentum: as in APGD (0.75, 0.75).

Shapes: ``x [N, ...]`` in [0, 1], ``y [N]`` -> ``x_adv`` like ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustsnn.attacks.apgd import APGDRestarts
from robustsnn.attacks.base import (
    Model,
    WorstCase,
    check_choice,
    check_fraction,
    check_positive_int,
    is_success,
    predict_logits,
    runner_up_classes,
)
from robustsnn.attacks.losses import LOSSES, get_loss
from robustsnn.attacks.registry import ATTACKS


@ATTACKS.register("apgd-t")
class APGDT(APGDRestarts):
    """Targeted APGD over the top ``n_target_classes`` runner-up classes."""

    param_names = ("eps", "n_iter", "n_target_classes", "n_restarts", "loss", "rho", "momentum")

    def __init__(
        self,
        eps: float,
        n_iter: int = 100,
        n_target_classes: int = 9,
        n_restarts: int = 1,
        loss: str = "dlr",
        rho: float = 0.75,
        momentum: float = 0.75,
    ) -> None:
        super().__init__(eps)
        self.n_iter = check_positive_int(n_iter, "apgd-t n_iter")
        self.n_target_classes = check_positive_int(n_target_classes, "apgd-t n_target_classes")
        self.n_restarts = check_positive_int(n_restarts, "apgd-t n_restarts")
        self.loss = check_choice(loss, "apgd-t loss", LOSSES)
        self.rho = check_fraction(rho, "apgd-t rho")
        self.momentum = check_fraction(momentum, "apgd-t momentum")
        self.name = "apgd-t" if self.loss == "dlr" else f"apgd-t-{self.loss}"

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
        best = WorstCase(x, is_success(clean, y))
        for class_target in runner_up_classes(clean, self.n_target_classes):
            if not self.run_restarts(model, x, y, class_target, loss_fn, best, generator):
                break
        return best.x
