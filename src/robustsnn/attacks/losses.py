"""Per-sample attack losses, all to be *maximized* by the attacker.

- ``ce``: cross-entropy of the true class (untargeted), ``-CE(z, t)`` when targeted.
- ``dlr``: Difference of Logits Ratio, Croce & Hein, "Reliable evaluation of adversarial
  robustness with an ensemble of diverse parameter-free attacks", ICML 2020, eq. (6):
  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (pi = logits sorted in decreasing order);
  invariant to shifting and rescaling the logits, hence robust to saturated softmax.
- targeted DLR (same paper, eq. (7)): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.
- ``margin``: ``z_y - max_{i != y} z_i`` (positive while correctly classified); used by Square.

With too few classes for the DLR denominator (K < 3 untargeted, K < 4 targeted uses the
classes that exist, K = 2 uses 1) the loss falls back to the plain logit margin.
All functions take ``logits [N, K]`` and labels ``[N]`` and return ``[N]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from robustsnn.errors import UserError

LOSSES = ("ce", "dlr")
_TINY = 1e-12

AttackLoss = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``loss(logits [N, K], y [N], target [N] | None) -> [N]`` to be maximized."""


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{i != y} z_i``: positive iff ``y`` is predicted (ties count as wrong)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return z_y - others.amax(1)


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the true class, per sample."""
    return F.cross_entropy(logits, y, reduction="none")


def targeted_ce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Negative cross-entropy of the target class: increases as the target gains mass."""
    return -F.cross_entropy(logits, target, reduction="none")


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR loss (Croce & Hein 2020); plain negative margin when K < 3."""
    if logits.shape[1] < 3:
        return -margin(logits, y)
    top = logits.topk(3, dim=1).values
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + _TINY)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR loss (Croce & Hein 2020); the denominator uses what exists when K < 4."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    k = logits.shape[1]
    if k >= 4:
        top = logits.topk(4, dim=1).values
        scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY
    elif k == 3:
        top = logits.topk(3, dim=1).values
        scale = top[:, 0] - top[:, 2] + _TINY
    else:
        scale = torch.ones_like(z_y)
    return -(z_y - z_t) / scale


def get_loss(name: str) -> AttackLoss:
    """The attack loss called ``name`` ("ce" or "dlr"); targeted when given a target."""
    if name == "ce":

        def ce(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
            return ce_loss(logits, y) if target is None else targeted_ce_loss(logits, target)

        return ce
    if name == "dlr":

        def dlr(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
            return dlr_loss(logits, y) if target is None else targeted_dlr_loss(logits, y, target)

        return dlr
    raise UserError(f"unknown attack loss {name!r}; valid: {', '.join(LOSSES)}")
