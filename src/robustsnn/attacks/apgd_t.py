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

from typing import Any

import torch
from torch import Tensor

from robustsnn.attacks.apgd import apgd_run
from robustsnn.attacks.base import (
    Attack,
    Model,
    WorstCase,
    check_choice,
    check_fraction,
    check_positive_int,
    is_success,
    predict_logits,
)
from robustsnn.attacks.losses import LOSSES, get_loss
from robustsnn.attacks.registry import ATTACKS


@ATTACKS.register("apgd-t")
class APGDT(Attack):
    """Targeted APGD over the top ``n_target_classes`` runner-up classes."""

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

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "n_iter": self.n_iter,
            "n_target_classes": self.n_target_classes,
            "n_restarts": self.n_restarts,
            "loss": self.loss,
            "rho": self.rho,
            "momentum": self.momentum,
        }

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
        ranking = clean.argsort(1, descending=True)
        n_targets = min(self.n_target_classes, clean.shape[1] - 1)
        for rank in range(1, n_targets + 1):
            class_target = ranking[:, rank]
            for _ in range(self.n_restarts):
                idx = best.remaining()
                if idx.numel() == 0:
                    return best.x
                apgd_run(
                    model,
                    x,
                    y,
                    class_target,
                    loss_fn,
                    best,
                    idx,
                    eps=self.eps,
                    n_iter=self.n_iter,
                    rho=self.rho,
                    momentum=self.momentum,
                    generator=generator,
                )
        return best.x
