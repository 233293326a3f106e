"""The dynamics as one value (``snn.spec.Dynamics``) and the neuron's backend table
(``snn.neuron.BACKENDS``): which estimator runs where, chosen once per estimator change."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import robustsnn.snn.neuron as neuron_module
from robustsnn.snn import Dynamics, SpikingNeuron, dynamics, parse_estimator
from robustsnn.snn.estimators import (
    ANNProxy,
    estimator_names,
    sota_estimators,
    uses_fused_kernels,
)
from robustsnn.snn.neuron import BACKENDS, TimeContext, select_backend
from robustsnn.snn.surrogates import Surrogate

NAMES = [
    *estimator_names(),
    *(e.name for e in sota_estimators()),
    "bptt-pcw-1-dr",
    "bptt-rel-pcw-0.5-dr",
    "assg-atan-0.425-dr",
    "pdsg-pooled",
]


def test_dynamics_is_a_frozen_value_compared_by_identity() -> None:
    theta = torch.tensor(0.5, requires_grad=True)
    spec = Dynamics(theta, 4, 0.9, soft_reset=True)
    assert (spec.leak, spec.soft_reset, spec.static, spec.init) == (0.9, True, False, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.leak = 1.0  # type: ignore[misc]
    same = Dynamics(theta, 4, 0.9, soft_reset=True)
    assert spec != same and spec == spec  # eq=False: tensors inside, identity semantics
    assert len({spec, same}) == 2  # hashable
    init = theta * 0.5
    loose = dataclasses.replace(spec, init=init).detached()
    assert not loose.theta.requires_grad and loose.init is not None
    assert not loose.init.requires_grad and loose.steps == 4
    assert spec.state_shape(torch.zeros(4, 2, 3)) == (2, 3)
    assert dataclasses.replace(spec, static=True).state_shape(torch.zeros(2, 3)) == (2, 3)


@pytest.mark.parametrize("name", NAMES)
def test_backend_table_row_of_every_estimator(name: str) -> None:
    estimator = parse_estimator(name)
    backend = select_backend(estimator)
    if isinstance(estimator, ANNProxy):
        assert backend.name == "ann-proxy" and backend.run is None
    elif uses_fused_kernels(estimator):
        assert backend.name == ("bptr" if name == "bptr" else "bptt")
    else:
        assert backend.name == "per-element"
    assert backend in BACKENDS


def _neuron(estimator_name: str) -> SpikingNeuron:
    neuron = SpikingNeuron(0.6, leak=0.9, reset="soft", v_init=0.25)
    neuron.name = "n"
    neuron.context = TimeContext(steps=3, batch=2, estimator=parse_estimator(estimator_name))
    return neuron


def test_neuron_chooses_its_backend_once_per_estimator(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = neuron_module.select_backend

    def counted(estimator):  # type: ignore[no-untyped-def]
        calls.append(estimator.name)
        return original(estimator)

    monkeypatch.setattr(neuron_module, "select_backend", counted)
    neuron = _neuron("bptt-pcw-1")
    x = torch.rand(6, 5, requires_grad=True)
    for _ in range(3):
        neuron(x).sum().backward()
    with torch.no_grad():
        neuron(x)
    assert calls == ["bptt-pcw-1"]
    neuron.context.estimator = parse_estimator("bptr")
    neuron(x).sum().backward()
    neuron(x).sum().backward()
    neuron.context.estimator = ANNProxy()
    neuron(x[:2])
    assert calls == ["bptt-pcw-1", "bptr", "ann-proxy"]
    assert neuron.backend.name == "ann-proxy"


def test_neuron_hands_one_dynamics_value_to_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Dynamics] = []
    original = dynamics.bptt

    def spy(inputs, spec, surrogate):  # type: ignore[no-untyped-def]
        seen.append(spec)
        return original(inputs, spec, surrogate)

    monkeypatch.setattr(neuron_module, "bptt", spy)
    neuron = _neuron("bptt-exp-2")
    x = torch.rand(2, 5, requires_grad=True)  # static input: [B, ...]
    out = neuron(x)
    (spec,) = seen
    assert (spec.steps, spec.leak, spec.soft_reset, spec.static) == (3, 0.9, True, True)
    assert spec.init is not None and torch.equal(spec.init, spec.theta * 0.25)
    expected = dynamics.reference_if(x, spec, Surrogate("exp", 2.0))
    assert torch.equal(out.view(3, 2, 5), expected)
