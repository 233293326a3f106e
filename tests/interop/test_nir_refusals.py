"""Every refusal of the NIR export and import is one line naming what and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron

nir = pytest.importorskip("nir")

from robustsnn.interop.nir_export import export_nir  # noqa: E402
from robustsnn.interop.nir_import import load_nir, read_nir_file  # noqa: E402

from .interop_fixtures import dyadic_snn  # noqa: E402
from .nir_reference import simulate  # noqa: E402


def _refused(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def _mlp(*middle: nn.Module, neuron: SpikingNeuron | None = None) -> SpikingNetwork:
    body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), *middle, neuron or SpikingNeuron(1.0),
                         nn.Linear(3, 2))  # fmt: skip
    return SpikingNetwork(body, T=4).eval()


# ----------------------------------------------------------------------------- export


def test_export_refuses_soft_reset() -> None:
    _refused("soft .subtractive. reset", export_nir, _mlp(neuron=SpikingNeuron(reset="soft")), (4,))


def test_export_refuses_initial_membrane() -> None:
    _refused("non-zero membrane", export_nir, _mlp(neuron=SpikingNeuron(v_init=0.5)), (4,))


def test_export_refuses_per_step_batchnorm() -> None:
    from robustsnn.snn.bntt import bntt_transform

    snn = dyadic_snn("cnn_small", width=2, fc=8)
    meta = {"T": snn.T, "transforms": ["bntt"]}
    bntt = SpikingNetwork(bntt_transform(snn.body, meta), T=snn.T).eval()
    _refused("BNTT", export_nir, bntt, (1, 8, 8))


def test_export_refuses_max_pooling() -> None:
    body = nn.Sequential(nn.Conv2d(1, 2, 3), SpikingNeuron(1.0), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8, 2))  # fmt: skip
    _refused("max pooling", export_nir, SpikingNetwork(body, T=2).eval(), (1, 6, 6))


def test_export_refuses_functional_nonlinearity() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.act = SpikingNeuron(1.0)
            self.out = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.act(self.fc(x.flatten(1)))))

    _refused("no NIR form", export_nir, SpikingNetwork(Odd(), T=2).eval(), (4,))


def test_export_refuses_ceil_mode_pooling() -> None:
    body = nn.Sequential(nn.Conv2d(1, 2, 3), SpikingNeuron(1.0), nn.AvgPool2d(2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(8, 2))  # fmt: skip
    _refused("ceil_mode", export_nir, SpikingNetwork(body, T=2).eval(), (1, 5, 5))


# ----------------------------------------------------------------------------- import


def _graph(neuron, extra_nodes=None, extra_edges=None, metadata=None):
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc": nir.Affine(weight=np.eye(3, 4, dtype=np.float32), bias=np.zeros(3, np.float32)),
        "lif": neuron,
        "out": nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
        "output": nir.Output(output_type={"output": np.array([2])}),
        **(extra_nodes or {}),
    }
    edges = [
        ("input", "fc"),
        ("fc", "lif"),
        ("lif", "out"),
        ("out", "output"),
        *(extra_edges or []),
    ]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {"T": 4}, type_check=False)


def _if(**kw):
    args = {"r": np.full(3, 1e4, np.float32), "v_threshold": np.ones(3, np.float32),
            "v_reset": np.zeros(3, np.float32)}  # fmt: skip
    args.update(kw)
    return nir.IF(**args)


def test_import_foreign_if_fires_strictly_like_nir() -> None:
    """A foreign IF (SpikingJelly's r = 1/dt): NIR's strict rule, checked on a tie."""
    graph = _graph(_if())
    snn = load_nir(graph, dt=1e-4)
    x = torch.tensor([[0.5, 0.25, 1.0, 0.0]])
    with torch.no_grad(), snn.recording() as record:
        logits = snn(x.view(1, 1, 1, 4))
    outputs, spikes = simulate(graph, x.numpy(), 4, 1e-4)
    assert np.array_equal(next(iter(record.values())).numpy(), spikes["lif"])
    assert spikes["lif"][:, 0, 0].astype(int).tolist() == [0, 0, 1, 0]  # 0.5 + 0.5 is a tie
    assert np.allclose(logits.numpy(), outputs.mean(0))


def test_import_lif_gain_is_folded_and_matches_reference() -> None:
    """snnTorch-style LIF (tau = dt/(1-beta), r = tau/dt) and a gain != 1 (r = 2 tau/dt)."""
    dt, beta = 1e-4, 0.5
    tau = dt / (1 - beta)
    lif = nir.LIF(tau=np.full(3, tau), r=np.full(3, 2 * tau / dt), v_leak=np.zeros(3),
                  v_threshold=np.full(3, 0.75), v_reset=np.zeros(3))  # fmt: skip
    graph = _graph(lif)
    snn = load_nir(graph, dt=dt)
    x = torch.tensor([[0.5, 0.25, 0.125, 0.375], [0.0, 0.75, 0.5, 0.25]])
    with torch.no_grad(), snn.recording() as record:
        logits = snn(x.view(2, 1, 1, 4))
    outputs, spikes = simulate(graph, x.numpy(), 4, dt)
    assert np.array_equal(next(iter(record.values())).numpy(), spikes["lif"])
    assert spikes["lif"].any()
    assert np.allclose(logits.numpy(), outputs.mean(0))


def test_import_refuses_unsupported_node() -> None:
    li = nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3))
    _refused("'lif' .LI. cannot be imported", load_nir, _graph(li), dt=1e-4)


def test_import_refuses_cubalif() -> None:
    cuba = nir.CubaLIF(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3),
                       v_threshold=np.ones(3), v_reset=np.zeros(3))  # fmt: skip
    _refused("CubaLIF", load_nir, _graph(cuba), dt=1e-4)


def test_import_refuses_recurrence() -> None:
    graph = _graph(_if(), extra_nodes={"rec": nir.Linear(weight=np.eye(3, dtype=np.float32))},
                   extra_edges=[("lif", "rec"), ("rec", "fc")])  # fmt: skip
    _refused("recurrent", load_nir, graph, dt=1e-4)


def test_import_refuses_non_uniform_threshold() -> None:
    graph = _graph(_if(v_threshold=np.array([1.0, 2.0, 1.0], np.float32)))
    _refused("'lif': v_threshold differs", load_nir, graph, dt=1e-4)


def test_import_refuses_nonzero_reset_and_leak_potential() -> None:
    _refused("v_reset", load_nir, _graph(_if(v_reset=np.full(3, 0.5, np.float32))), dt=1e-4)
    lif = nir.LIF(tau=np.full(3, 2e-4), r=np.full(3, 2.0), v_leak=np.full(3, 0.1),
                  v_threshold=np.ones(3), v_reset=np.zeros(3))  # fmt: skip
    _refused("v_leak", load_nir, _graph(lif), dt=1e-4)


def test_import_needs_dt_for_lif_and_T() -> None:
    lif = nir.LIF(tau=np.full(3, 2e-4), r=np.full(3, 2.0), v_leak=np.zeros(3),
                  v_threshold=np.ones(3), v_reset=np.zeros(3))  # fmt: skip
    _refused("pass --dt", load_nir, _graph(lif))
    _refused("pass --T", load_nir, _graph(_if(), metadata={"x": 1}), dt=1e-4)


def test_import_refuses_files_before_nir_1_0_6(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "old.nir"
    nir.write(path, _graph(_if()))
    with h5py.File(path, "r+") as f:
        del f["version"]
        f["version"] = "1.0.4"
    _refused("subtractive reset", read_nir_file, path)


def test_import_refuses_a_file_that_is_not_nir(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nir"
    bad.write_text("not hdf5")
    _refused("not a readable NIR file", read_nir_file, bad)
