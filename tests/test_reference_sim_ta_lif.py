"""The reference simulator knows HoSNN's TA-LIF neuron (issue 32): spike for spike with the
model's own forward, and sensitive to the adaptation constant (so the comparison can fail)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from robustsnn.conversion import convert
from robustsnn.errors import UserError
from robustsnn.models import build_model
from robustsnn.snn import SpikingNetwork
from robustsnn.snn.reference import simulate_network
from robustsnn.snn.ta_lif import ThresholdAdaptingNeuron, apply_ta_lif


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _ta_lif_snn(reset: str, adaptation: float = 0.2) -> SpikingNetwork:
    """A converted cnn_small (two conv spiking layers, one dense) with TA-LIF neurons whose
    signatures are fitted on other images than those the test runs on."""
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.25],
        width=4, fc=16,
    )  # fmt: skip
    snn = convert(
        ann.eval(), _images(16, 1), T=5, reset=reset, bn="keep", calib_T=6, calib_batches=1,
        calib_batch_size=16,
    )  # fmt: skip
    apply_ta_lif(snn.eval(), _images(24, 2), adaptation=adaptation)
    return snn.double().eval()


def _ta_lif_layers(snn: SpikingNetwork) -> list[ThresholdAdaptingNeuron]:
    layers = [m for m in snn.modules() if isinstance(m, ThresholdAdaptingNeuron)]
    assert len(layers) == 3
    return layers


def _model_run(snn: SpikingNetwork, x: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with torch.no_grad(), snn.recording() as record:
        logits = snn(x.double())
    return logits.numpy(), {k: v.numpy() for k, v in record.items()}


def _spikes_differ(snn: SpikingNetwork, reference: SpikingNetwork, x: torch.Tensor) -> int:
    """How many spikes the reference simulation of ``reference`` differs from ``snn``'s run."""
    _, record = _model_run(snn, x)
    sim = simulate_network(reference, x)
    return sum(int((sim.spikes[k] != record[k]).sum()) for k in record)


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_reference_matches_ta_lif_spike_for_spike(reset: str) -> None:
    snn = _ta_lif_snn(reset)
    _ta_lif_layers(snn)
    x = _images(6, 3)
    logits, record = _model_run(snn, x)
    sim = simulate_network(snn, x)
    assert set(sim.spikes) == set(record) and len(record) == 3
    for name, spikes in record.items():
        assert 0.0 < spikes.mean() < 1.0, f"layer {name} is silent or saturated: a weak test"
        np.testing.assert_array_equal(sim.spikes[name], spikes, err_msg=name)
    np.testing.assert_allclose(sim.logits, logits, rtol=0, atol=1e-12)
    # the adaptation matters on these images: the plain neuron's spikes are different
    plain = copy.deepcopy(snn)
    for neuron in _ta_lif_layers(plain):
        neuron.adaptation.data.zero_()
    assert _spikes_differ(snn, plain, x) > 0


@pytest.mark.parametrize("factor", [0.0, 0.9, 1.1])
def test_a_wrong_adaptation_constant_is_detected(factor: float) -> None:
    """The simulator run on a copy whose theta_v of one layer is off by ``factor`` disagrees
    with the model: the spike-for-spike comparison above would fail for such an error."""
    snn = _ta_lif_snn("soft")
    wrong = copy.deepcopy(snn)
    _ta_lif_layers(wrong)[0].adaptation.data.mul_(factor)
    assert _spikes_differ(snn, snn, _images(6, 3)) == 0
    assert _spikes_differ(snn, wrong, _images(6, 3)) > 0


def test_reference_refuses_ta_lif_at_another_T_or_with_noise() -> None:
    snn = _ta_lif_snn("soft")
    with pytest.raises(UserError, match="signature of 5 steps"):
        simulate_network(snn, _images(2, 3), T=4)
    _ta_lif_layers(snn)[0].threshold_noise = 0.1
    with pytest.raises(UserError, match="TA-LIF layer .* threshold noise"):
        simulate_network(snn, _images(2, 3), rng=np.random.default_rng(0))
