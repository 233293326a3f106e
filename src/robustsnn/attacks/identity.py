"""The identity attack: clean evaluation through the same interface as every attack."""

from __future__ import annotations

import torch
from torch import Tensor

from robustsnn.attacks.base import Attack, Model
from robustsnn.attacks.registry import ATTACKS


@ATTACKS.register("none")
class NoAttack(Attack):
    """Returns ``x`` unchanged (``eps`` is accepted and ignored), so clean accuracy is an attack.

    Args:
        eps: accepted for a uniform interface; 0 by default.
    """

    name = "none"

    def __init__(self, eps: float = 0.0) -> None:
        super().__init__(eps)

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        return x.clone()
