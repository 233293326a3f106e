"""``robustsnn export --drop-input-encoding``: a Poisson-coded SNN, refused without the flag, is
exported with it as the network the coding feeds, the dropped coding named in the metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustsnn.cli import build_parser, main
from robustsnn.io.models import save_snn
from robustsnn.snn.encoding import configure_stochastic

from .interop_fixtures import SIZE, dyadic_snn

nir = pytest.importorskip("nir")


def test_export_drop_input_encoding_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_parser().parse_args(["export", "c", "--out", "x"]).drop_input_encoding is False
    snn = configure_stochastic(dyadic_snn("cnn_small", width=2, fc=8), "poisson")
    snn.arch = {"name": "cnn_small", "num_classes": 4, "in_channels": 1, "image_size": SIZE,
                "mean": [0.25], "std": [0.5], "width": 2, "fc": 8}  # fmt: skip
    snn.conversion = {"bn": "keep"}
    snn.transforms = []
    ckpt = save_snn(tmp_path / "snn.safetensors", snn, dataset="toy")
    out = tmp_path / "m.nir"
    assert main(["export", str(ckpt), "--out", str(out)]) == 2 and not out.exists()
    assert "poisson rate coding" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(out), "--drop-input-encoding"]) == 0
    metadata = nir.read(out).metadata
    assert metadata["dropped_input_encoding"] == "poisson" and metadata["input_coding"] == "direct"
