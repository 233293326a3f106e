"""The independent reference simulator agrees with SpikingNetwork spike for spike (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustsnn.conversion import convert
from robustsnn.errors import UserError
from robustsnn.models.layers import Normalize
from robustsnn.models.resnet import ResNet20
from robustsnn.snn import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron
from robustsnn.snn.reference import conv2d, pool2d, simulate_network


def _randomize_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)


def _cnn(leak: float, reset: str, v_init: float, strict: bool, binary: bool) -> SpikingNetwork:
    torch.manual_seed(0)
    emit = "binary" if binary else "scaled"
    body = nn.Sequential(
        Normalize([0.5], [0.25]),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        SpikingNeuron(0.7, leak=leak, reset=reset, v_init=v_init, fire_at_equal=not strict),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        SpikingNeuron(0.4, leak=leak, reset=reset, v_init=v_init, emit=emit),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
        SpikingNeuron(0.1, leak=leak, reset=reset),
        nn.Dropout(0.5),
        nn.Linear(10, 3),
    )
    _randomize_bn(body, 1)
    return SpikingNetwork(body, T=6).eval()


def _compare(snn: SpikingNetwork, x: torch.Tensor) -> None:
    model = snn.double()
    with torch.no_grad(), model.recording() as record:
        logits = model(x.double())
    sim = simulate_network(model, x)
    assert set(sim.spikes) == set(record)
    for name, spikes in sim.spikes.items():
        assert spikes.shape == tuple(record[name].shape)
        assert 0.0 < spikes.mean() < 1.0, f"layer {name} is silent or saturated: a weak test"
        np.testing.assert_array_equal(spikes, record[name].numpy())
    np.testing.assert_allclose(sim.logits, logits.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "leak,reset,v_init,strict,binary",
    [
        (1.0, "hard", 0.0, False, False),  # IF, hard reset
        (1.0, "soft", 0.5, False, False),  # IF, soft reset, v_init
        (0.8, "hard", 0.5, True, False),  # LIF, strict threshold
        (0.9, "soft", 0.0, False, True),  # LIF, soft reset, binary emission
    ],
)
def test_reference_agrees_with_spiking_network(
    leak: float, reset: str, v_init: float, strict: bool, binary: bool
) -> None:
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    _compare(_cnn(leak, reset, v_init, strict, binary), x)


def test_reference_agrees_on_a_converted_resnet_with_residual_adds() -> None:
    torch.manual_seed(0)
    ann = ResNet20(num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.3], blocks=1)
    _randomize_bn(ann, 3)
    ann.eval()
    data = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    snn = convert(ann, data, T=5, calib_T=6, calib_batches=1, calib_batch_size=16)
    adds = [n for n in torch.fx.symbolic_trace(ann).graph.nodes if "add_skip" in str(n.target)]
    assert adds, "the ResNet must have residual adds for this test to mean anything"
    _compare(snn, data[:4])


def test_initial_membrane_buffer_is_simulated() -> None:
    snn = _cnn(1.0, "soft", 0.5, False, False)
    first = snn.neurons()[0]
    first.init_membrane = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(5)) * 0.3
    _compare(snn, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(6)))


def test_kernels_match_torch() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 4, 9, 9, generator=g, dtype=torch.float64)
    w = torch.rand(6, 2, 3, 3, generator=g, dtype=torch.float64)
    b = torch.rand(6, generator=g, dtype=torch.float64)
    ours = conv2d(x.numpy(), w.numpy(), b.numpy(), stride=2, padding=1, groups=2)
    theirs = nn.functional.conv2d(x, w, b, stride=2, padding=1, groups=2)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-12)
    np.testing.assert_allclose(
        pool2d(x.numpy(), 3, 2, 1, "avg"), nn.functional.avg_pool2d(x, 3, 2, 1).numpy(), atol=1e-12
    )
    np.testing.assert_allclose(
        pool2d(x.numpy(), 2, 2, 0, "max"), nn.functional.max_pool2d(x, 2, 2).numpy(), atol=0
    )


def test_unsupported_layer_is_one_clear_error() -> None:
    body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), SpikingNeuron(1.0), nn.Flatten())
    with pytest.raises(UserError, match="GELU"):
        simulate_network(SpikingNetwork(body, T=2), torch.rand(1, 1, 5, 5))
