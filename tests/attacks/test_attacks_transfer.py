"""Transfer attacks: crafted on a source model, handed to the target model."""

from __future__ import annotations

import pytest
import torch
from attack_test_utils import linear_problem, median_eps, robust_count

from robustsnn.attacks import PGD, NoAttack, Transfer
from robustsnn.errors import UserError


def test_transfer_from_the_same_model_equals_the_base_attack():
    model, x, y = linear_problem(4, n=32, seed=6)
    eps = median_eps(model, x, y)
    base = PGD(eps, steps=10)
    direct = base(model, x, y, generator=torch.Generator().manual_seed(2))
    transferred = Transfer(model, base)(model, x, y, generator=torch.Generator().manual_seed(2))
    assert torch.equal(direct, transferred)


def test_transfer_never_queries_the_target_model():
    source, x, y = linear_problem(2, n=32, seed=7)
    eps = median_eps(source, x, y)

    def target_model(inputs: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the target model must not be queried")

    attack = Transfer(source, PGD(eps, steps=10))
    assert attack.eps == eps and attack.name == "transfer-pgd"
    x_adv = attack(target_model, x, y)
    assert robust_count(source, x_adv, y) < len(y)


def test_transfer_validates_its_parts():
    model, _, _ = linear_problem(2, n=2)
    with pytest.raises(UserError):
        Transfer(model, "pgd")  # type: ignore[arg-type]
    assert Transfer(model, NoAttack()).name == "transfer-none"
