"""Export a robustsnn SpikingNetwork to NIR (``robustsnn export SNN_CKPT --format nir``).

The file states what robustsnn computes, in NIR's terms (``research/ecosystem.md`` section 2):

* spikes are binary: each layer's threshold ``theta`` is folded into the weights of the next
  weight-bearing node (through pooling and flatten, which commute with a scale); an identity
  shortcut or output that still carries ``theta * s`` gets a diagonal 1x1 node;
* robustsnn fires at ``h >= theta``, NIR at ``v > v_threshold``: the file holds the float32
  number just below theta, so both rules agree on every float32 membrane (threshold ties too);
* IF is ``IF(r = 1/dt)``, LIF with leak ``l`` is ``LIF(tau = dt/(1-l), r = tau/dt, v_leak = 0)``:
  forward Euler with the ``dt`` in the metadata gives robustsnn's ``h = l*u + I`` exactly;
* BatchNorm is folded into the convolution or linear layer before it (a BatchNorm after an add
  becomes a diagonal 1x1 node); the input normalization is a 1x1 node ``normalize``;
* residual adds are fan-in edges; T, dt, direct input coding and the mean-over-T readout are
  metadata (NIR has no fields for them).

What NIR cannot state faithfully is refused with one line: soft (subtractive) reset, an initial
membrane, per-time-step BatchNorm, max pooling, and any layer without a NIR node.

Random parts are refused too, so that a random SNN never silently becomes a deterministic graph
(issue 32): Poisson/Bernoulli rate input coding (``input_encoding``), noisy neurons
(``threshold_noise``) and HoSNN's threshold-adapting neurons (an adaptive threshold, not NIR's
fixed ``v_threshold``). Why refuse the input coding rather than export it as metadata: NIR has
no Poisson/Bernoulli node, and its readers (snnTorch, Norse, SpikingJelly, Lava, robustsnn's own
import) build the network from the nodes and ignore a producer's metadata, so a graph whose
metadata says "poisson" would still run on the image directly in every consumer: the same
silent change, moved downstream. ``drop_input_encoding=True`` exports the graph without the
coding on purpose (the network the coding feeds, which reads spikes or the image alike) and
records it in the metadata (``input_coding`` stays ``"direct"``, what the graph computes;
``dropped_input_encoding`` names the coding the consumer must apply before the input node).
"""

from __future__ import annotations

import copy
import math
import operator
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from robustsnn.errors import UserError
from robustsnn.interop.graph import Scale, SumPool2d, _sum
from robustsnn.models.layers import Normalize
from robustsnn.models.resnet import add_skip
from robustsnn.snn.estimators import ANNProxy
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron

DEFAULT_DT = 1e-4
PRODUCER = "robustsnn"
_ADDS = {operator.add, torch.add, add_skip, _sum}
_PASS_THROUGH = (nn.Dropout, nn.Identity)
_MULS = {operator.mul, torch.mul}


def require_nir() -> Any:
    """The ``nir`` module, or a one-line error saying how to install it."""
    try:
        import nir
    except ImportError:
        raise UserError(
            "NIR support needs the 'nir' package: pip install 'robustsnn[nir]' (or pip install nir)"
        ) from None
    return nir


class _Tracer(fx.Tracer):
    """Keeps spiking layers, the normalization and robustsnn's pooling/scale layers as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (SpikingNeuron, Normalize, SumPool2d, Scale)):
            return True
        if type(m).__name__ == "BatchNormThroughTime":
            return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass
class _Term:
    """One summand of an exported value: NIR node ``src`` whose output times ``scale`` is what
    robustsnn computes there."""

    src: str
    scale: float
    shape: tuple[int, ...]


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def firing_threshold(theta: float, fire_at_equal: bool) -> np.float32:
    """NIR's ``v_threshold`` for robustsnn's rule: the float32 just below ``theta`` for ``>=``."""
    value = np.float32(theta)
    return np.nextafter(value, np.float32(-np.inf)) if fire_at_equal else value


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Exporter:
    def __init__(self, snn: SpikingNetwork, dt: float) -> None:
        import nir

        self.nir = nir
        self.snn = snn
        self.dt = float(dt)
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.thresholds: dict[str, float] = {}
        self.firing: dict[str, str] = {}
        self.normalize: dict[str, Any] | None = None

    # ------------------------------------------------------------------ graph building
    def add_node(self, name: str, node: Any, inputs: list[_Term]) -> str:
        name = name if name not in self.nodes else f"{name}_{len(self.nodes)}"
        self.nodes[name] = node
        sources = [t.src for t in inputs]
        if len(set(sources)) != len(sources):
            raise UserError(
                f"node {name!r} adds the same tensor twice; NIR forbids duplicate edges"
            )
        self.edges.extend((s, name) for s in sources)
        return name

    def diagonal(self, term: _Term) -> _Term:
        """A node multiplying ``term`` by its scale, so the value is carried at scale 1."""
        shape = term.shape
        if len(shape) == 3:
            c = shape[0]
            weight = _f32(np.eye(c, dtype=np.float32) * np.float32(term.scale)).reshape(c, c, 1, 1)
            node = self.nir.Conv2d(
                input_shape=(shape[1], shape[2]), weight=weight, stride=1, padding=0,
                dilation=1, groups=1, bias=np.zeros(c, np.float32),
            )  # fmt: skip
        elif len(shape) == 1:
            weight = _f32(np.eye(shape[0], dtype=np.float32) * np.float32(term.scale))
            node = self.nir.Linear(weight=weight)
        else:
            raise UserError(f"cannot rescale a tensor of shape {shape} after {term.src!r}")
        name = self.add_node(f"{term.src}_theta", node, [term])
        return _Term(name, 1.0, shape)

    def unit(self, terms: list[_Term]) -> list[_Term]:
        """The terms, each carried at scale 1 (for neurons, the output, mixed-scale sums)."""
        return [t if t.scale == 1.0 else self.diagonal(t) for t in terms]

    def common_scale(self, terms: list[_Term]) -> tuple[list[_Term], float]:
        scales = {t.scale for t in terms}
        if len(scales) == 1:
            return terms, terms[0].scale
        return self.unit(terms), 1.0

    # ------------------------------------------------------------------ layers
    def normalization(self, module: Normalize, terms: list[_Term], name: str) -> list[_Term]:
        mean = module.mean.detach().double().reshape(-1).cpu().numpy()
        std = module.std.detach().double().reshape(-1).cpu().numpy()
        if np.all(mean == 0) and np.all(std == 1):
            return terms
        shape = terms[0].shape
        c = len(mean)
        weight = _f32(np.diag(1.0 / std)).reshape(c, c, 1, 1)
        node = self.nir.Conv2d(
            input_shape=(shape[1], shape[2]), weight=weight, stride=1, padding=0, dilation=1,
            groups=1, bias=_f32(-mean / std),
        )  # fmt: skip
        out = self.add_node(name, node, self.unit(terms))
        self.normalize = {"node": out, "mean": mean.tolist(), "std": std.tolist()}
        return [_Term(out, 1.0, shape)]

    def weighted(
        self,
        name: str,
        module: nn.Conv2d | nn.Linear,
        terms: list[_Term],
        bn: nn.Module | None,
        out_shape: tuple[int, ...],
    ) -> list[_Term]:
        terms, scale = self.common_scale(terms)
        weight = module.weight.detach().double().cpu()
        bias = (
            module.bias.detach().double().cpu()
            if module.bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64)
        )
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            assert bn.running_mean is not None and bn.running_var is not None
            factor = (bn.weight.detach().double() if bn.weight is not None else 1.0) / torch.sqrt(
                bn.running_var.double() + bn.eps
            )
            shift = bn.bias.detach().double() if bn.bias is not None else 0.0
            bias = (bias - bn.running_mean.double()) * factor + shift
            weight = weight * factor.view(-1, *([1] * (weight.dim() - 1)))
        weight = weight * scale  # theta of the spikes this layer reads
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                raise UserError(
                    f"layer {name!r}: padding_mode {module.padding_mode!r} has no NIR form"
                )
            in_shape = terms[0].shape
            node: Any = self.nir.Conv2d(
                input_shape=(in_shape[1], in_shape[2]), weight=_f32(weight),
                stride=_pair(module.stride), dilation=_pair(module.dilation),
                padding=module.padding if isinstance(module.padding, str) else _pair(module.padding),
                groups=int(module.groups), bias=_f32(bias),
            )  # fmt: skip
        else:
            node = self.nir.Affine(weight=_f32(weight), bias=_f32(bias))
        return [_Term(self.add_node(name, node, terms), 1.0, out_shape)]

    def batchnorm(self, name: str, bn: nn.Module, terms: list[_Term], shape: tuple[int, ...]):
        """A BatchNorm with no layer to fold into (after an add): a diagonal affine node."""
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        assert bn.running_mean is not None and bn.running_var is not None
        terms, scale = self.common_scale(terms)
        factor = (bn.weight.detach().double() if bn.weight is not None else 1.0) / torch.sqrt(
            bn.running_var.double() + bn.eps
        )
        shift = (bn.bias.detach().double() if bn.bias is not None else 0.0) - (
            bn.running_mean.double() * factor
        )
        c = factor.numel()
        weight = torch.diag(factor * scale)
        if len(shape) == 3:
            node: Any = self.nir.Conv2d(
                input_shape=(shape[1], shape[2]), weight=_f32(weight.view(c, c, 1, 1)), stride=1,
                padding=0, dilation=1, groups=1, bias=_f32(shift),
            )  # fmt: skip
        else:
            node = self.nir.Affine(weight=_f32(weight), bias=_f32(shift))
        return [_Term(self.add_node(name, node, terms), 1.0, shape)]

    def neuron(self, name: str, module: SpikingNeuron, terms: list[_Term], shape: tuple[int, ...]):
        _refuse_random_or_adaptive(module)
        if module.reset != "hard":
            raise UserError(
                f"spiking layer {module.name!r} uses the soft (subtractive) reset, which NIR "
                "cannot express (its IF/LIF reset to v_reset); only hard-reset SNNs can be exported: "
                "convert the ANN again with `robustsnn convert ANN --reset hard --v-init 0`"
            )
        if getattr(module, "v_init", 0.0) or getattr(module, "init_membrane", None) is not None:
            raise UserError(
                f"spiking layer {module.name!r} starts from a non-zero membrane, which NIR "
                "cannot express (membranes start at 0): convert the ANN again with "
                "`robustsnn convert ANN --reset hard --v-init 0`"
            )
        theta = float(module.threshold.detach().clamp(min=module.threshold_min))
        fire_at_equal = bool(getattr(module, "fire_at_equal", True))
        binary = getattr(module, "emit", "scaled") == "binary"
        v_th = np.full(shape, firing_threshold(theta, fire_at_equal), np.float32)
        zeros = np.zeros(shape, np.float32)
        if module.leak == 1.0:
            node: Any = self.nir.IF(r=np.full(shape, 1.0 / self.dt, np.float32), v_threshold=v_th,
                                    v_reset=zeros)  # fmt: skip
        else:
            tau = self.dt / (1.0 - module.leak)
            node = self.nir.LIF(
                tau=np.full(shape, tau, np.float32), r=np.full(shape, tau / self.dt, np.float32),
                v_leak=zeros, v_threshold=v_th, v_reset=zeros,
            )  # fmt: skip
        out = self.add_node(name, node, self.unit(terms))
        self.thresholds[out] = theta
        self.firing[out] = ">=" if fire_at_equal else ">"
        return [_Term(out, 1.0 if binary else theta, shape)]

    def pooling(self, name: str, module: nn.Module, terms: list[_Term], shape: tuple[int, ...]):
        terms, scale = self.common_scale(terms)
        in_shape = terms[0].shape
        if isinstance(module, nn.AdaptiveAvgPool2d):
            oh, ow = _pair(module.output_size)  # type: ignore[arg-type]
            if in_shape[1] % oh or in_shape[2] % ow:
                raise UserError(
                    f"layer {name!r}: adaptive pooling {in_shape[1:]} -> {(oh, ow)} has no fixed "
                    "kernel; NIR's AvgPool2d needs the input size to be a multiple of the output"
                )
            kernel = (in_shape[1] // oh, in_shape[2] // ow)
            stride, padding = kernel, (0, 0)
        elif isinstance(module, nn.AvgPool2d):
            if module.ceil_mode or module.divisor_override is not None:
                raise UserError(
                    f"layer {name!r}: AvgPool2d ceil_mode/divisor_override has no NIR form"
                )
            padding = _pair(module.padding)
            if not module.count_include_pad and any(padding):
                raise UserError(
                    f"layer {name!r}: AvgPool2d(count_include_pad=False) with padding has no NIR form"
                )
            kernel = _pair(module.kernel_size)
            stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        else:
            assert isinstance(module, SumPool2d)
            kernel, stride, padding = module.kernel_size, module.stride, module.padding  # type: ignore[assignment]
        cls = self.nir.SumPool2d if isinstance(module, SumPool2d) else self.nir.AvgPool2d
        node = cls(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        return [_Term(self.add_node(name, node, terms), scale, shape)]

    def flatten(self, name: str, module: nn.Flatten, terms: list[_Term], shape: tuple[int, ...]):
        terms, scale = self.common_scale(terms)
        in_shape = terms[0].shape
        start = module.start_dim if module.start_dim >= 0 else module.start_dim + len(in_shape) + 1
        end = module.end_dim if module.end_dim >= 0 else module.end_dim + len(in_shape) + 1
        if start < 1:
            raise UserError(f"layer {name!r} flattens the batch dimension; NIR cannot express it")
        node = self.nir.Flatten(
            input_type={"input": np.array(in_shape)}, start_dim=start - 1, end_dim=end - 1
        )
        return [_Term(self.add_node(name, node, terms), scale, shape)]

    # ------------------------------------------------------------------ driver
    def run(self, input_shape: tuple[int, ...]) -> Any:
        snn = copy.deepcopy(self.snn).cpu().eval()
        body = snn.body
        try:
            graph = _Tracer().trace(body)
        except Exception as exc:  # noqa: BLE001 - any tracing failure is the same user problem
            detail = " ".join(str(exc).split())[:200]
            raise UserError(
                f"cannot read the network's structure for export (torch.fx: {detail}); only "
                "feed-forward bodies of modules and adds can be exported"
            ) from None
        gm = fx.GraphModule(body, graph)
        with snn.use_estimator(ANNProxy()):
            snn.context.batch = 1
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
        modules = dict(body.named_modules())
        folded: dict[str, nn.Module] = {}  # conv/linear fx node -> the BatchNorm folded into it
        skip: set[str] = set()
        for node in graph.nodes:
            if node.op == "call_module" and isinstance(
                modules.get(str(node.target)), nn.modules.batchnorm._BatchNorm
            ):
                prev = node.args[0]
                if (
                    isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                    and isinstance(modules.get(str(prev.target)), (nn.Conv2d, nn.Linear))
                ):  # fmt: skip
                    folded[prev.name] = modules[str(node.target)]
                    skip.add(node.name)
        values: dict[str, list[_Term]] = {}
        consts: dict[str, torch.Tensor] = {}
        output_terms: list[_Term] | None = None
        for node in graph.nodes:
            shape = tuple(node.meta["tensor_meta"].shape[1:]) if "tensor_meta" in node.meta else ()
            if node.op == "placeholder":
                self.nodes["input"] = self.nir.Input(input_type={"input": np.array(input_shape)})
                values[node.name] = [_Term("input", 1.0, tuple(input_shape))]
                continue
            if node.op == "output":
                arg = node.args[0]
                assert isinstance(arg, fx.Node)
                output_terms = values[arg.name]
                continue
            if node.op == "get_attr":  # a parameter read by arithmetic (a residual merge weight)
                consts[node.name] = _attribute(body, str(node.target))
                continue
            if (
                node.op == "call_function"
                and node.target is operator.getitem
                and (isinstance(node.args[0], fx.Node) and node.args[0].name in consts)
            ):
                consts[node.name] = consts[node.args[0].name][node.args[1]]  # type: ignore[index]
                continue
            if node.op == "call_function" and node.target in _MULS:
                values[node.name] = _scaled(node, values, consts)
                continue
            args = [a for a in node.args if isinstance(a, fx.Node)]
            terms = [t for a in args[:1] for t in values[a.name]]
            if node.name in skip:  # the BatchNorm folded into the layer before it
                values[node.name] = values[args[0].name]
                continue
            if node.op == "call_function" and node.target in _ADDS:
                if node.target is _sum:
                    parts = node.args[0]
                    assert isinstance(parts, (list, tuple))
                    values[node.name] = [t for a in parts for t in values[a.name]]  # type: ignore[union-attr]
                else:
                    values[node.name] = [t for a in args for t in values[a.name]]
                continue
            if node.op != "call_module":
                what = getattr(node.target, "__name__", str(node.target))
                raise UserError(
                    f"graph node {node.name!r} calls {what}, which has no NIR form; export "
                    "supports Conv2d, Linear, BatchNorm, AvgPool, Flatten, adds and spiking layers"
                )
            module = modules[str(node.target)]
            name = node.name
            if isinstance(module, _PASS_THROUGH):
                values[name] = terms
            elif isinstance(module, Normalize):
                values[name] = self.normalization(module, terms, "normalize")
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                values[name] = self.weighted(name, module, terms, folded.get(name), shape)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                values[name] = self.batchnorm(name, module, terms, shape)
            elif isinstance(module, SpikingNeuron):
                values[name] = self.neuron(name, module, terms, shape)
            elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, SumPool2d)):
                values[name] = self.pooling(name, module, terms, shape)
            elif isinstance(module, nn.Flatten):
                values[name] = self.flatten(name, module, terms, shape)
            elif isinstance(module, Scale):
                values[name] = self.scale(name, module, terms, shape)
            else:
                kind = type(module).__name__
                why = {
                    "BatchNormThroughTime": "a separate BatchNorm per time step (BNTT) is not "
                    "a NIR node",
                    "MaxPool2d": "NIR has no max pooling (use AvgPool)",
                }.get(kind, "it has no NIR node")
                raise UserError(f"layer {node.target!r} ({kind}) cannot be exported: {why}")
        assert output_terms is not None
        final = self.unit(output_terms)
        out_shape = final[0].shape
        self.nodes["output"] = self.nir.Output(output_type={"output": np.array(out_shape)})
        self.edges.extend((t.src, "output") for t in final)
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=self.metadata())

    def scale(self, name: str, module: Scale, terms: list[_Term], shape: tuple[int, ...]):
        terms, scale = self.common_scale(terms)
        node = self.nir.Scale(scale=_f32(module.scale.detach().double().cpu().numpy() * scale))
        return [_Term(self.add_node(name, node, terms), 1.0, shape)]

    def metadata(self) -> dict[str, Any]:
        from robustsnn import __version__

        meta: dict[str, Any] = {
            "producer": PRODUCER,
            "producer_version": str(__version__),
            "dt": self.dt,
            "T": int(self.snn.T),
            "readout": "mean",
            "input_coding": "direct",
            "input_range": [0.0, 1.0],
            "threshold_rule": self.firing,
            "thresholds": self.thresholds,
            "reset": "hard",
            "bn": "folded",
            "spikes": "binary",
        }
        if self.normalize is not None:
            meta["normalize"] = self.normalize
        encoding = str(getattr(self.snn, "input_encoding", "direct"))
        if encoding != "direct":  # exported without it on request (drop_input_encoding)
            meta["dropped_input_encoding"] = encoding
            meta["dropped_input_encoding_rule"] = (
                "not in the graph: at each of the T steps draw one Bernoulli spike (0 or 1) "
                "per pixel of the image in [0, 1], with the pixel's value as its probability, "
                "and feed these spikes to the input node (the graph's normalization follows "
                "it) in place of the image"
            )
        return meta


def _attribute(root: nn.Module, target: str) -> torch.Tensor:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return torch.as_tensor(obj).detach().double()


def _scaled(
    node: fx.Node, values: dict[str, list[_Term]], consts: dict[str, torch.Tensor]
) -> list[_Term]:
    """``value * c`` for a scalar constant ``c``: the same terms at ``c`` times their scale."""
    tensors = [a for a in node.args if isinstance(a, fx.Node) and a.name in values]
    factors = [
        consts[a.name] if isinstance(a, fx.Node) else torch.tensor(float(a))  # type: ignore[arg-type]
        for a in node.args
        if not (isinstance(a, fx.Node) and a.name in values)
    ]
    if len(tensors) != 1 or len(factors) != 1 or factors[0].numel() != 1:
        raise UserError(
            f"graph node {node.name!r} multiplies tensors; only a product with one scalar "
            "constant (a merge weight) has a NIR form"
        )
    c = float(factors[0])
    return [_Term(t.src, t.scale * c, t.shape) for t in values[tensors[0].name]]


def _refuse_random_or_adaptive(module: SpikingNeuron) -> None:
    """One line for a neuron NIR's IF/LIF cannot state: noisy, or with an adaptive threshold."""
    noise = float(getattr(module, "threshold_noise", 0.0) or 0.0)
    if noise:
        raise UserError(
            f"spiking layer {module.name!r} has threshold noise ({noise:g} of the threshold), "
            "which NIR cannot express (no node draws random numbers): the exported graph would "
            "be deterministic; export the network with threshold_noise 0 "
            "(robustsnn.snn.encoding.configure_stochastic) and add the noise in the consumer"
        )
    if type(module).__name__ == "ThresholdAdaptingNeuron":
        raise UserError(
            f"spiking layer {module.name!r} is a TA-LIF neuron (HoSNN's adaptive threshold), "
            "which NIR cannot express (IF/LIF have a fixed v_threshold)"
        )


def _check_input_encoding(snn: SpikingNetwork, drop: bool) -> None:
    encoding = str(getattr(snn, "input_encoding", "direct"))
    if encoding != "direct" and not drop:
        raise UserError(
            f"the network draws its input spikes ({encoding} rate coding), which NIR cannot "
            "express (no random input node; NIR readers ignore a producer's metadata), so the "
            "graph would silently run on the image, deterministically; to export the network "
            "without the coding and apply it in the consumer, pass drop_input_encoding=True to "
            "export_nir/export_checkpoint (recorded in the metadata)"
        )


def export_nir(
    snn: SpikingNetwork,
    input_shape: tuple[int, ...],
    *,
    dt: float = DEFAULT_DT,
    drop_input_encoding: bool = False,
) -> Any:
    """The NIR graph (``nir.NIRGraph``) of ``snn`` for inputs of one sample's ``input_shape``.

    ``dt`` only fixes the units of ``r`` and ``tau`` (it is stored in the metadata): robustsnn's
    discrete dynamics are reproduced by forward Euler with this ``dt``. A network with random
    input coding is refused unless ``drop_input_encoding`` (module doc: why).
    """
    require_nir()
    if not math.isfinite(dt) or dt <= 0:
        raise UserError(f"dt must be a positive number, not {dt}")
    _check_input_encoding(snn, drop_input_encoding)
    return _Exporter(snn, dt).run(tuple(int(s) for s in input_shape))


def write_nir(path: str | Path, graph: Any) -> Path:
    """Write ``graph`` to ``path`` (HDF5, gzip) atomically."""
    nir = require_nir()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def input_shape_of(meta: dict[str, Any]) -> tuple[int, ...]:
    """One sample's input shape from checkpoint metadata (zoo models and imported graphs)."""
    arch = meta.get("arch") or {}
    graph = arch.get("graph")
    if isinstance(graph, dict):
        return tuple(int(s) for s in graph["input"]["shape"])
    return (int(arch["in_channels"]), int(arch["image_size"]), int(arch["image_size"]))


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    dt: float = DEFAULT_DT,
    drop_input_encoding: bool = False,
) -> Path:
    """``robustsnn export``: an SNN checkpoint to a ``.nir`` file (``drop_input_encoding``: as
    :func:`export_nir`'s)."""
    from robustsnn.io.models import load_model

    model, meta = load_model(checkpoint)
    if not isinstance(model, SpikingNetwork):
        raise UserError(
            f"{checkpoint} is an {meta.get('kind')} checkpoint; export needs an SNN (convert it first)"
        )
    graph = export_nir(model, input_shape_of(meta), dt=dt, drop_input_encoding=drop_input_encoding)
    dataset = meta.get("dataset")
    if isinstance(dataset, dict):
        classes = dataset.get("classes")
        graph.metadata["dataset"] = str(dataset.get("spec") or dataset.get("name") or "")
        if isinstance(classes, list) and classes:
            graph.metadata["classes"] = [str(c) for c in classes]
    elif isinstance(dataset, str):
        graph.metadata["dataset"] = dataset
    return write_nir(out, graph)
