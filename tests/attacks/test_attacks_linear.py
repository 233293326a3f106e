"""Attacks against the exact L-inf robust accuracy of linear classifiers (closed form)."""

from __future__ import annotations

import pytest
import torch
from attack_test_utils import (
    exact_min_distance,
    exact_robust_count,
    linear_problem,
    median_eps,
    robust_count,
)

from robustsnn.attacks import FGSM, build_attack


@pytest.fixture(scope="module")
def binary():
    model, x, y = linear_problem(2, n=256, seed=0)
    return model, x, y, median_eps(model, x, y)


@pytest.fixture(scope="module")
def multiclass():
    model, x, y = linear_problem(5, n=128, seed=1)
    return model, x, y, median_eps(model, x, y)


def test_exact_oracle_is_a_lower_bound_that_is_attained():
    model, x, y = linear_problem(3, n=32, seed=2)
    eps = median_eps(model, x, y)
    exact = exact_robust_count(model, x, y, eps)
    assert 0 < exact < len(y)
    # every sample's minimal distance is attained: just above it, it is no longer robust
    dist = exact_min_distance(model, x, y)
    from attack_test_utils import exact_worst_margin

    assert bool((exact_worst_margin(model, x, y, dist * 1.001) <= 0).all())
    assert bool((exact_worst_margin(model, x, y, dist * 0.999) > 0).all())


def test_fgsm_is_exact_on_binary_linear(binary):
    model, x, y, eps = binary
    x_adv = FGSM(eps)(model, x, y)
    assert robust_count(model, x_adv, y) == exact_robust_count(model, x, y, eps)


@pytest.mark.parametrize("name", ["pgd", "pgd-dlr", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t"])
def test_iterative_attacks_are_exact_on_binary_linear(binary, name):
    model, x, y, eps = binary
    exact = exact_robust_count(model, x, y, eps)
    x_adv = build_attack(name, eps)(model, x, y, generator=torch.Generator().manual_seed(0))
    found = robust_count(model, x_adv, y)
    assert exact <= found <= exact + 1


@pytest.mark.parametrize("name", ["apgd-dlr", "apgd-t", "fab-t"])
def test_strong_attacks_are_exact_on_multiclass_linear(multiclass, name):
    model, x, y, eps = multiclass
    exact = exact_robust_count(model, x, y, eps)
    x_adv = build_attack(name, eps)(model, x, y, generator=torch.Generator().manual_seed(0))
    found = robust_count(model, x_adv, y)
    assert exact <= found <= exact + 1


@pytest.mark.parametrize("name", ["fgsm", "rfgsm", "pgd", "apgd-ce"])
def test_weaker_attacks_are_close_on_multiclass_linear(multiclass, name):
    model, x, y, eps = multiclass
    exact = exact_robust_count(model, x, y, eps)
    x_adv = build_attack(name, eps)(model, x, y, generator=torch.Generator().manual_seed(0))
    found = robust_count(model, x_adv, y)
    slack = 80 if name == "rfgsm" else 5  # R+FGSM spends half of eps on a random step
    assert exact <= found <= exact + slack
