"""Membrane recording (``SpikingNetwork.recording_membranes``): off by default, the forward's
membranes, and the membrane-margin penalty's gradient against its closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustsnn.conversion import convert
from robustsnn.models import build_model
from robustsnn.snn import SpikingNetwork, SpikingNeuron, parse_estimator
from robustsnn.training.regularizers import membrane_margin_penalty


def _one_neuron(theta: float, v_init: float, reset: str, leak: float) -> SpikingNetwork:
    body = nn.Sequential(
        SpikingNeuron(threshold=theta, v_init=v_init, reset=reset, leak=leak), nn.Linear(1, 1)
    )
    return SpikingNetwork(body, T=2).double()


def _closed_form(
    current: float, theta: float, v_init: float, soft: bool, leak: float, margin: float
) -> tuple[float, float, float]:
    """Penalty and its derivatives in the input current and the threshold, written out for one
    neuron over two steps (spikes constant, as in the recorded membranes)."""
    u, du_di, du_dth = v_init * theta, 0.0, v_init  # u[-1] = v_init * theta
    steps = []
    for _ in range(2):
        h, dh_di, dh_dth = leak * u + current, leak * du_di + 1.0, leak * du_dth
        steps.append((h, dh_di, dh_dth))
        s = 1.0 if h >= theta else 0.0
        if soft:  # u = h - theta * s
            u, du_di, du_dth = h - theta * s, dh_di, dh_dth - s
        else:  # u = h * (1 - s)
            u, du_di, du_dth = h * (1 - s), dh_di * (1 - s), dh_dth * (1 - s)
    penalty = grad_i = grad_th = 0.0
    for h, dh_di, dh_dth in steps:
        distance = abs(h - theta) / theta
        if distance < margin:  # relu(margin - |h - theta| / theta) is active
            sign = math.copysign(1.0, h - theta)
            penalty += margin - distance
            grad_i -= sign * dh_di / theta
            grad_th -= (sign * (dh_dth - 1.0) * theta - abs(h - theta)) / theta**2
    return penalty / 2, grad_i / 2, grad_th / 2


@pytest.mark.parametrize(
    "theta,current,v_init,reset,leak,margin",
    [
        (1.0, 0.52, 0.5, "soft", 1.0, 0.5),  # spike at t0, both steps in the band
        (2.0, 0.9, 0.5, "hard", 1.0, 0.3),  # no spike, only t0 in the band
        (0.8, 0.45, 0.0, "soft", 1.0, 0.6),  # zero start, both in the band
        (1.0, 1.1, 0.0, "hard", 1.0, 0.2),  # hard reset cuts t1 off from t0
        (1.0, 0.6, 0.5, "soft", 0.9, 0.3),  # leaky
    ],
)
@pytest.mark.parametrize("estimator", ["bptt-pcw-1", "bptt-rel-pcw-1"])
def test_margin_penalty_gradient_matches_the_closed_form_on_one_neuron_two_steps(
    theta, current, v_init, reset, leak, margin, estimator
):
    net = _one_neuron(theta, v_init, reset, leak)
    neuron = net.neurons()[0]
    x = torch.tensor([[current]], dtype=torch.float64, requires_grad=True)
    with net.use_estimator(parse_estimator(estimator)), net.recording_membranes() as traces:
        net(x)
    assert len(traces) == 1 and traces[0].h.shape == (2, 1, 1)
    penalty = membrane_margin_penalty(traces, margin)
    grad_x, grad_theta = torch.autograd.grad(penalty, [x, neuron.threshold])
    theta = float(neuron.threshold.detach())  # the float32 value the layer was built with
    want, want_x, want_theta = _closed_form(current, theta, v_init, reset == "soft", leak, margin)
    assert float(penalty.detach()) == pytest.approx(want, abs=1e-12)
    assert float(grad_x) == pytest.approx(want_x, abs=1e-12)
    assert float(grad_theta) == pytest.approx(want_theta, abs=1e-12)
    assert want_x != 0  # the case exercises the band


def _tiny_snn() -> SpikingNetwork:
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=2, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,),
        width=4, fc=16,
    )  # fmt: skip
    images = torch.rand(32, 1, 8, 8)
    return convert(ann, images, T=3, calib_T=10, calib_batches=1, calib_batch_size=32)


def test_recording_is_off_by_default_and_holds_the_forward_membranes():
    snn = _tiny_snn().eval()
    x = torch.rand(5, 1, 8, 8)
    assert snn.context.membranes is None
    plain = snn(x)
    with snn.recording() as spikes, snn.recording_membranes() as traces:
        recorded = snn(x)
    assert snn.context.membranes is None  # restored
    assert torch.equal(plain, recorded)  # recording changes nothing in the forward
    assert [t.layer for t in traces] == [n.name for n in snn.neurons()]
    for trace in traces:
        assert trace.h.shape[:2] == (snn.T, 5)
        # the rebuilt membranes fire exactly where the forward fired (per step and sample;
        # the membranes are flattened in the layout the layer ran in)
        fired = (trace.h >= trace.theta).sum(-1)
        assert torch.equal(fired, spikes[trace.layer].flatten(2).sum(-1))
    # two passes, two traces per layer; a paused block records nothing
    with snn.recording_membranes() as traces:
        snn(x)
        with snn.recording_membranes(enabled=False):
            snn(x)
        snn(x)
    assert len(traces) == 2 * len(snn.neurons())
    # the ANN proxy has no membranes
    with snn.recording_membranes() as traces:
        snn.with_estimator(parse_estimator("ann-proxy"))(x)
    assert traces == []
    with pytest.raises(ValueError, match="no membranes"):
        membrane_margin_penalty(traces, 0.1)
