"""``bptt-mix-LOW-HIGH-DRAW``: BPTT through threshold-relative PCW widths drawn per layer
(issue 30; docs/RESULTS.md 12k/12l)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.snn.estimator_backward import spiking_layer
from robustsnn.snn.estimators import (
    BPTT,
    MixedWidthBPTT,
    RelativeBPTT,
    gives_threshold_gradient,
    layer_draw,
    parse_estimator,
)
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate


def _layer_grad(estimator, layer: str, theta: float, seed: int = 0) -> torch.Tensor:
    """Input gradient of one IF layer (T 5) under ``estimator``, run as layer ``layer``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((5, 3, 7), generator=g, dtype=torch.float64) * 1.2 - 0.1) * theta
    x.requires_grad_(True)
    dyn = Dynamics(torch.tensor(theta, dtype=torch.float64), 5, 1.0, False, False)
    out = spiking_layer(x, dyn, estimator, layer=layer, channel_dim=None, state=None)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return grad


def test_names_round_trip_and_bad_names_get_one_line() -> None:
    for estimator in (MixedWidthBPTT(), MixedWidthBPTT(0.125, 2.0, 7, True)):
        assert parse_estimator(estimator.name) == estimator
    assert parse_estimator("bptt-mix-0.25-1-3-dr") == MixedWidthBPTT(0.25, 1.0, 3, True)
    for bad in ("bptt-mix", "bptt-mix-0.25-1", "bptt-mix-1-0.25-0", "bptt-mix-0.25-1-x",
                "bptt-mix-0-1-0", "bptt-mix-0.25-1-2.5"):  # fmt: skip
        with pytest.raises(UserError, match="bptt-mix"):
            parse_estimator(bad)
    assert gives_threshold_gradient(MixedWidthBPTT())


def test_widths_are_log_uniform_in_range_fixed_per_layer_and_draw() -> None:
    estimator = MixedWidthBPTT(0.25, 1.0, 0)
    layers = [f"features.{i}" for i in range(400)]
    widths = [estimator.width(name) for name in layers]
    assert all(0.25 <= w < 1.0 for w in widths)
    # log-uniform: log2(w / 0.25) / 2 is uniform on [0, 1): its mean ~ 1/2, quartiles filled
    u = [math.log2(w / 0.25) / 2 for w in widths]
    assert abs(sum(u) / len(u) - 0.5) < 0.05
    assert all(sum(q / 4 <= v < (q + 1) / 4 for v in u) > 60 for q in range(4))
    # the same name and draw: the same width (no process state); another draw: another width
    assert MixedWidthBPTT(0.25, 1.0, 0).width("features.3") == widths[3]
    assert layer_draw("0/features.3") == layer_draw("0/features.3")
    others = [MixedWidthBPTT(0.25, 1.0, d).width("features.3") for d in range(1, 9)]
    assert len(set(others + [widths[3]])) == 9
    # names one character apart are independent (CRC-32 values of such keys are not): for
    # independent uniforms the mean |u_i - u_(i+1)| is 1/3
    steps = [abs(a - b) for a, b in zip(u[:-1], u[1:], strict=True)]
    assert 0.28 < sum(steps) / len(steps) < 0.39


def test_each_layer_gets_the_relative_surrogate_of_its_width() -> None:
    """The gradient of a layer equals `bptt-rel-pcw-w` with the width the draw gives that layer
    (the closed form is tested for RelativeBPTT against per-step autograd elsewhere), and two
    layers of one draw get different widths."""
    estimator = MixedWidthBPTT(0.25, 1.0, 3)
    for layer, theta in (("features.2", 0.7), ("classifier.2", 3.0)):
        width = estimator.width(layer)
        want = _layer_grad(RelativeBPTT(Surrogate("pcw", width)), layer, theta)
        torch.testing.assert_close(_layer_grad(estimator, layer, theta), want)
        absolute = _layer_grad(BPTT(Surrogate("pcw", width * theta)), layer, theta)
        torch.testing.assert_close(_layer_grad(estimator, layer, theta), absolute)
    assert estimator.width("features.2") != estimator.width("classifier.2")


def _two_layer_net(scale: float) -> SpikingNetwork:
    """Linear -> IF -> Linear -> IF -> Linear; the first layer's weights and threshold x scale,
    the next layer's weights / scale: the same spikes, the same function."""
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Linear(6, 8), SpikingNeuron(0.5 * scale), nn.Linear(8, 5), SpikingNeuron(0.8),
        nn.Linear(5, 3),
    )  # fmt: skip
    with torch.no_grad():
        body[0].weight.mul_(scale)
        body[0].bias.mul_(scale)
        body[2].weight.div_(scale)
    return SpikingNetwork(body, T=6)


def test_rescaling_a_layer_leaves_the_mixed_gradient_unchanged() -> None:
    """Each layer's width is in units of its own threshold, so rescaling one layer's threshold
    and incoming weights (and the next layer's weights inversely) leaves the input gradient
    unchanged, which an absolute width does not: why a draw of relative widths, not a fixed
    absolute width, reaches the mixes that broke issue 30's gap sample."""
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(1)) * 2
    grads = {}
    for estimator in (MixedWidthBPTT(0.25, 1.0, 5), BPTT(Surrogate("pcw", 0.3))):
        for scale in (1.0, 100.0):
            view = _two_layer_net(scale).with_estimator(estimator)
            xi = x.clone().requires_grad_(True)
            logits = view(xi)
            (g,) = torch.autograd.grad(logits[:, 0].sum(), xi)
            grads[(estimator.name, scale)] = g
    mix = MixedWidthBPTT(0.25, 1.0, 5).name
    assert grads[(mix, 1.0)].abs().sum() > 0
    torch.testing.assert_close(grads[(mix, 1.0)], grads[(mix, 100.0)], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(grads[("bptt-pcw-0.3", 1.0)], grads[("bptt-pcw-0.3", 100.0)])


def test_a_ta_lif_layer_gets_its_own_drawn_width_not_the_fallback() -> None:
    from robustsnn.snn.ta_lif import FALLBACK, _surrogate

    estimator = MixedWidthBPTT(0.25, 1.0, 2, detach_reset=True)
    for layer in ("features.2", "classifier.1"):
        surrogate, relative, detach = _surrogate(estimator, layer)
        assert surrogate == Surrogate("pcw", estimator.width(layer)) != FALLBACK.surrogate
        assert relative and detach
