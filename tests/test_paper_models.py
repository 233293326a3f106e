"""The paper's architectures, layer by layer and parameter by parameter.

Reference: the paper's public code, IGITUGraz/RobustSNNConversion, ``models/VGG.py``,
``models/ResNet.py`` and ``models/WideResNet.py`` (default arguments: ``use_bias=False``, VGG
dropout 0.2, WRN dropout 0). The parameter counts below are derived by hand from that code
(3x3 convolutions ``9 * cin * cout``, no conv biases, BatchNorm ``2 * channels``, two
convex-combination weights per residual block, linear layers without bias); every sum is spelled
out so a reader can check it. Full-size models are built on the ``meta`` device (shapes only,
no memory); conversion and the estimators run on width-reduced copies with tiny inputs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from robustsnn.conversion import convert
from robustsnn.models import add_zero_biases, build_model
from robustsnn.snn.estimators import paper_estimators, sota_estimators

CIFAR = dict(in_channels=3, image_size=32, num_classes=10)
CIFAR100 = dict(in_channels=3, image_size=32, num_classes=100)
TIN = dict(in_channels=3, image_size=64, num_classes=200)


def _build(name: str, shape: dict[str, int], device: str = "meta", **kw: Any) -> nn.Module:
    with torch.device(device):
        return build_model(name, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], **shape, **kw)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv3(cin: int, cout: int) -> int:
    return 9 * cin * cout


def _layers(model: nn.Module) -> list[str]:
    """Compact layer list: C<out> conv, B batchnorm, R relu, A avgpool, G global pool,
    D dropout, F flatten, L<in>x<out> linear (no bias) / L<in>x<out>+b (bias)."""
    out: list[str] = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            out.append(f"C{m.out_channels}" + ("+b" if m.bias is not None else ""))
        elif isinstance(m, nn.BatchNorm2d):
            out.append("B")
        elif isinstance(m, nn.ReLU):
            out.append("R")
        elif isinstance(m, nn.AvgPool2d):
            out.append("A")
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            out.append("G")
        elif isinstance(m, nn.Dropout):
            out.append(f"D{m.p}")
        elif isinstance(m, nn.Flatten):
            out.append("F")
        elif isinstance(m, nn.Linear):
            out.append(f"L{m.in_features}x{m.out_features}" + ("+b" if m.bias is not None else ""))
    return out


# ------------------------------------------------------------------------------------ VGG
VGG11_CONVS = _conv3(3, 64) + _conv3(64, 128) + _conv3(128, 256) + _conv3(256, 512)
VGG11_CONVS += 4 * _conv3(512, 512)  # = 1728 + 73728 + 294912 + 1179648 + 4 * 2359296
VGG11_BN = 2 * (64 + 128 + 256 + 5 * 512)  # = 6016


def test_vgg11_cifar_matches_the_papers_code() -> None:
    model = _build("vgg11", CIFAR)
    cbr = lambda c: [f"C{c}", "B", "R"]  # noqa: E731
    assert _layers(model) == [
        *cbr(64), "A", *cbr(128), *cbr(256), "A", *cbr(512), *cbr(512), *cbr(512), "A",
        *cbr(512), *cbr(512),
        "F", "L8192x4096", "R", "D0.2", "L4096x4096", "R", "D0.2", "L4096x10",
    ]  # fmt: skip
    assert VGG11_CONVS == 10_987_200
    fc = 512 * 4 * 4 * 4096 + 4096 * 4096 + 4096 * 10  # = 33554432 + 16777216 + 40960
    assert _count(model) == VGG11_CONVS + VGG11_BN + fc == 61_365_824
    assert _count(_build("vgg11", CIFAR100)) == 61_365_824 + 4096 * 90


def test_vgg11_tin_matches_the_papers_code() -> None:
    model = _build("vgg11_tin", TIN)
    cbr = lambda c: [f"C{c}", "B", "R"]  # noqa: E731
    assert _layers(model) == [
        *cbr(64), "A", *cbr(128), "A", *cbr(256), *cbr(256), "A", *cbr(512), *cbr(512), "A",
        *cbr(512), *cbr(512),
        "G", "F", "L512x4096", "R", "L4096x200",
    ]  # fmt: skip
    convs = _conv3(3, 64) + _conv3(64, 128) + _conv3(128, 256) + _conv3(256, 256)
    convs += _conv3(256, 512) + 3 * _conv3(512, 512)  # = 9217728
    bn = 2 * (64 + 128 + 256 + 256 + 4 * 512)  # = 5504
    assert convs == 9_217_728
    assert _count(model) == convs + bn + 512 * 4096 + 4096 * 200 == 12_139_584
    # global pooling: the same parameters on 32x32 CIFAR inputs
    assert _count(_build("vgg11_tin", {**CIFAR, "num_classes": 200})) == 12_139_584


def test_vgg16_matches_the_papers_code() -> None:
    model = _build("vgg16", CIFAR)
    convs = _conv3(3, 64) + _conv3(64, 64) + _conv3(64, 128) + _conv3(128, 128)
    convs += _conv3(128, 256) + 2 * _conv3(256, 256) + _conv3(256, 512) + 5 * _conv3(512, 512)
    bn = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)  # = 8448
    fc = 512 * 4096 + 4096 * 4096 + 4096 * 10  # 5 pools: 512 x 1 x 1 at 32x32
    assert convs == 14_710_464
    assert _count(model) == convs + bn + fc == 33_634_240
    assert _layers(model)[-9:] == [
        "A", "F", "L512x4096", "R", "D0.2", "L4096x4096", "R", "D0.2", "L4096x10",
    ]  # fmt: skip
    assert _layers(model).count("A") == 5 and _layers(model).count("R") == 13 + 2
    # 64x64 inputs leave 2x2 maps (the paper's code only builds 32x32 VGG16): 2048 inputs
    assert _layers(_build("vgg16", TIN))[-7] == "L2048x4096"


def test_vgg11_on_tinyimagenet_shapes_and_the_standard_layout() -> None:
    # the CIFAR VGG11 on 64x64 inputs: 512 x 8 x 8 features into the first linear layer
    big = _build("vgg11", TIN)
    assert _count(big) == VGG11_CONVS + VGG11_BN + 32768 * 4096 + 4096 * 4096 + 4096 * 200
    # the classic layout: five pools, 512 x 1 x 1, biased classifier with dropout 0.5
    std = _build("vgg11_standard", CIFAR)
    assert _layers(std)[-8:] == [
        "F", "L512x4096+b", "R", "D0.5", "L4096x4096+b", "R", "D0.5", "L4096x10+b",
    ]  # fmt: skip
    convs = _conv3(3, 64) + _conv3(64, 128) + _conv3(128, 256) + _conv3(256, 256)
    convs += _conv3(256, 512) + 3 * _conv3(512, 512)
    fc = 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    assert _count(std) == convs + 2 * (64 + 128 + 2 * 256 + 4 * 512) + fc


def test_vgg_bias_option_adds_biases_everywhere() -> None:
    model = _build("vgg11", CIFAR, bias=True)
    biases = 64 + 128 + 256 + 5 * 512 + 4096 + 4096 + 10
    assert _count(model) == 61_365_824 + biases


# --------------------------------------------------------------------------------- ResNet
def test_resnet20_matches_the_papers_code() -> None:
    model = _build("resnet20", CIFAR)
    layers = _layers(model)
    # stem conv-BN-ReLU; per block conv1-BN-ReLU-conv2-BN [1x1 conv-BN shortcut] ReLU
    expected = ["C16", "B", "R"]
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(3):
            shortcut = ["C" + str(cout), "B"] if cin != cout else []
            expected += [f"C{cout}", "B", "R", f"C{cout}", "B", *shortcut, "R"]
            cin = cout
    expected += ["G", "F", "L64x10"]  # readout without bias (use_bias=False)
    assert layers == expected
    stem = _conv3(3, 16) + 2 * 16
    same = lambda c: 2 * _conv3(c, c) + 2 * 2 * c + 2  # noqa: E731  (+2 convex weights)
    down = lambda a, b: _conv3(a, b) + _conv3(b, b) + 2 * 2 * b + a * b + 2 * b + 2  # noqa: E731
    total = stem + 3 * same(16) + down(16, 32) + 2 * same(32) + down(32, 64) + 2 * same(64)
    total += 64 * 10
    assert total == 272_482
    assert _count(model) == total
    assert _count(_build("resnet20", TIN)) == total - 640 + 64 * 200
    merges = [m for n, m in model.named_parameters() if n.endswith(".merge")]
    assert len(merges) == 9


def test_wrn16_4_matches_the_papers_code() -> None:
    model = _build("wrn16_4", CIFAR)
    layers = _layers(model)
    # a bare conv stem; pre-activation blocks BN-ReLU-conv1-BN-ReLU-conv2 [1x1 conv shortcut]
    expected = ["C16"]
    cin = 16
    for cout in (64, 128, 256):
        for _ in range(2):
            shortcut = [f"C{cout}"] if cin != cout else []
            expected += ["B", "R", f"C{cout}", "B", "R", f"C{cout}", *shortcut]
            cin = cout
    expected += ["B", "R", "G", "F", "L256x10"]
    assert layers == expected
    # block(cin, cout): bn1(cin), conv1, bn2(cout), conv2, 1x1 shortcut if cin != cout, merge
    block = lambda a, b: 2 * a + _conv3(a, b) + 2 * b + _conv3(b, b) + (a * b if a != b else 0) + 2  # noqa: E731
    total = _conv3(3, 16) + block(16, 64) + block(64, 64) + block(64, 128) + block(128, 128)
    total += block(128, 256) + block(256, 256) + 2 * 256 + 256 * 10
    assert total == 2_748_892
    assert _count(model) == total
    assert _count(_build("wrn16_4", TIN)) == total - 2560 + 256 * 200


def test_residual_merge_starts_as_the_mean_of_both_branches() -> None:
    torch.manual_seed(0)
    model = _build("resnet20", CIFAR, device="cpu", blocks=1).eval()
    block = model.layers[0]
    x = torch.randn(2, 16, 8, 8)
    residual = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), torch.relu(0.5 * x + 0.5 * residual), atol=1e-6)


# ------------------------------------------------------------------ convert + every estimator
TINY: dict[str, dict[str, Any]] = {
    "vgg11": dict(width=1 / 8, hidden=64),
    "vgg11_tin": dict(width=1 / 8, hidden=64),
    "vgg16": dict(width=1 / 8, hidden=64),
    "resnet20": dict(blocks=1),
    "wrn16_4": dict(width=1),
}


@pytest.mark.parametrize("name", list(TINY))
def test_paper_models_convert_and_every_estimator_gives_a_gradient(name: str) -> None:
    size = 64 if name == "vgg11_tin" else 32
    shape = {**CIFAR, "image_size": size}
    torch.manual_seed(0)
    ann = _build(name, shape, device="cpu", **TINY[name])
    calib = torch.rand(8, 3, size, size)
    # BatchNorm statistics of the data (an untrained net's unit statistics silence deep layers)
    for m in ann.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        ann.train()(calib)
    ann.eval()
    snn = convert(ann, calib, T=4, calib_T=8, calib_batches=2, calib_batch_size=4).eval()
    x = torch.rand(4, 3, size, size)
    assert snn(x).shape == (4, 10)
    for estimator in [*paper_estimators(), *sota_estimators()]:
        xg = x.clone().requires_grad_(True)
        logits = snn.with_estimator(estimator)(xg)
        logits.logsumexp(1).sum().backward()
        assert xg.grad is not None and torch.isfinite(xg.grad).all(), estimator.name
        assert xg.grad.abs().sum() > 0, f"{name}: zero input gradient with {estimator.name}"


def test_add_zero_biases_keeps_outputs_and_adds_trainable_biases() -> None:
    torch.manual_seed(0)
    model = _build("vgg11", CIFAR, device="cpu", **TINY["vgg11"]).eval()
    x = torch.rand(2, 3, 32, 32)
    before = model(x)
    changed = add_zero_biases(model)
    assert len(changed) == 8 + 3  # every conv and linear layer of the paper's VGG11
    assert torch.equal(model(x), before)
    assert all(model.get_submodule(n).bias.requires_grad for n in changed)  # type: ignore[union-attr]
    assert add_zero_biases(model) == []
