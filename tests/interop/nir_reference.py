"""A small numpy NIR reference simulator, independent of robustsnn's layers and of nirtorch.

It runs a ``nir.NIRGraph`` step by step with NIR's own semantics, in float64: edges into a node
are summed; IF ``v += dt r I``; LIF ``v += dt/tau (v_leak - v + r I)`` (forward Euler); a
neuron spikes when ``v > v_threshold`` (strict) and then ``v = v_reset``; Flatten dims exclude
the batch; the input is the same image at every step (direct coding). Returns the per-step
outputs ``[T, B, ...]`` and each neuron node's spike train ``[T, B, ...]`` (bool).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pair(v: Any) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _windows(x: np.ndarray, kernel, stride, dilation=(1, 1)):
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


def conv2d(x: np.ndarray, node: Any) -> np.ndarray:
    w = np.asarray(node.weight, np.float64)
    stride, dilation = _pair(node.stride), _pair(node.dilation)
    if isinstance(node.padding, str):
        assert node.padding == "valid" or stride == (1, 1)
        ph = (0, 0) if node.padding == "valid" else (dilation[0] * (w.shape[2] - 1) // 2,) * 2
        pw = (0, 0) if node.padding == "valid" else (dilation[1] * (w.shape[3] - 1) // 2,) * 2
    else:
        p = _pair(node.padding)
        ph, pw = (p[0], p[0]), (p[1], p[1])
    x = np.pad(x, ((0, 0), (0, 0), ph, pw))
    groups = int(node.groups)
    cin = w.shape[1]
    outs = []
    for g in range(groups):
        xg = x[:, g * cin : (g + 1) * cin]
        wg = w[g * (w.shape[0] // groups) : (g + 1) * (w.shape[0] // groups)]
        acc = None
        for (i, j), patch in _windows(xg, w.shape[2:], stride, dilation):
            term = np.einsum("bchw,oc->bohw", patch, wg[:, :, i, j])
            acc = term if acc is None else acc + term
        outs.append(acc)
    out = np.concatenate(outs, axis=1)
    bias = np.asarray(node.bias, np.float64).reshape(-1)
    return out + bias.reshape(1, -1, 1, 1) if bias.size else out


def pool(x: np.ndarray, node: Any, average: bool) -> np.ndarray:
    p = _pair(node.padding)
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    kernel = _pair(node.kernel_size)
    acc = sum(patch for _, patch in _windows(x, kernel, _pair(node.stride)))
    return acc / (kernel[0] * kernel[1]) if average else acc


def simulate(
    graph: Any, x: np.ndarray, T: int, dt: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``graph`` for ``T`` steps on the batch ``x``; return outputs and spike trains."""
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
            inp = sum(values[p] for p in preds[name])
            if kind == "Output":
                out = inp
            elif kind == "Conv2d":
                out = conv2d(inp, node)
            elif kind == "Affine":
                out = inp @ np.asarray(node.weight, np.float64).T + np.asarray(
                    node.bias, np.float64
                )
            elif kind == "Linear":
                out = inp @ np.asarray(node.weight, np.float64).T
            elif kind in ("AvgPool2d", "SumPool2d"):
                out = pool(inp, node, kind == "AvgPool2d")
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
