"""Fused IF/LIF autograd functions against the per-step reference: shapes, dtypes, edge cases."""

from __future__ import annotations

import pytest
import torch

from robustsnn.snn.dynamics import bptr, bptt, if_forward, reference_if
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate


def _currents(shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 1.4 - 0.2).to(dtype)


def _compare(
    inputs: torch.Tensor,
    theta: torch.Tensor,
    steps: int,
    leak: float,
    soft: bool,
    static: bool,
    surrogate: Surrogate,
    loss,  # type: ignore[no-untyped-def]
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> None:
    wrt = [t for t in (inputs, theta) if t.requires_grad]
    ref = reference_if(inputs, Dynamics(theta, steps, leak, soft, static), surrogate)
    out = bptt(inputs, Dynamics(theta, steps, leak, soft, static), surrogate)
    assert torch.equal(out, ref)
    g_ref = torch.autograd.grad(loss(ref), wrt)
    g_out = torch.autograd.grad(loss(out), wrt)
    for a, b in zip(g_out, g_ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("static", [False, True], ids=["varying", "static"])
def test_conv_shaped_inputs_and_expanded_upstream_gradient(soft: bool, static: bool) -> None:
    """[T, B, C, H, W] currents; loss = sum/mean gives expanded (stride 0) upstream gradients."""
    steps = 5
    shape = (2, 3, 4, 4) if static else (steps, 2, 3, 4, 4)
    x = _currents(shape, 1, torch.float64).requires_grad_(True)
    theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    sur = Surrogate("pcw", 1.0)
    _compare(x, theta, steps, 0.9, soft, static, sur, lambda o: o.sum())
    _compare(x, theta, steps, 1.0, soft, static, sur, lambda o: o.mean(0).pow(2).sum())
    _compare(x, theta, steps, 1.0, soft, static, sur, lambda o: o[-1].sum())


@pytest.mark.parametrize("which", ["input-only", "theta-only"])
def test_gradient_of_one_argument(which: str) -> None:
    steps = 6
    x = _currents((steps, 3, 7), 2, torch.float64).requires_grad_(which == "input-only")
    theta = torch.tensor(0.6, dtype=torch.float64, requires_grad=which == "theta-only")
    w = torch.randn(steps, 3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for soft in (False, True):
        _compare(x, theta, steps, 0.9, soft, False, Surrogate("exp", 2.0), lambda o: (o * w).sum())


@pytest.mark.parametrize("steps", [1, 2, 24])
def test_short_and_long_horizons(steps: int) -> None:
    x = _currents((steps, 4, 6), 3, torch.float64).requires_grad_(True)
    theta = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(steps, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for soft in (False, True):
        for sur in (Surrogate("rect", 1.0), Surrogate("ste")):
            _compare(x, theta, steps, 1.0, soft, False, sur, lambda o: (o * w).sum())
    xs = x[0].detach().clone().requires_grad_(True)
    _compare(xs, theta, steps, 0.9, True, True, Surrogate("pcw", 0.5), lambda o: (o * w).sum())


def test_float32_matches_reference() -> None:
    steps = 8
    x = _currents((steps, 16, 10), 4, torch.float32).requires_grad_(True)
    theta = torch.tensor(0.55, dtype=torch.float32, requires_grad=True)
    w = torch.randn(steps, 16, 10, generator=torch.Generator().manual_seed(2))
    for soft in (False, True):
        for leak in (1.0, 0.9):
            _compare(
                x,
                theta,
                steps,
                leak,
                soft,
                False,
                Surrogate("pcw", 1.0),
                lambda o: (o * w).sum(),
                rtol=1e-4,
                atol=1e-5,
            )


def test_custom_surrogate_kind_takes_the_generic_path() -> None:
    """A surrogate object whose kind has no fast form still follows ``surrogate.grad``."""

    class Sigmoidish(Surrogate):
        def grad(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            s = torch.sigmoid(4.0 * x)
            return 4.0 * s * (1 - s)

    steps = 5
    x = _currents((steps, 3, 4), 5, torch.float64).requires_grad_(True)
    theta = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(steps, 3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for soft in (False, True):
        _compare(x, theta, steps, 0.9, soft, False, Sigmoidish("custom"), lambda o: (o * w).sum())


@pytest.mark.parametrize("static", [False, True], ids=["varying", "static"])
def test_inputs_are_never_modified(static: bool) -> None:
    steps = 4
    x = _currents((3, 5) if static else (steps, 3, 5), 6, torch.float64).requires_grad_(True)
    theta = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    for soft in (False, True):
        for leak in (1.0, 0.9):
            if_forward(x.detach(), Dynamics(theta.detach(), steps, leak, soft, static), False)
            if_forward(x.detach(), Dynamics(theta.detach(), steps, leak, soft, static), True)
            out = bptt(x, Dynamics(theta, steps, leak, soft, static), Surrogate("pcw", 1.0))
            out.sum().backward()
            out = bptr(x, Dynamics(theta, steps, leak, soft, static))
            out.sum().backward()
            assert torch.equal(x.detach(), before)
    assert float(theta.detach()) == 0.5


def test_double_backward_through_retained_graph() -> None:
    """Backward twice through the same graph (retain_graph) gives the same gradient twice."""
    steps = 5
    x = _currents((steps, 2, 3), 7, torch.float64).requires_grad_(True)
    theta = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    out = bptt(x, Dynamics(theta, steps, 1.0, False, False), Surrogate("pcw", 1.0))
    a = torch.autograd.grad(out.sum(), (x, theta), retain_graph=True)
    b = torch.autograd.grad(out.sum(), (x, theta))
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
