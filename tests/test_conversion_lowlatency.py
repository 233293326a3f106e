"""Low-latency conversion (issue 14): QCFS, initial membrane theta/2, MSE thresholds, corrections.

Closed-form tests that fail if the recipe is wrong (../shared/research/conversion.md 7.1, 7.2).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsnn.conversion import (
    ConversionConfig,
    convert,
    mse_threshold,
    rate_quantiser_mse,
)
from robustsnn.errors import UserError
from robustsnn.io.models import load_model, save_snn
from robustsnn.models import build_model
from robustsnn.models.qcfs import QCFS, qcfs
from robustsnn.snn import ANNProxy
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron


def _spike_counts(z: torch.Tensor, theta: float, steps: int, **neuron: object) -> torch.Tensor:
    """Spike counts of one layer of neurons under the constant inputs ``z`` (float64)."""
    layer = SpikingNeuron(theta, **neuron).double()  # type: ignore[arg-type]
    with torch.no_grad():
        layer.threshold.fill_(theta)
    snn = SpikingNetwork(nn.Sequential(layer), T=steps)
    with torch.no_grad():
        rate = snn(z.view(-1, 1))  # mean over T of theta * s
    return torch.round(rate.view(-1) * steps / theta)


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_spike_count_is_rounding_with_half_threshold_start(steps: int) -> None:
    theta = 0.75
    # offset grid: no point sits exactly on a rounding boundary (m - 1/2) / T
    z = theta * (torch.arange(1501, dtype=torch.float64) * 0.001 - 0.2 + 0.0003)
    counts = _spike_counts(z, theta, steps, reset="soft", v_init=0.5)
    expected = torch.clamp(torch.floor(z * steps / theta + 0.5), 0, steps)
    assert torch.equal(counts, expected)


def test_spike_count_formula_rejects_the_paper_neuron() -> None:
    """The formula is specific: hard reset and a zero start both break it (research note 7.2)."""
    theta, steps = 1.0, 8
    z = torch.tensor([0.9, 0.95], dtype=torch.float64)
    assert _spike_counts(z, theta, steps, reset="hard", v_init=0.5)[0] == 4  # not 7
    assert _spike_counts(z, theta, steps, reset="soft", v_init=0.0)[1] == 7  # not 8
    assert _spike_counts(z, theta, steps, reset="soft", v_init=0.5)[1] == 8


def _qcfs_net(levels: int) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        QCFS(levels, lam=1.7),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
    ).double()
    bn = net[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.6)
    return net.eval()


@pytest.mark.parametrize("levels", [4, 8])
def test_qcfs_snn_at_T_equal_L_reproduces_the_ann_logits(levels: int) -> None:
    ann = _qcfs_net(levels)
    x = torch.rand(64, 3, 8, 8, dtype=torch.float64)
    cfg = dict(T=levels, threshold="qcfs", reset="soft", v_init=0.5, bn="keep")
    snn = convert(ann, x, **cfg)
    with torch.no_grad():
        expected = ann(x)
        assert torch.allclose(snn(x), expected, atol=1e-9, rtol=0)
        # the ANN proxy of a QCFS-converted SNN is the QCFS ANN itself
        with snn.use_estimator(ANNProxy()):
            assert torch.allclose(snn(x), expected, atol=1e-12, rtol=0)
        assert snn.thresholds()["2"] == pytest.approx(1.7)
        # a zero initial membrane (floor instead of round) breaks the equality
        floor = convert(ann, x, **{**cfg, "v_init": 0.0})
        assert not torch.allclose(floor(x), expected, atol=1e-3)


def test_qcfs_activation_formula_and_straight_through_gradient() -> None:
    x = torch.linspace(-1, 3, 401, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y = qcfs(x, lam, 4)
    expected = 2.0 * torch.clamp(torch.floor(x.detach() * 4 / 2.0 + 0.5) / 4, 0, 1)
    assert torch.equal(y.detach(), expected)
    y.sum().backward()
    assert x.grad is not None and lam.grad is not None
    inside = (x.detach() > -0.25) & (x.detach() < 2.25)  # where floor(.)+shift is not clipped
    assert bool((x.grad[inside] == 1).all()) and bool((x.grad[~inside] == 0).all())


def _one_layer(bias: float = 0.0) -> nn.Module:
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)).double()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(bias)
        net[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[2].bias.zero_()
    return net.eval()


def _toy_convert(calibration: str, v_init: float, steps: int = 8):  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    x = torch.rand(4096, 1, dtype=torch.float64)  # inputs uniform over (0, theta ~ 1)
    ann = _one_layer()
    snn = convert(
        ann, x, T=steps, reset="soft", v_init=v_init, bn="keep", percentile=100.0, scale=1.0,
        calib_batches=1, calib_batch_size=4096, calibration=calibration, correction_images=4096,
        correction_batch_size=1024,
    )  # fmt: skip
    return snn, float(snn.neurons()[0].threshold.detach())


@pytest.mark.parametrize("steps", [4, 8])
def test_bias_correction_equals_closed_form(steps: int) -> None:
    """Floor quantiser (v_init 0): mean error -theta/(2T), so the bias rises by theta/(2T)."""
    snn, theta = _toy_convert("bias", 0.0, steps)
    shift = float(snn.body[0].bias)
    assert shift == pytest.approx(theta / (2 * steps), rel=0.1)
    # with the rounding start there is nothing to correct
    snn, theta = _toy_convert("bias", 0.5, steps)
    assert abs(float(snn.body[0].bias)) < 0.1 * theta / (2 * steps)


@pytest.mark.parametrize("steps", [4, 8])
def test_potential_correction_rediscovers_the_half_threshold_start(steps: int) -> None:
    snn, theta = _toy_convert("potential", 0.0, steps)
    init = snn.neurons()[0].init_membrane
    assert init is not None and init.shape == (1,)
    assert float(init) == pytest.approx(theta / 2, rel=0.1)
    snn, theta = _toy_convert("potential", 0.5, steps)
    init = snn.neurons()[0].init_membrane
    assert init is not None and abs(float(init)) < 0.05 * theta
    assert snn.conversion["corrections"]  # recorded in the metadata


def test_mse_threshold_beats_percentile_rules_and_grows_with_T() -> None:
    torch.manual_seed(0)
    z = torch.randn(100_000)
    p997 = float(torch.quantile(z.abs()[:50_000], 0.997))  # p99.7 of the half-normal
    chosen = []
    for steps in (2, 4, 8, 16):
        theta = mse_threshold(z, steps, 0.5)
        chosen.append(theta)
        errors = rate_quantiser_mse(z, torch.tensor([theta, 0.3 * p997, p997]), steps, 0.5)
        assert float(errors[0]) <= float(errors[1]) and float(errors[0]) <= float(errors[2])
    assert chosen == sorted(chosen)


def test_low_latency_options_round_trip_through_a_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ann = build_model(
        "cnn_small", num_classes=10, in_channels=1, image_size=12, mean=[0.5], std=[0.25],
        width=4, fc=16, activation="qcfs", qcfs_levels=4, qcfs_lam=2.0,
    )  # fmt: skip
    assert ann.arch["activation"] == "qcfs"  # type: ignore[index]
    assert sum(isinstance(m, QCFS) for m in ann.modules()) == 3
    ann.eval()
    x = torch.rand(32, 1, 12, 12)
    for calibration, threshold in (("potential", "qcfs"), ("bias", "mse")):
        snn = convert(
            ann, x, T=4, reset="soft", v_init=0.5, threshold=threshold, bn="keep",
            calibration=calibration, correction_images=32, calib_batches=1,
        )  # fmt: skip
        path = save_snn(tmp_path / f"{calibration}.safetensors", snn)
        loaded, meta = load_model(path)
        assert meta["conversion"]["v_init"] == 0.5
        assert meta["conversion"]["calibration"] == calibration
        assert meta["conversion"]["threshold"] == threshold
        with torch.no_grad():
            assert torch.equal(loaded(x), snn(x))
            with loaded.use_estimator(ANNProxy()):  # type: ignore[operator]
                assert torch.allclose(loaded(x), ann(x)) or calibration == "bias"


def test_bad_conversion_options_are_one_line_errors() -> None:
    ann = _one_layer()
    x = torch.rand(8, 1, dtype=torch.float64)
    with pytest.raises(UserError, match="threshold rule"):
        convert(ann, x, threshold="max")
    with pytest.raises(UserError, match="calibration"):
        convert(ann, x, calibration="weights")
    with pytest.raises(UserError, match="v_init"):
        convert(ann, x, v_init=1.5)
    with pytest.raises(UserError, match="QCFS ANN"):
        convert(ann, x, threshold="qcfs")
    assert ConversionConfig().v_init == 0.5  # the measured default (RESULTS section 8)


def test_masking_diagnostics_see_gradients_through_a_qcfs_snn() -> None:
    """Every default estimator (BPTT, BPTR, the QCFS ANN proxy) gives finite, non-zero input
    gradients on a QCFS-converted SNN with the theta/2 start (diagnostics' finite_gradients)."""
    from robustsnn.evaluation.diagnostics import input_gradients
    from robustsnn.snn import BPTR, BPTT

    ann = _qcfs_net(4).float()
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 10, (16,))
    snn = convert(ann, x, T=4, threshold="qcfs", reset="soft", v_init=0.5, bn="keep")
    for estimator in (BPTT(), BPTR(), ANNProxy()):
        grad = input_gradients(snn.with_estimator(estimator), x, y)
        assert torch.isfinite(grad).all()
        assert float(grad.abs().flatten(1).sum(1).gt(0).float().mean()) > 0.5, estimator


def test_config_keys_reach_the_conversion() -> None:
    from robustsnn.config import load_config
    from robustsnn.pipeline import conversion_config

    cfg = load_config(
        None,
        [
            "snn.v_init=0.5", "snn.threshold=qcfs", "snn.calibration=potential",
            "snn.correction_images=512", "model.activation=qcfs", "model.qcfs_levels=4",
            "model.qcfs_lam=2.0",
        ],
    )  # fmt: skip
    conv = conversion_config(cfg)
    assert (conv.v_init, conv.threshold, conv.calibration) == (0.5, "qcfs", "potential")
    assert conv.correction_images == 512
    assert (cfg.model.activation, cfg.model.qcfs_levels, cfg.model.qcfs_lam) == ("qcfs", 4, 2.0)
