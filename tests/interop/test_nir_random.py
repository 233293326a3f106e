"""NIR export of a random SNN (issue 32): Poisson input coding, noisy neurons and TA-LIF are
refused with one line, never exported as a silently deterministic graph; on request the input
coding is dropped and recorded in the metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustsnn.cli import main
from robustsnn.errors import UserError
from robustsnn.io.models import save_snn
from robustsnn.snn.encoding import configure_stochastic

nir = pytest.importorskip("nir")

from robustsnn.interop.nir_export import export_checkpoint, export_nir, write_nir  # noqa: E402

from .interop_fixtures import SIZE, dyadic_snn  # noqa: E402

SHAPE = (1, SIZE, SIZE)


def _refused(match: str, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as info:
        export_nir(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def _same_graph(a, b) -> None:  # type: ignore[no-untyped-def]
    assert list(a.nodes) == list(b.nodes) and a.edges == b.edges
    for name in a.nodes:
        fields_a, fields_b = vars(a.nodes[name]), vars(b.nodes[name])
        assert fields_a.keys() == fields_b.keys(), name
        for key, value in fields_a.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, fields_b[key], err_msg=f"{name}.{key}")


def test_export_refuses_poisson_input_coding() -> None:
    snn = configure_stochastic(dyadic_snn("cnn_small", width=2, fc=8), "poisson")
    message = _refused("poisson rate coding", snn, SHAPE)
    assert "silently run on the image" in message and "drop_input_encoding=True" in message


def test_dropped_input_coding_is_the_direct_graph_and_recorded(tmp_path: Path) -> None:
    direct = export_nir(dyadic_snn("cnn_small", width=2, fc=8), SHAPE)
    snn = configure_stochastic(dyadic_snn("cnn_small", width=2, fc=8), "poisson")
    graph = export_nir(snn, SHAPE, drop_input_encoding=True)
    _same_graph(graph, direct)  # the network the coding feeds, node for node
    assert "dropped_input_encoding" not in direct.metadata
    back = nir.read(write_nir(tmp_path / "m.nir", graph))
    assert back.metadata["input_coding"] == "direct"  # what the graph computes
    assert back.metadata["dropped_input_encoding"] == "poisson"
    assert "Bernoulli" in back.metadata["dropped_input_encoding_rule"]


def test_export_refuses_noisy_and_threshold_adapting_neurons() -> None:
    noisy = configure_stochastic(dyadic_snn("cnn_small", width=2, fc=8), "direct", 0.1)
    _refused("threshold noise .0.1 of the threshold.", noisy, SHAPE)
    # dropping the input coding does not drop the neurons' noise
    both = configure_stochastic(dyadic_snn("cnn_small", width=2, fc=8), "poisson", 0.1)
    _refused("threshold noise", both, SHAPE, drop_input_encoding=True)
    from robustsnn.snn.ta_lif import apply_ta_lif

    snn = dyadic_snn("cnn_small", width=2, fc=8)
    apply_ta_lif(snn, torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0)))
    _refused("TA-LIF neuron", snn, SHAPE)


def test_export_command_refuses_a_poisson_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snn = configure_stochastic(dyadic_snn("cnn_small", width=2, fc=8), "poisson")
    snn.arch = {"name": "cnn_small", "num_classes": 4, "in_channels": 1, "image_size": SIZE,
                "mean": [0.25], "std": [0.5], "width": 2, "fc": 8}  # fmt: skip
    snn.conversion = {"bn": "keep"}
    snn.transforms = []
    ckpt = save_snn(tmp_path / "snn.safetensors", snn, dataset="toy")
    out = tmp_path / "m.nir"
    assert main(["export", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "poisson rate coding" in err and len(err.splitlines()) == 1 and not out.exists()
    written = export_checkpoint(ckpt, out, drop_input_encoding=True)
    assert nir.read(written).metadata["dropped_input_encoding"] == "poisson"
