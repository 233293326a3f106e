"""Surrogate derivatives: closed-form values, the paper's 17 variants, names and registry."""

from __future__ import annotations

import math

import pytest
import torch

from robustsnn.errors import UserError
from robustsnn.snn.dynamics import bptt, reference_if
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import (
    PAPER_GAMMAS,
    SURROGATE_KINDS,
    Surrogate,
    paper_surrogates,
    parse_surrogate,
)

E1 = math.exp(-1.0)
E2 = math.exp(-2.0)

# (kind, gamma, [(x, expected dS/dU at x = u - theta), ...]) written out by hand from PAPER.md 3.
GOLDEN: list[tuple[str, float, list[tuple[float, float]]]] = [
    # PCW: max(0, gamma - |x|) / gamma^2
    ("pcw", 1.0, [(0.0, 1.0), (0.5, 0.5), (-0.25, 0.75), (1.0, 0.0), (1.5, 0.0), (-2.0, 0.0)]),
    ("pcw", 0.5, [(0.0, 2.0), (0.25, 1.0), (-0.125, 1.5), (0.6, 0.0)]),
    ("pcw", 0.25, [(0.0, 4.0), (0.125, 2.0), (-0.3, 0.0)]),
    ("pcw", 2.0, [(0.0, 0.5), (1.0, 0.25), (-1.5, 0.125), (-3.0, 0.0)]),
    ("pcw", 3.0, [(0.0, 1.0 / 3.0), (1.5, 1.0 / 6.0), (-2.5, 0.5 / 9.0), (3.5, 0.0)]),
    # EXP: exp(-gamma |x|)
    ("exp", 1.0, [(0.0, 1.0), (1.0, E1), (-2.0, E2), (-1.0, E1)]),
    ("exp", 0.5, [(0.0, 1.0), (2.0, E1), (-4.0, E2)]),
    ("exp", 2.0, [(0.0, 1.0), (0.5, E1), (-1.0, E2)]),
    # EXP-D: 0.3 exp(-gamma |x|)
    ("expd", 1.0, [(0.0, 0.3), (1.0, 0.3 * E1), (-2.0, 0.3 * E2)]),
    ("expd", 0.5, [(0.0, 0.3), (-2.0, 0.3 * E1)]),
    ("expd", 2.0, [(0.0, 0.3), (0.5, 0.3 * E1), (1.0, 0.3 * E2)]),
    # RECT: 1{|x| < gamma / 2} / gamma (strict inequality at the edge)
    ("rect", 1.0, [(0.0, 1.0), (0.25, 1.0), (-0.375, 1.0), (0.5, 0.0), (-0.5, 0.0), (2.0, 0.0)]),
    ("rect", 0.5, [(0.0, 2.0), (0.125, 2.0), (-0.25, 0.0), (0.375, 0.0)]),
    ("rect", 0.25, [(0.0, 4.0), (-0.0625, 4.0), (0.125, 0.0), (0.25, 0.0)]),
    ("rect", 2.0, [(0.0, 0.5), (-0.75, 0.5), (1.0, 0.0), (1.5, 0.0)]),
    ("rect", 4.0, [(0.0, 0.25), (1.75, 0.25), (-2.0, 0.0), (3.0, 0.0)]),
    # STE: 1
    ("ste", 1.0, [(0.0, 1.0), (5.0, 1.0), (-5.0, 1.0), (0.5, 1.0)]),
]
GOLDEN_IDS = [f"{k}-{g:g}" for k, g, _ in GOLDEN]


@pytest.mark.parametrize(("kind", "gamma", "points"), GOLDEN, ids=GOLDEN_IDS)
def test_surrogate_grad_closed_form(
    kind: str, gamma: float, points: list[tuple[float, float]]
) -> None:
    x = torch.tensor([p[0] for p in points], dtype=torch.float64)
    expected = torch.tensor([p[1] for p in points], dtype=torch.float64)
    before = x.clone()
    got = Surrogate(kind, gamma).grad(x)
    assert torch.equal(x, before), "grad() must not modify its input"
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def _spike_input_grad(fn: str, surrogate: Surrogate, x: torch.Tensor, theta: float) -> torch.Tensor:
    """d(output)/d(current) of one step of one layer: output = theta * H(current - theta)."""
    current = (x + theta).reshape(1, -1).clone().requires_grad_(True)  # [T=1, N]
    th = torch.tensor(theta, dtype=torch.float64)
    if fn == "reference":
        out = reference_if(current, Dynamics(th, 1, 1.0, False, False), surrogate)
    else:
        out = bptt(current, Dynamics(th, 1, 1.0, False, False), surrogate)
    out.sum().backward()
    assert current.grad is not None
    return current.grad.reshape(-1) / theta


@pytest.mark.parametrize("fn", ["reference", "fused"])
@pytest.mark.parametrize(("kind", "gamma", "points"), GOLDEN, ids=GOLDEN_IDS)
def test_spike_function_backward_uses_surrogate(
    fn: str, kind: str, gamma: float, points: list[tuple[float, float]]
) -> None:
    """Autograd through the spike function gives the hand-computed surrogate values."""
    theta = 1.0  # x + theta is exact for the chosen binary fractions
    x = torch.tensor([p[0] for p in points], dtype=torch.float64)
    expected = torch.tensor([p[1] for p in points], dtype=torch.float64)
    got = _spike_input_grad(fn, Surrogate(kind, gamma), x, theta)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_spike_function_backward_scales_with_theta() -> None:
    """The emitted value is theta * spike, so d out / d current = theta * surrogate(h - theta)."""
    theta = 2.0
    x = torch.tensor([0.0, 0.5, -1.0, 3.0], dtype=torch.float64)
    current = (x + theta).reshape(1, -1).requires_grad_(True)
    th = torch.tensor(theta, dtype=torch.float64)
    out = reference_if(current, Dynamics(th, 1, 1.0, False, False), Surrogate("pcw", 2.0))
    torch.testing.assert_close(out.reshape(-1), torch.tensor([2.0, 2.0, 0.0, 2.0]).double())
    out.sum().backward()
    expected = theta * torch.tensor([0.5, 0.375, 0.25, 0.0], dtype=torch.float64)
    torch.testing.assert_close(current.grad.reshape(-1), expected)


def test_surrogate_kinds_registry() -> None:
    assert SURROGATE_KINDS.names() == ["exp", "expd", "pcw", "rect", "ste"]
    assert set(PAPER_GAMMAS) == set(SURROGATE_KINDS.names())
    with pytest.raises(UserError, match="valid: exp, expd, pcw, rect, ste"):
        Surrogate("sigmoid", 1.0).grad(torch.zeros(2))
    with pytest.raises(UserError, match="pcw"):
        parse_surrogate("triangle-1")


def test_paper_surrogates_are_the_17_variants() -> None:
    variants = paper_surrogates()
    assert len(variants) == 17
    names = [s.name for s in variants]
    assert names == [
        "pcw-0.25",
        "pcw-0.5",
        "pcw-1",
        "pcw-2",
        "pcw-3",
        "exp-0.5",
        "exp-1",
        "exp-2",
        "expd-0.5",
        "expd-1",
        "expd-2",
        "rect-0.25",
        "rect-0.5",
        "rect-1",
        "rect-2",
        "rect-4",
        "ste",
    ]
    assert len(set(variants)) == 17  # frozen dataclasses: hashable and distinct


@pytest.mark.parametrize("surrogate", paper_surrogates(), ids=lambda s: s.name)
def test_parse_surrogate_round_trips_names(surrogate: Surrogate) -> None:
    parsed = parse_surrogate(surrogate.name)
    assert parsed == surrogate
    assert parsed.name == surrogate.name


def test_parse_surrogate_defaults_and_forms() -> None:
    assert parse_surrogate("pcw") == Surrogate("pcw", 1.0)
    assert parse_surrogate("exp-0.5") == Surrogate("exp", 0.5)
    assert parse_surrogate("rect-4.0") == Surrogate("rect", 4.0)
    assert parse_surrogate("ste") == Surrogate("ste", 1.0)


@pytest.mark.parametrize("bad", ["pcw-abc", "pcw-0", "exp--1", "rect-nan", "pcw-inf"])
def test_parse_surrogate_rejects_bad_gamma(bad: str) -> None:
    with pytest.raises(UserError, match="gamma"):
        parse_surrogate(bad)


@pytest.mark.parametrize("surrogate", paper_surrogates(), ids=lambda s: s.name)
def test_surrogate_is_even_and_nonnegative(surrogate: Surrogate) -> None:
    x = torch.linspace(-5.0, 5.0, 101, dtype=torch.float64)
    g = surrogate.grad(x)
    assert (g >= 0).all()
    torch.testing.assert_close(g, surrogate.grad(-x))
    assert g[50] > 0  # the derivative is positive at the threshold itself
