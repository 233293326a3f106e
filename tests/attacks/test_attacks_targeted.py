"""Targeted attacks reach their target where it is reachable; FAB-T finds minimal norms."""

from __future__ import annotations

import numpy as np
import torch
from attack_test_utils import exact_min_distance, linear_problem, median_eps, robust_count
from scipy.optimize import linprog

from robustsnn.attacks import APGDT, FABT, FGSM, PGD


def reachable_targets(model, x, target, eps) -> torch.Tensor:
    """Exact: is there a point of the ball within [0, 1] where ``target`` wins? (one LP each)"""
    weight = model[1].weight.detach().double().numpy()
    bias = model[1].bias.detach().double().numpy()
    classes, dim = weight.shape
    slack = []
    for xi, t in zip(x.flatten(1).double().numpy(), target.tolist(), strict=True):
        rows = [np.append(weight[k] - weight[t], 1.0) for k in range(classes) if k != t]
        rhs = [bias[t] - bias[k] for k in range(classes) if k != t]
        low, high = np.clip(xi - eps, 0, 1), np.clip(xi + eps, 0, 1)
        bounds = list(zip(low, high, strict=True)) + [(None, None)]
        cost = np.zeros(dim + 1)
        cost[-1] = -1.0  # maximize the worst margin s of the target over the other classes
        result = linprog(cost, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds)
        slack.append(-result.fun)
    return torch.tensor(slack)


def test_targeted_pgd_reaches_reachable_targets():
    model, x, y = linear_problem(4, n=40, seed=8)
    eps = 0.05
    target = (y + 1 + torch.randint(0, 3, y.shape, generator=torch.Generator().manual_seed(0))) % 4
    slack = reachable_targets(model, x, target, eps)
    assert 0 < int((slack > 0).sum()) < len(y)
    x_adv = PGD(eps, steps=20)(model, x, y, target=target)
    with torch.no_grad():
        hit = model(x_adv).argmax(1) == target
    assert bool(hit[slack > 1e-3].all())
    assert not bool(hit[slack < -1e-3].any())


def test_least_likely_and_random_target_modes():
    model, x, y = linear_problem(4, n=16, seed=9)
    with torch.no_grad():
        least = model(x).argmin(1)
    x_adv = PGD(0.5, steps=20, target="least-likely")(model, x, y)
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) == least).all())
    x_adv = FGSM(0.5, target="random")(model, x, y)
    with torch.no_grad():
        assert int((model(x_adv).argmax(1) != y).sum()) > 0


def test_fab_t_finds_minimal_norms():
    model, x, y = linear_problem(2, n=48, seed=10)
    exact = exact_min_distance(model, x, y)
    eps = median_eps(model, x, y)
    attack = FABT(eps)
    x_adv = attack(model, x, y)
    norms = attack.last_norms
    assert norms is not None
    assert bool((norms >= exact * (1 - 1e-4)).all())  # never below the true minimum
    assert float(((norms - exact) / exact).max()) < 0.01  # within 1 % of it
    within = norms <= eps
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert bool((pred[within] != y[within]).all())
    assert torch.equal(x_adv[~within], x[~within])  # nothing beyond eps is returned


def test_apgd_t_tries_runner_up_classes():
    model, x, y = linear_problem(6, n=32, seed=11)
    eps = median_eps(model, x, y)
    one = APGDT(eps, n_target_classes=1, n_iter=30)(model, x, y)
    all_ = APGDT(eps, n_target_classes=9, n_iter=30)(model, x, y)
    assert robust_count(model, all_, y) <= robust_count(model, one, y)
