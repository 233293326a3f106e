"""robustsnn -> NIR: the file, run by an independent numpy reference with NIR's own semantics,
spikes exactly like robustsnn; robustsnn -> NIR -> robustsnn keeps spikes and logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustsnn.snn import BPTR, BPTT, ANNProxy, Surrogate
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron

nir = pytest.importorskip("nir")

from robustsnn.interop.nir_export import export_nir, firing_threshold, write_nir  # noqa: E402
from robustsnn.interop.nir_import import load_nir  # noqa: E402

from .interop_fixtures import SIZE, dyadic_images, dyadic_snn  # noqa: E402
from .nir_reference import simulate  # noqa: E402

DT = 1e-4
MODELS = {
    "cnn_small": {"width": 2, "fc": 8},  # conv, BN, AvgPool, Flatten, linear
    "resnet20": {"blocks": 1},  # identity and projection shortcuts, adaptive pooling
    "wrn16_4": {"width": 1},  # BN after an add, a shortcut from before any neuron
}


def _roundtrip_file(snn: SpikingNetwork, tmp_path: Path):
    path = write_nir(tmp_path / "model.nir", export_nir(snn, (1, SIZE, SIZE), dt=DT))
    return nir.read(path), path


def _robustsnn_run(snn: SpikingNetwork, x: torch.Tensor):
    with torch.no_grad(), snn.recording() as record:
        logits = snn(x)
    return logits, {k: v.clone() for k, v in record.items()}


@pytest.mark.parametrize("leak", [1.0, 0.5])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_spikes_match_robustsnn_exactly(name: str, leak: float, tmp_path: Path) -> None:
    snn = dyadic_snn(name, leak=leak, **MODELS[name])
    x = dyadic_images()
    logits, record = _robustsnn_run(snn, x)
    graph, _ = _roundtrip_file(snn, tmp_path)
    outputs, spikes = simulate(graph, x.numpy(), snn.T, DT)
    assert len(spikes) == len(record)
    ties = 0
    for neuron in snn.neurons():
        ours = record[neuron.name].numpy()
        theirs = spikes[neuron.name.replace(".", "_")]
        assert ours.shape == theirs.shape, neuron.name
        assert np.array_equal(ours, theirs), (
            f"{neuron.name}: {np.sum(ours != theirs)} spikes differ"
        )
        ties += int(np.sum(ours))
    assert ties > 0  # the network spikes at all
    assert np.array_equal(logits.double().numpy(), outputs.mean(0))


def test_threshold_tie_fires_like_robustsnn() -> None:
    """theta = 1, constant current 0.5: robustsnn (h >= theta) fires at t = 2, 4, 6; NIR's strict
    rule on the exported threshold must too (without the float below theta it fires at 3, 6)."""
    body = nn.Sequential(nn.Flatten(), nn.Linear(1, 1), SpikingNeuron(1.0), nn.Linear(1, 1))
    with torch.no_grad():
        body[1].weight.fill_(1.0)
        body[1].bias.fill_(0.0)
        body[3].weight.fill_(1.0)
        body[3].bias.fill_(0.0)
    snn = SpikingNetwork(body, T=6).eval()
    x = torch.full((1, 1, 1, 1), 0.5)
    logits, record = _robustsnn_run(snn, x)
    assert record["2"].reshape(-1).int().tolist() == [0, 1, 0, 1, 0, 1]
    graph = export_nir(snn, (1, 1, 1), dt=DT)
    assert graph.nodes["_2"].v_threshold.reshape(-1)[0] == firing_threshold(1.0, True) < 1.0
    outputs, spikes = simulate(graph, x.numpy(), 6, DT)
    assert spikes["_2"].reshape(-1).astype(int).tolist() == [0, 1, 0, 1, 0, 1]
    assert outputs.mean(0).item() == pytest.approx(logits.item(), abs=0)
    graph.nodes["_2"].v_threshold[...] = 1.0  # the naive export: NIR's strict rule differs
    _, naive = simulate(graph, x.numpy(), 6, DT)
    assert naive["_2"].reshape(-1).astype(int).tolist() == [0, 0, 1, 0, 0, 1]


def test_export_metadata_and_nodes(tmp_path: Path) -> None:
    snn = dyadic_snn("cnn_small", width=2, fc=8)
    graph, path = _roundtrip_file(snn, tmp_path)
    meta = graph.metadata
    assert meta["producer"] == "robustsnn" and meta["readout"] == "mean"
    assert int(meta["T"]) == snn.T and float(meta["dt"]) == DT
    assert meta["input_coding"] == "direct" and meta["spikes"] == "binary"
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert "BatchNorm2d" not in kinds and kinds.count("IF") == 3 and kinds.count("AvgPool2d") == 2
    assert "normalize" in graph.nodes  # the input normalization is a node
    thresholds = {k: float(v) for k, v in meta["thresholds"].items()}
    assert thresholds == {n.name.replace(".", "_"): float(n.threshold) for n in snn.neurons()}
    # two writes of the same graph are the same bytes (reproducible files)
    again = write_nir(tmp_path / "again.nir", export_nir(snn, (1, SIZE, SIZE), dt=DT))
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_roundtrip_dyadic_is_bit_identical(name: str, tmp_path: Path) -> None:
    snn = dyadic_snn(name, leak=0.5, **MODELS[name])
    x = dyadic_images()
    logits, record = _robustsnn_run(snn, x)
    _, path = _roundtrip_file(snn, tmp_path)
    back = load_nir(path)
    assert back.T == snn.T
    logits2, record2 = _robustsnn_run(back, x)
    assert torch.equal(logits, logits2)
    assert [v.sum().item() for v in record.values()] == [v.sum().item() for v in record2.values()]
    imported = {n.name: n for n in back.neurons()}
    for neuron in snn.neurons():  # thresholds and the firing rule are restored
        twin = imported["layers." + neuron.name.replace(".", "_")]
        assert float(twin.threshold) == float(neuron.threshold) and twin.fire_at_equal


def _random_snn() -> SpikingNetwork:
    from robustsnn.conversion import convert
    from robustsnn.models import build_model

    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=10, in_channels=1, image_size=12,
                      mean=[0.1307], std=[0.3081], width=4, fc=16)  # fmt: skip
    paper = dict(reset="hard", v_init=0.0, threshold="percentile", bn="reestimate")
    return convert(ann, torch.rand(32, 1, 12, 12), calib_batches=1, calib_T=8, **paper).eval()


def test_roundtrip_random_weights_same_spikes_and_gradients(tmp_path: Path) -> None:
    """Arbitrary float32 weights: folding theta into the next layer reassociates products, so
    logits agree to float32 rounding (not bit for bit); spikes and every estimator's input
    gradient agree; a second round trip is bit for bit (the file is a fixpoint)."""
    snn = _random_snn()
    x = torch.rand(8, 1, 12, 12)
    logits, record = _robustsnn_run(snn, x)
    path = write_nir(tmp_path / "m.nir", export_nir(snn, (1, 12, 12)))
    back = load_nir(path)
    logits2, record2 = _robustsnn_run(back, x)
    assert torch.allclose(logits, logits2, rtol=0, atol=1e-5)
    assert torch.equal(logits.argmax(1), logits2.argmax(1))
    for a, b in zip(record.values(), record2.values(), strict=True):
        assert torch.equal(a, b)
    for estimator in (BPTT(Surrogate("pcw", 1.0)), BPTT(Surrogate("exp", 2.0)), BPTR(), ANNProxy()):
        grads = []
        for model in (snn, back):
            xi = x.clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model.with_estimator(estimator)(xi), torch.arange(8))
            grads.append(torch.autograd.grad(loss, xi)[0])
        assert grads[0].abs().sum() > 0
        assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6), estimator.name
    again = load_nir(write_nir(tmp_path / "m2.nir", export_nir(back, (1, 12, 12))))
    assert torch.equal(_robustsnn_run(again, x)[0], logits2)
