"""SpikingJelly and snnTorch models as robustsnn SpikingNetworks (issue 13, item 3).

``from_spikingjelly(module, T=...)`` and ``from_snntorch(module, T=...)`` read an
``nn.Sequential`` of the source library, replace each plain IF/LIF neuron by robustsnn's
:class:`~robustsnn.snn.neuron.SpikingNeuron` with the same dynamics, copy every other layer
(Conv2d, Linear, AvgPool2d, MaxPool2d, Flatten, BatchNorm in eval mode, Dropout as identity)
into a :class:`~robustsnn.interop.graph.GraphNet` (the body of NIR imports too), and run the
result against the source on a batch (:func:`robustsnn.interop.verify.verify`): a model that does
not reproduce its source's logits, predictions and spike counts is refused. Every gradient
estimator of robustsnn (``bptt-*``, ``bptt-*-dr``, ``assg-*``, ``rga``, ``pdsg``, ``hart-*``,
BPTR, the ANN proxy) then applies to the adapted model. Anything without an exact equivalent
is refused with one line naming the module and the reason.

Time and state conventions
--------------------------
* Direct input coding: the image is the input of the first layer at every one of ``T`` steps.
  SpikingJelly in multi-step mode (any module with ``step_mode == "m"``) is run on
  ``x.repeat(T, 1, ...)`` of shape ``[T, B, ...]``; in single-step mode it is called ``T`` times,
  then ``functional.reset_net``. snnTorch is called ``T`` times (the ``init_hidden=True`` style,
  a last ``Leaky(output=True)`` returning ``(spk, mem)`` is read as ``spk``).
* Reset of state: the source keeps membranes in the modules between calls (SpikingJelly until
  ``reset_net``, snnTorch until ``reset_mem``). The adapter resets the source before and after
  each reference run (so the source's neurons are left at rest), and the adapted network keeps
  no state at all: every call starts from ``v = 0``; two identical calls give identical logits.
* Readout: ``"mean"`` (default) is robustsnn's, the mean over T of the last module's output:
  SpikingJelly's ``out_fr = net(x_seq).mean(0)``, or a last Linear layer's mean current;
  ``"sum"`` is snnTorch's usual ``spk_rec.sum(0)`` (spike counts), made exact by a scale of T
  before robustsnn's mean. A membrane readout (snnTorch ``mem_rec``) is refused: robustsnn has
  no non-spiking integrator layer.

Neurons
-------
* SpikingJelly ``IFNode`` / ``SimpleIFNode`` / ``LIFNode``: charge ``h = v + x`` (IF) or
  ``h = v + (x - v) / tau`` (``decay_input``) / ``h = v - v / tau + x``, fire on ``h >= theta``
  (``surrogate(h - theta)``'s Heaviside, ``fire_at_equal=True``), ``v_reset=0`` -> hard reset,
  ``v_reset=None`` -> soft reset (subtract ``theta``). LIF: leak ``1 - 1/tau``, input gain
  ``1/tau`` folded into the layer before. ``detach_reset=False`` (the default) trains with
  robustsnn's ``bptt-<surrogate>``, ``detach_reset=True`` with ``bptt-<surrogate>-dr``.
* snnTorch 1.0.0 ``Leaky`` (read from its source, ``_neurons/leaky.py`` and ``neurons.py``):
  ``mem = beta.clamp(0, 1) * mem + x``, spike on strict ``mem > threshold``
  (``fire_at_equal=False``). With the default ``reset_delay=True`` the reset of step t is computed
  at the start of step t+1 from the previous membrane (``mem_reset(mem)``, the same Heaviside as
  that step's spike), i.e. it equals robustsnn's reset after the spike; ``reset_mechanism="zero"``
  is robustsnn's hard reset (bit for bit), ``"subtract"`` with ``beta = 1`` its soft reset;
  ``"subtract"`` with ``beta < 1`` is refused (snnTorch subtracts theta after the leak,
  ``mem = beta mem + x - theta s``, robustsnn before it), and so is ``reset_delay=False`` with
  ``"subtract"`` (its "avoid double reset" correction has no equivalent). ``reset_delay=False``
  with ``"zero"`` gives the same spikes and is accepted. snnTorch **always detaches the reset**
  (``mem_reset`` returns ``spike_grad(...).clone().detach()``): the gradient snnTorch trains with
  is robustsnn's ``bptt-<surrogate>-dr`` estimator. ``graded_spikes_factor`` g != 1 becomes a
  scale by g after the neuron.

Rounding: SpikingJelly IF and snnTorch ``reset_mechanism="zero"`` run the same float32
operations as robustsnn (bit-identical logits); LIF charge formulas and the subtractive reset
sum in another order, equal in real arithmetic and to float32 rounding - a spike can flip only
when a membrane lies within rounding of its threshold, and the verification then refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.interop.frameworks import SJ_WHY, SNNTORCH_WHY, AdapterInfo, SpikeCounter, scalar
from robustsnn.interop.graph import safe_key
from robustsnn.interop.nir_import import ImportedGraph, _fold_gains, build_network
from robustsnn.interop.stepwise import wrap
from robustsnn.interop.verify import require, verify
from robustsnn.models.layers import Normalize
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import THRESHOLD_MIN

READOUTS = ("mean", "sum")
VERIFY_BATCH = 32
INPUT_NAME = "input"
_READOUT_REFUSALS = {
    "membrane": "robustsnn has no non-spiking (leaky) integrator layer to read a membrane from; "
    "end the model with a Linear layer (readout 'mean') or read spike counts ('sum')",
    "mem": "robustsnn has no non-spiking (leaky) integrator layer to read a membrane from; "
    "end the model with a Linear layer (readout 'mean') or read spike counts ('sum')",
    "last": "robustsnn's logits average over all T steps; a last-step readout has no equivalent",
    "max": "robustsnn's logits average over all T steps; a max-over-time readout has no equivalent",
}


@dataclass
class _Neuron:
    """One source neuron translated: the GraphNet spec fields and what else it needs."""

    spec: dict[str, Any]
    theta: float
    gain: float = 1.0
    graded: float = 1.0
    detach_reset: bool = False
    surrogate: str = ""


# --------------------------------------------------------------------------- stateless layers


def _pair(value: Any) -> list[int]:
    if isinstance(value, int):
        return [int(value), int(value)]
    return [int(v) for v in value]


def _trusted(module: nn.Module) -> bool:
    """A torch or SpikingJelly layer class (a user subclass may change ``forward``)."""
    where = type(module).__module__
    return where.startswith("torch.nn.") or where.startswith("spikingjelly.activation_based.layer")


def _copy(tensor: torch.Tensor | None) -> torch.Tensor:
    assert tensor is not None
    return tensor.detach().to("cpu", torch.float32).clone()


def _stateless(name: str, m: nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The GraphNet spec and tensors of a stateless layer, or None when ``m`` is not one."""
    known = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Identity,
             nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)  # fmt: skip
    sj_dropout = type(m).__name__ == "Dropout" and _trusted(m)
    if not isinstance(m, known) and not sj_dropout:
        return None
    if not _trusted(m):
        raise UserError(
            f"layer {name!r} ({type(m).__name__}) subclasses a torch layer in "
            f"{type(m).__module__}; its forward may differ, so robustsnn cannot copy it exactly"
        )
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise UserError(
                f"layer {name!r}: Conv2d padding_mode {m.padding_mode!r}; robustsnn copies "
                "zero padding only"
            )
        padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
        spec = {"op": "conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride),
                "padding": padding, "dilation": _pair(m.dilation), "groups": m.groups,
                "bias": m.bias is not None}  # fmt: skip
        tensors = {"weight": _copy(m.weight)}
        if m.bias is not None:
            tensors["bias"] = _copy(m.bias)
        return spec, tensors
    if isinstance(m, nn.Linear):
        spec = {"op": "linear", "in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None}  # fmt: skip
        tensors = {"weight": _copy(m.weight)}
        if m.bias is not None:
            tensors["bias"] = _copy(m.bias)
        return spec, tensors
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
            raise UserError(
                f"layer {name!r}: AvgPool2d with ceil_mode, count_include_pad=False or a "
                "divisor_override; robustsnn copies the default average pooling only"
            )
        stride = m.stride if m.stride is not None else m.kernel_size
        return {"op": "avgpool2d", "kernel_size": _pair(m.kernel_size), "stride": _pair(stride),
                "padding": _pair(m.padding)}, {}  # fmt: skip
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or m.return_indices:
            raise UserError(
                f"layer {name!r}: MaxPool2d with ceil_mode or return_indices; robustsnn copies "
                "the default max pooling only"
            )
        stride = m.stride if m.stride is not None else m.kernel_size
        return {"op": "maxpool2d", "kernel_size": _pair(m.kernel_size), "stride": _pair(stride),
                "padding": _pair(m.padding), "dilation": _pair(m.dilation)}, {}  # fmt: skip
    if isinstance(m, nn.Flatten):
        return {"op": "flatten", "start_dim": m.start_dim, "end_dim": m.end_dim}, {}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_mean is None or m.running_var is None:
            raise UserError(
                f"layer {name!r}: BatchNorm without running statistics normalises with each "
                "batch's own statistics; robustsnn evaluates one sample independently of others"
            )
        op = "batchnorm1d" if isinstance(m, nn.BatchNorm1d) else "batchnorm2d"
        spec = {"op": op, "num_features": m.num_features, "eps": float(m.eps), "affine": m.affine}
        tensors = {"running_mean": _copy(m.running_mean), "running_var": _copy(m.running_var)}
        if m.affine:
            tensors.update(weight=_copy(m.weight), bias=_copy(m.bias))
        return spec, tensors
    return {"op": "identity"}, {}  # Identity; Dropout is the identity in eval mode


# --------------------------------------------------------------------------- neurons


def _neuron_spec(leak: float, reset: str, fire_at_equal: bool, theta: float) -> dict[str, Any]:
    return {"op": "neuron", "leak": float(leak), "reset": reset, "emit": "binary",
            "fire_at_equal": fire_at_equal,
            "threshold_min": min(THRESHOLD_MIN, theta)}  # fmt: skip


def _sj_neuron(name: str, m: nn.Module) -> _Neuron | None:
    if not type(m).__module__.startswith("spikingjelly."):
        return None
    from spikingjelly.activation_based import base
    from spikingjelly.activation_based import neuron as sjn

    if not isinstance(m, base.MemoryModule):
        return None
    kind = type(m).__name__
    is_if = type(m) in (sjn.IFNode, getattr(sjn, "SimpleIFNode", sjn.IFNode))
    if not is_if and type(m) is not sjn.LIFNode:
        if "Dropout" in kind:
            return None
        why = SJ_WHY.get(kind, "robustsnn runs IF and LIF neurons with one threshold per "
                         "layer, reset to 0 or by subtraction")  # fmt: skip
        raise UserError(
            f"SpikingJelly module {name!r} ({kind}) has no exact robustsnn equivalent: {why}"
        )
    theta = scalar(name, "v_threshold", m.v_threshold)
    if not theta > 0:
        raise UserError(f"neuron {name!r}: v_threshold = {theta:g}; robustsnn needs it > 0")
    v_reset = m.v_reset
    if v_reset is None:
        reset = "soft"
    elif scalar(name, "v_reset", v_reset) == 0.0:
        reset = "hard"
    else:
        raise UserError(
            f"neuron {name!r}: v_reset = {float(v_reset):g}; robustsnn resets to 0 (hard) or "
            "subtracts the threshold (v_reset=None)"
        )
    if getattr(m, "_neuron_precision", None) is not None:
        raise UserError(
            f"neuron {name!r} runs at a reduced neuron precision; robustsnn runs float32 only"
        )
    leak, gain = 1.0, 1.0
    if type(m) is sjn.LIFNode:
        tau = scalar(name, "tau", m.tau)
        if not tau > 1.0:
            raise UserError(
                f"neuron {name!r}: tau = {tau:g}; robustsnn's leak 1 - 1/tau must be in (0, 1]"
            )
        leak = 1.0 - 1.0 / tau
        gain = 1.0 / tau if bool(m.decay_input) else 1.0
    surrogate = type(m.surrogate_function).__name__
    alpha = getattr(m.surrogate_function, "alpha", None)
    if alpha is not None:
        surrogate += f"(alpha={float(alpha):g})"
    return _Neuron(_neuron_spec(leak, reset, True, theta), theta, gain=gain,
                   detach_reset=bool(m.detach_reset), surrogate=surrogate)  # fmt: skip


def _snntorch_neuron(name: str, m: nn.Module, last: bool) -> _Neuron | None:
    if not type(m).__module__.startswith("snntorch"):
        return None
    import snntorch as snn

    if not isinstance(m, snn.SpikingNeuron):
        return None
    kind = type(m).__name__
    if type(m) is not snn.Leaky:
        why = SNNTORCH_WHY.get(kind, "robustsnn runs Leaky (LIF) neurons only")
        raise UserError(
            f"snnTorch module {name!r} ({kind}) has no exact robustsnn equivalent: {why}"
        )
    if m.inhibition:
        raise UserError(
            f"neuron {name!r}: inhibition (one spike per sample and step) has no robustsnn equivalent"
        )
    if m.state_quant:
        raise UserError(f"neuron {name!r}: state_quant quantises the membrane; robustsnn does not")
    if not m.init_hidden and not last:
        raise UserError(
            f"neuron {name!r}: init_hidden=False returns (spk, mem), which the next layer of an "
            "nn.Sequential cannot read; build the neurons with init_hidden=True"
        )
    theta = scalar(name, "threshold", m.threshold)
    if not theta > 0:
        raise UserError(f"neuron {name!r}: threshold = {theta:g}; robustsnn needs it > 0")
    beta = min(max(scalar(name, "beta", m.beta), 0.0), 1.0)  # snnTorch uses beta.clamp(0, 1)
    if not beta > 0:
        raise UserError(
            f"neuron {name!r}: beta = 0 keeps no membrane; robustsnn's leak is in (0, 1]"
        )
    mechanism = m.reset_mechanism
    if mechanism == "zero":
        reset = "hard"
    elif mechanism == "subtract":
        if beta != 1.0:
            raise UserError(
                f"neuron {name!r}: reset_mechanism='subtract' with beta = {beta:g} subtracts the "
                "threshold after the leak (mem = beta*mem + x - theta*s), robustsnn's soft reset "
                "before it; use reset_mechanism='zero' or beta=1"
            )
        if not m.reset_delay:
            raise UserError(
                f"neuron {name!r}: reset_delay=False with reset_mechanism='subtract' corrects "
                "for a double reset above 2*threshold; robustsnn has no equivalent"
            )
        reset = "soft"
    else:
        raise UserError(
            f"neuron {name!r}: reset_mechanism={mechanism!r} (no reset) has no robustsnn "
            "equivalent; robustsnn neurons reset to 0 or subtract the threshold"
        )
    graded = scalar(name, "graded_spikes_factor", m.graded_spikes_factor)
    surrogate = getattr(m.spike_grad, "__name__", type(m.spike_grad).__name__)
    return _Neuron(_neuron_spec(beta, reset, False, theta), theta, graded=graded,
                   detach_reset=True, surrogate=surrogate)  # fmt: skip


# --------------------------------------------------------------------------- translation


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules an ``nn.Sequential`` (nested ones and SpikingJelly containers flattened)
    runs, in order, with their dotted names."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out += _leaves(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix or type(module).__name__, module)]


NeuronReader = Callable[[str, nn.Module, bool], "_Neuron | None"]


def _translate(
    framework: str, module: nn.Module, T: int, readout: str, read_neuron: NeuronReader
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]], list[str], list[nn.Module],
           list[_Neuron]]:  # fmt: skip
    """GraphNet spec, tensors, notes, the source's neuron modules and their translations."""
    if not isinstance(module, nn.Sequential):  # from_* route class models to stepwise.wrap
        raise UserError(
            f"the {framework} adapter reads an nn.Sequential that runs one time step; "
            f"{type(module).__name__} has its own forward() (and possibly its own time loop), "
            "which robustsnn cannot read: rebuild its layers as nn.Sequential(...)"
        )
    leaves = _leaves(module)
    if not leaves:
        raise UserError(f"the {framework} model is an empty nn.Sequential")
    nodes: list[dict[str, Any]] = []
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    gains: dict[str, float] = {}
    taken: set[str] = set()
    keys: dict[str, str] = {}
    succs: dict[str, list[str]] = {}
    sources: list[nn.Module] = []
    neurons: list[_Neuron] = []
    notes: list[str] = []
    previous = INPUT_NAME

    def add(name: str, spec: dict[str, Any], named: dict[str, torch.Tensor]) -> None:
        nonlocal previous
        key = safe_key(name, taken)
        keys[name] = key
        nodes.append({"name": name, "key": key, "inputs": [previous], **spec})
        succs.setdefault(previous, []).append(name)
        succs[name] = []
        if named:
            tensors[key] = named
        previous = name

    for index, (name, m) in enumerate(leaves):
        last = index == len(leaves) - 1
        neuron = read_neuron(name, m, last)
        if neuron is not None:
            add(name, neuron.spec, {"threshold": torch.tensor(neuron.theta)})
            gains[name] = neuron.gain
            sources.append(m)
            neurons.append(neuron)
            if neuron.graded != 1.0:
                add(f"{name}__graded", {"op": "scale", "shape": []},
                    {"scale": torch.tensor(neuron.graded)})  # fmt: skip
                notes.append(f"{name}: graded spikes x{neuron.graded:g} kept as a scale")
            continue
        layer = _stateless(name, m)
        if layer is None:
            raise UserError(
                f"{framework} model: module {name!r} ({type(m).__name__}) cannot be adapted; "
                "robustsnn copies Conv2d, Linear, AvgPool2d, MaxPool2d, Flatten, BatchNorm, "
                "Dropout, Identity and plain IF/LIF neurons"
            )
        add(name, *layer)
    if not neurons:
        raise UserError(f"the {framework} model has no spiking neurons; it is not an SNN")
    if readout == "sum":
        add("readout__sum", {"op": "scale", "shape": []}, {"scale": torch.tensor(float(T))})
    _fold_gains(nodes, tensors, gains, keys, succs, notes)
    spec = {"input": {"name": INPUT_NAME, "shape": []}, "nodes": nodes, "output": previous}
    return spec, tensors, notes, sources, neurons


# --------------------------------------------------------------------------- reference runs


def _device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _reference(
    framework: str,
    module: nn.Module,
    x: torch.Tensor,
    T: int,
    readout: str,
    neurons: Sequence[nn.Module],
    reset: Callable[[], None],
    multi_step: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's logits (its readout over T steps) and spike counts per sample, in eval mode,
    its neurons reset before and after."""
    was_training = module.training
    counter = SpikeCounter(neurons, x.shape[0])
    x = x.to(_device(module))
    module.eval()
    reset()
    try:
        with torch.no_grad():
            if multi_step:
                outs = module(x.unsqueeze(0).repeat(T, *([1] * x.dim())))
                if isinstance(outs, tuple):
                    outs = outs[0]
            else:
                steps = []
                for _ in range(T):
                    out = module(x)
                    steps.append(out[0] if isinstance(out, tuple) else out)
                outs = torch.stack(steps)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of foreign code is the user's model
        detail = " ".join(str(exc).split())[:200]
        shape = f"[{T}, B, ...]" if multi_step else "[B, ...] per step"
        raise UserError(
            f"the {framework} model failed on {shape} inputs ({type(exc).__name__}: {detail})"
        ) from None
    finally:
        counter.close()
        reset()
        module.train(was_training)
    outs = outs.detach().float().cpu()
    if outs.dim() < 2 or outs.shape[0] != T or outs.shape[1] != x.shape[0]:
        raise UserError(
            f"the {framework} model returned shape {tuple(outs.shape)}; expected [T, B, classes]"
        )
    outs = outs.reshape(T, x.shape[0], -1)
    logits = outs.mean(0) if readout == "mean" else outs.sum(0)
    return logits, counter.total


# --------------------------------------------------------------------------- public API


def _inputs(
    example: torch.Tensor | None,
    input_shape: Sequence[int] | None,
    image_shape: Sequence[int] | None,
) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """The verification batch (in the source's input layout), its sample shape and the image
    shape the adapted network reads."""
    if example is not None:
        x = torch.as_tensor(example).detach().to("cpu", torch.float32)
        if x.dim() < 2 or x.shape[0] < 1:
            raise UserError(f"example must be a batch [B, ...], got shape {tuple(x.shape)}")
    elif input_shape is not None:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((VERIFY_BATCH, *(int(s) for s in input_shape)), generator=gen)
    else:
        raise UserError(
            "pass example= (a batch of inputs, pixels in [0, 1]) or input_shape=: the adapter "
            "checks the adapted model against the source on it"
        )
    shape = tuple(int(s) for s in x.shape[1:])
    image: tuple[int, ...]
    if image_shape is None:
        image = shape if len(shape) == 3 else (1, 1, int(x[0].numel()))
    else:
        image = tuple(int(s) for s in image_shape)
        if len(image) != 3 or int(torch.tensor(image).prod()) != x[0].numel():
            raise UserError(
                f"image_shape {list(image)} must be [C, H, W] with as many values as one input "
                f"{list(shape)}"
            )
    return x, shape, image


@dataclass(frozen=True)
class _Source:
    """A framework model to adapt and how to run it: its neuron reader, its reset, whether it
    takes the whole time axis in one call, and the convention in words (for ``snn.adapter``)."""

    framework: str
    version: str
    module: nn.Module
    read_neuron: NeuronReader
    reset: Callable[[], None]
    multi_step: bool
    time_convention: str


@dataclass(frozen=True)
class _Feed:
    """What the adapted network reads: a verification batch (or one input's shape), the
    image shape it feeds, and the per-channel normalisation the source expects."""

    example: torch.Tensor | None
    input_shape: Sequence[int] | None
    image_shape: Sequence[int] | None
    mean: Sequence[float] | None
    std: Sequence[float] | None


def _normalisation(feed: _Feed, channels: int) -> tuple[list[float], list[float]]:
    """``mean`` and ``std`` as one float per image channel (0 and 1 when not given)."""
    mean = [0.0] * channels if feed.mean is None else [float(v) for v in feed.mean]
    std = [1.0] * channels if feed.std is None else [float(v) for v in feed.std]
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"mean and std need one value per image channel ({channels})")
    return mean, std


def _gradient_note(detached: set[bool]) -> str:
    """Which robustsnn estimator family trains like the source (by its neurons' reset)."""
    if detached == {True}:
        return "reset detached: the source trains with robustsnn's bptt-<surrogate>-dr"
    if detached == {False}:
        return "gradient through the reset: the source trains with robustsnn's bptt-<surrogate>"
    return "detach_reset differs between layers (no single robustsnn estimator)"


def _adapt(source: _Source, T: int, readout: str, feed: _Feed) -> SpikingNetwork:
    """Translate ``source`` to a robustsnn SpikingNetwork and verify it spike for spike
    against the source's own forward on the feed's batch."""
    framework = source.framework
    if readout not in READOUTS:
        why = _READOUT_REFUSALS.get(str(readout))
        raise UserError(
            f"readout {readout!r} "
            + (f"cannot be adapted: {why}" if why else f"is not one of {READOUTS}")
        )
    if int(T) < 1:
        raise UserError(f"T must be >= 1, not {T}")
    T = int(T)
    spec, tensors, notes, sources, neurons = _translate(
        framework, source.module, T, readout, source.read_neuron
    )
    x, shape, image = _inputs(feed.example, feed.input_shape, feed.image_shape)
    spec["input"]["shape"] = list(shape)
    mean, std = _normalisation(feed, image[0])
    imported = ImportedGraph(
        spec, tensors, mean, std, T, 1.0, f"{framework} {source.version}", notes
    )
    try:
        snn = build_network(imported, image)
    except UserError:
        raise
    except (RuntimeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"the {framework} model cannot be rebuilt in robustsnn ({detail})"
        ) from None
    images = x.reshape(x.shape[0], *image)
    with torch.no_grad():
        source_input = Normalize(mean, std)(images).reshape(x.shape)
    logits, spikes = _reference(framework, source.module, source_input, T, readout, sources,
                                source.reset, source.multi_step)  # fmt: skip
    try:
        result = verify(snn, images, logits, spikes)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise UserError(f"the adapted {framework} model does not run ({detail})") from None
    require(result, f"the {framework} model adapted by robustsnn")
    gradient = _gradient_note({n.detach_reset for n in neurons})
    surrogates = sorted({n.surrogate for n in neurons if n.surrogate})
    if surrogates:
        notes.append(f"source surrogate(s): {', '.join(surrogates)}")
    snn.imported = imported  # type: ignore[assignment]
    snn.adapter = AdapterInfo(framework, source.version, T, readout, source.time_convention,  # type: ignore[assignment]
                              gradient, notes, result)  # fmt: skip
    return snn


def _wrap_class_model(
    module: nn.Module,
    T: int,
    example: torch.Tensor | None,
    input_shape: Sequence[int] | None,
    readout: str,
    options: dict[str, Any],
) -> SpikingNetwork:
    """A class-style model: its own forward, neurons swapped (see :mod:`.stepwise`)."""
    return wrap(module, T, example=example, input_shape=input_shape, readout=readout, **options)


def from_spikingjelly(
    module: nn.Module,
    T: int,
    *,
    example: torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    image_shape: Sequence[int] | None = None,
    readout: str = "mean",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **wrap_options: Any,
) -> SpikingNetwork:
    """A SpikingJelly ``nn.Sequential`` as a robustsnn SpikingNetwork, verified on a batch.

    Args:
        module: the model (``activation_based`` layers or plain torch layers, IFNode/LIFNode
            neurons), single-step or multi-step; left unchanged except that its neurons are
            reset (``functional.reset_net``) after the check.
        T: time steps; the image is the input at every step (direct coding).
        example: a batch of the source's inputs (pixels in [0, 1]) to verify on; or
        input_shape: one input's shape, verified on 32 uniform random inputs.
        image_shape: ``[C, H, W]`` of the images robustsnn will feed when the source reads flat
            vectors (default ``[1, 1, F]``).
        readout: ``"mean"`` (``out_fr = out.mean(0)``, the default) or ``"sum"`` over T.
        mean, std: per-channel input normalisation the source expects (the adapted network
            reads pixels and normalises them first).

    Any other module (a class with its own ``forward`` and time loop) is run through that
    forward with its neurons swapped: :func:`robustsnn.interop.stepwise.wrap` (``wrap_options``:
    ``time``, ``output_index``; ``mean``/``std``/``image_shape`` do not apply there).

    The adapted network keeps no state between calls (every call starts at ``v = 0``); see the
    module docstring for the neuron, reset and gradient conventions. ``snn.adapter`` holds what
    was read and the verification.
    """
    try:
        import spikingjelly
        from spikingjelly.activation_based import functional
    except ImportError:
        raise UserError("from_spikingjelly needs spikingjelly (pip install spikingjelly)") from None
    if not isinstance(module, nn.Sequential):
        return _wrap_class_model(module, T, example, input_shape, readout, wrap_options)
    multi_step = any(getattr(m, "step_mode", "s") == "m" for m in module.modules())
    convention = (
        f"multi-step: x repeated to [{T}, B, ...], one call" if multi_step
        else f"single-step: {T} calls on x, then functional.reset_net"
    )  # fmt: skip
    source = _Source(
        "SpikingJelly", getattr(spikingjelly, "__version__", "2.x"), module,
        read_neuron=lambda name, m, last: _sj_neuron(name, m),
        reset=lambda: functional.reset_net(module), multi_step=multi_step,
        time_convention=convention,
    )  # fmt: skip
    return _adapt(source, T, readout, _Feed(example, input_shape, image_shape, mean, std))


def from_snntorch(
    module: nn.Module,
    T: int,
    *,
    example: torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    image_shape: Sequence[int] | None = None,
    readout: str = "mean",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **wrap_options: Any,
) -> SpikingNetwork:
    """An snnTorch ``nn.Sequential`` (``Leaky(init_hidden=True)`` neurons, the last one may be
    ``output=True``) as a robustsnn SpikingNetwork, verified on a batch.

    The source is called ``T`` times on the same input (its time loop); the readout is the
    spike output of the last module (``spk_rec``): ``readout="sum"`` for snnTorch's usual
    ``spk_rec.sum(0)`` spike counts, ``"mean"`` for the rate (same predictions). Its neurons are
    reset with ``reset_mem()`` on every ``SpikingNeuron`` found by ``module.modules()`` (not
    ``snntorch.utils.reset``, which misses nested neurons). snnTorch detaches the reset in its
    training gradient: that is robustsnn's ``bptt-<surrogate>-dr``. Other arguments as in
    :func:`from_spikingjelly`.
    """
    try:
        import snntorch
    except ImportError:
        raise UserError("from_snntorch needs snntorch (pip install snntorch)") from None
    if not isinstance(module, nn.Sequential):
        return _wrap_class_model(module, T, example, input_shape, readout, wrap_options)

    def reset() -> None:
        for m in module.modules():
            if isinstance(m, snntorch.SpikingNeuron) and hasattr(m, "reset_mem"):
                m.reset_mem()

    source = _Source(
        "snnTorch", getattr(snntorch, "__version__", "1.x"), module,
        read_neuron=_snntorch_neuron, reset=reset, multi_step=False,
        time_convention=f"{T} calls on x (init_hidden state), reset_mem() before and after",
    )  # fmt: skip
    return _adapt(source, T, readout, _Feed(example, input_shape, image_shape, mean, std))
