"""QCFS activation (quantisation-clip-floor-shift; Bu et al., ICLR 2022) for convertible ANNs.

``h(z) = lam * clip(floor(z * L / lam + shift) / L, 0, 1)`` with ``shift = 1/2``: a ReLU clipped
at a trainable per-layer level ``lam`` and quantised to ``L + 1`` levels. An IF neuron with soft
reset, threshold ``lam`` and initial membrane ``lam / 2`` fires ``clip(floor(z T / lam + 1/2), 0,
T)`` times in T steps under a constant input ``z``, so at ``T = L`` the converted SNN *is* this
ANN (``../shared/research/conversion.md`` section 3.1). The floor has a straight-through
gradient, so every training objective (natural, PGD-AT, TRADES, MART) and every attack on the
ANN sees a non-zero gradient inside ``[0, lam]``, and ``lam`` learns from the task loss.
"""

from __future__ import annotations

import torch
from torch import nn

QCFS_SHIFT = 0.5
QCFS_LAMBDA_INIT = 8.0  # the QCFS code's initial clip level


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward, identity backward (written without a custom autograd Function, so
    torch.fx can trace through it for BatchNorm folding)."""
    return x + (torch.floor(x) - x).detach()


def qcfs(
    x: torch.Tensor, lam: torch.Tensor, levels: int, shift: float = QCFS_SHIFT
) -> torch.Tensor:
    """``lam * clip(floor(x * levels / lam + shift) / levels, 0, 1)`` with a straight-through floor."""
    scaled = floor_ste(x * (levels / lam) + shift) / levels
    return torch.clamp(scaled, 0.0, 1.0) * lam


class QCFS(nn.Module):
    """QCFS activation with one trainable clip level ``lam`` per layer and ``levels`` steps.

    A drop-in for ``nn.ReLU`` in every model (``build_model(..., activation="qcfs")``); the
    converter turns each one into an IF neuron with threshold ``lam``.
    """

    def __init__(
        self, levels: int = 8, lam: float = QCFS_LAMBDA_INIT, shift: float = QCFS_SHIFT
    ) -> None:
        super().__init__()
        if int(levels) < 1:
            raise ValueError(f"QCFS levels must be >= 1, not {levels}")
        if not lam > 0:
            raise ValueError(f"QCFS clip level must be > 0, not {lam}")
        self.levels = int(levels)
        self.shift = float(shift)
        self.lam = nn.Parameter(torch.tensor(float(lam)))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, lam={float(self.lam.detach()):.4g}, shift={self.shift}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qcfs(x, self.lam, self.levels, self.shift)


ACTIVATIONS = ("relu", "qcfs")


def use_activation(
    model: nn.Module, activation: str, levels: int = 8, lam: float = QCFS_LAMBDA_INIT
) -> int:
    """Replace every ``nn.ReLU`` module of ``model`` by ``activation`` in place; return how many.

    ``relu`` changes nothing. Works for every registered model because each activation is its
    own ``nn.ReLU`` module (the converter needs that anyway).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    if activation == "relu":
        return 0
    names = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    for name in names:
        model.set_submodule(name, QCFS(levels, lam))
    return len(names)
