"""One attack core: the default step size is written once, and the training adversaries run on
the attacks' primitives (same random start, same steps), differing from the evaluation's PGD
only in which iterate they return."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustsnn.attacks import PGD
from robustsnn.attacks.base import default_step_size, random_start
from robustsnn.attacks.losses import ce_loss
from robustsnn.attacks.pgd import pgd_last_iterate
from robustsnn.training import build_objective
from robustsnn.training.inner import pgd_ce


class SumMinusTwo(nn.Module):
    """Logits ``[sum(x) - 2 + 0.01, 0]`` on 4 pixels: class 0 at x = 0.5, by a margin of 0.01."""

    def forward(self, x: Tensor) -> Tensor:
        score = x.flatten(1).sum(1) - 2.0 + 0.01
        return torch.stack([score, torch.zeros_like(score)], 1)


def test_default_step_size_is_the_one_rule_everywhere():
    eps, steps = 8 / 255, 7
    assert math.isclose(default_step_size(eps, steps), 2.5 * eps / steps)
    assert PGD(eps, steps=steps).step_size == default_step_size(eps, steps)
    for name in ("pgd_at", "trades", "mart"):
        objective = build_objective(name, eps=eps, steps=steps)
        assert objective.step_size == default_step_size(eps, steps)  # type: ignore[attr-defined]


def test_last_iterate_mode_keeps_stepping_where_the_evaluation_pgd_stops():
    model, eps, step = SumMinusTwo(), 0.1, 0.02
    x, y = torch.full((1, 4), 0.5), torch.tensor([0])
    # the first step (-0.02 on every pixel) already fools the model
    evaluation = PGD(eps, steps=5, step_size=step, random_start=False)(model, x, y)
    assert torch.allclose(evaluation, x - step)
    last = pgd_last_iterate(
        model, x, x.clone(), lambda z: ce_loss(z, y), eps=eps, steps=5, step_size=step
    )
    assert torch.allclose(last, x - eps)  # every step taken, the last iterate returned


def test_training_pgd_draws_the_evaluation_random_start():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    start = pgd_ce(
        model, x, y, eps=0.1, steps=0, step_size=0.01, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(start, random_start(x, 0.1, torch.Generator().manual_seed(3)))
