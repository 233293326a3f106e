"""The SNN estimators of the attack literature: ASSG, PDSG, RGA, HART, threshold-relative
widths and the detached reset, each against its closed form or an autograd reference."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.snn import SpikingNetwork, SpikingNeuron, parse_estimator
from robustsnn.snn.dynamics import bptr, bptt
from robustsnn.snn.estimator_backward import (
    atan_sharpness,
    pdsg_sigma,
    pdsg_surrogate,
    spiking_layer,
)
from robustsnn.snn.estimators import (
    ASSG,
    BPTT,
    HART,
    PDSG,
    RGA,
    RelativeBPTT,
    sota_estimators,
)
from robustsnn.snn.run_state import RunState
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    """Closed forms are compared in float64; the default dtype is restored after each test."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _layer_grad(
    estimator,
    inputs: torch.Tensor,
    theta: float,
    steps: int,
    *,
    leak: float = 1.0,
    soft: bool = False,
    static: bool = False,
    upstream: torch.Tensor | None = None,
    state: RunState | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input gradient of one layer under ``estimator`` (fixed upstream gradient)."""
    x = inputs.clone().requires_grad_(True)
    out = spiking_layer(
        x,
        Dynamics(torch.tensor(theta), steps, leak, soft, static),
        estimator,
        layer="l",
        channel_dim=None,
        state=state,
    )
    g = upstream if upstream is not None else torch.ones_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    return out.detach(), grad


def _reference(
    inputs: torch.Tensor,
    theta: float,
    steps: int,
    leak: float,
    soft: bool,
    static: bool,
    surrogate_grad,
    detach_reset: bool,
    upstream: torch.Tensor,
) -> torch.Tensor:
    """Per-step autograd BPTT (optionally with the reset detached): the ground truth."""

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[override]
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            (x,) = ctx.saved_tensors
            return g * surrogate_grad(x)

    x = inputs.clone().requires_grad_(True)
    u = torch.zeros_like(x if static else x[0])
    outs = []
    for t in range(steps):
        h = leak * u + (x if static else x[t])
        s = Spike.apply(h - theta)
        r = s.detach() if detach_reset else s
        u = h - r * theta if soft else h * (1 - r)
        outs.append(s * theta)
    (grad,) = torch.autograd.grad(torch.stack(outs), x, upstream)
    return grad


def _currents(static: bool, steps: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (3, 7) if static else (steps, 3, 7)
    return torch.rand(shape, generator=g) * 1.2 - 0.1


# --------------------------------------------------------------------------- names


def test_sota_names_round_trip() -> None:
    for estimator in sota_estimators():
        assert parse_estimator(estimator.name) == estimator
    assert parse_estimator("assg") == ASSG("atan", 0.425)
    assert parse_estimator("assg-atan-0.425-dr") == ASSG(detach_reset=True)
    assert parse_estimator("bptt-pcw-1-dr") == BPTT(Surrogate("pcw", 1.0), True)
    assert parse_estimator("bptt-rel-pcw-0.5") == RelativeBPTT(Surrogate("pcw", 0.5))
    assert parse_estimator("pdsg-pooled") == PDSG(pooled=True)
    assert parse_estimator("hart-0.5") == HART(0.5)
    for bad in ("assg-atan-0.6", "assg-foo", "hart-x", "rga-1", "pdsg-x", "hart-1-dr"):
        with pytest.raises(UserError):
            parse_estimator(bad)


# --------------------------------------------------------------------------- BPTT variants


@pytest.mark.parametrize(
    "static,soft,leak,detach",
    list(itertools.product([False, True], [False, True], [1.0, 0.6], [False, True])),
)
def test_elementwise_bptt_matches_autograd_reference(
    static: bool, soft: bool, leak: float, detach: bool
) -> None:
    steps, theta = 5, 0.4
    inputs = _currents(static, steps)
    upstream = torch.randn((steps, 3, 7), generator=torch.Generator().manual_seed(1))
    surrogate = Surrogate("pcw", 0.7)
    _, got = _layer_grad(
        BPTT(surrogate, detach), inputs, theta, steps, leak=leak, soft=soft, static=static,
        upstream=upstream,
    )  # fmt: skip
    want = _reference(inputs, theta, steps, leak, soft, static, surrogate.grad, detach, upstream)
    torch.testing.assert_close(got, want)
    if not detach:  # the per-element path agrees with the fused kernel too
        x = inputs.clone().requires_grad_(True)
        out = bptt(x, Dynamics(torch.tensor(theta), steps, leak, soft, static), surrogate)
        (fused,) = torch.autograd.grad(out, x, upstream)
        torch.testing.assert_close(got, fused)


def test_detached_reset_changes_the_gradient() -> None:
    inputs = _currents(False)
    upstream = torch.ones((5, 3, 7))
    _, exact = _layer_grad(BPTT(Surrogate("pcw", 1.0)), inputs, 0.4, 5, upstream=upstream)
    _, detached = _layer_grad(BPTT(Surrogate("pcw", 1.0), True), inputs, 0.4, 5, upstream=upstream)
    assert not torch.allclose(exact, detached)


def test_relative_width_is_absolute_width_times_threshold() -> None:
    inputs = _currents(False)
    theta = 0.3
    _, rel = _layer_grad(RelativeBPTT(Surrogate("pcw", 0.5)), inputs, theta, 5)
    _, absolute = _layer_grad(BPTT(Surrogate("pcw", 0.5 * theta)), inputs, theta, 5)
    torch.testing.assert_close(rel, absolute)


# --------------------------------------------------------------------------- ASSG


@pytest.mark.parametrize(
    "family,a", [("atan", 0.425), ("atan", 0.4), ("pcw", 0.85), ("rect", 0.85)]
)
def test_assg_closed_form_after_many_iterations_on_a_fixed_input(family: str, a: float) -> None:
    """A fixed input: |x| is constant, D -> 0, so the multiplier is the family's surrogate with
    spread |x| + 1e-4; its primitive reaches 1/2 + mass/2 at +-d."""
    steps, theta = 1, 0.5
    inputs = torch.tensor([[0.3, 0.45, 0.52, 0.9, 0.1]])  # static, one sample
    state = RunState()
    state.begin(1)
    estimator = ASSG(family, a)
    for _ in range(200):
        _, grad = _layer_grad(estimator, inputs, theta, steps, static=True, state=state)
    x = inputs - theta
    d = x.abs() + 1e-4
    if family == "atan":
        alpha = atan_sharpness(a) / d
        want = (alpha / 2) / (1 + (math.pi * alpha * x / 2) ** 2)
        # primitive at +-d: 1/2 +- a
        assert math.atan(math.pi / 2 * atan_sharpness(a)) / math.pi == pytest.approx(a)
    elif family == "pcw":
        width = d / (1 - math.sqrt(1 - a))
        want = (width - x.abs()).clamp(min=0) / width**2
    else:
        width = 2 * d / a
        want = (x.abs() < width / 2).to(x.dtype) / width
    torch.testing.assert_close(grad, theta * want)  # dL/dI = theta * dL/dy-ones * sg


def test_assg_moments_run_over_iterations_not_time() -> None:
    """Two passes with different inputs: M = 0.9 |x1| + 0.1 |x2|, per time slot."""
    theta, steps = 0.5, 3
    first = torch.tensor([[[0.2]], [[0.9]], [[0.4]]])  # [T, B=1, 1]
    second = torch.tensor([[[0.6]], [[0.1]], [[0.7]]])
    state = RunState()
    state.begin(1)
    est = ASSG("atan", 0.425, detach_reset=True)
    _layer_grad(est, first, theta, steps, state=state)
    moments = state.layers["l"]
    h1 = torch.tensor([0.2, 0.2 + 0.9, 0.4])  # spike at t = 1, hard reset to 0
    torch.testing.assert_close(moments.mean.flatten(), (h1 - theta).abs())
    assert moments.dispersion.abs().max() == 0
    _layer_grad(est, second, theta, steps, state=state)
    h2 = torch.tensor([0.6, 0.1, 0.1 + 0.7])  # spike at t = 0, reset, then 0.1, 0.8
    m2 = 0.9 * (h1 - theta).abs() + 0.1 * (h2 - theta).abs()
    torch.testing.assert_close(moments.mean.flatten(), m2)
    d2 = 0.1 * ((h2 - theta).abs() - m2).abs()
    torch.testing.assert_close(moments.dispersion.flatten(), d2)


def _net(scale: float = 1.0, seed: int = 0) -> SpikingNetwork:
    """A small conv SNN; ``scale`` multiplies the first layer's threshold and incoming weights
    and divides the next layer's weights (same spikes, same logits)."""
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        SpikingNeuron(0.4),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16),
        SpikingNeuron(0.6),
        nn.Linear(16, 3),
    )
    with torch.no_grad():
        body[0].weight.mul_(scale)
        body[0].bias.mul_(scale)
        body[1].threshold.mul_(scale)
        body[3].weight.div_(scale)
    return SpikingNetwork(body, T=4).eval()


def _input_grad(net: SpikingNetwork, name: str, x: torch.Tensor, passes: int = 1) -> torch.Tensor:
    view = net.with_estimator(parse_estimator(name))
    view.begin_attack_run(x.shape[0])
    for _ in range(passes):
        xx = x.clone().requires_grad_(True)
        logits = view(xx)
        labels = torch.arange(x.shape[0]) % 3
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xx)
    return grad


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_scale_equivalent_copy_gets_the_same_adaptive_gradient(scale: float) -> None:
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    base, copy = _net(), _net(scale)
    with torch.no_grad():
        torch.testing.assert_close(base(x), copy(x))
    for name in ("assg", "assg-pcw-0.85", "bptt-rel-pcw-0.5", "pdsg", "rga", "hart-1", "bptr"):
        g0 = _input_grad(base, name, x, passes=3)
        g1 = _input_grad(copy, name, x, passes=3)
        assert _cos(g0, g1) > 0.999, name
    g0 = _input_grad(base, "bptt-pcw-1", x)
    g1 = _input_grad(copy, "bptt-pcw-1", x)
    assert _cos(g0, g1) < 0.99  # a fixed absolute width is not scale-free


def test_assg_state_isolation() -> None:
    net = _net()
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    view = net.with_estimator(ASSG())

    def run(batch: torch.Tensor, passes: int = 3) -> torch.Tensor:
        view.begin_attack_run(batch.shape[0])
        for k in range(passes):
            xx = (batch + 0.01 * k).clamp(0, 1).requires_grad_(True)
            (grad,) = torch.autograd.grad(view(xx)[:, 0].sum(), xx)
        return grad

    together = run(x)
    alone = run(x[:1])
    torch.testing.assert_close(together[:1], alone)  # a sample's gradient ignores its batch
    torch.testing.assert_close(run(x), together)  # a new run starts from scratch
    # forward passes without gradient never touch the moments
    view.begin_attack_run(5)
    xx = x.clone().requires_grad_(True)
    view(xx)[:, 0].sum().backward()
    assert view.run_state is not None
    before = {k: m.mean.clone() for k, m in view.run_state.layers.items()}
    with torch.no_grad():
        view(torch.rand_like(x))
    for key, mean in before.items():
        torch.testing.assert_close(view.run_state.layers[key].mean, mean)
    # rows follow their samples when an attack drops fooled samples
    view.begin_attack_run(5)
    for k in range(3):
        rows = torch.arange(5) if k == 0 else torch.tensor([1, 3])
        view.select_attack_rows(rows)
        xx = (x[rows] + 0.01 * k).clamp(0, 1).requires_grad_(True)
        (grad_rows,) = torch.autograd.grad(view(xx)[:, 0].sum(), xx)
    single = torch.stack([run(x[i : i + 1])[0] for i in (1, 3)])
    torch.testing.assert_close(grad_rows, single)
    # two views never share state
    other = net.with_estimator(ASSG())
    assert other.run_state is not view.run_state


# --------------------------------------------------------------------------- RGA


def test_rga_closed_form_if_and_lif() -> None:
    theta = 0.5
    currents = torch.tensor([[-0.1, 0.0, 0.2, 0.5, 0.99, 1.0, 1.2]])  # static [1, 7]
    _, grad = _layer_grad(RGA(), currents, theta, 4, static=True, upstream=torch.ones(4, 1, 7))
    factor = torch.tensor([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0])
    torch.testing.assert_close(grad, 4 * factor.view(1, 7))  # summed over T for a static input
    _, grad = _layer_grad(
        RGA(), currents, theta, 4, leak=0.5, static=True, upstream=torch.ones(4, 1, 7)
    )
    lif = torch.tensor([0.0, 0.2, 0.2, 0.6, 0.6, 0.6, 0.0])
    torch.testing.assert_close(grad, 4 * lif.view(1, 7))


def test_rga_reaches_silent_neurons_and_shares_one_factor() -> None:
    theta, steps = 1.0, 4
    silent = torch.full((steps, 1, 1), 0.2)  # mean 0.2 < theta / T: never fires
    out, grad = _layer_grad(RGA(), silent, theta, steps)
    assert out.abs().sum() == 0 and grad.abs().min() > 0
    x = silent.clone().requires_grad_(True)
    out = bptr(x, Dynamics(torch.tensor(theta), steps, 1.0, False, False))
    (bptr_grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert bptr_grad.abs().sum() == 0
    varying = _currents(False, steps)
    upstream = torch.randn(steps, 3, 7, generator=torch.Generator().manual_seed(2))
    _, grad = _layer_grad(RGA(), varying, 0.4, steps, upstream=upstream)
    ratio = grad / upstream
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))


# --------------------------------------------------------------------------- HART


def test_hart_at_one_step_is_bptt_pcw() -> None:
    inputs = _currents(False, 1)
    _, hart = _layer_grad(HART(0.7), inputs, 1.0, 1)
    _, bptt = _layer_grad(BPTT(Surrogate("pcw", 0.7)), inputs, 1.0, 1)
    torch.testing.assert_close(hart, bptt)


def test_hart_averages_the_last_steps_gradient_over_time() -> None:
    steps, theta, gamma = 5, 1.0, 0.8
    inputs = _currents(False, steps) * 2
    upstream = torch.zeros(steps, 3, 7)
    upstream[-1] = torch.randn(3, 7, generator=torch.Generator().manual_seed(5))
    out, grad = _layer_grad(HART(gamma), inputs, theta, steps, upstream=upstream)
    # membranes of the exact forward
    u = torch.zeros(3, 7)
    for t in range(steps):
        h = u + inputs[t]
        s = (h >= theta).to(h.dtype)
        u = h * (1 - s)
    local = theta * upstream[-1] * (gamma - (h - theta).abs()).clamp(min=0) / gamma**2
    torch.testing.assert_close(grad, (local / steps).expand(steps, 3, 7))
    _, bptt = _layer_grad(BPTT(Surrogate("pcw", gamma)), inputs, theta, steps, upstream=upstream)
    assert not torch.allclose(bptt, grad)


# --------------------------------------------------------------------------- PDSG


def test_pdsg_sigma_is_the_running_unbiased_std_per_channel() -> None:
    h = torch.randn(3, 2, 4, 5, 5, generator=torch.Generator().manual_seed(6))  # [T, B, C, H, W]
    sigma = pdsg_sigma(h, 0, pooled=False)
    assert sigma.shape == (3, 2, 4, 1, 1)
    for t, b, c in itertools.product(range(3), range(2), range(4)):
        want = h[: t + 1, b, c].std()  # unbiased, over tau <= t and H, W
        torch.testing.assert_close(sigma[t, b, c, 0, 0], want)
    pooled = pdsg_sigma(h, 0, pooled=True)
    torch.testing.assert_close(pooled[1, 0, 2, 0, 0], h[:2, :, 2].std())
    channels_last = pdsg_sigma(h.permute(0, 1, 3, 4, 2), 2, pooled=False)
    torch.testing.assert_close(channels_last.flatten(), sigma.flatten())
    constant = pdsg_sigma(torch.full((2, 1, 6), 0.3), None, pooled=False)
    assert torch.all(constant == 1)


def test_pdsg_multiplier_peaks_at_half_sigma_and_integrates_to_one() -> None:
    sigma = torch.tensor(0.3)
    xs = torch.linspace(-3, 3, 60001)
    values = pdsg_surrogate(xs, sigma)
    assert float(xs[values.argmax()]) == pytest.approx(0.15, abs=1e-3)
    assert float(torch.trapezoid(values, xs)) == pytest.approx(1.0, abs=1e-6)


def test_pdsg_pooled_depends_on_the_batch_and_per_sample_does_not() -> None:
    net = _net()
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(7))
    for name, depends in (("pdsg", False), ("pdsg-pooled", True)):
        together = _input_grad(net, name, x)[:1]
        alone = _input_grad(net, name, x[:1])
        assert torch.allclose(together, alone) != depends, name


def test_new_estimators_give_finite_gradients_on_a_network() -> None:
    net = _net()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(8))
    for estimator in sota_estimators():
        grad = _input_grad(net, estimator.name, x, passes=2)
        assert torch.isfinite(grad).all(), estimator.name
        assert grad.abs().sum() > 0, estimator.name
