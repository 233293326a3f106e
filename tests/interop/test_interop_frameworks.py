"""Optional group: other frameworks read robustsnn's NIR files (skipped when they are absent).

Install the peers without their dependencies so no other torch is pulled:
``pip install --no-deps spikingjelly nirtorch loguru``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")
sj_nir = pytest.importorskip("spikingjelly.activation_based.nir_exchange")

from robustsnn.conversion import convert  # noqa: E402
from robustsnn.interop.nir_export import export_nir, write_nir  # noqa: E402
from robustsnn.interop.nir_import import load_nir  # noqa: E402
from robustsnn.models import build_model  # noqa: E402


def _spikingjelly_logits(path: Path, x: torch.Tensor, T: int) -> torch.Tensor:
    from spikingjelly.activation_based import functional

    net = sj_nir.import_from_nir(nir.read(path), dt=1e-4).eval()
    functional.reset_net(net)
    state = None
    outs = []
    with torch.no_grad():
        for _ in range(T):
            out, state = net(x) if state is None else net(x, state)
            outs.append(out)
    functional.reset_net(net)
    return torch.stack(outs).mean(0)


def test_quickstart_architecture_in_spikingjelly(tmp_path: Path) -> None:
    """The quickstart SNN's architecture (cnn_small w8 fc64, MNIST shape, T = 8), exported:
    SpikingJelly 2.0's own NIR importer gives robustsnn's imported logits bit for bit and the
    original's to float32 rounding (theta folded into the next layer)."""
    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=10, in_channels=1, image_size=28,
                      mean=[0.1307], std=[0.3081], width=8, fc=64)  # fmt: skip
    paper = dict(reset="hard", v_init=0.0, threshold="percentile", bn="reestimate")
    snn = convert(ann, torch.rand(64, 1, 28, 28), calib_batches=1, calib_T=16, **paper).eval()
    path = write_nir(tmp_path / "quickstart.nir", export_nir(snn, (1, 28, 28)))
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        original = snn(x)
        imported = load_nir(path)(x)
    theirs = _spikingjelly_logits(path, x, snn.T)
    assert torch.equal(theirs, imported)
    assert torch.allclose(theirs, original, rtol=0, atol=1e-5)
    assert torch.equal(theirs.argmax(1), original.argmax(1))
