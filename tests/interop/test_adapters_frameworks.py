"""Optional group: SNNs built and trained in SpikingJelly and snnTorch, adapted and attacked.

Skipped when a package is absent (install without dependencies so no other torch is pulled:
``pip install --no-deps spikingjelly snntorch``).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.interop.adapters import from_snntorch, from_spikingjelly
from robustsnn.snn.estimators import parse_estimator


def synthetic(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes of 8x8 images: a fixed prototype per class plus noise, pixels in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    protos = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(123)) > 0.5).float()
    y = torch.randint(0, 4, (n,), generator=gen)
    x = (protos[y] * 0.8 + 0.2 * torch.rand(n, 1, 8, 8, generator=gen)).clamp(0, 1)
    return x, y


def train(net: nn.Module, logits_of, steps: int = 40) -> None:
    x, y = synthetic(seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits_of(net, x), y)
        loss.backward()
        opt.step()
    net.eval()


class TriangleSurrogate(torch.autograd.Function):
    """Heaviside forward (``x >= 0``), robustsnn's pcw-1 triangle ``max(0, 1 - |x|)`` backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        return grad * (1 - x.abs()).clamp(min=0)


def input_gradient(model_logits, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    (model_logits(xg) * weights).sum().backward()
    assert xg.grad is not None
    return xg.grad


# --------------------------------------------------------------------------- SpikingJelly


def _missing(package: str) -> bool:
    return importlib.util.find_spec(package) is None


@pytest.mark.skipif(_missing("spikingjelly"), reason="spikingjelly is not installed")
class TestSpikingJelly:
    def net(self, step_mode: str = "m", **neuron) -> nn.Sequential:
        from spikingjelly.activation_based import functional, layer
        from spikingjelly.activation_based import neuron as sjn

        torch.manual_seed(0)
        net = nn.Sequential(
            layer.Conv2d(1, 8, 3, padding=1), layer.BatchNorm2d(8), sjn.LIFNode(**neuron),
            layer.AvgPool2d(2), layer.Flatten(), layer.Linear(128, 32), sjn.LIFNode(**neuron),
            layer.Linear(32, 4),
        )  # fmt: skip
        functional.set_step_mode(net, step_mode)
        return net

    @staticmethod
    def logits(net: nn.Module, x: torch.Tensor, T: int = 4) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(net)
        out = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)  # out_fr readout
        functional.reset_net(net)
        return out

    def test_trained_model_adapted_and_attacked(self) -> None:
        net = self.net()
        train(net, self.logits, steps=25)
        x, y = synthetic(n=32, seed=2)
        snn = from_spikingjelly(net, T=4, example=x)
        with torch.no_grad():
            theirs = self.logits(net, x)
            ours = snn(x)
        assert torch.equal(ours.argmax(1), theirs.argmax(1))
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-5)
        assert (theirs.argmax(1) == y).float().mean() > 0.5  # it learnt something
        assert "bptt-<surrogate>" in snn.adapter.reset_gradient  # detach_reset=False
        result = evaluate(
            snn, x[:4], y[:4],
            EvaluationConfig(eps=0.03, ensemble="pgd-ensemble", diagnostics="none"),
            EvaluationContext(quiet=True),
        )  # fmt: skip
        assert result["n"] == 4 and 0 <= result["robust_accuracy"] <= result["clean_accuracy"]

    @pytest.mark.parametrize("step_mode", ["s", "m"])
    @pytest.mark.parametrize("kind", ["if-soft", "if-hard", "lif-soft-nodecay"])
    def test_neurons_and_step_modes(self, step_mode: str, kind: str) -> None:
        from spikingjelly.activation_based import functional, layer
        from spikingjelly.activation_based import neuron as sjn

        torch.manual_seed(3)
        make = {
            "if-soft": lambda: sjn.IFNode(v_reset=None, v_threshold=0.5),
            "if-hard": lambda: sjn.IFNode(),
            "lif-soft-nodecay": lambda: sjn.LIFNode(tau=4.0, decay_input=False, v_reset=None),
        }[kind]
        net = nn.Sequential(layer.Flatten(), layer.Linear(64, 32), make(), layer.Linear(32, 4),
                            make())  # fmt: skip
        functional.set_step_mode(net, step_mode)
        with torch.no_grad():
            net[1].weight.mul_(4)
        x, _ = synthetic(n=16)
        snn = from_spikingjelly(net, T=6, example=x)
        outs = []
        functional.reset_net(net)
        with torch.no_grad():
            if step_mode == "m":
                outs = net(x.unsqueeze(0).repeat(6, 1, 1, 1, 1))
            else:
                outs = torch.stack([net(x) for _ in range(6)])
            functional.reset_net(net)
            assert outs.sum() > 0
            assert torch.equal(snn(x), outs.mean(0))  # spike rates, bit for bit

    def test_reset_gradient_matches_bptt(self) -> None:
        """SpikingJelly's BPTT (detach_reset False / True) with the pcw-1 triangle is robustsnn's
        bptt-pcw-1 / bptt-pcw-1-dr."""
        x, _ = synthetic(n=8)
        weights = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
        for detach, name, other in ((False, "bptt-pcw-1", "bptt-pcw-1-dr"),
                                    (True, "bptt-pcw-1-dr", "bptt-pcw-1")):  # fmt: skip
            net = self.net(surrogate_function=TriangleSurrogate.apply, detach_reset=detach,
                           tau=2.0, v_threshold=0.5)  # fmt: skip
            with torch.no_grad():
                net[0].weight.mul_(3)
                net[5].weight.mul_(3)
            net.eval()
            snn = from_spikingjelly(net, T=4, example=x)
            theirs = input_gradient(lambda v, n=net: self.logits(n, v), x, weights)
            ours = input_gradient(snn.with_estimator(parse_estimator(name)), x, weights)
            wrong = input_gradient(snn.with_estimator(parse_estimator(other)), x, weights)
            assert theirs.abs().sum() > 0
            assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-5)
            assert not torch.allclose(wrong, theirs, rtol=1e-3, atol=1e-5)

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            ("sjn.ParametricLIFNode()", "ParametricLIFNode.*learnt"),
            ("sjn.LIFNode(v_reset=0.5)", "v_reset = 0.5"),
            ("sjn.IFNode(v_threshold=-1.0)", "v_threshold"),
            ("sjn.IzhikevichNode()", "Izhikevich"),
        ],
    )
    def test_refusals(self, make: str, message: str) -> None:
        from spikingjelly.activation_based import layer, neuron

        neuron_module = eval(make, {"sjn": neuron})  # the parameter names the constructor
        net = nn.Sequential(layer.Flatten(), layer.Linear(64, 4), neuron_module)
        with pytest.raises(UserError, match=message):
            from_spikingjelly(net, T=2, example=torch.rand(2, 1, 8, 8))


# --------------------------------------------------------------------------- snnTorch


@pytest.mark.skipif(_missing("snntorch"), reason="snntorch is not installed")
class TestSnnTorch:
    def net(self, beta: float = 0.9, reset: str = "zero", spike_grad=None) -> nn.Sequential:
        import snntorch as snn

        torch.manual_seed(0)
        kw = {"beta": beta, "init_hidden": True, "reset_mechanism": reset, "threshold": 0.5}
        if spike_grad is not None:
            kw["spike_grad"] = spike_grad
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.MaxPool2d(2), snn.Leaky(**kw),
            nn.Flatten(), nn.Linear(128, 4), snn.Leaky(**kw, output=True),
        )  # fmt: skip

    @staticmethod
    def counts(net: nn.Module, x: torch.Tensor, T: int = 6) -> torch.Tensor:
        import snntorch as snn

        for m in net.modules():
            if isinstance(m, snn.SpikingNeuron):
                m.reset_mem()
        spk_rec = torch.stack([net(x)[0] for _ in range(T)])
        return spk_rec.sum(0)  # snnTorch's spike-count readout

    def test_trained_model_adapted_and_attacked(self) -> None:
        net = self.net()
        train(net, lambda n, v: self.counts(n, v) * 0.5)
        x, y = synthetic(n=32, seed=2)
        snn = from_snntorch(net, T=6, example=x, readout="sum")
        with torch.no_grad():
            theirs = self.counts(net, x)
            ours = snn(x)
        assert theirs.sum() > 0
        assert torch.equal(ours, theirs)  # spike counts, bit for bit
        assert (theirs.argmax(1) == y).float().mean() > 0.5
        assert "bptt-<surrogate>-dr" in snn.adapter.reset_gradient
        result = evaluate(
            snn, x[:4], y[:4],
            EvaluationConfig(eps=0.03, ensemble="pgd-ensemble", diagnostics="none"),
            EvaluationContext(quiet=True),
        )  # fmt: skip
        assert result["n"] == 4 and 0 <= result["robust_accuracy"] <= result["clean_accuracy"]

    @pytest.mark.parametrize("reset", ["zero", "subtract"])
    def test_strict_firing_and_reset(self, reset: str) -> None:
        """Inputs that land exactly on the threshold: snnTorch does not fire at mem == theta."""
        import snntorch as snn

        net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False),
                            snn.Leaky(beta=1.0, threshold=1.0, init_hidden=True,
                                      reset_mechanism=reset, output=True))  # fmt: skip
        with torch.no_grad():
            net[1].weight.copy_(torch.tensor([[0.25, 0.25, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]))
        x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.5, 0.5], [1.0, 0.75]]]])
        adapted = from_snntorch(net, T=7, example=x, readout="sum")
        theirs = self.counts(net, x, T=7)
        assert torch.equal(adapted(x), theirs)
        # currents 0.5 and 1.0 per step: no spike when the membrane equals the threshold (at
        # >= the counts would be [3, 7] for both resets)
        assert theirs[0].tolist() == {"zero": [2.0, 3.0], "subtract": [3.0, 6.0]}[reset]

    def test_detached_reset_is_bptt_dr(self) -> None:
        """snnTorch's training gradient (reset detached) is robustsnn's bptt-pcw-1-dr."""
        from snntorch import surrogate

        def triangle(input_, grad_input, spikes):  # type: ignore[no-untyped-def]
            del spikes
            return grad_input * (1 - input_.abs()).clamp(min=0)

        net = self.net(beta=1.0, reset="zero", spike_grad=surrogate.custom_surrogate(triangle))
        with torch.no_grad():
            net[0].weight.mul_(3)
        x, _ = synthetic(n=8)
        weights = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
        snn = from_snntorch(net, T=6, example=x, readout="sum")
        theirs = input_gradient(lambda v: self.counts(net, v), x, weights)
        dr = input_gradient(snn.with_estimator(parse_estimator("bptt-pcw-1-dr")), x, weights)
        full = input_gradient(snn.with_estimator(parse_estimator("bptt-pcw-1")), x, weights)
        assert theirs.abs().sum() > 0
        assert torch.allclose(dr, theirs, rtol=1e-3, atol=1e-5)
        assert not torch.allclose(full, theirs, rtol=1e-3, atol=1e-5)

    @pytest.mark.parametrize(
        ("layers", "message"),
        [
            ("snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True)", "Synaptic.*synaptic current"),
            ("snn.RLeaky(beta=0.9, linear_features=4, init_hidden=True)", "recurrent"),
            ("snn.Leaky(beta=0.8, init_hidden=True)", "subtract.*after the leak"),
            ("snn.Leaky(beta=1.0, init_hidden=True, reset_delay=False)", "double reset"),
            ("snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism='none')", "no reset"),
            ("snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism='zero', "
             "threshold=torch.tensor([0.5, 1.0, 1.0, 1.0]))", "per-neuron"),
            ("snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism='zero', inhibition=True)",
             "inhibition"),
        ],
    )  # fmt: skip
    def test_refusals(self, layers: str, message: str) -> None:
        import snntorch

        neuron_module = eval(layers, {"snn": snntorch, "torch": torch})
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), neuron_module)
        with pytest.raises(UserError, match=message):
            from_snntorch(net, T=2, example=torch.rand(2, 1, 8, 8))

    def test_own_time_loop_runs_through_its_forward(self) -> None:
        import snntorch as snn

        class Net(nn.Module):  # snnTorch tutorial style: the time loop inside forward()
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(64, 4)
                self.lif = snn.Leaky(beta=0.9)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                mem = self.lif.reset_mem()
                spk_rec = []
                for _ in range(4):
                    spk, mem = self.lif(self.fc(x.flatten(1)), mem)
                    spk_rec.append(spk)
                return torch.stack(spk_rec)

        # issue 24: no longer refused; run through its own forward with the neurons swapped
        net, x = Net().eval(), torch.rand(2, 1, 8, 8)
        snn_net = from_snntorch(net, T=4, example=x, readout="sum")
        with torch.no_grad():
            assert torch.equal(snn_net(x), net(x).sum(0))

    def test_init_hidden_false_inside_is_refused(self) -> None:
        import snntorch as snn

        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), snn.Leaky(beta=0.9,
                            reset_mechanism="zero"), nn.Linear(4, 2))  # fmt: skip
        with pytest.raises(UserError, match="init_hidden=False"):
            from_snntorch(net, T=2, example=torch.rand(2, 1, 8, 8))
