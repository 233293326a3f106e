"""Surrogate gradients dS/dU of the Heaviside spike function, as named, inspectable objects.

Each surrogate gives ``grad(x)`` for ``x = u - theta`` in closed form (PAPER.md section 3).
The spiking forward pass is always the exact Heaviside step; only the backward pass uses these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from robustsnn.errors import UserError
from robustsnn.registry import Registry


@dataclass(frozen=True)
class Surrogate:
    """A surrogate derivative family (``kind``) at one width parameter ``gamma``."""

    kind: str
    gamma: float = 1.0

    @property
    def name(self) -> str:
        return self.kind if self.kind == "ste" else f"{self.kind}-{self.gamma:g}"

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative at ``x = u - theta`` (same shape as ``x``)."""
        return SURROGATE_KINDS.get(self.kind)(x, self.gamma)


def _pcw(x: torch.Tensor, gamma: float) -> torch.Tensor:
    # Triangle: max(0, gamma - |x|) / gamma^2 (integrates to 1).
    return (gamma - x.abs()).clamp_(min=0.0).mul_(1.0 / (gamma * gamma))


def _exp(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.exp(x.abs().mul_(-gamma))


def _exp_damped(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.exp(x.abs().mul_(-gamma)).mul_(0.3)


def _rect(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return (x.abs() < gamma / 2).to(x.dtype).mul_(1.0 / gamma)


def _ste(x: torch.Tensor, gamma: float) -> torch.Tensor:
    del gamma
    return torch.ones_like(x)


SURROGATE_KINDS: Registry[Callable[[torch.Tensor, float], torch.Tensor]] = Registry("surrogate")
SURROGATE_KINDS.add("pcw", _pcw)
SURROGATE_KINDS.add("exp", _exp)
SURROGATE_KINDS.add("expd", _exp_damped)
SURROGATE_KINDS.add("rect", _rect)
SURROGATE_KINDS.add("ste", _ste)

# The gammas the paper's evaluation uses (17 variants in all).
PAPER_GAMMAS: dict[str, tuple[float, ...]] = {
    "pcw": (0.25, 0.5, 1.0, 2.0, 3.0),
    "exp": (0.5, 1.0, 2.0),
    "expd": (0.5, 1.0, 2.0),
    "rect": (0.25, 0.5, 1.0, 2.0, 4.0),
    "ste": (1.0,),
}


def paper_surrogates() -> list[Surrogate]:
    """The 17 surrogate variants of the paper's adaptive ensembles."""
    return [Surrogate(kind, g) for kind, gammas in PAPER_GAMMAS.items() for g in gammas]


def parse_surrogate(name: str) -> Surrogate:
    """``"pcw-1"`` / ``"exp-0.5"`` / ``"ste"`` -> Surrogate."""
    kind, _, gamma_text = name.partition("-")
    SURROGATE_KINDS.get(kind)  # validates the kind
    if not gamma_text:
        return Surrogate(kind, 1.0)
    try:
        gamma = float(gamma_text)
    except ValueError:
        gamma = math.nan
    if not (math.isfinite(gamma) and gamma > 0):
        raise UserError(
            f"surrogate {name!r}: gamma must be a positive number (e.g. {kind}-1), "
            f"not {gamma_text!r}"
        )
    return Surrogate(kind, gamma)
