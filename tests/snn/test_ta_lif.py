"""HoSNN's threshold-adapting LIF neuron (the "ta_lif" body transform, issue 32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustsnn.conversion import convert
from robustsnn.errors import UserError
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.io.models import load_model, save_snn
from robustsnn.models import build_model
from robustsnn.snn import ANNProxy, SpikingNetwork, parse_estimator
from robustsnn.snn.neuron import SpikingNeuron, TimeContext
from robustsnn.snn.ta_lif import (
    ThresholdAdaptingNeuron,
    apply_ta_lif,
    fit_signature,
)

FAST = dict(calib_T=6, calib_batches=1, calib_batch_size=16)


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _snn(T: int = 4) -> SpikingNetwork:
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.25],
        width=4, fc=16,
    )  # fmt: skip
    return convert(ann.eval(), _images(16), T=T, reset="soft", bn="keep", **FAST).eval()


def _neuron(adaptation: float, reset: str = "soft", leak: float = 0.9) -> ThresholdAdaptingNeuron:
    base = SpikingNeuron(0.7, leak=leak, reset=reset).double()
    base.context = TimeContext(steps=6, batch=3)
    return ThresholdAdaptingNeuron(base, (5,), 6, adaptation)


def _reference(
    current: torch.Tensor, theta: float, leak: float, soft: bool, nds: torch.Tensor, tv: float
) -> torch.Tensor:
    """The TA-LIF rule of the module doc, one step at a time."""
    u = torch.zeros_like(current)
    th = torch.full_like(current, theta)
    spikes = []
    for t in range(nds.shape[0]):
        h = leak * u + current
        th = th + tv * (h - nds[t])
        s = (h >= th).double()
        spikes.append(s)
        u = h - theta * s if soft else h * (1 - s)
    return torch.stack(spikes)


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_ta_lif_follows_the_hosnn_rule(reset: str) -> None:
    neuron = _neuron(0.3, reset)
    nds = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    neuron.signature.copy_(nds)
    current = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = neuron(current).view(6, 3, 5)
    theta = float(neuron.threshold.detach())
    expected = _reference(current, theta, 0.9, reset == "soft", nds, 0.3)
    assert torch.equal(out.detach().ne(0).double(), expected)


def test_zero_adaptation_is_the_plain_neuron_bit_for_bit() -> None:
    neuron = _neuron(0.0)
    plain = SpikingNeuron(0.7, leak=0.9, reset="soft").double()
    plain.context = neuron.context
    current = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(neuron(current), plain(current))


def test_adaptation_damps_the_response_to_a_perturbation() -> None:
    """A perturbation raising the membrane above the signature raises the threshold: fewer
    extra spikes than the plain neuron fires (the homeostasis the paper builds on)."""
    clean = torch.full((3, 5), 0.3, dtype=torch.float64)
    perturbed = clean + 0.4
    changes = {}
    for tv in (0.0, 0.1):
        neuron = _neuron(0.0)
        neuron.signature_record = []
        neuron(clean)  # the signature: the plain clean trajectory (as fit_signature does)
        neuron.signature.copy_(torch.stack(neuron.signature_record))
        neuron.signature_record = None
        neuron.adaptation.data.fill_(tv)
        counts = [neuron(x).detach().ne(0).sum() for x in (clean, perturbed)]
        changes[tv] = int(counts[1] - counts[0])
    assert 0 < changes[0.1] < changes[0.0]  # 45 vs 60 extra spikes


def test_network_with_ta_lif_runs_attacks_and_round_trips(tmp_path: Path) -> None:
    snn = _snn()
    x = _images(24, seed=5)
    before = snn(x)
    apply_ta_lif(snn, x, adaptation=0.05)
    assert all(isinstance(n, ThresholdAdaptingNeuron) for n in snn.neurons())
    assert snn.transforms == ["ta_lif"]
    after = snn(x)
    assert after.shape == before.shape and torch.isfinite(after).all()
    # input gradients through every kind of estimator (fallback for the non-BPTT ones)
    for name in ("bptt-pcw-1", "bptt-rel-pcw-1", "bptr", "assg-atan-0.4"):
        leaf = x[:4].clone().requires_grad_(True)
        with snn.use_estimator(parse_estimator(name)):
            (grad,) = torch.autograd.grad(snn(leaf).logsumexp(1).sum(), leaf)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    with snn.use_estimator(ANNProxy()):
        assert torch.isfinite(snn(x)).all()
    # theta_v is learnable
    snn.train()
    loss = snn(x[:4]).logsumexp(1).sum()
    (grad_tv,) = torch.autograd.grad(loss, [snn.neurons()[0].adaptation])
    assert torch.isfinite(grad_tv).all()
    snn.eval()
    path = tmp_path / "ta.safetensors"
    save_snn(path, snn, dataset="toy")
    loaded, meta = load_model(path)
    assert meta["transforms"] == ["ta_lif"] and "ta_lif" in meta["conversion"]
    assert torch.equal(loaded(x), snn(x))
    y = after.argmax(1)
    result = evaluate(
        snn, x[:8], y[:8],
        EvaluationConfig(
            eps=0.1, attacks=[{"attack": "fgsm", "estimator": "bptt-pcw-1"}], diagnostics="none"
        ),
        EvaluationContext(quiet=True),
    )  # fmt: skip
    assert result["randomness"]["detected"] is False
    assert 0.0 <= result["robust_accuracy"] <= result["clean_accuracy"]


def test_fit_signature_needs_ta_lif_layers() -> None:
    with pytest.raises(UserError, match="TA-LIF"):
        fit_signature(_snn(), _images(4))
    with pytest.raises(UserError, match="SpikingNetwork"):
        apply_ta_lif(torch.nn.Linear(2, 2), _images(2))


def test_convert_command_makes_a_ta_lif_snn(tmp_path: Path) -> None:
    import numpy as np

    from robustsnn.cli import main
    from robustsnn.io.models import save_ann

    rng = np.random.default_rng(0)
    data = tmp_path / "grey.npz"
    np.savez(data, x_train=rng.integers(0, 255, (32, 8, 8, 1), dtype=np.uint8),
             y_train=np.arange(32) % 3, x_test=rng.integers(0, 255, (12, 8, 8, 1), dtype=np.uint8),
             y_test=np.arange(12) % 3)  # fmt: skip
    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=3, in_channels=1, image_size=8, mean=[0.5],
                      std=[0.25], width=4, fc=16)  # fmt: skip
    ckpt = save_ann(tmp_path / "ann.safetensors", ann, dataset=f"npz:{data}")
    code = main(["convert", str(ckpt), "--T", "4", "--calib-T", "8", "--calib-batches", "1",
                 "--calib-batch-size", "16", "--eval-n", "6", "--ta-lif", "0.05",
                 "--out", str(tmp_path / "snn"), "--quiet"])  # fmt: skip
    assert code == 0
    model, meta = load_model(tmp_path / "snn" / "snn.safetensors")
    assert meta["transforms"] == ["ta_lif"]
    assert isinstance(model, SpikingNetwork)
    assert all(isinstance(n, ThresholdAdaptingNeuron) for n in model.neurons())
    assert float(model.neurons()[0].adaptation.detach().mean()) == pytest.approx(0.05)
