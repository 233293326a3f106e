"""Loss helpers, the exact box-constrained L-inf projection of FAB, APGD's schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from robustsnn.attacks.apgd import checkpoints
from robustsnn.attacks.fab import linf_step_to_hyperplane
from robustsnn.attacks.losses import (
    ce_loss,
    dlr_loss,
    get_loss,
    margin,
    targeted_dlr_loss,
)
from robustsnn.errors import UserError


def test_margin_and_dlr():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = torch.tensor([0, 0])
    assert margin(logits, y).tolist() == [2.0, -2.0]
    dlr = dlr_loss(logits, y)
    assert dlr[0] == pytest.approx(-2.0 / 3.0) and dlr[1] == pytest.approx(2.0 / 1.5)
    # DLR is invariant to shifting and positive rescaling of the logits
    assert torch.allclose(dlr_loss(5 * logits + 7, y), dlr)


def test_targeted_dlr():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y, t = torch.tensor([0]), torch.tensor([1])
    expected = -(3.0 - 1.0) / (3.0 - 0.5 * (0.0 - 1.0))
    assert targeted_dlr_loss(logits, y, t).item() == pytest.approx(expected)
    assert torch.allclose(targeted_dlr_loss(2 * logits - 1, y, t), targeted_dlr_loss(logits, y, t))


def test_small_class_counts_fall_back_to_margins():
    logits = torch.tensor([[2.0, -1.0]])
    y = torch.tensor([0])
    assert dlr_loss(logits, y).item() == pytest.approx(-3.0)
    assert targeted_dlr_loss(logits, y, torch.tensor([1])).item() == pytest.approx(-3.0)


def test_get_loss():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(5) % 4
    assert torch.allclose(get_loss("ce")(logits, y, None), ce_loss(logits, y))
    assert torch.allclose(get_loss("dlr")(logits, y, None), dlr_loss(logits, y))
    with pytest.raises(UserError, match="valid"):
        get_loss("hinge")


def test_apgd_checkpoints_follow_the_paper():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]


def lp_min_linf(x: np.ndarray, w: np.ndarray, c: float) -> float:
    """min t s.t. <w, d> = c, |d_i| <= t, 0 <= x + d <= 1 (variables d, t)."""
    dim = len(x)
    cost = np.zeros(dim + 1)
    cost[-1] = 1.0
    eye = np.eye(dim)
    a_ub = np.block([[eye, -np.ones((dim, 1))], [-eye, -np.ones((dim, 1))]])
    bounds = [(-xi, 1 - xi) for xi in x] + [(0, None)]
    result = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(2 * dim),
        A_eq=np.append(w, 0.0)[None],
        b_eq=[c],
        bounds=bounds,
    )
    return float(result.fun)


def test_linf_projection_matches_linear_programming():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 10, generator=g, dtype=torch.float64)
    w = torch.randn(12, 10, generator=g, dtype=torch.float64)
    w[0, :5] = 0.0
    c = torch.randn(12, generator=g, dtype=torch.float64)
    d = linf_step_to_hyperplane(x, w, c)
    assert torch.allclose((w * d).sum(1), c, atol=1e-9)
    assert bool(((x + d) >= -1e-12).all() and ((x + d) <= 1 + 1e-12).all())
    for i in range(12):
        expected = lp_min_linf(x[i].numpy(), w[i].numpy(), float(c[i]))
        assert d[i].abs().max().item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_linf_projection_unreachable_goes_to_the_far_corner():
    x = torch.tensor([[0.5, 0.5]])
    w = torch.tensor([[1.0, -1.0]])
    d = linf_step_to_hyperplane(x, w, torch.tensor([5.0]))
    assert torch.allclose(x + d, torch.tensor([[1.0, 0.0]]))
    assert torch.equal(linf_step_to_hyperplane(x, w, torch.tensor([0.0])), torch.zeros(1, 2))
