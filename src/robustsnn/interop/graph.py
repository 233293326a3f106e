"""GraphNet: a feed-forward graph of robustsnn's own layers, the body of every imported SNN.

An imported network (a NIR file, later other sources) is described by a JSON-able *graph spec*
and a state dict. The spec lists nodes in topological order; a node with several inputs sums
them (NIR's fan-in rule, how residual adds are written). The ANN form of the graph has an
``nn.ReLU`` per spiking node, so the usual route applies: ``spiking_body`` turns them into
:class:`SpikingNeuron` s, and the ``interop-graph`` body transform gives each neuron its own
settings (leak, emission, firing rule). Every gradient estimator and the time-merged fast path
then apply unchanged, and a checkpoint of an imported model loads with ``load_model``.

Spec::

    {"input": {"name": str, "shape": [C, H, W] | [F]},
     "nodes": [{"name": str, "key": str, "op": str, "inputs": [str, ...], ...}, ...],
     "output": str}

ops: ``conv2d`` (in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
bias), ``linear`` (in_features, out_features, bias), ``avgpool2d`` / ``sumpool2d``
(kernel_size, stride, padding), ``flatten`` (start_dim, end_dim: torch dims, batch included),
``scale`` (shape), ``identity``, ``neuron`` (leak, reset, emit, fire_at_equal, threshold_min);
for models adapted from SpikingJelly/snnTorch also ``maxpool2d`` (kernel_size, stride, padding,
dilation) and ``batchnorm1d`` / ``batchnorm2d`` (num_features, eps, affine; statistics come with
the weights, stateless in eval mode).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustsnn.errors import UserError
from robustsnn.io.formats import register_arch_builder, register_body_transform
from robustsnn.models.layers import Normalize
from robustsnn.snn.neuron import SpikingNeuron

GRAPH_ARCH = "interop_graph"
GRAPH_TRANSFORM = "interop-graph"
OPS = ("conv2d", "linear", "avgpool2d", "sumpool2d", "flatten", "scale", "identity", "neuron",
       "maxpool2d", "batchnorm1d", "batchnorm2d")  # fmt: skip


class SumPool2d(nn.Module):
    """Sum pooling (NIR ``SumPool2d``): average pooling with divisor 1."""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]):
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, divisor_override=1)


class Scale(nn.Module):
    """Elementwise ``x * scale`` with a per-element scale of one sample's shape (NIR ``Scale``)."""

    scale: torch.Tensor

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(tuple(int(s) for s in shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def safe_key(name: str, taken: set[str]) -> str:
    """A module key for node ``name`` (ModuleDict keys cannot hold dots), unique in ``taken``."""
    key = re.sub(r"\W", "_", name) or "node"
    if key[0].isdigit():
        key = f"n_{key}"
    base, i = key, 1
    while key in taken:
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


def _module(node: Mapping[str, Any]) -> nn.Module:
    """The ANN module of one spec node (an ``nn.ReLU`` for a spiking node)."""
    op = node["op"]
    if op == "conv2d":
        padding = node["padding"]
        return nn.Conv2d(
            int(node["in_channels"]),
            int(node["out_channels"]),
            tuple(node["kernel_size"]),
            stride=tuple(node["stride"]),
            padding=padding if isinstance(padding, str) else tuple(padding),
            dilation=tuple(node["dilation"]),
            groups=int(node["groups"]),
            bias=bool(node["bias"]),
        )
    if op == "linear":
        return nn.Linear(int(node["in_features"]), int(node["out_features"]), bias=node["bias"])
    if op == "avgpool2d":
        return nn.AvgPool2d(
            tuple(node["kernel_size"]), tuple(node["stride"]), tuple(node["padding"])
        )
    if op == "sumpool2d":
        return SumPool2d(node["kernel_size"], node["stride"], node["padding"])
    if op == "maxpool2d":
        return nn.MaxPool2d(
            tuple(node["kernel_size"]), tuple(node["stride"]), tuple(node["padding"]),
            tuple(node.get("dilation", (1, 1))),
        )  # fmt: skip
    if op in ("batchnorm1d", "batchnorm2d"):
        bn = nn.BatchNorm1d if op == "batchnorm1d" else nn.BatchNorm2d
        return bn(int(node["num_features"]), eps=float(node["eps"]), affine=bool(node["affine"]))
    if op == "flatten":
        return nn.Flatten(int(node["start_dim"]), int(node["end_dim"]))
    if op == "scale":
        return Scale(node["shape"])
    if op == "identity":
        return nn.Identity()
    if op == "neuron":
        return nn.ReLU()
    raise UserError(f"graph node {node.get('name')!r} has unknown op {op!r}; valid: {OPS}")


def _sum(values: list[torch.Tensor]) -> torch.Tensor:
    """Fan-in sum; a static ``[B, ...]`` term is repeated to a time-merged ``[T*B, ...]`` one."""
    rows = max(v.shape[0] for v in values)
    total: torch.Tensor | None = None
    for v in values:
        if v.shape[0] != rows:
            v = v.repeat(rows // v.shape[0], *([1] * (v.dim() - 1)))
        total = v if total is None else total + v
    assert total is not None
    return total


# a leaf for torch.fx (the shape test cannot be traced): the exporter reads it as fan-in
fx.wrap("_sum")


class GraphNet(nn.Module):
    """Runs a graph spec: input normalization (on the image), a reshape to the graph's input
    shape when it differs (a graph reading flat vectors), then the nodes in order, fan-in
    summed."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        graph: Mapping[str, Any],
    ) -> None:
        super().__init__()
        del num_classes  # the spec holds every shape
        self.spec = dict(graph)
        self.normalize = Normalize(mean, std)
        self.layers = nn.ModuleDict()
        self.input_name = str(graph["input"]["name"])
        self.input_shape = tuple(int(n) for n in graph["input"]["shape"])
        self.reshape = self.input_shape != (int(in_channels), int(image_size), int(image_size))
        self.output_name = str(graph["output"])
        self.order: list[tuple[str, str, list[str]]] = []
        for node in graph["nodes"]:
            self.layers[node["key"]] = _module(node)
            self.order.append((node["name"], node["key"], list(node["inputs"])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if self.reshape:  # e.g. a graph reading flat vectors
            x = x.reshape(x.shape[0], *self.input_shape)
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for name, key, inputs in self.order:
            terms = [values[i] for i in inputs]
            values[name] = self.layers[key](terms[0] if len(terms) == 1 else _sum(terms))
        return values[self.output_name]


def build_graph_ann(arch: Mapping[str, Any]) -> GraphNet:
    """The ANN form of an imported graph from checkpoint ``arch`` metadata."""
    args = {k: v for k, v in arch.items() if k != "name"}
    model = GraphNet(**args)
    model.arch = dict(arch)  # type: ignore[assignment]
    return model


def configure_neurons(body: nn.Module, meta: Mapping[str, Any]) -> nn.Module:
    """Body transform: give every spiking node of the graph its own neuron settings."""
    graph = meta["arch"]["graph"]
    layers = body.layers
    assert isinstance(layers, nn.ModuleDict)
    for node in graph["nodes"]:
        if node["op"] != "neuron":
            continue
        layers[node["key"]] = SpikingNeuron(
            1.0,  # the threshold parameter comes with the weights
            leak=float(node["leak"]),
            reset=str(node.get("reset", "hard")),
            threshold_min=float(node["threshold_min"]),
            emit=str(node.get("emit", "binary")),
            fire_at_equal=bool(node.get("fire_at_equal", False)),
        )
    return body


register_arch_builder(GRAPH_ARCH, build_graph_ann)
register_body_transform(GRAPH_TRANSFORM, configure_neurons)
