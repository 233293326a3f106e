"""Transfer (black-box) attack: adversarial examples crafted on a source model.

Papernot, McDaniel & Goodfellow, "Transferability in Machine Learning: from Phenomena to
Black-Box Attacks using Adversarial Samples", 2016; used in the paper with the source ANN or
another SNN as the source. The target model passed at call time is never queried.

Args:
    source_model: callable ``x -> logits`` on which ``base_attack`` runs (white-box).
    base_attack: any :class:`Attack`; its ``eps`` is this attack's ``eps``.

Shapes: as ``base_attack``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from robustsnn.attacks.base import Attack, Model
from robustsnn.errors import UserError


class Transfer(Attack):
    """Runs ``base_attack`` on ``source_model`` and hands the result to the target model."""

    def __init__(self, source_model: Model, base_attack: Attack) -> None:
        if not isinstance(base_attack, Attack):
            raise UserError(f"Transfer needs an Attack as base_attack, got {type(base_attack)}")
        if not callable(source_model):
            raise UserError("Transfer needs a callable source model x -> logits")
        super().__init__(base_attack.eps)
        self.source_model = source_model
        self.base_attack = base_attack
        self.supports_target = base_attack.supports_target
        self.name = f"transfer-{base_attack.name}"

    def params(self) -> dict[str, Any]:
        return {"base_attack": self.base_attack}

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        return self.base_attack(self.source_model, x, y, generator=generator, target=target)
