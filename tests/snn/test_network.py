"""SpikingNetwork: ANN proxy, thresholds, statelessness, T, recording, eval-mode gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustsnn.conversion import convert
from robustsnn.models import build_model
from robustsnn.snn.estimators import BPTR, BPTT, ANNProxy, estimator_names, parse_estimator
from robustsnn.snn.network import EstimatorView, SpikingNetwork
from robustsnn.snn.neuron import THRESHOLD_MIN, SpikingNeuron
from robustsnn.snn.surrogates import Surrogate


def _tiny_ann(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    ann = build_model(
        "cnn_small",
        num_classes=3,
        in_channels=1,
        image_size=8,
        mean=[0.5],
        std=[0.25],
        width=4,
        fc=16,
    )
    # non-trivial BatchNorm statistics, so "keep" and the ANN proxy exercise BN
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.3)
    return ann.eval()


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def ann() -> nn.Module:
    return _tiny_ann()


@pytest.fixture(scope="module")
def snn(ann: nn.Module) -> SpikingNetwork:
    net = convert(ann, _images(32), T=6, calib_T=8, calib_batches=2, calib_batch_size=16, bn="keep")
    return net.eval()


def test_structure(snn: SpikingNetwork) -> None:
    names = [n.name for n in snn.neurons()]
    assert names == ["features.2", "features.6", "classifier.2"]
    assert snn.T == 6
    assert all(t >= THRESHOLD_MIN for t in snn.thresholds().values())
    assert snn.threshold_parameters() == [n.threshold for n in snn.neurons()]
    assert all(isinstance(p, nn.Parameter) and p.dim() == 0 for p in snn.threshold_parameters())


def test_ann_proxy_output_equals_source_ann(ann: nn.Module, snn: SpikingNetwork) -> None:
    x = _images(5, seed=7)
    with torch.no_grad():
        expected = ann(x)
        with snn.use_estimator(ANNProxy()):
            got = snn(x)
        via_view = snn.with_estimator(ANNProxy())(x)
    assert torch.equal(got, expected)
    assert torch.equal(via_view, expected)
    assert snn.estimator != ANNProxy()  # restored after the block


def test_large_threshold_with_t1_never_fires(snn: SpikingNetwork) -> None:
    x = _images(4, seed=3)
    old = {n: n.threshold.detach().clone() for n in snn.neurons()}
    try:
        with torch.no_grad():
            for n in snn.neurons():
                n.threshold.fill_(1e6)
        snn.T = 1
        with torch.no_grad(), snn.recording() as rec:
            out = snn(x)
        assert set(rec) == {n.name for n in snn.neurons()}
        for name, spikes in rec.items():
            assert spikes.shape[0] == 1 and not spikes.any(), name
        # nothing reaches the readout: the logits are its bias
        readout = snn.body.classifier[-1]
        assert torch.equal(out, readout.bias.expand(4, -1))
    finally:
        snn.T = 6
        with torch.no_grad():
            for n, t in old.items():
                n.threshold.copy_(t)


def test_thresholds_never_below_clamp(snn: SpikingNetwork) -> None:
    x = _images(4, seed=4)
    old = {n: n.threshold.detach().clone() for n in snn.neurons()}
    try:
        with torch.no_grad():
            for n in snn.neurons():
                n.threshold.fill_(THRESHOLD_MIN)
            at_min = snn(x)
            for n in snn.neurons():
                n.threshold.fill_(-0.5)  # below the clamp (e.g. after an optimizer step)
            below = snn(x)
        assert torch.equal(below, at_min), "forward must clamp the threshold"
        # the clamp also holds for the gradient path
        xg = x.clone().requires_grad_(True)
        snn(xg).sum().backward()
        assert xg.grad is not None and torch.isfinite(xg.grad).all()
        snn.clamp_thresholds()
        assert all(t == pytest.approx(THRESHOLD_MIN) for t in snn.thresholds().values())
        with torch.no_grad():
            for n in snn.neurons():
                n.threshold.fill_(0.5)
        snn.clamp_thresholds()
        assert all(t == pytest.approx(0.5) for t in snn.thresholds().values())
    finally:
        snn.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, t in old.items():
                n.threshold.copy_(t)


def test_no_state_survives_between_calls(snn: SpikingNetwork) -> None:
    a, b = _images(4, seed=5), _images(7, seed=6)
    with torch.no_grad():
        first = snn(a)
        again = snn(a)
        other = snn(b)
        after_other = snn(a)
    assert torch.equal(first, again)
    assert torch.equal(first, after_other)
    assert other.shape == (7, 3)
    # the same with gradients (the fused autograd path) and through estimators
    for est in (BPTT(Surrogate("pcw", 1.0)), BPTR()):
        with snn.use_estimator(est):
            assert torch.equal(snn(a.clone().requires_grad_(True)).detach(), first)


def test_batch_of_one_and_per_sample_independence(snn: SpikingNetwork) -> None:
    x = _images(3, seed=8)
    with torch.no_grad():
        full = snn(x)
        singles = torch.cat([snn(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(full, singles, rtol=1e-5, atol=1e-5)


def test_t_is_changeable(snn: SpikingNetwork) -> None:
    x = _images(2, seed=9)
    try:
        for steps in (1, 3, 10):
            snn.T = steps
            assert snn.T == steps and snn.context.steps == steps
            with torch.no_grad(), snn.recording() as rec:
                out = snn(x)
            assert out.shape == (2, 3)
            assert all(s.shape[0] == steps for s in rec.values())
        with pytest.raises(ValueError):
            snn.T = 0
    finally:
        snn.T = 6
    assert snn.T == 6


def test_recording_gives_bool_spikes_per_layer(snn: SpikingNetwork) -> None:
    x = _images(2, seed=10)
    with torch.no_grad(), snn.recording() as rec:
        snn(x)
    assert snn.context.record is None  # recording stops after the block
    assert list(rec) == ["features.2", "features.6", "classifier.2"]
    assert rec["features.2"].shape == (6, 2, 4, 8, 8)
    assert rec["features.6"].shape == (6, 2, 8, 4, 4)
    assert rec["classifier.2"].shape == (6, 2, 16)
    for spikes in rec.values():
        assert spikes.dtype == torch.bool
    assert rec["features.2"].any()
    # the recorded spikes are those of the layer: theta * spikes is what the layer emits
    neuron = snn.neurons()[0]
    captured: list[torch.Tensor] = []
    handle = neuron.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    try:
        with torch.no_grad(), snn.recording() as rec2:
            snn(x)
    finally:
        handle.remove()
    emitted = captured[0].view(6, 2, 4, 8, 8)
    assert torch.equal(emitted.ne(0), rec2["features.2"])
    theta = float(neuron.threshold.detach())
    assert torch.allclose(emitted[emitted.ne(0)], torch.tensor(theta))


def test_recording_with_gradients(snn: SpikingNetwork) -> None:
    x = _images(2, seed=10).requires_grad_(True)
    with torch.no_grad(), snn.recording() as plain:
        snn(x)
    with snn.recording() as rec:
        snn(x).sum().backward()
    for name in plain:
        assert torch.equal(plain[name], rec[name])


@pytest.mark.parametrize("name", estimator_names())
def test_every_estimator_gives_gradient_in_eval_mode(snn: SpikingNetwork, name: str) -> None:
    """The SpikingJelly trap: eval mode must not swap the surrogate for a zero-gradient step."""
    snn.eval()
    estimator = parse_estimator(name)
    model = snn.with_estimator(estimator)
    assert isinstance(model, EstimatorView)
    x = _images(4, seed=12).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0])
    loss = nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all(), name
    assert grad.abs().sum() > 0, name
    assert not snn.training and not any(m.training for m in snn.modules()), name
    assert not model.training
    assert snn.estimator != estimator or name == "bptt-pcw-1"


def test_estimators_give_different_gradients(snn: SpikingNetwork) -> None:
    x = _images(4, seed=13)
    grads = {}
    for name in ("bptt-pcw-1", "bptt-rect-0.5", "bptr", "ann-proxy"):
        xg = x.clone().requires_grad_(True)
        snn.with_estimator(parse_estimator(name))(xg).sum().backward()
        grads[name] = xg.grad
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(grads[a], grads[b]), (a, b)


def test_estimator_context_restores_on_error(snn: SpikingNetwork) -> None:
    before = snn.estimator
    with pytest.raises(RuntimeError), snn.use_estimator(BPTR()):
        assert snn.estimator == BPTR()
        raise RuntimeError("boom")
    assert snn.estimator == before


def test_threshold_gradient_flows(snn: SpikingNetwork) -> None:
    x = _images(4, seed=14)
    snn.zero_grad(set_to_none=True)
    try:
        snn(x).sum().backward()
        for n in snn.neurons():
            assert n.threshold.grad is not None and torch.isfinite(n.threshold.grad), n.name
        assert any(float(n.threshold.grad) != 0 for n in snn.neurons())  # type: ignore[arg-type]
    finally:
        snn.zero_grad(set_to_none=True)


def test_network_without_neurons_rejected() -> None:
    with pytest.raises(ValueError, match="no SpikingNeuron"):
        SpikingNetwork(nn.Sequential(nn.Linear(2, 2)))


def test_hand_built_network_matches_manual_simulation() -> None:
    """Linear(1->2) -> IF -> Linear(2->1): readout = mean over T of W2 (theta * spikes) + b."""
    body = nn.Sequential(nn.Linear(1, 2), SpikingNeuron(1.0), nn.Linear(2, 1))
    with torch.no_grad():
        body[0].weight.copy_(torch.tensor([[0.6], [0.25]]))
        body[0].bias.zero_()
        body[2].weight.copy_(torch.tensor([[1.0, 10.0]]))
        body[2].bias.fill_(0.5)
    net = SpikingNetwork(body, T=4).eval()
    with torch.no_grad():
        out = net(torch.ones(1, 1))
    # neuron 0 (0.6/step): spikes at steps 2 and 4 (hard reset); neuron 1 (0.25): step 4 only
    assert out.item() == pytest.approx(0.5 + (2 * 1.0 + 1 * 10.0) / 4)


def test_deepcopy_is_independent(snn: SpikingNetwork) -> None:
    """A copy (e.g. a frozen teacher during finetuning) has its own clock and thresholds."""
    clone = copy.deepcopy(snn)
    clone.T = 2
    assert snn.T == 6
    assert all(n.context is clone.context for n in clone.neurons())
    assert all(n.context is snn.context for n in snn.neurons())
    with torch.no_grad():
        clone.neurons()[0].threshold.fill_(5.0)
    assert float(snn.neurons()[0].threshold.detach()) != 5.0
    x = _images(2, seed=15)
    with torch.no_grad(), clone.recording() as rec:
        clone(x)
    assert rec["features.2"].shape[0] == 2


def test_estimator_view_follows_the_network_mode(snn: SpikingNetwork) -> None:
    view = snn.with_estimator(BPTR())
    assert not view.training
    try:
        snn.train()
        assert view.training
        view.eval()
        assert not snn.training and not any(m.training for m in snn.modules())
    finally:
        snn.eval()
    assert list(view.state_dict()) == [f"network.{k}" for k in snn.state_dict()]


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("estimator", [BPTT(Surrogate("pcw", 1.0)), BPTR()])
def test_neuron_on_channels_last_input_equals_contiguous(static: bool, estimator) -> None:
    """The neuron runs channels-last input on its NHWC memory: same values, same gradients, and
    the output keeps the layout (so the next convolution stays in oneDNN's fast path)."""
    from robustsnn.snn.neuron import TimeContext

    steps, batch = 4, 3
    rows = batch if static else steps * batch
    x = torch.randn(rows, 5, 6, 7, generator=torch.Generator().manual_seed(3))
    outs, grads = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        neuron = SpikingNeuron(0.4)
        neuron.context = TimeContext(steps=steps, batch=batch, estimator=estimator)
        xi = x.clone().contiguous(memory_format=layout).requires_grad_(True)
        neuron.context.record = {}
        out = neuron(xi)
        assert out.shape == (steps * batch, 5, 6, 7)
        if layout is torch.channels_last:
            assert not out.is_contiguous() and out.is_contiguous(memory_format=layout)
        spikes = neuron.context.record[""]
        assert spikes.shape == (steps, batch, 5, 6, 7)
        assert torch.equal(spikes, out.detach().view(steps, batch, 5, 6, 7).ne(0))
        weight = torch.linspace(-1, 1, out.numel()).view(out.shape)
        (out * weight).sum().backward()
        outs.append(out.detach())
        grads.append((xi.grad.clone(), neuron.threshold.grad.clone()))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_network_channels_last_on_cpu_only_changes_rounding(monkeypatch) -> None:
    from robustsnn.snn import network

    torch.manual_seed(4)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=3, image_size=8, mean=[0.5] * 3, std=[0.25] * 3,
        width=4, fc=16,
    ).eval()  # fmt: skip
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    snn = convert(ann, images, T=6, calib_T=8, calib_batches=1, calib_batch_size=16, bn="keep")
    layouts: list[bool] = []
    snn.neurons()[0].register_forward_pre_hook(
        lambda m, i: layouts.append(i[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = images[:4]
    results = []
    for flag in (False, True):
        monkeypatch.setattr(network, "CHANNELS_LAST_ON_CPU", flag)
        xi = x.clone().requires_grad_(True)
        logits = snn(xi)
        logits.sum().backward()
        results.append((logits.detach(), xi.grad.clone()))
    assert layouts == [False, True]  # the flag really switched the layout the neurons see
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=1e-4)
    # the ANN proxy is not affected: it stays the source ANN bit for bit
    with torch.no_grad(), snn.use_estimator(ANNProxy()):
        monkeypatch.setattr(network, "CHANNELS_LAST_ON_CPU", True)
        proxy = snn(x)
        monkeypatch.setattr(network, "CHANNELS_LAST_ON_CPU", False)
        assert torch.equal(proxy, ann(x))
        assert torch.equal(proxy, snn(x))
