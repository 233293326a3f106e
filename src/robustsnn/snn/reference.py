"""An independent reference simulator for spiking networks: numpy, float64, one step at a time.

It exists so that a break (or any SNN output) can be checked by code that shares nothing with
robustsnn's fast path (:mod:`robustsnn.snn.dynamics`, the time-merged layers, channels-last,
the fused kernels). It reads a network's structure and weights, then simulates it its own way:

- every layer runs once per time step on that step's ``[B, ...]`` tensor (no merged time axis);
- a neuron follows the written equations, with its own loop and state
  ``h = leak * u + I``; spike where ``h >= theta`` (``h > theta`` for a strict neuron);
  hard reset ``u = 0`` where it spiked (else ``h``), soft reset ``u = h - theta`` where it spiked;
  output ``theta * s`` (``s`` for a binary neuron); ``u`` starts at
  ``v_init * theta + init_membrane``; ``theta = max(threshold, threshold_min)``;
- a TA-LIF neuron (HoSNN, :mod:`robustsnn.snn.ta_lif`) fires where ``h`` reaches its adapted
  threshold ``theta[t] = theta[t-1] + theta_v (h[t] - nds[t])``, ``theta[-1] = theta``, written
  here from the rule, not from that module's code; its reset and output use ``theta``. With
  threshold noise it is refused (no written rule for the two together);
- convolution, pooling, BatchNorm (eval statistics; per-step BatchNorms for BNTT), the input
  normalization, residual adds and the readout mean over T are numpy code below;
- the same image is the input at every step (direct coding); a random network draws from the
  numpy ``rng`` it is given (its own draws, not torch's): Poisson input coding is a Bernoulli
  spike per pixel and step with probability equal to the pixel (``input_encoding="poisson"``),
  and a noisy neuron (``threshold_noise = sigma``) fires where ``h >= theta + e`` with
  ``e = sigma * theta * N(0, 1)`` drawn per neuron, step and sample; a soft reset subtracts
  ``theta``, a hard reset sets ``u = e`` (the residual that robustsnn's threshold noise leaves
  after a hard-reset spike, :mod:`robustsnn.snn.encoding`).

Two entry points: :func:`simulate_network` for a :class:`~robustsnn.snn.SpikingNetwork` (its
body is traced with ``torch.fx`` only to learn which layer feeds which), and
:func:`simulate_nir` for a ``nir.NIRGraph`` (NIR's own semantics: IF/LIF with forward Euler,
strict threshold, ``v_reset``), which the NIR export tests use.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from robustsnn.errors import UserError

# --------------------------------------------------------------------------- numpy kernels


def _pair(v: Any) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _windows(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """Yield ((i, j), x[:, :, i*d::s, j*d::s] cut to the output size) for each kernel offset."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    ho = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield (i, j), x[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                            j * dw : j * dw + sw * (wo - 1) + 1 : sw]  # fmt: skip


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> np.ndarray:
    """2-d cross-correlation ``[B, Cin, H, W] -> [B, Cout, H', W']`` (padding: ints, "same"
    with stride 1, or "valid")."""
    w = np.asarray(weight, np.float64)
    stride_, dilation_ = _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            ph, pw = (0, 0), (0, 0)
        else:
            ph = (dilation_[0] * (w.shape[2] - 1) // 2,) * 2
            pw = (dilation_[1] * (w.shape[3] - 1) // 2,) * 2
    else:
        p = _pair(padding)
        ph, pw = (p[0], p[0]), (p[1], p[1])
    x = np.pad(x, ((0, 0), (0, 0), ph, pw))
    cin = w.shape[1]
    per_group = w.shape[0] // int(groups)
    outs = []
    for g in range(int(groups)):
        xg = x[:, g * cin : (g + 1) * cin]
        wg = w[g * per_group : (g + 1) * per_group]
        acc: np.ndarray | None = None
        for (i, j), patch in _windows(xg, (w.shape[2], w.shape[3]), stride_, dilation_):
            term = np.einsum("bchw,oc->bohw", patch, wg[:, :, i, j])
            acc = term if acc is None else acc + term
        assert acc is not None
        outs.append(acc)
    out = np.concatenate(outs, axis=1)
    if bias is not None and np.asarray(bias).size:
        out = out + np.asarray(bias, np.float64).reshape(1, -1, 1, 1)
    return out


def pool2d(x: np.ndarray, kernel: Any, stride: Any, padding: Any, kind: str) -> np.ndarray:
    """Average (zeros padded, counted), sum or max pooling of ``[B, C, H, W]``."""
    p = _pair(padding)
    fill = -np.inf if kind == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=fill)
    k = _pair(kernel)
    patches = [patch for _, patch in _windows(x, k, _pair(stride))]
    if kind == "max":
        return np.maximum.reduce(patches)
    total = sum(patches[1:], patches[0].copy())
    return total / (k[0] * k[1]) if kind == "avg" else total


# --------------------------------------------------------------------------- SpikingNetwork


@dataclass
class _Neuron:
    theta: float
    leak: float
    soft: bool
    strict: bool
    binary: bool
    init: np.ndarray | float
    noise: float = 0.0  # threshold noise std relative to theta (0: deterministic)
    # HoSNN's TA-LIF (None for a plain neuron): theta_v per neuron [*shape] and the neural
    # dynamic signature NDS per step and neuron [T, *shape]
    adaptation: np.ndarray | None = None
    signature: np.ndarray | None = None


@dataclass
class _Node:
    name: str
    kind: str
    inputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from robustsnn.models.layers import Normalize
        from robustsnn.snn.bntt import BatchNormThroughTime
        from robustsnn.snn.neuron import SpikingNeuron

        if isinstance(m, (SpikingNeuron, BatchNormThroughTime, Normalize)):
            return True
        return super().is_leaf_module(m, qualname)


def _f64(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().double().numpy()


def _bn_params(bn: nn.Module) -> dict[str, Any]:
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None:
        raise UserError(
            f"reference simulator: BatchNorm {bn} without running statistics is not supported"
        )
    return {
        "mean": _f64(bn.running_mean),
        "var": _f64(bn.running_var),
        "eps": float(bn.eps),
        "weight": _f64(bn.weight) if bn.weight is not None else None,
        "bias": _f64(bn.bias) if bn.bias is not None else None,
    }


def _module_node(name: str, module: nn.Module, inputs: list[str]) -> _Node:
    """The reference description of one leaf layer (refuses what it cannot simulate)."""
    from robustsnn.interop.graph import Scale, SumPool2d
    from robustsnn.models.layers import Normalize
    from robustsnn.snn.bntt import BatchNormThroughTime
    from robustsnn.snn.neuron import SpikingNeuron
    from robustsnn.snn.ta_lif import ThresholdAdaptingNeuron

    if isinstance(module, SpikingNeuron):
        theta = max(float(module.threshold.detach()), float(module.threshold_min))
        init: np.ndarray | float = module.v_init * theta
        if module.init_membrane is not None:
            init = init + _f64(module.init_membrane)  # type: ignore[operator]
        neuron = _Neuron(
            theta=theta,
            leak=float(module.leak),
            soft=module.reset == "soft",
            strict=not module.fire_at_equal,
            binary=module.emit == "binary",
            init=init,
            noise=float(getattr(module, "threshold_noise", 0.0) or 0.0),
        )
        if isinstance(module, ThresholdAdaptingNeuron):
            if neuron.noise:
                raise UserError(
                    f"reference simulator: TA-LIF layer {name!r} has threshold noise; the "
                    "adaptive threshold with noisy neurons has no written rule to simulate "
                    "independently (robustsnn approximates it by shifted currents)"
                )
            neuron.adaptation = _f64(module.adaptation)
            neuron.signature = _f64(module.signature)
        return _Node(name, "neuron", inputs, {"neuron": neuron})
    if isinstance(module, Normalize):
        return _Node(
            name, "normalize", inputs, {"mean": _f64(module.mean), "std": _f64(module.std)}
        )
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise UserError(f"reference simulator: conv {name!r} pads with {module.padding_mode}")
        return _Node(
            name,
            "conv2d",
            inputs,
            {
                "weight": _f64(module.weight),
                "bias": _f64(module.bias),
                "stride": module.stride,
                "padding": module.padding,
                "dilation": module.dilation,
                "groups": module.groups,
            },
        )
    if isinstance(module, nn.Linear):
        return _Node(
            name, "linear", inputs, {"weight": _f64(module.weight), "bias": _f64(module.bias)}
        )
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _Node(name, "batchnorm", inputs, _bn_params(module))
    if isinstance(module, BatchNormThroughTime):
        return _Node(name, "bntt", inputs, {"steps": [_bn_params(bn) for bn in module.bns]})
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or module.divisor_override is not None or not module.count_include_pad:
            raise UserError(f"reference simulator: pooling options of {name!r} are not supported")
        stride = module.stride if module.stride is not None else module.kernel_size
        return _Node(name, "pool", inputs, {"kind": "avg", "kernel": module.kernel_size,
                                             "stride": stride, "padding": module.padding})  # fmt: skip
    if isinstance(module, SumPool2d):
        return _Node(name, "pool", inputs, {"kind": "sum", "kernel": module.kernel_size,
                                             "stride": module.stride, "padding": module.padding})  # fmt: skip
    if isinstance(module, nn.MaxPool2d):
        if module.ceil_mode or _pair(module.dilation) != (1, 1):
            raise UserError(f"reference simulator: pooling options of {name!r} are not supported")
        stride = module.stride if module.stride is not None else module.kernel_size
        return _Node(name, "pool", inputs, {"kind": "max", "kernel": module.kernel_size,
                                             "stride": stride, "padding": module.padding})  # fmt: skip
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return _Node(name, "adaptive_avg", inputs, {"size": _pair(module.output_size)})
    if isinstance(module, nn.Flatten):
        return _Node(name, "flatten", inputs, {"start": module.start_dim, "end": module.end_dim})
    if isinstance(module, Scale):
        return _Node(name, "scale", inputs, {"scale": _f64(module.scale)})
    if isinstance(module, (nn.Dropout, nn.Identity)):
        return _Node(name, "identity", inputs)
    if isinstance(module, nn.ReLU):
        return _Node(name, "relu", inputs)
    raise UserError(
        f"reference simulator: layer {name!r} ({type(module).__name__}) is not supported; "
        "it simulates conv, linear, BatchNorm, BNTT, pooling, flatten, dropout, residual adds "
        "and IF/LIF/TA-LIF neurons"
    )


def network_body(network: nn.Module) -> nn.Module:
    """A SpikingNetwork's body; any other model (an ANN) is its own body, run for one step."""
    body = getattr(network, "body", None)
    return body if isinstance(body, nn.Module) else network


def trace_network(network: nn.Module) -> list[_Node]:
    """The body of a SpikingNetwork (or an ANN) as reference nodes in execution order."""
    from robustsnn.interop.graph import _sum
    from robustsnn.models.resnet import add_skip

    body = network_body(network)
    try:
        graph = _Tracer().trace(body)
    except Exception as exc:  # data-dependent control flow and the like: say what and where
        raise UserError(
            f"reference simulator: cannot read the structure of {type(body).__name__} "
            f"with torch.fx ({type(exc).__name__}: {exc})"
        ) from None
    modules = dict(body.named_modules())
    nodes: list[_Node] = []
    adds = {operator.add, torch.add, add_skip, _sum}
    for node in graph.nodes:
        inputs = [str(a) for a in node.all_input_nodes]
        if node.op == "placeholder":
            nodes.append(_Node(node.name, "input", []))
        elif node.op == "output":
            nodes.append(_Node(node.name, "output", inputs))
        elif node.op == "call_module":
            described = _module_node(node.name, modules[str(node.target)], inputs)
            described.params["module"] = str(node.target)
            nodes.append(described)
        elif node.op == "get_attr":
            value = body
            for part in str(node.target).split("."):
                value = getattr(value, part)
            nodes.append(_Node(node.name, "constant", [], {"value": _f64(value)}))  # type: ignore[arg-type]
        elif node.op == "call_function" and node.target in adds:
            nodes.append(_Node(node.name, "add", inputs))
        elif node.op == "call_function" and node.target in (operator.mul, torch.mul):
            nodes.append(_Node(node.name, "mul", inputs))
        elif node.op == "call_function" and node.target is operator.getitem:
            nodes.append(_Node(node.name, "getitem", inputs[:1], {"key": node.args[1]}))
        elif (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"
        ):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            nodes.append(_Node(node.name, "flatten", inputs[:1], {"start": start, "end": -1}))
        elif node.op == "call_function" and node.target in (torch.relu, nn.functional.relu):
            nodes.append(_Node(node.name, "relu", inputs[:1]))
        else:
            raise UserError(
                f"reference simulator: operation {node.op} {node.target} in the network body "
                "is not supported"
            )
    return nodes


def _batchnorm(x: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - p["mean"].reshape(shape)) / np.sqrt(p["var"].reshape(shape) + p["eps"])
    if p["weight"] is not None:
        out = out * p["weight"].reshape(shape)
    if p["bias"] is not None:
        out = out + p["bias"].reshape(shape)
    return out


def _adaptive_avg(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = x.shape[2], x.shape[3]
    if h % size[0] or w % size[1]:
        raise UserError("reference simulator: adaptive pooling to a size that does not divide")
    kh, kw = h // size[0], w // size[1]
    return x.reshape(x.shape[0], x.shape[1], size[0], kh, size[1], kw).mean(axis=(3, 5))


def _flatten(x: np.ndarray, start: int, end: int) -> np.ndarray:
    start = start if start >= 0 else x.ndim + start
    end = end if end >= 0 else x.ndim + end
    return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :])


@dataclass
class Simulation:
    """Reference output: mean logits ``[B, K]``, per-step outputs ``[T, B, K]`` and each
    neuron layer's spikes ``[T, B, ...]`` (bool), keyed by the layer's module name."""

    logits: np.ndarray
    outputs: np.ndarray
    spikes: dict[str, np.ndarray]


def is_random_network(network: nn.Module) -> bool:
    """Whether the network draws random numbers in its forward (Poisson input coding or a
    noisy neuron), i.e. :func:`simulate_network` needs an ``rng``."""
    if getattr(network, "input_encoding", "direct") != "direct":
        return True
    return any(float(getattr(m, "threshold_noise", 0.0) or 0.0) > 0 for m in network.modules())


def _neuron_step(
    n: _Neuron,
    state: dict[str, np.ndarray],
    name: str,
    current: np.ndarray,
    t: int,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """One step of one neuron layer: its spikes (bool); ``state`` keeps the layer's membrane
    ``u`` under ``name`` and a TA-LIF layer's adapted threshold under ``name + "/theta"``.

    A TA-LIF layer follows HoSNN's rule (Geng & Li, TMLR 2025, arXiv 2308.10373, as written
    in :mod:`robustsnn.snn.ta_lif`'s documentation, not its code): the threshold starts at
    ``theta`` and moves by ``theta_v (h[t] - nds[t])`` every step, the neuron fires where
    ``h[t]`` reaches it (``>`` for a strict neuron), and the reset and the emitted value use
    the layer's own ``theta``."""
    if name not in state:
        state[name] = np.broadcast_to(np.asarray(n.init, np.float64), current.shape).copy()
    h = n.leak * state[name] + current
    threshold: np.ndarray | float = n.theta
    if n.adaptation is not None and n.signature is not None:
        previous = state.get(name + "/theta", n.theta)
        threshold = np.asarray(previous + n.adaptation * (h - n.signature[t]))
        state[name + "/theta"] = threshold
    offset: np.ndarray | float = 0.0
    if n.noise:
        assert rng is not None
        offset = n.noise * n.theta * rng.standard_normal(np.shape(h))
    fired = h > threshold + offset if n.strict else h >= threshold + offset
    reset = h - n.theta if n.soft else offset
    state[name] = np.where(fired, reset, h)
    return np.asarray(fired)


def _check_signatures(nodes: list[_Node], steps: int) -> None:
    """A TA-LIF layer's signature has one entry per step: it runs at that T only."""
    for node in nodes:
        neuron = node.params.get("neuron")
        if isinstance(neuron, _Neuron) and neuron.signature is not None:
            if neuron.signature.shape[0] != steps:
                raise UserError(
                    f"reference simulator: TA-LIF layer {node.name!r} has a signature of "
                    f"{neuron.signature.shape[0]} steps, the simulation runs T={steps}"
                )


def simulate_network(
    network: nn.Module,
    x: torch.Tensor | np.ndarray,
    T: int | None = None,
    rng: np.random.Generator | None = None,
) -> Simulation:
    """Simulate a SpikingNetwork on images ``x`` ``[B, C, H, W]`` in float64 for ``T`` steps
    (default: the network's T; an ANN runs one step). A random network (Poisson input, noisy
    neurons) draws from ``rng``, one draw per call, and refuses to run without one."""
    nodes = trace_network(network)
    own_steps = getattr(network, "T", 1) if network_body(network) is not network else 1
    steps = int(T if T is not None else own_steps)
    encoding = str(getattr(network, "input_encoding", "direct"))
    if encoding not in ("direct", "poisson"):
        raise UserError(f"reference simulator: input encoding {encoding!r} is not supported")
    if rng is None and is_random_network(network):
        raise UserError(
            "reference simulator: the network is random (Poisson input or threshold noise); "
            "give simulate_network a numpy Generator (rng=) and take a majority over draws"
        )
    data = (
        x.detach().cpu().double().numpy()
        if isinstance(x, torch.Tensor)
        else np.asarray(x, np.float64)
    )
    image = data
    _check_signatures(nodes, steps)
    state: dict[str, np.ndarray] = {}  # per neuron layer: membrane u (and TA-LIF's threshold)
    spikes: dict[str, list[np.ndarray]] = {}
    outputs = []
    for t in range(steps):
        if encoding == "poisson":
            assert rng is not None
            data = (rng.random(image.shape) < np.clip(image, 0.0, 1.0)).astype(np.float64)
        values: dict[str, Any] = {}
        for node in nodes:
            ins = [values[i] for i in node.inputs]
            p = node.params
            if node.kind == "input":
                out: Any = data
            elif node.kind == "output":
                out = ins[0]
            elif node.kind == "constant":
                out = p["value"]
            elif node.kind == "normalize":
                out = (ins[0] - p["mean"]) / p["std"]
            elif node.kind == "conv2d":
                out = conv2d(ins[0], p["weight"], p["bias"], p["stride"], p["padding"],
                             p["dilation"], p["groups"])  # fmt: skip
            elif node.kind == "linear":
                out = ins[0] @ p["weight"].T
                if p["bias"] is not None:
                    out = out + p["bias"]
            elif node.kind == "batchnorm":
                out = _batchnorm(ins[0], p)
            elif node.kind == "bntt":
                out = _batchnorm(ins[0], p["steps"][t])
            elif node.kind == "pool":
                out = pool2d(ins[0], p["kernel"], p["stride"], p["padding"], p["kind"])
            elif node.kind == "adaptive_avg":
                out = _adaptive_avg(ins[0], p["size"])
            elif node.kind == "flatten":
                out = _flatten(ins[0], int(p["start"]), int(p["end"]))
            elif node.kind == "scale":
                out = ins[0] * p["scale"]
            elif node.kind == "identity":
                out = ins[0]
            elif node.kind == "relu":
                out = np.maximum(ins[0], 0.0)
            elif node.kind == "add":
                out = ins[0] + ins[1]
            elif node.kind == "mul":
                out = ins[0] * ins[1]
            elif node.kind == "getitem":
                out = ins[0][p["key"]]
            elif node.kind == "neuron":
                n: _Neuron = p["neuron"]
                fired = _neuron_step(n, state, node.name, ins[0], t, rng)
                spikes.setdefault(p["module"], []).append(fired)
                out = fired.astype(np.float64) * (1.0 if n.binary else n.theta)
            else:  # pragma: no cover - trace_network only makes the kinds above
                raise AssertionError(node.kind)
            values[node.name] = out
        outputs.append(values[nodes[-1].name])
    stacked = np.stack(outputs)
    return Simulation(stacked.mean(0), stacked, {k: np.stack(v) for k, v in spikes.items()})


# --------------------------------------------------------------------------- NIR


def simulate_nir(
    graph: Any, x: np.ndarray, T: int, dt: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run a ``nir.NIRGraph`` for ``T`` steps on the batch ``x``; return per-step outputs
    ``[T, B, ...]`` and each neuron node's spike train ``[T, B, ...]`` (bool).

    NIR's semantics: edges into a node are summed; IF ``v += dt r I``; LIF
    ``v += dt/tau (v_leak - v + r I)`` (forward Euler); spike when ``v > v_threshold``
    (strict), then ``v = v_reset``; Flatten dims exclude the batch; direct input coding."""
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    order: list[str] = []
    while len(order) < len(graph.nodes):
        for n in graph.nodes:
            if n not in order and all(p in order for p in preds[n]):
                order.append(n)
    state: dict[str, np.ndarray] = {}
    spikes: dict[str, list[np.ndarray]] = {}
    outputs = []
    x = np.asarray(x, np.float64)
    for _ in range(T):
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.nodes[name]
            kind = type(node).__name__
            if kind == "Input":
                values[name] = x
                continue
            inp: Any = sum(values[p] for p in preds[name])
            if kind == "Output":
                out = inp
            elif kind == "Conv2d":
                out = conv2d(inp, node.weight, node.bias, node.stride, node.padding,
                             node.dilation, int(node.groups))  # fmt: skip
            elif kind == "Affine":
                out = inp @ np.asarray(node.weight, np.float64).T + np.asarray(
                    node.bias, np.float64
                )
            elif kind == "Linear":
                out = inp @ np.asarray(node.weight, np.float64).T
            elif kind in ("AvgPool2d", "SumPool2d"):
                kind_ = "avg" if kind == "AvgPool2d" else "sum"
                out = pool2d(inp, node.kernel_size, node.stride, node.padding, kind_)
            elif kind == "Flatten":
                start = int(node.start_dim) + 1
                end = (
                    int(node.end_dim) + 1
                    if int(node.end_dim) >= 0
                    else inp.ndim + int(node.end_dim)
                )
                out = inp.reshape(*inp.shape[:start], -1, *inp.shape[end + 1 :])
            elif kind == "Scale":
                out = inp * np.asarray(node.scale, np.float64)
            elif kind in ("IF", "LIF"):
                v = state.get(name, np.zeros_like(inp))
                r = np.asarray(node.r, np.float64)
                if kind == "IF":
                    v = v + dt * r * inp
                else:
                    tau = np.asarray(node.tau, np.float64)
                    v = v + dt / tau * (np.asarray(node.v_leak, np.float64) - v + r * inp)
                fired = v > np.asarray(node.v_threshold, np.float64)
                reset = np.zeros_like(v) if node.v_reset is None else np.asarray(node.v_reset)
                state[name] = np.where(fired, np.broadcast_to(reset, v.shape), v)
                spikes.setdefault(name, []).append(fired)
                out = fired.astype(np.float64)
            else:
                raise NotImplementedError(kind)
            values[name] = out
        outputs.append(values["output"])
    return np.stack(outputs), {k: np.stack(v) for k, v in spikes.items()}


__all__ = [
    "Simulation",
    "conv2d",
    "is_random_network",
    "pool2d",
    "simulate_network",
    "simulate_nir",
    "trace_network",
]
