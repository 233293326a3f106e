"""Random parts of an SNN (issue 32): Poisson input coding, noisy thresholds, their checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustsnn.conversion import convert
from robustsnn.errors import UserError
from robustsnn.evaluation.stochastic import resolve_randomness, seeded_global_rng
from robustsnn.io.models import load_model, save_snn
from robustsnn.models import build_model
from robustsnn.snn import ANNProxy
from robustsnn.snn.encoding import (
    check_stochastic_options,
    configure_stochastic,
    poisson_encode,
    threshold_noise_currents,
)
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron, TimeContext
from robustsnn.snn.spec import Dynamics

FAST = dict(calib_T=6, calib_batches=1, calib_batch_size=16)


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _snn(T: int = 6) -> SpikingNetwork:
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.25],
        width=4, fc=16,
    )  # fmt: skip
    return convert(ann.eval(), _images(16), T=T, reset="soft", bn="keep", **FAST).eval()


def test_poisson_code_is_a_bernoulli_rate_code_with_straight_through_gradient() -> None:
    x = _images(4).requires_grad_(True)
    torch.manual_seed(0)
    coded = poisson_encode(x, 400)
    assert coded.shape == (400 * 4, 1, 8, 8)
    assert set(coded.detach().unique().tolist()) <= {0.0, 1.0}
    rate = coded.detach().view(400, 4, 1, 8, 8).mean(0)
    assert (rate - x.detach()).abs().max() < 0.12  # an unbiased estimate of the image
    (grad,) = torch.autograd.grad(coded.sum(), x)
    assert torch.equal(grad, torch.full_like(x, 400.0))  # d E[s] / dx = 1 per step


def test_poisson_network_is_random_repeatable_under_a_seed_and_its_proxy_is_not() -> None:
    snn = _snn()
    x = _images(8, seed=3)
    direct = snn(x)
    configure_stochastic(snn, "poisson")
    with seeded_global_rng(1, "cpu"):
        first = snn(x)
    with seeded_global_rng(1, "cpu"):
        assert torch.equal(snn(x), first)
    with seeded_global_rng(2, "cpu"):
        assert not torch.equal(snn(x), first)
    assert not torch.equal(first, direct)
    with snn.use_estimator(ANNProxy()):
        proxy = snn(x)
    configure_stochastic(snn, "direct")
    with snn.use_estimator(ANNProxy()):
        assert torch.equal(snn(x), proxy)  # the proxy sees the expected input
    # the evaluation finds a Poisson SNN random, a direct one not
    y = direct.argmax(1)
    assert not resolve_randomness(snn, x, y, seed=0).detected
    configure_stochastic(snn, "poisson")
    handling = resolve_randomness(snn, x, y, seed=0, config={"max_draws": 4})
    assert handling.detected and handling.active and 1 <= handling.eot_draws <= 4


def test_poisson_network_has_finite_nonzero_input_gradients() -> None:
    snn = configure_stochastic(_snn(), "poisson")
    x = _images(4).requires_grad_(True)
    torch.manual_seed(0)
    (grad,) = torch.autograd.grad(snn(x).logsumexp(1).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def _reference_noisy_neuron(
    current: torch.Tensor, theta: float, sigma: float, leak: float, xi: torch.Tensor
) -> torch.Tensor:
    """IF/LIF with soft reset whose threshold at step t is theta (1 + sigma xi[t])."""
    u = torch.zeros_like(current)
    spikes = []
    for t in range(xi.shape[0]):
        h = leak * u + current
        s = (h >= theta * (1 + sigma * xi[t])).to(current.dtype)
        spikes.append(s)
        u = h - s * theta
    return torch.stack(spikes)


@pytest.mark.parametrize("leak", [1.0, 0.9])
def test_threshold_noise_is_exactly_a_noisy_threshold_for_soft_reset(leak: float) -> None:
    T, B, D, sigma = 7, 5, 64, 0.3
    neuron = SpikingNeuron(0.8, leak=leak, reset="soft").double()
    theta = float(neuron.threshold.detach())
    neuron.context = TimeContext(steps=T, batch=B)
    neuron.threshold_noise = sigma
    current = torch.rand(B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(9)
    out = neuron(current).view(T, B, D)
    torch.manual_seed(9)
    xi = torch.randn(T, B, D, dtype=torch.float64)  # the draws threshold_noise_currents makes
    expected = _reference_noisy_neuron(current, theta, sigma, leak, xi)
    assert torch.equal(out.ne(0).double(), expected)
    neuron.threshold_noise = 0.0
    quiet = neuron(current).view(T, B, D)
    assert not torch.equal(quiet, out)  # the noise changed some spikes


def test_threshold_noise_keeps_the_input_gradient_path() -> None:
    inputs = torch.rand(3, 4, 5, requires_grad=True)
    shifted = threshold_noise_currents(inputs, Dynamics(torch.tensor(1.0), 3), 0.2)
    (grad,) = torch.autograd.grad(shifted.sum(), inputs)
    assert torch.equal(grad, torch.ones_like(grad))
    static = threshold_noise_currents(inputs[0], Dynamics(torch.tensor(1.0), 3, static=True), 0.2)
    assert static.shape == (3, 4, 5)


def test_random_settings_round_trip_through_the_checkpoint(tmp_path: Path) -> None:
    snn = _snn()
    plain = tmp_path / "plain.safetensors"
    save_snn(plain, snn, dataset="toy")
    meta = json.loads(plain.with_suffix(".json").read_text())
    assert "input_encoding" not in meta and "threshold_noise" not in meta
    configure_stochastic(snn, "poisson", 0.1)
    noisy = tmp_path / "noisy.safetensors"
    save_snn(noisy, snn, dataset="toy")
    loaded, meta = load_model(noisy)
    assert meta["input_encoding"] == "poisson" and meta["threshold_noise"] == 0.1
    assert isinstance(loaded, SpikingNetwork) and loaded.input_encoding == "poisson"
    assert all(n.threshold_noise == 0.1 for n in loaded.neurons())
    x = _images(4)
    with seeded_global_rng(5, "cpu"):
        reference = snn(x)
    with seeded_global_rng(5, "cpu"):
        assert torch.equal(loaded(x), reference)  # the loaded model reproduces it


@pytest.mark.parametrize(
    ("encoding", "noise", "message"),
    [("rate", 0.0, "input_encoding must be one of"), ("direct", -0.1, "threshold_noise")],
)
def test_bad_options_are_one_line_errors(encoding: str, noise: float, message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_stochastic_options(encoding, noise, where="snn.")
    with pytest.raises(UserError, match="spiking networks only"):
        configure_stochastic(nn.Linear(2, 2), "poisson")
