"""BNTT: one BatchNorm per time step, its statistics per step, reload through BODY_TRANSFORMS."""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import cast

import pytest
import torch
from torch import nn

from robustsnn.conversion import ConversionConfig, spiking_body
from robustsnn.errors import UserError
from robustsnn.io.models import BODY_TRANSFORMS, load_model, save_snn
from robustsnn.models import build_model
from robustsnn.snn import ANNProxy, SpikingNetwork, SpikingNeuron
from robustsnn.snn.bntt import BatchNormThroughTime, bntt_transform

T = 3


def tiny_ann(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    ann = build_model(
        "cnn_small",
        num_classes=3,
        in_channels=1,
        image_size=8,
        mean=(0.5,),
        std=(0.25,),
        width=4,
        fc=8,
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in ann.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return ann


def spiking(ann: nn.Module, bntt: bool, leak: float = 1.0, reset: str = "hard") -> SpikingNetwork:
    cfg = ConversionConfig(T=T, leak=leak, reset=reset)
    body = spiking_body(ann, cfg)
    with torch.no_grad():
        for n in body.modules():
            if isinstance(n, SpikingNeuron):
                n.threshold.fill_(0.5)
    transforms = []
    if bntt:
        body = bntt_transform(body, {"T": T})
        transforms = ["bntt"]
    snn = SpikingNetwork(body, T=T)
    snn.arch = ann.arch
    snn.conversion = asdict(cfg)  # type: ignore[assignment]
    snn.transforms = transforms  # type: ignore[assignment]
    return snn


def step_bns(layer: BatchNormThroughTime) -> list[nn.BatchNorm2d]:
    bns = list(layer.bns)
    assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
    return cast(list[nn.BatchNorm2d], bns)


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_transform_registered_and_replaces_every_batchnorm():
    assert BODY_TRANSFORMS["bntt"] is bntt_transform
    snn = spiking(tiny_ann(), bntt=True)
    layers = [m for m in snn.modules() if isinstance(m, BatchNormThroughTime)]
    assert len(layers) == 2 and all(len(m.bns) == T for m in layers)
    direct = [m for m in snn.body.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(direct) == 2 * T  # only inside the BNTT layers
    assert not any(isinstance(m, SpikingNeuron) for layer in layers for m in layer.modules())


def test_fresh_bntt_computes_what_the_shared_batchnorm_did():
    ann = tiny_ann()
    shared, per_step = spiking(ann, bntt=False), spiking(ann, bntt=True)
    shared.eval()
    per_step.eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(per_step(x), shared(x), rtol=0, atol=1e-6)
        with shared.use_estimator(ANNProxy()), per_step.use_estimator(ANNProxy()):
            torch.testing.assert_close(per_step(x), shared(x), rtol=0, atol=1e-6)
            torch.testing.assert_close(per_step(x), ann.eval()(x), rtol=0, atol=1e-6)


def test_each_step_uses_its_own_statistics():
    snn = spiking(tiny_ann(), bntt=True)
    snn.train()
    first, second = [m for m in snn.modules() if isinstance(m, BatchNormThroughTime)]
    seen: dict[str, torch.Tensor] = {}
    second.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0], y=out))
    x = images(8)
    snn(x)
    # The second BNTT sees the spikes of the first layer: a different input at every step.
    steps_in = seen["x"].view(T, 8, *seen["x"].shape[1:])
    steps_out = seen["y"].view(T, 8, *seen["y"].shape[1:])
    means = [cast(torch.Tensor, bn.running_mean) for bn in step_bns(second)]
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])
    for t, bn in enumerate(step_bns(second)):
        xt = steps_in[t]
        mean = xt.mean(dim=(0, 2, 3), keepdim=True)
        var = xt.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        expected = (xt - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1)
        expected = expected + bn.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(steps_out[t], expected, rtol=1e-4, atol=1e-5)
        assert int(cast(torch.Tensor, bn.num_batches_tracked)) == 1
    # The first one gets the static conv output [B, ...]: expanded to T copies, one per BN.
    with torch.no_grad():
        for t, bn in enumerate(step_bns(first)):
            bn.weight.fill_(float(t + 1))
    first.eval()
    ctx = first.context
    static = torch.randn(8, 4, 8, 8)
    ctx.batch = 8
    out = first(static).view(T, 8, 4, 8, 8)
    for t, bn in enumerate(step_bns(first)):
        torch.testing.assert_close(out[t], bn(static))
    assert not torch.allclose(out[0], out[1])


def test_bntt_runs_only_at_its_own_T():
    snn = spiking(tiny_ann(), bntt=True)
    snn.T = T + 1
    with pytest.raises(RuntimeError, match="T=4"):
        snn(images())
    with pytest.raises(UserError, match="BatchNorm"):
        bntt_transform(
            spiking_body(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), ConversionConfig()), {"T": 2}
        )


@pytest.mark.parametrize("leak,reset", [(1.0, "hard"), (0.99, "soft")])
def test_bntt_checkpoint_reloads(tmp_path, leak, reset):
    snn = spiking(tiny_ann(), bntt=True, leak=leak, reset=reset)
    snn.train()
    snn(images(8, seed=3))  # move the per-step statistics
    snn.eval()
    path = save_snn(tmp_path / "bntt.safetensors", snn)
    model, meta = load_model(path)
    assert meta["transforms"] == ["bntt"] and meta["T"] == T
    x = images(5, seed=4)
    with torch.no_grad():
        assert torch.equal(model(x), snn(x))
    # gradients flow through every step's BatchNorm (BPTT)
    clone = copy.deepcopy(model)
    clone(x).sum().backward()
    layer = next(m for m in clone.modules() if isinstance(m, BatchNormThroughTime))
    assert all(
        bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0 for bn in step_bns(layer)
    )
