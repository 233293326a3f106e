"""Threshold (and initial-membrane) gradients of the per-element estimators, against finite
differences in float64.

A surrogate gradient is the exact derivative of the spiking layer with every spike linearised
around the real trajectory: ``s' = s + sg * ((h' - theta') - (h - theta))`` with the spike ``s``
and the multiplier ``sg`` of the real forward held fixed (the multiplier is not differentiated,
also where its width depends on theta). The reference below simulates that linearised layer
with its own float64 loop (no code shared with ``snn/dynamics.py``), and central differences of
it must equal the autograd gradients of ``spiking_layer`` for theta, the input and, through
``init = v_init * theta``, the initial membrane.
"""

from __future__ import annotations

import pytest
import torch

from robustsnn.snn import parse_estimator, triton_kernels
from robustsnn.snn.estimator_backward import backward_spec, spiking_layer
from robustsnn.snn.estimators import gives_threshold_gradient
from robustsnn.snn.run_state import RunState
from robustsnn.snn.spec import Dynamics

STEPS = 5


def _nominal(inputs, theta, leak, soft, v_init):
    """The real (hard-spike) trajectory: membranes h[t] and spikes s[t], float64."""
    u = torch.full_like(inputs[0], v_init * theta)
    hs, ss = [], []
    for t in range(inputs.shape[0]):
        h = leak * u + inputs[t]
        s = (h >= theta).double()
        hs.append(h)
        ss.append(s)
        u = h - theta * s if soft else h * (1 - s)
    return torch.stack(hs), torch.stack(ss)


def _linearised_loss(inputs, theta, weights, hs, ss, sg, theta0, leak, soft, detach, v_init):
    """sum_t w[t] . theta * s'[t] of the layer with linearised spikes (see module doc)."""
    u = v_init * theta * torch.ones_like(inputs[0])
    total = torch.zeros((), dtype=torch.float64)
    for t in range(inputs.shape[0]):
        h = leak * u + inputs[t]
        s = ss[t] + sg[t] * ((h - theta) - (hs[t] - theta0))
        total = total + (weights[t] * theta * s).sum()
        s_reset = ss[t] if detach else s
        u = h - theta * s_reset if soft else h * (1 - s_reset)
    return total


@pytest.mark.parametrize(
    "name",
    ["bptt-rel-pcw-1", "bptt-rel-pcw-1-dr", "bptt-pcw-1-dr", "bptt-rel-exp-2", "pdsg"],
)
@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("leak,v_init", [(1.0, 0.5), (0.9, 0.0)])
def test_threshold_gradient_matches_finite_differences(name, soft, leak, v_init):
    _check_against_finite_differences(name, soft, leak, v_init)


@pytest.mark.skipif(not triton_kernels.available(), reason="triton is not installed")
@pytest.mark.parametrize("name", ["bptt-rel-pcw-1", "bptt-rel-pcw-1-dr"])
@pytest.mark.parametrize("soft", [True, False])
def test_threshold_gradient_through_the_triton_kernel_matches_finite_differences(name, soft):
    """The same check with the backward recursion in the Triton kernel (CPU interpreter)."""
    with triton_kernels.kernel_override("triton"):
        _check_against_finite_differences(name, soft, 1.0, 0.5)


def _check_against_finite_differences(name, soft, leak, v_init):
    gen = torch.Generator().manual_seed(3)
    theta0 = 0.7
    inputs0 = torch.rand(STEPS, 3, 6, generator=gen, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.randn(STEPS, 3, 6, generator=gen, dtype=torch.float64)
    estimator = parse_estimator(name)
    assert gives_threshold_gradient(estimator)

    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    inputs = inputs0.clone().requires_grad_(True)
    init = theta * v_init if v_init else None
    out = spiking_layer(
        inputs,
        Dynamics(theta, STEPS, leak, soft, False, init),
        estimator,
        layer="l",
        channel_dim=None,
        state=None,
    )
    (out * weights).sum().backward()

    hs, ss = _nominal(inputs0, theta0, leak, soft, v_init)
    spec = backward_spec(estimator, "l", None, RunState())
    sg = spec.multiplier(hs, torch.tensor(theta0, dtype=torch.float64)).expand_as(hs)
    # the real forward is the reference's nominal trajectory, spike for spike
    assert torch.equal(out.detach() / theta0, ss)

    def loss(theta_value, inputs_value):
        return _linearised_loss(
            inputs_value,
            theta_value,
            weights,
            hs,
            ss,
            sg,
            theta0,
            leak,
            soft,
            spec.detach_reset,
            v_init,
        )

    step = 1e-6
    fd_theta = (loss(theta0 + step, inputs0) - loss(theta0 - step, inputs0)) / (2 * step)
    assert theta.grad is not None
    assert float(theta.grad) == pytest.approx(float(fd_theta), rel=1e-6, abs=1e-8)
    # and the input gradient at a few coordinates
    for t, b, i in [(0, 0, 0), (2, 1, 3), (STEPS - 1, 2, 5)]:
        bump = torch.zeros_like(inputs0)
        bump[t, b, i] = step
        fd = (loss(theta0, inputs0 + bump) - loss(theta0, inputs0 - bump)) / (2 * step)
        assert float(inputs.grad[t, b, i]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


def test_relative_surrogate_threshold_gradient_is_not_zero_and_trains():
    """A threshold trained through bptt-rel-pcw-1 moves (before this, its gradient was None)."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.tensor(0.5, requires_grad=True)
    inputs = torch.rand(4, 8, generator=gen)
    out = spiking_layer(
        inputs,
        Dynamics(theta, 4, 1.0, True, True, theta * 0.5),
        parse_estimator("bptt-rel-pcw-1"),
        layer="l",
        channel_dim=None,
        state=None,
    )
    out.sum().backward()
    assert theta.grad is not None and float(theta.grad) != 0.0


@pytest.mark.parametrize("name", ["hart-1", "rga", "ann-proxy"])
def test_attack_only_estimators_give_no_threshold_gradient(name):
    assert not gives_threshold_gradient(parse_estimator(name))
