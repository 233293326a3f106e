"""Square attack: black-box progress and its accuracy-versus-queries curve."""

from __future__ import annotations

import torch
from attack_test_utils import exact_robust_count, linear_problem, median_eps, robust_count

from robustsnn.attacks import Square
from robustsnn.attacks.square import square_fraction


def test_square_lowers_accuracy_with_a_monotone_curve():
    model, x, y = linear_problem(2, n=48, seed=3, shape=(3, 8, 8))
    eps = median_eps(model, x, y)
    attack = Square(eps, n_queries=300)
    x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    found = robust_count(model, x_adv, y)
    assert found < len(y)
    assert found >= exact_robust_count(model, x, y, eps)
    curve = attack.last_curve
    queries = [q for q, _ in curve]
    accuracy = [a for _, a in curve]
    assert queries[0] == 0 and accuracy[0] == 1.0
    assert queries == sorted(set(queries)) and queries[-1] <= 300
    assert all(b <= a for a, b in zip(accuracy, accuracy[1:], strict=False))
    assert accuracy[-1] == found / len(y)
    assert attack.last_queries is not None
    assert int((attack.last_queries == -1).sum()) == found
    fooled = attack.last_queries[attack.last_queries >= 0]
    assert int(fooled.max()) <= queries[-1]


def test_square_reaches_the_exact_robust_accuracy_on_binary_linear():
    # on a linear model the worst case is a vertex of the ball, which Square searches
    model, x, y = linear_problem(2, n=24, seed=4, shape=(1, 4, 4))
    eps = median_eps(model, x, y)
    attack = Square(eps, n_queries=400)
    x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert robust_count(model, x_adv, y) <= exact_robust_count(model, x, y, eps) + 1


def test_square_counts_clean_errors_at_query_zero():
    model, x, y = linear_problem(3, n=10, seed=5)
    y = y.clone()
    y[:4] = (y[:4] + 1) % 3
    attack = Square(0.01, n_queries=5)
    attack(model, x, y)
    assert attack.last_curve[0] == (0, 0.6)
    assert attack.last_queries is not None and bool((attack.last_queries[:4] == 0).all())


def test_square_schedule_halves_p():
    assert square_fraction(0.8, 0, 10000) == 0.8
    assert square_fraction(0.8, 11, 10000) == 0.4
    assert square_fraction(0.8, 100, 10000) == 0.2
    assert square_fraction(0.8, 9000, 10000) == 0.8 / 512
    assert square_fraction(0.8, 3, 5000) == 0.8
    assert square_fraction(0.8, 20, 5000) == 0.4  # rescaled to a 10,000-query budget
