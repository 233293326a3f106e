"""Import a NIR graph as a robustsnn SpikingNetwork built from robustsnn's own layers.

``load_nir(file)`` gives a :class:`SpikingNetwork` whose body is a
:class:`~robustsnn.interop.graph.GraphNet`; ``robustsnn import FILE.nir --dataset SPEC --out DIR``
writes it as a checkpoint that every command (evaluate with every estimator, export) loads.

NIR semantics, run exactly by robustsnn's discrete dynamics (``research/ecosystem.md`` 1.1-1.2):
IF ``dv/dt = r I`` and LIF ``tau dv/dt = -v + r I`` are forward-Euler steps of ``dt`` (leak
``1 - dt/tau``; the input gain ``r dt`` or ``r dt / tau`` is folded into the layer feeding the
neuron), spikes fire on strict ``v > v_threshold`` and reset to 0, spikes are binary, edges into
one node are summed. ``dt`` is not part of NIR: it comes from the argument, else the file's
metadata, else (IF-only graphs) ``r dt = 1``.

Refused with one line naming the node: node types without an exact robustsnn layer (LI,
CubaLIF, Threshold, Delay, Conv1d, subgraphs...), recurrent graphs, per-neuron parameters that
differ within a layer, ``v_reset != 0``, ``v_leak != 0``, and files written before nir 1.0.6
(their IF/LIF without ``v_reset`` meant a subtractive reset).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustsnn.errors import UserError
from robustsnn.interop.graph import GRAPH_ARCH, GRAPH_TRANSFORM, safe_key
from robustsnn.interop.nir_export import PRODUCER, firing_threshold, require_nir
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import THRESHOLD_MIN

GAIN_TOLERANCE = 1e-6
_NEURONS = ("IF", "LIF")
_SUPPORTED = ("Input", "Output", "Conv2d", "Affine", "Linear", "AvgPool2d", "SumPool2d",
              "Flatten", "Scale", *_NEURONS)  # fmt: skip


@dataclass
class ImportedGraph:
    """What an import produces before the network is built: spec, tensors and provenance."""

    spec: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]  # node key -> {weight, bias, scale, threshold}
    mean: list[float]
    std: list[float]
    T: int
    dt: float
    producer: str
    notes: list[str] = field(default_factory=list)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def read_nir_file(path: str | Path) -> Any:
    """Read a ``.nir`` file; refuse pre-1.0.6 files with neurons (reset meant subtract)."""
    nir = require_nir()
    from nir.serialization import read_version

    path = Path(path)
    if not path.is_file():
        raise UserError(f"NIR file not found: {path}")
    try:
        version = read_version(path)
        graph = nir.read(path)
    except Exception as exc:  # noqa: BLE001 - h5py/nir raise many kinds; all mean "not readable"
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"{path} is not a readable NIR file ({type(exc).__name__}: {detail})"
        ) from None
    if _version_tuple(version) < (1, 0, 6):
        neurons = [n for n, node in graph.nodes.items() if type(node).__name__ in _NEURONS]
        if neurons:
            raise UserError(
                f"{path} was written by nir {version}, before IF/LIF had v_reset (nir 1.0.6): its "
                f"node {neurons[0]!r} meant a subtractive reset, which robustsnn cannot tell from "
                "a reset to 0; re-export it with nir >= 1.0.6"
            )
    return graph


def _plain(value: Any) -> Any:
    """Metadata as plain JSON-able Python (nir returns numpy scalars and arrays)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf8")
    return value


def _uniform(node_name: str, field_name: str, values: Any) -> float:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise UserError(f"NIR node {node_name!r}: {field_name} is empty")
    first = float(array.reshape(-1)[0])
    if not np.all(array == first):
        raise UserError(
            f"NIR node {node_name!r}: {field_name} differs between neurons; robustsnn runs one "
            "value per layer"
        )
    return first


def _order(graph: Any) -> list[str]:
    """Node names in topological order; a cycle (recurrence) is refused."""
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in preds:
                raise UserError(
                    f"NIR edge {src!r} -> {dst!r} names a node that is not in the graph "
                    "(nested subgraphs are not supported; inline them)"
                )
        preds[dst].append(src)
    order: list[str] = []
    done: set[str] = set()
    pending = list(graph.nodes)
    while pending:
        ready = [n for n in pending if all(p in done for p in preds[n])]
        if not ready:
            raise UserError(
                f"the NIR graph is recurrent (node {pending[0]!r} is on a cycle); robustsnn "
                "runs feed-forward graphs only"
            )
        for n in ready:
            order.append(n)
            done.add(n)
        pending = [n for n in pending if n not in done]
    return order


def _tuple(v: Any, n: int = 2) -> list[int]:
    array = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return array * n if len(array) == 1 else array


def nir_to_graph(graph: Any, *, T: int | None = None, dt: float | None = None) -> ImportedGraph:
    """Translate a ``nir.NIRGraph`` into a GraphNet spec and tensors (see the module doc)."""
    meta = _plain(dict(graph.metadata or {}))
    producer = str(meta.get("producer", "unknown"))
    own = producer == PRODUCER
    notes: list[str] = []
    steps = T if T is not None else meta.get("T")
    if steps is None:
        raise UserError("the NIR file does not say how many time steps to run; pass --T")
    if int(steps) < 1:
        raise UserError(f"T must be >= 1, not {steps}")
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    _refuse_unsupported(kinds)
    order = _order(graph)
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    succs: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
        succs[src].append(dst)
    inputs = [n for n in order if kinds[n] == "Input"]
    outputs = [n for n in order if kinds[n] == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(
            f"the NIR graph has {len(inputs)} Input and {len(outputs)} Output nodes; "
            "robustsnn imports graphs with exactly one of each"
        )
    input_type = graph.nodes[inputs[0]].input_type
    input_shape = [int(s) for s in np.asarray(next(iter(input_type.values()))).reshape(-1)]
    dt = _time_step(graph, kinds, order, meta, dt, notes)
    normalize = meta.get("normalize") if own else None
    norm_node = normalize.get("node") if isinstance(normalize, dict) else None
    own_thresholds = _OwnThresholds(
        meta.get("thresholds") if own else None, meta.get("threshold_rule") if own else None
    )
    taken: set[str] = set()
    keys = {n: safe_key(n, taken) for n in order}
    nodes: list[dict[str, Any]] = []
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    gains: dict[str, float] = {}
    for name in order:
        kind, key = kinds[name], keys[name]
        if kind == "Input":
            continue
        spec: dict[str, Any] = {"name": name, "key": key, "inputs": list(preds[name])}
        if kind == "Output" or name == norm_node:
            spec["op"] = "identity"
            nodes.append(spec)
            continue
        fields, weights, gain = _translate(name, graph.nodes[name], kind, dt, own_thresholds)
        spec.update(fields)
        if weights:
            tensors[key] = weights
        if gain is not None:
            gains[name] = gain
        nodes.append(spec)
    _fold_gains(nodes, tensors, gains, keys, succs, notes)
    spec_graph = {
        "input": {"name": inputs[0], "shape": input_shape},
        "nodes": nodes,
        "output": outputs[0],
    }
    channels = input_shape[0] if len(input_shape) == 3 else 1
    mean, std = [0.0] * channels, [1.0] * channels
    if isinstance(normalize, dict) and norm_node in graph.nodes:
        mean = [float(m) for m in normalize["mean"]]
        std = [float(s) for s in normalize["std"]]
    return ImportedGraph(spec_graph, tensors, mean, std, int(steps), float(dt), producer, notes)


_UNSUPPORTED_WHY = {
    "NIRGraph": "nested subgraphs are not supported (inline them)",
    "LI": "a leaky integrator readout without spikes has no robustsnn layer",
    "CubaLIF": "current-based synapses have no robustsnn layer",
    "CubaLI": "current-based synapses have no robustsnn layer",
    "Threshold": "a stateless threshold has no robustsnn layer",
    "Delay": "delays have no robustsnn layer",
    "Conv1d": "robustsnn runs 2-d convolutions only",
}


def _refuse_unsupported(kinds: dict[str, str]) -> None:
    """One line naming the first node robustsnn has no exact layer for, and why."""
    for name, kind in kinds.items():
        if kind not in _SUPPORTED:
            why = _UNSUPPORTED_WHY.get(kind, "robustsnn has no exact layer for it")
            raise UserError(f"NIR node {name!r} ({kind}) cannot be imported: {why}")


def _time_step(
    graph: Any,
    kinds: dict[str, str],
    order: list[str],
    meta: dict[str, Any],
    dt: float | None,
    notes: list[str],
) -> float:
    """The simulation step: given, else the file's, else r*dt = 1 for IF-only graphs (noted);
    an LIF graph without one is refused (its leak depends on it)."""
    if dt is None and meta.get("dt") is not None:
        dt = float(meta["dt"])
    if dt is None:
        lifs = [n for n in order if kinds[n] == "LIF"]
        if lifs:
            raise UserError(
                f"the NIR file does not state its time step and LIF node {lifs[0]!r} needs it; "
                "pass --dt (SpikingJelly and snnTorch export with 1e-4)"
            )
        first_if = next((n for n in order if kinds[n] == "IF"), None)
        if first_if is not None:
            dt = 1.0 / _uniform(first_if, "r", graph.nodes[first_if].r)
            notes.append(f"dt not stated: assumed r*dt = 1 for IF (dt = {dt:g})")
        else:
            dt = 1.0
    if not (math.isfinite(dt) and dt > 0):
        raise UserError(f"dt must be a positive number, not {dt}")
    return dt


@dataclass(frozen=True)
class _OwnThresholds:
    """robustsnn's own files store each layer's exact threshold and firing rule in the metadata
    (the NIR node holds the float32 below it); None for other producers."""

    values: Any
    rules: Any

    def exact(self, name: str, theta: float) -> tuple[float, bool | None]:
        """The exact threshold and whether it fires at equality, where the file has them."""
        if not (isinstance(self.values, dict) and name in self.values):
            return theta, None
        original = float(self.values[name])
        rule = (self.rules or {}).get(name, ">=") if isinstance(self.rules, dict) else ">="
        if firing_threshold(original, rule == ">=") == np.float32(theta):
            return original, rule == ">="
        return theta, None


def _translate(
    name: str, node: Any, kind: str, dt: float, own: _OwnThresholds
) -> tuple[dict[str, Any], dict[str, torch.Tensor], float | None]:
    """One NIR node's spec fields, tensors and (for a neuron) input gain."""
    fields: dict[str, Any]
    if kind == "Conv2d":
        weight = np.asarray(node.weight)
        if weight.ndim != 4:
            raise UserError(f"NIR node {name!r}: Conv2d weight must be 4-d, got {weight.shape}")
        padding = node.padding
        fields = dict(
            op="conv2d", in_channels=int(weight.shape[1]) * int(node.groups),
            out_channels=int(weight.shape[0]), kernel_size=list(weight.shape[2:]),
            stride=_tuple(node.stride), dilation=_tuple(node.dilation),
            padding=padding if isinstance(padding, str) else _tuple(padding),
            groups=int(node.groups), bias=True,
        )  # fmt: skip
        bias = np.asarray(node.bias)
        return (
            fields,
            {
                "weight": torch.tensor(weight, dtype=torch.float32),
                "bias": torch.tensor(bias, dtype=torch.float32).reshape(-1)
                if bias.size
                else torch.zeros(weight.shape[0]),
            },
            None,
        )
    if kind in ("Affine", "Linear"):
        weight = np.asarray(node.weight)
        if weight.ndim != 2:
            raise UserError(f"NIR node {name!r}: {kind} weight must be 2-d, got {weight.shape}")
        fields = dict(op="linear", in_features=int(weight.shape[1]),
                      out_features=int(weight.shape[0]), bias=kind == "Affine")  # fmt: skip
        weights = {"weight": torch.tensor(weight, dtype=torch.float32)}
        if kind == "Affine":
            weights["bias"] = torch.tensor(np.asarray(node.bias), dtype=torch.float32)
        return fields, weights, None
    if kind in ("AvgPool2d", "SumPool2d"):
        return dict(
            op="avgpool2d" if kind == "AvgPool2d" else "sumpool2d",
            kernel_size=_tuple(node.kernel_size), stride=_tuple(node.stride),
            padding=_tuple(node.padding),
        ), {}, None  # fmt: skip
    if kind == "Flatten":
        end = int(node.end_dim)
        return dict(op="flatten", start_dim=int(node.start_dim) + 1,
                    end_dim=end + 1 if end >= 0 else end), {}, None  # fmt: skip
    if kind == "Scale":
        scale = np.asarray(node.scale, dtype=np.float32)
        return dict(op="scale", shape=list(scale.shape)), {"scale": torch.tensor(scale)}, None
    # IF / LIF
    fields = _neuron(name, node, kind, dt)
    gain = float(fields.pop("gain"))
    theta, fire_at_equal = own.exact(name, float(fields.pop("theta")))
    if fire_at_equal is not None:
        fields["fire_at_equal"] = fire_at_equal
    fields["threshold_min"] = min(THRESHOLD_MIN, float(theta))
    return fields, {"threshold": torch.tensor(float(theta), dtype=torch.float32)}, gain


def _neuron(name: str, node: Any, kind: str, dt: float) -> dict[str, Any]:
    """The spec fields of an IF/LIF node, with its input gain and threshold (popped later)."""
    theta = _uniform(name, "v_threshold", node.v_threshold)
    r = _uniform(name, "r", node.r)
    v_reset = 0.0 if node.v_reset is None else _uniform(name, "v_reset", node.v_reset)
    if v_reset != 0.0:
        raise UserError(
            f"NIR node {name!r}: v_reset = {v_reset:g}; robustsnn neurons reset to 0 (rescale "
            "the layer so that v_reset is 0)"
        )
    if not theta > 0:
        raise UserError(f"NIR node {name!r}: v_threshold = {theta:g}; robustsnn needs it > 0")
    if kind == "IF":
        leak, gain = 1.0, r * dt
    else:
        tau = _uniform(name, "tau", node.tau)
        v_leak = _uniform(name, "v_leak", node.v_leak)
        if v_leak != 0.0:
            raise UserError(f"NIR node {name!r}: v_leak = {v_leak:g}; robustsnn leaks towards 0")
        if not tau > 0:
            raise UserError(f"NIR node {name!r}: tau = {tau:g} must be > 0")
        leak, gain = 1.0 - dt / tau, r * dt / tau
        if not 0.0 < leak <= 1.0:
            raise UserError(
                f"NIR node {name!r}: tau = {tau:g} with dt = {dt:g} gives the leak {leak:g}; "
                "forward Euler needs dt < tau (check --dt)"
            )
    if not (math.isfinite(gain) and gain > 0):
        raise UserError(f"NIR node {name!r}: input gain r*dt = {gain:g} must be > 0")
    return {"op": "neuron", "leak": float(leak), "reset": "hard", "emit": "binary",
            "fire_at_equal": False, "gain": gain, "theta": theta}  # fmt: skip


def _fold_gains(
    nodes: list[dict[str, Any]],
    tensors: dict[str, dict[str, torch.Tensor]],
    gains: dict[str, float],
    keys: dict[str, str],
    succs: dict[str, list[str]],
    notes: list[str],
) -> None:
    """Fold each neuron's input gain ``g != 1`` into the layers feeding it (exact in real
    arithmetic), or a ``scale`` node before it when a feeder is shared or has no weights."""
    by_name = {n["name"]: n for n in nodes}
    for name, gain in gains.items():
        if abs(gain - 1.0) <= GAIN_TOLERANCE:
            continue
        spec = by_name[name]
        feeders = [by_name.get(p) for p in spec["inputs"]]
        if all(f is not None and f["op"] in ("conv2d", "linear") and succs[f["name"]] == [name]
               for f in feeders):  # fmt: skip
            for f in feeders:
                assert f is not None
                for tensor in tensors[f["key"]].values():
                    tensor.mul_(gain)
        else:
            scale_name = f"{name}__gain"
            key = safe_key(scale_name, set(keys.values()) | {n["key"] for n in nodes})
            index = nodes.index(spec)
            nodes.insert(index, {"name": scale_name, "key": key, "op": "scale",
                                 "inputs": spec["inputs"], "shape": []})  # fmt: skip
            tensors[key] = {"scale": torch.tensor(gain, dtype=torch.float32)}
            spec["inputs"] = [scale_name]
        notes.append(f"{name}: input gain {gain:g} folded")


def build_network(
    imported: ImportedGraph, image_shape: tuple[int, ...] | None = None
) -> SpikingNetwork:
    """The SpikingNetwork of an imported graph, weights and thresholds loaded."""
    from robustsnn.io.models import build_snn_from_metadata

    shape = imported.spec["input"]["shape"]
    if image_shape is None:
        image_shape = tuple(shape) if len(shape) == 3 else (1, 1, int(np.prod(shape)))
    channels, size = int(image_shape[0]), int(image_shape[-1])
    mean, std = imported.mean, imported.std
    if len(mean) != channels:
        mean, std = [0.0] * channels, [1.0] * channels
    arch = {"name": GRAPH_ARCH, "num_classes": 0, "in_channels": channels, "image_size": size,
            "mean": mean, "std": std, "graph": imported.spec}  # fmt: skip
    meta = {"kind": "snn", "arch": arch, "conversion": {}, "transforms": [GRAPH_TRANSFORM],
            "T": imported.T}  # fmt: skip
    snn = build_snn_from_metadata(meta)
    layers = snn.body.layers
    assert isinstance(layers, torch.nn.ModuleDict)
    with torch.no_grad():
        for key, named in imported.tensors.items():
            module = layers[key]
            for attr, value in named.items():
                target = getattr(module, attr)
                if tuple(target.shape) != tuple(value.shape):
                    if attr == "scale":
                        module.scale = value.clone()  # type: ignore[assignment]
                        continue
                    raise UserError(
                        f"NIR node for {key!r}: {attr} has shape {tuple(value.shape)}, the layer "
                        f"expects {tuple(target.shape)}"
                    )
                target.copy_(value)
    snn.eval()
    return snn


def load_nir(
    source: str | Path | Any,
    *,
    T: int | None = None,
    dt: float | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> SpikingNetwork:
    """A ``.nir`` file (or ``nir.NIRGraph``) as a SpikingNetwork of robustsnn's layers."""
    graph = read_nir_file(source) if isinstance(source, (str, Path)) else source
    imported = nir_to_graph(graph, T=T, dt=dt)
    snn = build_network(imported, image_shape)
    snn.imported = imported  # type: ignore[assignment]
    return snn


def import_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    *,
    dataset: str,
    T: int | None = None,
    dt: float | None = None,
    data_dir: str | Path | None = None,
    reference: str | Path | None = None,
) -> tuple[Path, Any]:
    """``robustsnn import``: a ``.nir`` file to ``<out_dir>/snn.safetensors`` for ``dataset``.

    With ``reference`` (an ``.npz`` of the source framework's outputs on a batch) the model is
    verified at once and the verdict stored beside the checkpoint; a failure is an error.
    """
    import dataclasses

    from robustsnn.data import load_dataset
    from robustsnn.interop.verify import read_reference, require, save_verification, verify
    from robustsnn.io.models import save_snn

    graph = read_nir_file(source)
    imported = nir_to_graph(graph, T=T, dt=dt)
    data = load_dataset(dataset, data_dir)
    info = data.info
    image_shape = (info.channels, info.image_size, info.image_size)
    wanted = int(np.prod(imported.spec["input"]["shape"]))
    if wanted != int(np.prod(image_shape)):
        raise UserError(
            f"the NIR graph reads inputs of shape {imported.spec['input']['shape']}, dataset "
            f"{dataset!r} has images of shape {list(image_shape)}"
        )
    snn = build_network(imported, image_shape)
    with torch.no_grad():
        classes = snn(torch.zeros(1, *image_shape)).shape[-1]
    if classes != info.num_classes:
        raise UserError(
            f"the NIR graph has {classes} outputs, dataset {dataset!r} has {info.num_classes} classes"
        )
    snn.arch["num_classes"] = int(classes)  # type: ignore[index, operator]
    path = Path(out_dir) / "snn.safetensors"
    save_snn(
        path, snn, stage="imported",
        dataset={"spec": dataset, **dataclasses.asdict(info)},
        interop={"source": str(source), "format": "nir", "producer": imported.producer,
                 "dt": imported.dt, "notes": imported.notes},
    )  # fmt: skip
    result = None
    if reference is not None:
        x, logits, spikes = read_reference(reference)
        result = verify(snn, x, logits, spikes)
        save_verification(path, result, str(reference))
        require(result, f"the model imported from {source}")
    return path, result
