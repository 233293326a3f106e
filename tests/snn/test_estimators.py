"""Gradient estimators: the registry, names, BPTR's mask, fused BPTT against per-step autograd."""

from __future__ import annotations

import itertools

import pytest
import torch

from robustsnn.errors import UserError
from robustsnn.snn.dynamics import bptr, bptt, if_forward, reference_if
from robustsnn.snn.estimators import (
    BPTR,
    BPTT,
    DEFAULT_ESTIMATOR,
    ANNProxy,
    estimator_names,
    paper_estimators,
    parse_estimator,
)
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate, paper_surrogates

STEPS = 6


def test_paper_estimators_are_the_19_members() -> None:
    estimators = paper_estimators()
    assert len(estimators) == 19
    assert sum(isinstance(e, BPTT) for e in estimators) == 17
    assert isinstance(estimators[-2], BPTR) and isinstance(estimators[-1], ANNProxy)
    names = estimator_names()
    assert len(set(names)) == 19
    assert names[:3] == ["bptt-pcw-0.25", "bptt-pcw-0.5", "bptt-pcw-1"]
    assert names[-3:] == ["bptt-ste", "bptr", "ann-proxy"]
    assert DEFAULT_ESTIMATOR == BPTT(Surrogate("pcw", 1.0))
    assert BPTT() == DEFAULT_ESTIMATOR and str(DEFAULT_ESTIMATOR) == "bptt-pcw-1"


@pytest.mark.parametrize("name", estimator_names())
def test_parse_estimator_round_trips(name: str) -> None:
    estimator = parse_estimator(name)
    assert estimator.name == name
    assert estimator in paper_estimators()


def test_parse_estimator_aliases_and_errors() -> None:
    assert parse_estimator("act") == ANNProxy()
    assert parse_estimator("ann") == ANNProxy()
    assert parse_estimator("bptt-exp-0.5") == BPTT(Surrogate("exp", 0.5))
    with pytest.raises(UserError, match="bptr"):
        parse_estimator("bpt")
    with pytest.raises(UserError):
        parse_estimator("bptt-triangle-1")


def _random_case(
    static: bool, seed: int, *, requires_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Currents around theta = 0.8 for 3 x 5 neurons (static ``[B, N]`` or ``[T, B, N]``).

    Neuron 0 of every sample gets a negative current, so it never fires.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (3, 5) if static else (STEPS, 3, 5)
    currents = torch.rand(shape, generator=g, dtype=torch.float64) * 1.6 - 0.3
    currents[..., 0] = -0.1  # a column that never fires
    currents.requires_grad_(requires_grad)
    theta = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    return currents, theta


GRID = list(itertools.product(("hard", "soft"), (1.0, 0.9), (False, True)))


@pytest.mark.parametrize("surrogate", paper_surrogates(), ids=lambda s: s.name)
def test_fused_bptt_equals_per_step_reference(surrogate: Surrogate) -> None:
    """Output, input gradient and threshold gradient of bptt == reference_if, all cases."""
    for case, (reset, leak, static) in enumerate(GRID):
        soft = reset == "soft"
        currents, theta = _random_case(static, seed=case)
        upstream = torch.randn(STEPS, 3, 5, generator=torch.Generator().manual_seed(99)).double()

        out_ref = reference_if(currents, Dynamics(theta, STEPS, leak, soft, static), surrogate)
        gi_ref, gt_ref = torch.autograd.grad((out_ref * upstream).sum(), (currents, theta))

        out = bptt(currents, Dynamics(theta, STEPS, leak, soft, static), surrogate)
        gi, gt = torch.autograd.grad((out * upstream).sum(), (currents, theta))

        where = f"{surrogate.name} {reset} leak={leak} static={static}"
        assert torch.equal(out, out_ref), where
        assert 0 < out.ne(0).sum() < out.numel(), f"{where}: degenerate case (no/all spikes)"
        assert gi.shape == currents.shape, where
        torch.testing.assert_close(gi, gi_ref, rtol=1e-10, atol=1e-12, msg=where)
        torch.testing.assert_close(gt, gt_ref, rtol=1e-10, atol=1e-12, msg=where)


def test_fused_bptt_gradients_are_not_trivial() -> None:
    """Guards the comparison above: gradients through time and the reset are non-zero."""
    currents, theta = _random_case(False, seed=0)
    out = bptt(currents, Dynamics(theta, STEPS, 1.0, False, False), Surrogate("pcw", 1.0))
    gi, gt = torch.autograd.grad(out.sum(), (currents, theta))
    assert gi.abs().sum() > 0 and gt.abs() > 0
    # the first step's current influences later spikes through the membrane
    only_last = torch.zeros_like(out)
    only_last[-1] = 1.0
    out = bptt(currents, Dynamics(theta, STEPS, 1.0, False, False), Surrogate("pcw", 1.0))
    (g_first,) = torch.autograd.grad((out * only_last).sum(), (currents,))
    assert g_first[:-1].abs().sum() > 0


def test_fused_bptt_matches_gradcheck_of_reference_on_smooth_surrogate() -> None:
    """bptt passes torch's gradcheck against the reference's analytic gradients."""
    currents, theta = _random_case(False, seed=5)
    sur = Surrogate("exp", 1.0)
    for soft in (False, True):
        out = bptt(currents, Dynamics(theta, STEPS, 0.9, soft, False), sur)
        ref = reference_if(currents, Dynamics(theta, STEPS, 0.9, soft, False), sur)
        for k in range(3):
            w = torch.randn(out.shape, generator=torch.Generator().manual_seed(k)).double()
            a = torch.autograd.grad((out * w).sum(), (currents, theta), retain_graph=True)
            b = torch.autograd.grad((ref * w).sum(), (currents, theta), retain_graph=True)
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("reset", "leak", "static"), GRID)
def test_bptt_and_bptr_forward_identical(reset: str, leak: float, static: bool) -> None:
    currents, theta = _random_case(static, seed=11)
    soft = reset == "soft"
    dyn = Dynamics(theta, STEPS, leak, soft, static)
    out_bptt = bptt(currents, dyn, Surrogate("rect", 0.5))
    out_bptr = bptr(currents, dyn)
    plain, _ = if_forward(currents.detach(), dyn.detached(), False)
    assert torch.equal(out_bptt, out_bptr)
    assert torch.equal(out_bptt, plain)


@pytest.mark.parametrize(("reset", "leak", "static"), GRID)
def test_bptr_backward_is_upstream_masked_by_fired(reset: str, leak: float, static: bool) -> None:
    currents, theta = _random_case(static, seed=21)
    soft = reset == "soft"
    out = bptr(currents, Dynamics(theta, STEPS, leak, soft, static))
    fired = out.detach().ne(0).any(0)  # [B, N]: fired at least once in T steps
    assert 0 < fired.sum() < fired.numel()
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).double()
    gi, gt = torch.autograd.grad((out * upstream).sum(), (currents, theta))
    masked = upstream * fired.double()
    expected = masked.sum(0) if static else masked
    torch.testing.assert_close(gi, expected, rtol=0, atol=1e-14)
    # threshold: only the amplitude path of theta * s
    torch.testing.assert_close(gt, (upstream * out.detach().ne(0).double()).sum())


def test_bptr_mask_hand_example() -> None:
    """Static currents 0.1 (never fires in 4 steps), 0.3 (fires at step 4), 2.0 (always)."""
    currents = torch.tensor([[0.1, 0.3, 2.0]], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(1.0, dtype=torch.float64)
    out = bptr(currents, Dynamics(theta, 4, 1.0, False, True))
    assert out.squeeze(1).sum(0).tolist() == [0.0, 1.0, 4.0]
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(4, 1, 1).expand(4, 1, 3)
    (out * upstream).sum().backward()
    assert currents.grad is not None
    assert currents.grad.tolist() == [[0.0, 10.0, 10.0]]
