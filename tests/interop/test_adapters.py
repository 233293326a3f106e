"""Adapter machinery without third-party SNN packages: a stateful stand-in neuron (the way
SpikingJelly and snnTorch keep membranes in modules) read through the generic adapter path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.interop.adapters import _adapt, _Feed, _Neuron, _neuron_spec, _Source
from robustsnn.interop.frameworks import scalar
from robustsnn.snn.estimators import parse_estimator


class StatefulIF(nn.Module):
    """IF/LIF neuron keeping its membrane between calls (hard reset, fires on h >= theta)."""

    def __init__(self, theta: float, leak: float = 1.0) -> None:
        super().__init__()
        self.theta, self.leak = theta, leak
        self.v: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.v is None else self.v * self.leak + x
        s = (h >= self.theta).float()
        self.v = h - h * s
        return s

    def reset(self) -> None:
        self.v = None


def reader(declared_leak: float | None = None):
    def read(name: str, m: nn.Module, last: bool) -> _Neuron | None:
        del name, last
        if not isinstance(m, StatefulIF):
            return None
        leak = m.leak if declared_leak is None else declared_leak
        return _Neuron(_neuron_spec(leak, "hard", True, m.theta), m.theta)

    return read


def fake_net(leak: float = 1.0, last_neuron: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), StatefulIF(0.5, leak),
        nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 16), StatefulIF(0.75, leak),
        nn.Linear(16, 3),
    ]  # fmt: skip
    if last_neuron:
        layers.append(StatefulIF(0.25, leak))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    return net


def adapt(net: nn.Sequential, x: torch.Tensor, T: int = 5, **kw):
    def reset() -> None:
        for m in net.modules():
            if isinstance(m, StatefulIF):
                m.reset()

    options = {"read_neuron": reader(), "reset": reset, "multi_step": False,
               "time_convention": "test", "example": x, "input_shape": None,
               "image_shape": None, "readout": "mean", "mean": None, "std": None}  # fmt: skip
    options.update(kw)
    source = _Source("Fake", "0", net, options["read_neuron"], options["reset"],
                     options["multi_step"], options["time_convention"])  # fmt: skip
    feed = _Feed(options["example"], options["input_shape"], options["image_shape"],
                 options["mean"], options["std"])  # fmt: skip
    return _adapt(source, T, options["readout"], feed)


def source_outputs(net: nn.Sequential, x: torch.Tensor, T: int) -> torch.Tensor:
    net.eval()
    for m in net.modules():
        if isinstance(m, StatefulIF):
            m.reset()
    with torch.no_grad():
        return torch.stack([net(x) for _ in range(T)])


@pytest.mark.parametrize("leak", [1.0, 0.75])
def test_adapted_equals_source_and_keeps_no_state(leak: float) -> None:
    x = torch.rand(8, 1, 8, 8)
    net = fake_net(leak)
    snn = adapt(net, x)
    expected = source_outputs(net, x, 5).mean(0)
    with torch.no_grad():
        first, second = snn(x), snn(x)
    # the same spikes; the conv of the time-merged, channels-last batch rounds in its own order
    assert torch.allclose(first, expected, rtol=0, atol=1e-5)
    assert torch.equal(first.argmax(1), expected.argmax(1))
    assert torch.equal(first, second)  # every call starts at v = 0
    assert snn.adapter.verification.passed
    assert snn.adapter.verification.spike_count_rel_diff == 0.0
    with torch.no_grad(), snn.recording() as record:
        snn(x)
    assert sum(int(s.sum()) for s in record.values()) > 0  # the comparison saw spikes


def test_sum_readout_gives_spike_counts() -> None:
    x = torch.rand(8, 1, 8, 8)
    net = fake_net(last_neuron=True)
    snn = adapt(net, x, readout="sum")
    counts = source_outputs(net, x, 5).sum(0)
    with torch.no_grad():
        assert torch.equal(snn(x), counts)
    assert counts.sum() > 0


def test_flat_input_model_reads_images_and_normalises() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(16, 8), StatefulIF(0.5), nn.Linear(8, 2))
    images = torch.rand(6, 1, 4, 4)
    snn = adapt(net, images.reshape(6, 16), image_shape=(1, 4, 4), mean=[0.5], std=[0.25])
    expected = source_outputs(net, ((images - 0.5) / 0.25).reshape(6, 16), 5).mean(0)
    with torch.no_grad():
        assert torch.allclose(snn(images), expected, rtol=0, atol=1e-5)


def test_disagreement_is_refused() -> None:
    """A neuron read with the wrong leak: the verification against the source refuses it."""
    x = torch.rand(8, 1, 8, 8)
    with pytest.raises(UserError, match="does not reproduce its source"):
        adapt(fake_net(leak=0.5), x, read_neuron=reader(declared_leak=1.0))


@pytest.mark.parametrize("name", ["bptt-pcw-1", "bptt-pcw-1-dr", "assg-atan-0.425", "rga",
                                  "pdsg", "hart-0.5", "bptr", "ann-proxy"])  # fmt: skip
def test_every_estimator_gives_gradients(name: str) -> None:
    x = torch.rand(4, 1, 8, 8)
    snn = adapt(fake_net(), x)
    view = snn.with_estimator(parse_estimator(name))
    if hasattr(view, "begin_attack_run"):
        view.begin_attack_run(4)
    xg = x.clone().requires_grad_(True)
    view(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("module", "kw", "message"),
    [
        (nn.Sequential(nn.Linear(4, 4), StatefulIF(1.0)), {"readout": "membrane"},
         "non-spiking"),
        (nn.Sequential(nn.Linear(4, 4), StatefulIF(1.0)), {"readout": "median"}, "not one of"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), StatefulIF(1.0)), {}, "'1' \\(ReLU\\)"),
        (nn.Sequential(nn.Linear(4, 4)), {}, "no spiking neurons"),
        (StatefulIF(1.0), {}, "nn.Sequential"),
        (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True), StatefulIF(1.0)), {}, "ceil_mode"),
        (nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False), StatefulIF(1.0)), {},
         "running statistics"),
        (nn.Sequential(nn.Linear(4, 4), StatefulIF(1.0)), {"example": None}, "example="),
        (nn.Sequential(nn.Linear(4, 4), StatefulIF(1.0)), {"image_shape": (1, 3, 3)},
         "image_shape"),
    ],
)  # fmt: skip
def test_refusals(module: nn.Module, kw: dict, message: str) -> None:
    example = kw.pop("example", torch.rand(2, 4))
    with pytest.raises(UserError, match=message):
        adapt(module, example, **kw)  # type: ignore[arg-type]


def test_subclassed_torch_layer_is_refused() -> None:
    class MyLinear(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    with pytest.raises(UserError, match="subclasses a torch layer"):
        adapt(nn.Sequential(MyLinear(4, 4), StatefulIF(1.0)), torch.rand(2, 4))


def test_per_neuron_values_are_refused() -> None:
    assert scalar("n", "threshold", torch.full((3,), 0.5)) == 0.5
    with pytest.raises(UserError, match="differs between neurons"):
        scalar("n", "threshold", torch.tensor([0.5, 1.0]))
