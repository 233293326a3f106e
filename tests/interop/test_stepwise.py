"""Class-style SpikingJelly and snnTorch models run through their own forward (issue 24).

Skipped only when spikingjelly / snntorch are not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.interop.adapters import from_snntorch, from_spikingjelly
from robustsnn.interop.stepwise import SourceSurrogate, wrap
from robustsnn.snn.estimators import parse_estimator

HAVE_SJ = importlib.util.find_spec("spikingjelly") is not None
HAVE_SNNTORCH = importlib.util.find_spec("snntorch") is not None
needs_sj = pytest.mark.skipif(not HAVE_SJ, reason="spikingjelly not installed")
needs_snntorch = pytest.mark.skipif(not HAVE_SNNTORCH, reason="snntorch not installed")
T = 4
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6  # float32 rounding of two orders of the same sums


def batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- model styles


def sj_kwargs(kind: str) -> dict:
    from spikingjelly.activation_based import surrogate

    return {"surrogate_function": surrogate.ATan(), "v_reset": None if "soft" in kind else 0.0,
            "detach_reset": "detach" in kind}  # fmt: skip


def sj_node(kind: str, step_mode: str = "s") -> nn.Module:
    from spikingjelly.activation_based import neuron as sjn

    if kind.startswith("lif"):
        return sjn.LIFNode(tau=2.0, decay_input="nodecay" not in kind, step_mode=step_mode,
                           **sj_kwargs(kind))  # fmt: skip
    return sjn.IFNode(step_mode=step_mode, **sj_kwargs(kind))


class SJSingleStep(nn.Module):
    """SpikingJelly tutorial style: the forward loops over T and resets the net."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.sn1 = sj_node(kind)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.sn2 = sj_node(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        out = 0.0
        for _ in range(T):
            out = out + self.sn2(self.fc(self.sn1(self.conv(x) * 3).flatten(1)) * 4)
        functional.reset_net(self)
        return out / T


class SJMultiStep(nn.Module):
    """SpikingJelly multi-step style: repeat the image to [T, B, ...], mean firing rate."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer

        self.conv = layer.SeqToANNContainer(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten())
        self.sn1 = sj_node(kind, "m")
        self.fc = layer.SeqToANNContainer(nn.Linear(4 * 8 * 8, 10))
        self.sn2 = sj_node(kind, "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1) * 3
        return self.sn2(self.fc(self.sn1(self.conv(x_seq))) * 4).mean(0)


class SnnTorchHidden(nn.Module):
    """snnTorch init_hidden style: the last neuron output=True returns (spk, mem)."""

    def __init__(self, mechanism: str, beta: float) -> None:
        super().__init__()
        import snntorch as snn

        self.fc1 = nn.Linear(64, 20)
        self.lif1 = snn.Leaky(beta=beta, reset_mechanism=mechanism, init_hidden=True)
        self.fc2 = nn.Linear(20, 10)
        self.lif2 = snn.Leaky(beta=beta, reset_mechanism=mechanism, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from snntorch import utils

        utils.reset(self)
        spk_rec = []
        for _ in range(T):
            spk, _mem = self.lif2(self.fc2(self.lif1(self.fc1(x.flatten(1) * 3))) * 3)
            spk_rec.append(spk)
        return torch.stack(spk_rec)


class SnnTorchExplicit(nn.Module):
    """snnTorch tutorial style: explicit membranes, (spk_rec, mem_rec) returned."""

    def __init__(self, mechanism: str, beta: float) -> None:
        super().__init__()
        import snntorch as snn

        self.fc1 = nn.Linear(64, 20)
        self.lif1 = snn.Leaky(beta=beta, reset_mechanism=mechanism)
        self.fc2 = nn.Linear(20, 10)
        self.lif2 = snn.Leaky(beta=beta, reset_mechanism=mechanism)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(T):
            spk1, mem1 = self.lif1(self.fc1(x.flatten(1) * 3), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1) * 3, mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


SJ_KINDS = ["if-hard", "if-soft", "lif-hard", "lif-soft-detach", "lif-hard-nodecay"]
SNNTORCH_KINDS = [("zero", 0.9), ("subtract", 1.0), ("subtract", 0.8), ("none", 0.7)]


def original_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The untouched model's logits as its user computes them (spike counts for snnTorch)."""
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    return out.sum(0) if out.dim() == 3 else out


def fresh(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "reset_mem"):
            m.reset_mem()
    return model


def models() -> list:
    out = []
    if HAVE_SJ:
        out += [pytest.param(lambda k=k: SJSingleStep(k), id=f"sj-single-{k}") for k in SJ_KINDS]
        out += [pytest.param(lambda k=k: SJMultiStep(k), id=f"sj-multi-{k}") for k in SJ_KINDS]
    if HAVE_SNNTORCH:
        out += [pytest.param(lambda m=m, b=b: SnnTorchHidden(m, b), id=f"snntorch-hidden-{m}-{b}")
                for m, b in SNNTORCH_KINDS]  # fmt: skip
        out += [pytest.param(lambda m=m, b=b: SnnTorchExplicit(m, b), id=f"snntorch-explicit-{m}-{b}")
                for m, b in SNNTORCH_KINDS]  # fmt: skip
    return out or [pytest.param(None, marks=pytest.mark.skip(reason="no framework installed"))]


@pytest.mark.parametrize("make", models())
def test_wrapped_logits_equal_the_original_bit_for_bit(make) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = make().eval()
    x = batch()
    net = wrap(model, T, example=x, readout="sum")
    assert net.adapter.verification.passed
    assert net.adapter.verification.spike_count_rel_diff == 0.0
    with torch.no_grad():
        ours = net(x)
        theirs = original_logits(fresh(model), x)
    assert torch.equal(ours, theirs)
    assert ours.abs().sum() > 0  # spikes reached the readout
    with torch.no_grad():  # no state leaks from one call to the next
        assert torch.equal(net(x), ours)


@pytest.mark.parametrize("make", models())
def test_source_surrogate_gradient_equals_the_frameworks_autograd(make) -> None:  # type: ignore[no-untyped-def]
    """With the framework's own surrogate and reset detaching, the wrapped model's input
    gradient is the framework's autograd gradient (rtol 1e-4, atol 1e-6; exact in practice)."""
    torch.manual_seed(1)
    model = make().eval()
    x = batch(seed=2)
    net = wrap(model, T, example=x, readout="sum")
    weights = torch.randn(10, generator=torch.Generator().manual_seed(3))
    xa = x.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad((original_logits(fresh(model), xa) * weights).sum(), xa)
    xb = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad((net.with_estimator(SourceSurrogate())(xb) * weights).sum(), xb)
    assert theirs.abs().sum() > 0
    torch.testing.assert_close(ours, theirs, rtol=GRAD_RTOL, atol=GRAD_ATOL)


# --------------------------------------------------------------------------- estimators


class Looped(nn.Module):
    """A class model whose forward calls a one-step Sequential T times (the equivalent
    robustsnn network is the Sequential adapter's GraphNet)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([self.body(x) for _ in range(T)]).mean(0)
        for m in self.modules():  # both frameworks' reset calls
            if hasattr(m, "reset_mem"):
                m.reset_mem()
            elif hasattr(m, "reset") and m is not self:
                m.reset()
        return out


def sj_body() -> nn.Module:
    from spikingjelly.activation_based import neuron as sjn

    torch.manual_seed(4)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), sjn.IFNode(), nn.Linear(32, 10),
                         sjn.IFNode())  # fmt: skip


def snntorch_body() -> nn.Module:
    import snntorch as snn

    torch.manual_seed(5)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32),
                         snn.Leaky(beta=0.9, reset_mechanism="zero", init_hidden=True),
                         nn.Linear(32, 10),
                         snn.Leaky(beta=0.9, reset_mechanism="zero", init_hidden=True))  # fmt: skip


ESTIMATORS = ["bptr", "ann-proxy", "assg-atan-0.425-dr", "assg-pcw-0.85", "bptt-pcw-1",
              "bptt-exp-1-dr", "bptt-rel-pcw-0.5", "rga", "pdsg", "bptt-mix-0.5-0.5-0"]  # fmt: skip


def pairs() -> list:
    out = []
    if HAVE_SJ:
        out.append(pytest.param(sj_body, from_spikingjelly, id="spikingjelly"))
    if HAVE_SNNTORCH:
        out.append(pytest.param(snntorch_body, from_snntorch, id="snntorch"))
    return out or [pytest.param(None, None, marks=pytest.mark.skip(reason="no framework"))]


@pytest.mark.parametrize("make_body,adapter", pairs())
@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimators_equal_those_of_the_equivalent_robustsnn_network(
    make_body, adapter, name
) -> None:  # type: ignore[no-untyped-def]
    """BPTR, ANN proxy, ASSG (two passes of one attack run: the moments carry over) and the
    other estimators give the same input gradient on the wrapped class model as on the
    robustsnn GraphNet the Sequential adapter builds from the same layers."""
    body = make_body().eval()
    x = batch(24, seed=6) * 2
    graph = adapter(body, T, example=x)
    wrapped = wrap(Looped(body), T, example=x)
    weights = torch.randn(10, generator=torch.Generator().manual_seed(7))
    estimator = parse_estimator(name)
    views = [graph.with_estimator(estimator), wrapped.with_estimator(estimator)]
    for view in views:
        view.begin_attack_run(x.shape[0])  # type: ignore[operator]
    grads: list[list[torch.Tensor]] = [[], []]
    for step in range(2):
        for i, view in enumerate(views):
            xi = (x + 0.01 * step).clone().requires_grad_(True)
            (g,) = torch.autograd.grad((view(xi) * weights).sum(), xi)
            grads[i].append(g)
    for ours, theirs in zip(grads[1], grads[0], strict=True):
        assert theirs.abs().sum() > 0 or name == "bptr"
        torch.testing.assert_close(ours, theirs, rtol=GRAD_RTOL, atol=GRAD_ATOL)


@needs_sj
def test_hart_is_left_out_with_its_reason() -> None:
    body = sj_body().eval()
    x = batch(8, seed=8)
    net = wrap(Looped(body), T, example=x)
    with torch.no_grad():
        y = net(x).argmax(1)
    members = [{"attack": "pgd", "estimator": "bptt-pcw-1", "params": {"steps": 2}},
               {"attack": "pgd", "estimator": "hart-1", "params": {"steps": 2}}]  # fmt: skip
    config = EvaluationConfig(eps=0.03, attacks=members, diagnostics="none")
    result = evaluate(net, x, y, config, EvaluationContext(quiet=True))
    assert len(result["left_out"]) == 1 and "hart-1" in next(iter(result["left_out"]))
    assert all("per-step form" in why for why in result["left_out"].values())
    assert not any("hart" in str(m) for m in result["members"])


# --------------------------------------------------------------------------- refusals


@needs_sj
def test_refused_neuron_names_the_module() -> None:
    from spikingjelly.activation_based import neuron as sjn

    model = SJSingleStep("if-hard")
    model.sn2 = sjn.ParametricLIFNode()
    with pytest.raises(UserError, match=r"'sn2' \(ParametricLIFNode\)"):
        wrap(model, T, example=batch())


@needs_snntorch
def test_refused_snntorch_neuron_names_the_module() -> None:
    import snntorch as snn

    model = SnnTorchExplicit("zero", 0.9)
    model.lif1 = snn.Synaptic(alpha=0.9, beta=0.9)
    with pytest.raises(UserError, match=r"'lif1' \(Synaptic\)"):
        wrap(model, T, example=batch())


@needs_sj
def test_wrong_T_is_refused() -> None:
    with pytest.raises(UserError, match=r"'sn1' ran 4 steps in one forward, not T=6"):
        wrap(SJSingleStep("if-hard"), 6, example=batch())


@needs_sj
def test_model_that_does_not_take_the_input_is_refused() -> None:
    with pytest.raises(UserError, match=r"SJSingleStep failed on inputs of shape \[16, 3, 8, 8\]"):
        wrap(SJSingleStep("if-hard"), T, example=torch.rand(16, 3, 8, 8))


def test_model_without_neurons_is_refused() -> None:
    with pytest.raises(UserError, match="Sequential holds no SpikingJelly"):
        wrap(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), T, example=batch())


@needs_sj
def test_from_spikingjelly_accepts_a_class_model() -> None:
    net = from_spikingjelly(SJSingleStep("lif-hard"), T, example=batch())
    assert net.adapter.verification.passed and "own forward" in net.adapter.time_convention


@needs_snntorch
def test_a_forward_that_edits_the_membrane_is_refused_with_the_mismatch() -> None:
    """The step neuron keeps its own membrane; a loop that changes the one it passes back
    computes something else, and the check refuses it with the numbers."""

    class Leaking(SnnTorchExplicit):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            spk_rec = []
            for _ in range(T):
                spk1, mem1 = self.lif1(self.fc1(x.flatten(1) * 3), mem1 * 0.5)
                spk2, mem2 = self.lif2(self.fc2(spk1) * 3, mem2)
                spk_rec.append(spk2)
            return torch.stack(spk_rec), mem2

    torch.manual_seed(0)
    with pytest.raises(UserError, match=r"does not reproduce its source \(max \|logit diff\|"):
        wrap(Leaking("zero", 0.9), T, example=batch(), readout="sum")


@needs_sj
def test_a_forward_reading_neuron_internals_is_refused() -> None:
    class ReadsV(SJSingleStep):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            return out + 0 * torch.as_tensor(self.sn1.v).sum()

    with pytest.raises(UserError, match="does not run .*AttributeError"):
        wrap(ReadsV("if-hard"), T, example=batch())
