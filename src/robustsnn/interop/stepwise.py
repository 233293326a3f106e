"""Class-style SpikingJelly and snnTorch models, run through their own ``forward()`` (issue 24).

Most users write ``class Net(nn.Module)`` whose ``forward`` loops over time itself
(SpikingJelly: ``for t in range(T): ...`` then ``functional.reset_net``; snnTorch:
``mem = lif.init_leaky()`` and ``spk, mem = lif(cur, mem)`` per step). Such a model cannot be
rebuilt as a robustsnn graph, but it need not be: :func:`wrap` deep-copies it and swaps each
framework neuron module, in place in the copy, for a :class:`StepNeuron`. A step neuron

* keeps its membrane across the calls of one forward and starts at rest before each (the
  wrapper resets every neuron before calling the user's forward; snnTorch's ``init_leaky()`` /
  ``reset_mem()`` reset it too. SpikingJelly's ``functional.reset_net`` leaves it alone: the
  name ``reset`` is robustsnn's reset mode on a spiking neuron, and the wrapper's own reset
  before every forward already does what ``reset_net`` after one is for);
* computes the framework's own arithmetic (SpikingJelly ``IFNode`` / ``LIFNode``:
  ``h = v + x``, ``h = v + (x - (v - v_r)) / tau`` with ``decay_input``, else
  ``h = v - (v - v_r) / tau + x``; fire on ``h - theta >= 0``; ``v_reset=None`` subtracts theta,
  otherwise ``v = s v_r + (1 - s) h``. snnTorch ``Leaky``: the reset of step t comes from the
  previous step's membrane, ``reset = H(mem - theta)``; ``subtract``:
  ``mem = beta mem + x - reset theta``, ``zero``: ``mem = beta (1 - reset) mem + x``, ``none``:
  ``mem = beta mem + x``; fire on ``mem - theta > 0``, times ``graded_spikes_factor``), so the
  wrapped model's logits equal the original's bit for bit;
* answers the calling style of the module it replaces: SpikingJelly single-step ``[B, ...]`` or
  multi-step ``[T, B, ...]``; snnTorch ``init_hidden=True`` (``spk``, or ``(spk, mem)`` with
  ``output=True``) and the explicit ``lif(input, mem) -> (spk, mem)`` (the ``mem`` passed in is
  the one this neuron returned; it keeps its own copy, so the user's loop stays unchanged);
* differentiates with the gradient estimator of the :class:`~robustsnn.snn.SpikingNetwork`
  context it runs in, on the framework's own graph: BPTT surrogates fixed and
  threshold-relative, ASSG (moments per layer, step and element over one attack run), PDSG,
  a detached reset (``-dr``), BPTR and RGA (whose backward reads the spike record and mean
  current of the whole forward, known by the time autograd reaches any step), and the ANN proxy
  (each neuron a threshold-scaled ReLU of its input current, ``relu(g x) / theta`` with ``g``
  the input gain ``1/tau`` of a ``decay_input`` LIF). :class:`SourceSurrogate` is the
  framework's own surrogate with its own reset detaching: the gradient the user trained with.

HART cannot be expressed: its input gradient at step t is the mean over all steps of
``dL/ds_tau sg_tau``, and in a forward that loops over time itself autograd needs the gradient
of step t's input before it has those of the later steps. A HART member is left out of an
ensemble with that reason (recorded in ``evaluation.json`` under ``left_out``).

Time conventions of :func:`wrap` (``time=``): ``"loop"`` (default): the user's forward runs all
T steps itself, called once on ``x [B, ...]``; ``"repeat"``: called once on ``x`` repeated to
``[T, B, ...]`` (SpikingJelly multi-step models that expect a sequence); ``"calls"``: called T
times on ``x`` (a forward that runs one step). The readout is whatever the forward returns (the
first element of a tuple unless ``output_index`` says otherwise): a ``[B, classes]`` tensor is
taken as the logits; a ``[T, B, classes]`` tensor (or the T outputs of ``"calls"``) is reduced
over time by ``readout`` (``"mean"`` or ``"sum"``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.interop.frameworks import SJ_WHY, SNNTORCH_WHY, AdapterInfo, SpikeCounter, scalar
from robustsnn.interop.verify import Verification, require, same_draws, verify
from robustsnn.snn.estimator_backward import (
    assg_spread,
    assg_surrogate,
    pdsg_sigma,
    pdsg_surrogate,
    rga_factor,
)
from robustsnn.snn.estimators import (
    ASSG,
    BPTR,
    BPTT,
    HART,
    PDSG,
    RGA,
    ANNProxy,
    Estimator,
    MixedWidthBPTT,
    RelativeBPTT,
)
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import RUN_STATE_KEY, THRESHOLD_MIN, SpikingNeuron
from robustsnn.snn.run_state import RunState

TIME_MODES = ("loop", "repeat", "calls")
READOUTS = ("mean", "sum")
VERIFY_BATCH = 32
HART_REASON = (
    "HART's input gradient at step t averages dL/ds over all T steps; in a forward that loops "
    "over time itself autograd needs step t's input gradient before it has the later steps', "
    "so it has no per-step form"
)


@dataclass(frozen=True)
class SourceSurrogate(Estimator):
    """The framework's own surrogate and reset detaching: the gradient the user trained with."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "source-surrogate"


# --------------------------------------------------------------------------- neuron rules


@dataclass(frozen=True)
class Rule:
    """One framework neuron's dynamics, read from the module it replaces."""

    framework: str  # "spikingjelly" | "snntorch"
    kind: str  # "if" | "lif" | "leaky"
    theta: float
    tau: float = 1.0  # SpikingJelly LIF
    decay_input: bool = True
    v_reset: float | None = 0.0  # SpikingJelly: None = subtract theta
    beta: float = 1.0  # snnTorch
    mechanism: str = "zero"  # snnTorch: subtract | zero | none
    graded: float = 1.0
    detach_reset: bool = False  # what the source trains with
    multi_step: bool = False  # SpikingJelly step_mode "m"
    hidden: bool = True  # snnTorch init_hidden
    output: bool = False  # snnTorch output=True

    @property
    def leak(self) -> float:
        if self.framework == "snntorch":
            return self.beta
        return 1.0 - 1.0 / self.tau if self.kind == "lif" else 1.0

    @property
    def gain(self) -> float:
        """Input gain: the factor between the module's input and the membrane's increment."""
        return 1.0 / self.tau if self.kind == "lif" and self.decay_input else 1.0

    @property
    def soft(self) -> bool:
        return (
            self.v_reset is None
            if self.framework == "spikingjelly"
            else self.mechanism == "subtract"
        )

    @property
    def fire_at_equal(self) -> bool:
        return self.framework == "spikingjelly"


def _sj_rule(name: str, m: nn.Module) -> Rule:
    from spikingjelly.activation_based import neuron as sjn

    kind = type(m).__name__
    if type(m) not in (sjn.IFNode, sjn.LIFNode):
        why = SJ_WHY.get(kind, "robustsnn's step neurons run IFNode and LIFNode")
        raise UserError(f"SpikingJelly module {name!r} ({kind}) cannot be wrapped: {why}")
    if getattr(m, "_neuron_precision", None) is not None:
        raise UserError(f"neuron {name!r} runs at a reduced precision; robustsnn runs float32")
    theta = scalar(name, "v_threshold", m.v_threshold)
    if not theta > 0:
        raise UserError(f"neuron {name!r}: v_threshold = {theta:g}; it must be > 0")
    v_reset = None if m.v_reset is None else scalar(name, "v_reset", m.v_reset)
    tau, decay = 1.0, True
    if type(m) is sjn.LIFNode:
        tau, decay = scalar(name, "tau", m.tau), bool(m.decay_input)
        if not tau >= 1.0:
            raise UserError(f"neuron {name!r}: tau = {tau:g}; the leak 1 - 1/tau must be >= 0")
    return Rule("spikingjelly", "lif" if type(m) is sjn.LIFNode else "if", theta, tau=tau,
                decay_input=decay, v_reset=v_reset, detach_reset=bool(m.detach_reset),
                multi_step=getattr(m, "step_mode", "s") == "m")  # fmt: skip


def _snntorch_rule(name: str, m: nn.Module) -> Rule:
    import snntorch

    kind = type(m).__name__
    if type(m) is not snntorch.Leaky:
        why = SNNTORCH_WHY.get(kind, "robustsnn's step neurons run Leaky only")
        raise UserError(f"snnTorch module {name!r} ({kind}) cannot be wrapped: {why}")
    if m.inhibition or m.state_quant:
        raise UserError(
            f"neuron {name!r}: inhibition / state_quant change the dynamics; robustsnn's step "
            "neuron runs the plain Leaky"
        )
    if not m.reset_delay:
        raise UserError(
            f"neuron {name!r}: reset_delay=False resets within the step with a double-reset "
            "correction; robustsnn's step neuron runs snnTorch's default reset_delay=True"
        )
    theta = scalar(name, "threshold", m.threshold)
    if not theta > 0:
        raise UserError(f"neuron {name!r}: threshold = {theta:g}; it must be > 0")
    beta = min(max(scalar(name, "beta", m.beta), 0.0), 1.0)
    return Rule("snntorch", "leaky", theta, beta=beta, mechanism=str(m.reset_mechanism),
                graded=scalar(name, "graded_spikes_factor", m.graded_spikes_factor),
                detach_reset=True, hidden=bool(m.init_hidden),
                output=bool(getattr(m, "output", False)))  # fmt: skip


def read_rule(name: str, m: nn.Module) -> Rule | None:
    """The rule of a framework neuron module, None for any other module; refuses neurons
    (and other stateful framework modules) that have no step-neuron form, naming them."""
    where = type(m).__module__
    if where.startswith("spikingjelly."):
        from spikingjelly.activation_based import base

        if isinstance(m, base.MemoryModule) and not isinstance(m, nn.Sequential):
            if "Dropout" in type(m).__name__ or "Container" in type(m).__name__:
                return None
            return _sj_rule(name, m)
        return None
    if where.startswith("snntorch"):
        import snntorch

        if isinstance(m, snntorch.SpikingNeuron):
            return _snntorch_rule(name, m)
    return None


# --------------------------------------------------------------------------- per-step autograd


class _Spike(torch.autograd.Function):
    """The framework's spike ``s`` (value given) with ``ds/dh = sg`` (precomputed multiplier)."""

    @staticmethod
    def forward(ctx, h: Tensor, spike: Tensor, sg: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(sg)
        return spike.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (sg,) = ctx.saved_tensors
        return grad * sg, None, None


class _RateStep(torch.autograd.Function):
    """BPTR / RGA: output value given; ``dL/dx = dL/dy * factor()`` with the factor read at
    backward time from the whole forward's record (no temporal recursion)."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, factor: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        ctx.factor = factor
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * ctx.factor(), None, None


@dataclass
class _Run:
    """What one forward of the wrapped model recorded in one neuron (read by BPTR/RGA/PDSG)."""

    steps: int = 0
    spikes: list[Tensor] = field(default_factory=list)
    fired: Tensor | None = None
    current_sum: Tensor | None = None
    membranes: list[Tensor] = field(default_factory=list)


def _source_multiplier(function: Any, x: Tensor) -> Tensor:
    """The derivative of a framework's spike function at ``x = h - theta`` (its own autograd)."""
    with torch.enable_grad():
        probe = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(function(probe).sum(), probe)
    return grad.detach()


class StepNeuron(SpikingNeuron):
    """A framework neuron module replaced for one call per step (see the module docstring)."""

    def __init__(self, rule: Rule, source: nn.Module) -> None:
        super().__init__(rule.theta, leak=max(rule.leak, 1e-12), reset="soft" if rule.soft else "hard",
                         threshold_min=min(THRESHOLD_MIN, rule.theta), emit="binary",
                         fire_at_equal=rule.fire_at_equal)  # fmt: skip
        self.rule = rule
        surrogate = getattr(source, "surrogate_function", None) or getattr(
            source, "spike_grad", None
        )
        self.__dict__["_surrogate"] = surrogate  # the source's spike function (not a submodule)
        self.step_mode = "m" if rule.multi_step else "s"
        self._run = _Run()
        self._state: tuple[Tensor, Tensor | None] | None = None

    # ---- state
    def begin_forward(self) -> None:
        """A new forward of the wrapped model: membrane at rest, a fresh record."""
        self._run = _Run()
        self._state = None

    def reset_mem(self) -> Tensor:
        """snnTorch's ``reset_mem()`` / ``init_leaky()``: membrane at rest; returns an empty
        placeholder (the neuron keeps its own membrane; what the loop passes back is ignored)."""
        self._state = None
        return torch.zeros(0)

    init_leaky = reset_mem

    @property
    def steps_run(self) -> int:
        return self._run.steps

    # ---- forward
    def forward(self, x: Tensor, mem: Tensor | None = None) -> Any:  # type: ignore[override]
        del mem  # explicit snnTorch style: the membrane it passes back is the one we returned
        rule = self.rule
        if rule.multi_step:
            outs = [self._step(xt) for xt in x.unbind(0)]
            return torch.stack([o[0] for o in outs])
        spike, membrane = self._step(x)
        if rule.framework == "snntorch" and (rule.output or not rule.hidden):
            return spike, membrane
        return spike

    def _multiplier(self, h: Tensor, theta: float, estimator: Estimator, t: int) -> Tensor:
        x = h.detach() - theta
        if isinstance(estimator, SourceSurrogate):
            function = self.__dict__["_surrogate"]
            if function is None:
                raise UserError(f"neuron {self.name!r} has no surrogate function of its own")
            return _source_multiplier(function, x)
        th = torch.tensor(theta, dtype=h.dtype, device=h.device)
        if not self.rule.fire_at_equal:  # as robustsnn's strict rule: the next float above theta
            th = torch.nextafter(th, torch.full_like(th, math.inf))
            x = h.detach() - th
        if isinstance(estimator, RelativeBPTT):
            return estimator.surrogate.grad(x / th) / th
        if isinstance(estimator, MixedWidthBPTT):
            return estimator.surrogate(self.name).grad(x / th) / th
        if isinstance(estimator, BPTT):
            return estimator.surrogate.grad(x.clone())
        if isinstance(estimator, ASSG):
            state = self.context.extra.get(RUN_STATE_KEY)
            run = state if state is not None else RunState()
            hd = h.detach().unsqueeze(0)
            spread = assg_spread(hd, th, estimator, run, f"{self.name}@{t}")
            return assg_surrogate(hd - th, spread, estimator.family, estimator.a)[0]
        if isinstance(estimator, PDSG):
            history = torch.stack(self._run.membranes)
            channel = 0 if h.dim() >= 3 else None
            sigma = pdsg_sigma(history, channel, estimator.pooled)[-1]
            return pdsg_surrogate(x, sigma)
        raise UserError(f"estimator {estimator.name} cannot run on a wrapped model: {HART_REASON}")

    def _detach(self, estimator: Estimator) -> bool:
        if isinstance(estimator, SourceSurrogate):
            return self.rule.detach_reset
        return bool(getattr(estimator, "detach_reset", False))

    def _step(self, x: Tensor) -> tuple[Tensor, Tensor]:
        rule, ctx = self.rule, self.context
        estimator = ctx.estimator
        run = self._run
        t = run.steps
        run.steps += 1
        if isinstance(estimator, ANNProxy):
            current = x * rule.gain if rule.gain != 1.0 else x
            out = torch.relu(current) / rule.theta
            return (out * rule.graded if rule.graded != 1.0 else out), current
        if isinstance(estimator, HART):
            raise UserError(f"{estimator.name} cannot run on a wrapped model: {HART_REASON}")
        grad = torch.is_grad_enabled() and (x.requires_grad or self.threshold.requires_grad)
        rate = isinstance(estimator, (BPTR, RGA))
        detach = self._detach(estimator) or rate or not grad
        theta = rule.theta
        # ---- charge, in the framework's own arithmetic
        state = self._state
        if rule.framework == "spikingjelly":
            r = 0.0 if rule.v_reset is None else rule.v_reset
            v = torch.full_like(x, r) if state is None else state[0]
            if rule.kind == "if":
                h = v + x
            elif rule.decay_input:
                h = v + (x - (v - r)) / rule.tau
            else:
                h = v - (v - r) / rule.tau + x
            fired = (h - theta >= 0).to(x.dtype)
        else:
            mem, previous = (torch.zeros_like(x), None) if state is None else state
            beta = torch.tensor(rule.beta, dtype=x.dtype, device=x.device)
            if previous is None:
                previous = (mem - theta > 0).to(x.dtype)
            reset = previous.detach()  # snnTorch's mem_reset always detaches
            if not self._detach(estimator) and not rate and grad:
                reset = previous  # the estimator differentiates through the reset
            if rule.mechanism == "subtract":
                h = beta * mem + x - reset * theta
            elif rule.mechanism == "zero":
                h = beta * ((1 - reset) * mem) + x
            else:
                h = beta * mem + x
            fired = (h - theta > 0).to(x.dtype)
        # ---- the spike and its gradient
        if rate or not grad:
            spike = fired if rate else fired.detach()
        else:
            run.membranes.append(h.detach())
            spike = _Spike.apply(h, fired, self._multiplier(h, theta, estimator, t))
        if rate:
            run.current_sum = (x.detach() * rule.gain) + (
                0 if run.current_sum is None else run.current_sum
            )
        run.fired = fired if run.fired is None else torch.maximum(run.fired, fired)
        run.spikes.append(fired.detach().ne(0))
        if ctx.record is not None:
            ctx.record[self.name] = torch.stack(run.spikes)
        # ---- reset, in the framework's own arithmetic
        s_reset = spike.detach() if detach else spike
        if rule.framework == "spikingjelly":
            if rule.v_reset is None:
                v_next = h - s_reset * theta
            else:
                v_next = s_reset * rule.v_reset + (1.0 - s_reset) * h
            self._state = (v_next, None)
        else:
            self._state = (h, spike)
        out = spike * rule.graded if rule.graded != 1.0 else spike
        if rate and grad and x.requires_grad:
            out = _RateStep.apply(x, out.detach(), self._rate_factor(estimator, run))
        return out, h

    def _rate_factor(self, estimator: Estimator, run: _Run) -> Callable[[], Tensor]:
        rule = self.rule
        scale = rule.gain * rule.graded / rule.theta  # dL/dx = dL/dy * g * graded / theta * f

        def factor() -> Tensor:
            assert run.fired is not None and run.current_sum is not None
            if isinstance(estimator, BPTR):
                return run.fired * scale
            assert isinstance(estimator, RGA)
            mean = run.current_sum / run.steps
            theta = torch.tensor(rule.theta, dtype=mean.dtype, device=mean.device)
            return rga_factor(mean, theta, rule.leak, estimator) * scale

        return factor


# --------------------------------------------------------------------------- the wrapped model


class WrappedNetwork(SpikingNetwork):
    """A user's SpikingJelly/snnTorch model (a copy, neurons swapped) as a SpikingNetwork:
    ``forward(x [B, ...]) -> logits [B, classes]`` through the user's own forward."""

    def __init__(
        self, model: nn.Module, T: int, time: str, readout: str, output_index: int
    ) -> None:
        super().__init__(model, T=T)
        self.time = time
        self.readout = readout
        self.output_index = int(output_index)

    def step_neurons(self) -> list[StepNeuron]:
        return [m for m in self.body.modules() if isinstance(m, StepNeuron)]

    def unsupported_estimator(self, estimator: Estimator) -> str | None:
        """Why ``estimator`` cannot run on this model, or None when it can."""
        return HART_REASON if isinstance(estimator, HART) else None

    def forward(self, x: Tensor) -> Tensor:
        self.context.batch = x.shape[0]
        for neuron in self.step_neurons():
            neuron.begin_forward()
        out = run_time(self.body, x, self.T, self.time, self.output_index)
        return reduce_time(out, x.shape[0], self.T, self.time, self.readout)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "time": self.time, "readout": self.readout}


def _first(out: Any, index: int) -> Tensor:
    if isinstance(out, (tuple, list)):
        if not -len(out) <= index < len(out):
            raise UserError(
                f"the model returned {len(out)} outputs; output_index {index} is out of range"
            )
        out = out[index]
    if not isinstance(out, Tensor):
        raise UserError(f"the model returned {type(out).__name__}, not a tensor of logits")
    return out


def run_time(model: nn.Module, x: Tensor, T: int, time: str, output_index: int = 0) -> Tensor:
    """Call ``model`` on ``x`` by the time convention (see the module docstring)."""
    if time == "loop":
        return _first(model(x), output_index)
    if time == "repeat":
        return _first(model(x.unsqueeze(0).repeat(T, *([1] * x.dim()))), output_index)
    return torch.stack([_first(model(x), output_index) for _ in range(T)])


def reduce_time(out: Tensor, batch: int, T: int, time: str, readout: str) -> Tensor:
    """Logits ``[B, classes]`` from the model's output: taken as is, or reduced over T."""
    if out.dim() == 2 and out.shape[0] == batch and time == "loop":
        return out
    if out.dim() >= 3 and out.shape[0] == T and out.shape[1] == batch:
        flat = out.reshape(T, batch, -1)
        return flat.mean(0) if readout == "mean" else flat.sum(0)
    if out.dim() == 2 and out.shape[0] == batch:
        return out
    raise UserError(
        f"the model returned shape {tuple(out.shape)}; expected logits [B={batch}, classes] or "
        f"a time series [T={T}, B={batch}, classes]"
    )


# --------------------------------------------------------------------------- wrap + verify


def _reset_source(model: nn.Module) -> None:
    for m in model.modules():
        if type(m).__module__.startswith("spikingjelly.") and hasattr(m, "reset"):
            getattr(m, "reset")()  # noqa: B009  (nn.Module's __getattr__ types it as a Tensor)
        elif type(m).__module__.startswith("snntorch") and hasattr(m, "reset_mem"):
            getattr(m, "reset_mem")()  # noqa: B009


def _framework_version(rules: Sequence[Rule]) -> tuple[str, str]:
    frameworks = sorted({r.framework for r in rules})
    versions = []
    for name in frameworks:
        module = __import__(name)
        versions.append(f"{name} {getattr(module, '__version__', '?')}")
    return " + ".join(frameworks), ", ".join(versions)


def wrap(
    model: nn.Module,
    T: int,
    *,
    example: Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    time: str = "loop",
    readout: str = "mean",
    output_index: int = 0,
) -> WrappedNetwork:
    """A class-style SpikingJelly/snnTorch model as a robustsnn SpikingNetwork, verified.

    Args:
        model: any ``nn.Module`` holding SpikingJelly ``IFNode``/``LIFNode`` or snnTorch
            ``Leaky`` neurons; it is deep-copied (the original is left as it was, its neurons
            reset after the check).
        T: the number of time steps the model runs (its own loop's, for ``time="loop"``); each
            neuron must be called T times per forward, which the check confirms.
        example: a batch of inputs in the model's input layout (the evaluation feeds the same
            layout: images ``[B, C, H, W]`` with pixels in [0, 1]); or
        input_shape: one input's shape, checked on 32 uniform random inputs.
        time, readout, output_index: the time convention and readout (module docstring).

    The wrapped model is checked against the original on the batch: logits (float32 rounding
    allowed, bit-identical in practice), predictions and spike counts; a mismatch is refused
    with the numbers. ``net.adapter`` holds what was read and the verification.
    """
    if time not in TIME_MODES:
        raise UserError(f"time {time!r} is not one of {TIME_MODES}")
    if readout not in READOUTS:
        raise UserError(f"readout {readout!r} is not one of {READOUTS}")
    if int(T) < 1:
        raise UserError(f"T must be >= 1, not {T}")
    T = int(T)
    if example is not None:
        x = torch.as_tensor(example).detach().to("cpu", torch.float32)
    elif input_shape is not None:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((VERIFY_BATCH, *(int(s) for s in input_shape)), generator=gen)
    else:
        raise UserError(
            "pass example= (a batch of inputs) or input_shape= to check the wrapped model on"
        )
    copied = copy.deepcopy(model).cpu().float()
    rules: list[Rule] = []
    sources: list[nn.Module] = []
    for name, module in list(copied.named_modules()):
        if not name:
            if read_rule(type(model).__name__, module) is not None:
                raise UserError("the model is a single neuron; wrap the network that holds it")
            continue
        rule = read_rule(name, module)
        if rule is None:
            continue
        copied.set_submodule(name, StepNeuron(rule, module))
        rules.append(rule)
        sources.append(model.get_submodule(name))
    if not rules:
        raise UserError(
            f"{type(model).__name__} holds no SpikingJelly IFNode/LIFNode or snnTorch Leaky "
            "neuron; it is not a model these adapters can wrap"
        )
    net = WrappedNetwork(copied, T, time, readout, output_index)
    net.eval()
    result = _check(model, net, x, T, time, readout, output_index, sources)
    framework, version = _framework_version(rules)
    detached = {r.detach_reset for r in rules}
    gradient = (
        "the source trains with its surrogate and the reset detached (robustsnn: -dr estimators)"
        if detached == {True}
        else "the source trains with its surrogate through the reset"
        if detached == {False}
        else "detach_reset differs between layers"
    )
    notes = [f"{n.name}: {n.rule.kind} theta={n.rule.theta:g} leak={n.rule.leak:g} "
             f"{'soft' if n.rule.soft else 'hard'} reset" for n in net.step_neurons()]  # fmt: skip
    notes.append(f"left out: hart-* ({HART_REASON})")
    net.adapter = AdapterInfo(framework, version, T, readout,  # type: ignore[assignment]
                              f"{time}: the model's own forward, neurons swapped", gradient,
                              notes, result)  # fmt: skip
    return net


def _check(
    model: nn.Module,
    net: WrappedNetwork,
    x: Tensor,
    T: int,
    time: str,
    readout: str,
    output_index: int,
    sources: Sequence[nn.Module],
) -> Verification:
    """Compare the wrapped model with the original on ``x``; refuse a mismatch."""
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = SpikeCounter(sources, x.shape[0])
    model.eval()
    _reset_source(model)
    try:
        with torch.no_grad(), same_draws():  # a random forward draws what the check will
            out = run_time(model, x.to(device), T, time, output_index)
            reference = reduce_time(out.detach().float().cpu(), x.shape[0], T, time, readout)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of foreign code is the user's model
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"{type(model).__name__} failed on inputs of shape {list(x.shape)} "
            f"({type(exc).__name__}: {detail}); pass an example batch it accepts"
        ) from None
    finally:
        counter.close()
        _reset_source(model)
        model.train(was_training)
    try:
        result = verify(net, x, reference, counter.total)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's forward on swapped neurons
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"the wrapped {type(model).__name__} does not run ({type(exc).__name__}: {detail}); "
            "its forward may read a neuron's internals (e.g. .v), which the step neuron lacks"
        ) from None
    for neuron in net.step_neurons():
        expected = T
        if neuron.steps_run != expected:
            raise UserError(
                f"module {neuron.name!r} ran {neuron.steps_run} steps in one forward, not T={T}: "
                f"give the T the model's forward runs (time={time!r})"
            )
    require(result, f"the wrapped {type(model).__name__}")
    if not math.isfinite(result.max_abs_logit_diff):
        raise UserError(f"the wrapped {type(model).__name__} gives non-finite logits")
    return result
