"""The fused dynamics (robustsnn.snn.dynamics) equal the plain per-step autograd reference.

Covers every paper surrogate (fast in-place forms and the generic ``surrogate.grad`` path), hard
and soft reset, leak 1 and 0.99, static and time-varying inputs, BPTR, the static-input
recomputation, several neuron blocks (a tiny ``BLOCK`` with a remainder), float32, and the
GPU when one is present.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from robustsnn.snn import dynamics
from robustsnn.snn.dynamics import bptr, bptt, if_forward, reference_if
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate, paper_surrogates

STEPS = 6
THETA = 0.75
GRID = list(itertools.product(("hard", "soft"), (1.0, 0.99), (False, True)))
GRID_IDS = [f"{r}-leak{leak}-{'static' if s else 'varying'}" for r, leak, s in GRID]


def _case(
    static: bool, seed: int, dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Currents [B=3, 11] (static) or [T, 3, 11]; column 0 never fires, column 1 hits theta
    exactly (0.375 + 0.375 == 0.75 in binary), the rest are random in [-0.3, 1.3)."""
    g = torch.Generator().manual_seed(seed)
    shape = (3, 11) if static else (STEPS, 3, 11)
    currents = torch.rand(shape, generator=g, dtype=torch.float64) * 1.6 - 0.3
    currents[..., 0] = -0.1
    currents[..., 1] = 0.375
    currents = currents.to(dtype=dtype, device=device).requires_grad_(True)
    theta = torch.tensor(THETA, dtype=dtype, device=device, requires_grad=True)
    return currents, theta


def _upstream(dtype: torch.dtype = torch.float64, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(99)
    return torch.randn(STEPS, 3, 11, generator=g, dtype=torch.float64).to(
        dtype=dtype, device=device
    )


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], upstream: torch.Tensor):
    return torch.autograd.grad((out * upstream).sum(), inputs)


@pytest.fixture(params=[1 << 18, 7], ids=["one-block", "blocks-of-7"])
def block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run each test with the default block size and with 7 (33 neurons: 4 blocks + remainder)."""
    monkeypatch.setattr(dynamics, "BLOCK", request.param)
    return int(request.param)


@pytest.mark.parametrize("surrogate", paper_surrogates(), ids=lambda s: s.name)
@pytest.mark.parametrize("fast", [True, False], ids=["fast-surrogate", "generic-surrogate"])
def test_bptt_equals_reference(
    surrogate: Surrogate, fast: bool, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs (bit for bit), input and threshold gradients of bptt == reference_if."""
    del block
    if not fast:
        monkeypatch.setattr(dynamics, "_FAST_SURROGATES", {})
    upstream = _upstream()
    for case, (reset, leak, static) in enumerate(GRID):
        soft = reset == "soft"
        where = f"{surrogate.name} {reset} leak={leak} static={static}"
        currents, theta = _case(static, seed=case)
        before = currents.detach().clone()
        ref = reference_if(currents, Dynamics(theta, STEPS, leak, soft, static), surrogate)
        gi_ref, gt_ref = _grads(ref, (currents, theta), upstream)
        out = bptt(currents, Dynamics(theta, STEPS, leak, soft, static), surrogate)
        gi, gt = _grads(out, (currents, theta), upstream)
        assert torch.equal(out, ref), where
        assert 0 < out.ne(0).sum() < out.numel(), f"{where}: no or only spikes"
        assert torch.equal(currents.detach(), before), f"{where}: input modified"
        assert gi.shape == currents.shape and gt.shape == theta.shape, where
        torch.testing.assert_close(gi, gi_ref, rtol=1e-10, atol=1e-12, msg=where)
        torch.testing.assert_close(gt, gt_ref, rtol=1e-10, atol=1e-12, msg=where)


@pytest.mark.parametrize(("reset", "leak", "static"), GRID, ids=GRID_IDS)
def test_static_recomputation_equals_stored_membranes(
    reset: str, leak: float, static: bool, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recomputing a static layer's membranes in the backward changes no number."""
    del block
    soft = reset == "soft"
    sur = Surrogate("pcw", 1.0)
    results = []
    for recompute in (True, False):
        monkeypatch.setattr(dynamics, "RECOMPUTE_STATIC", recompute)
        currents, theta = _case(static, seed=3)
        out = bptt(currents, Dynamics(theta, STEPS, leak, soft, static), sur)
        results.append((out, *_grads(out, (currents, theta), _upstream())))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("reset", "leak", "static"), GRID, ids=GRID_IDS)
def test_bptr_forward_and_backward(reset: str, leak: float, static: bool, block: int) -> None:
    """BPTR: the exact spiking forward; dL/dI = upstream where the neuron fired at all."""
    del block
    soft = reset == "soft"
    currents, theta = _case(static, seed=7)
    ref = reference_if(currents, Dynamics(theta, STEPS, leak, soft, static), Surrogate("ste"))
    out = bptr(currents, Dynamics(theta, STEPS, leak, soft, static))
    assert torch.equal(out, ref)
    upstream = _upstream()
    gi, gt = _grads(out, (currents, theta), upstream)
    fired = ref.detach().ne(0).any(0).double()
    assert 0 < fired.sum() < fired.numel()
    expected = (upstream * fired).sum(0) if static else upstream * fired
    torch.testing.assert_close(gi, expected, rtol=1e-12, atol=1e-14)
    expected_theta = (upstream * ref.detach().ne(0).double()).sum()
    torch.testing.assert_close(gt, expected_theta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("reset", "leak", "static"), GRID, ids=GRID_IDS)
def test_no_grad_forward_and_membranes(reset: str, leak: float, static: bool, block: int) -> None:
    """if_forward (no autograd, in-place path) gives the reference spikes and membranes."""
    del block
    soft = reset == "soft"
    currents, theta = _case(static, seed=11)
    ref = reference_if(currents, Dynamics(theta, STEPS, leak, soft, static), Surrogate("pcw", 1.0))
    plain, none = if_forward(
        currents.detach(), Dynamics(theta.detach(), STEPS, leak, soft, static), False
    )
    assert torch.equal(plain, ref.detach()) and none == []
    out, membranes = if_forward(
        currents.detach(), Dynamics(theta.detach(), STEPS, leak, soft, static)
    )
    assert torch.equal(out, plain) and len(membranes) == STEPS
    # membranes recomputed with the reference's formulas
    u = torch.zeros(currents.shape[-2:], dtype=torch.float64)
    for t in range(STEPS):
        h = leak * u + (currents.detach() if static else currents.detach()[t])
        assert torch.equal(membranes[t], h), f"step {t}"
        s = (h >= THETA).double()
        u = h - s * THETA if soft else h * (1 - s)


def test_float32_and_non_contiguous_inputs(block: int) -> None:
    """float32 (the network's dtype) and a transposed, non-contiguous current tensor."""
    del block
    sur = Surrogate("pcw", 1.0)
    currents, theta = _case(False, seed=5, dtype=torch.float32)
    varying = currents.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)
    upstream = _upstream(torch.float32)
    for soft in (False, True):
        ref = reference_if(varying, Dynamics(theta, STEPS, 1.0, soft, False), sur)
        out = bptt(varying, Dynamics(theta, STEPS, 1.0, soft, False), sur)
        assert torch.equal(out, ref)
        for a, b in zip(
            _grads(out, (varying, theta), upstream),
            _grads(ref, (varying, theta), upstream),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_single_step_and_threshold_without_grad() -> None:
    """T = 1, and a threshold that needs no gradient (no theta work in the backward)."""
    sur = Surrogate("exp", 1.0)
    currents = torch.tensor([[0.2, 0.8, 1.0]], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(0.8, dtype=torch.float64)
    out = bptt(currents.unsqueeze(0), Dynamics(theta, 1, 1.0, False, False), sur)
    assert out.flatten().tolist() == [0.0, 0.8, 0.8]
    (gi,) = torch.autograd.grad(out.sum(), (currents,))
    expected = 0.8 * torch.exp(-(currents.detach() - 0.8).abs())
    torch.testing.assert_close(gi, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("static", [False, True])
def test_cuda_matches_reference(static: bool) -> None:
    """The GPU path runs and agrees with the reference on the same device."""
    sur = Surrogate("pcw", 1.0)
    upstream = _upstream(torch.float32, "cuda")
    for soft in (False, True):
        currents, theta = _case(static, seed=2, dtype=torch.float32, device="cuda")
        ref = reference_if(currents, Dynamics(theta, STEPS, 0.99, soft, static), sur)
        out = bptt(currents, Dynamics(theta, STEPS, 0.99, soft, static), sur)
        assert torch.equal(out, ref)
        for a, b in zip(
            _grads(out, (currents, theta), upstream),
            _grads(ref, (currents, theta), upstream),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        out_bptr = bptr(currents, Dynamics(theta, STEPS, 0.99, soft, static))
        assert torch.equal(out_bptr, ref)
        out_bptr.sum().backward()


def test_neurons_are_blocked_on_cpu_only():
    """CPU runs in cache-sized blocks; a GPU gets one block (fewer kernel launches, measured
    0.76x vs 1.92x T x ANN forward+backward on an H200, docs/RESULTS_performance.md)."""
    assert dynamics._block_size(torch.device("cpu")) == dynamics.BLOCK
    assert dynamics._block_size(torch.device("meta")) >= 1 << 40
    assert dynamics._blocks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
