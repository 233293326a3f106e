"""Membrane potentials of a forward pass, recorded on request and differentiable.

The spiking layers' fused forward keeps its membranes inside one autograd node, where a loss
cannot reach them. A training term on the membranes (the membrane-margin regularizer of
:mod:`robustsnn.training.regularizers`: neurons whose membrane ends a step near the threshold
are the ones a small input change flips) needs them as ordinary tensors with a gradient. Inside
``SpikingNetwork.recording_membranes()`` every spiking layer appends one
:class:`MembraneTrace` per forward pass: its pre-spike membranes ``h[t]``, rebuilt from the
layer's input currents and the spikes the forward emitted,

    h[t] = leak * u[t-1] + I[t],   u[t] = h[t] - theta * s[t] (soft)  or  h[t] * (1 - s[t]) (hard)

with ``u[-1]`` the layer's initial membrane and the spikes ``s[t]`` taken as constants (their
values are the forward's, bit for bit on CPU; no surrogate runs through the reset). So ``h`` is
differentiable in the input currents (and, through them, in everything before the layer, along
the estimator's backward), in the threshold (initial membrane ``v_init * theta``, soft reset) and
in the initial membrane; the recomputation is a few elementwise operations per step.

Outside the context nothing is recorded and nothing is computed (one attribute test per layer
call). The ANN proxy records nothing (it has no membranes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustsnn.snn.spec import Dynamics


@dataclass(frozen=True)
class MembraneTrace:
    """One layer's membranes in one forward pass: ``h`` ``[T, B, n]`` (``n`` neurons per
    sample, flattened in the layout the layer ran in) and its threshold ``theta`` (0-dim, as
    used by the forward: clamped to its minimum)."""

    layer: str
    h: Tensor
    theta: Tensor


def membrane_trace(
    layer: str, inputs: Tensor, emitted: Tensor, dynamics: Dynamics
) -> MembraneTrace:
    """The pre-spike membranes of one spiking layer's forward (see the module docstring).

    ``inputs``: the currents as the layer ran them (``[T, B, ...]``, or a static ``[B, ...]``);
    ``emitted``: the layer's output ``theta * s`` (any shape with ``T * B * n`` elements; only
    which entries are non-zero is read); ``dynamics``: the layer's, its threshold and initial
    membrane (None = 0, a 0-dim tensor, or one per neuron ``[B, ...]``) as the forward used
    them (the trace differentiates them).
    """
    theta, steps, leak = dynamics.theta, dynamics.steps, dynamics.leak
    soft_reset, static, init = dynamics.soft_reset, dynamics.static, dynamics.init
    batch = inputs.shape[0] if static else inputs.shape[1]
    currents = inputs.reshape(1 if static else steps, batch, -1)
    spikes = emitted.detach().reshape(steps, batch, -1).ne(0).to(currents.dtype)
    u: Tensor | None = None
    if init is not None:
        u = init if init.dim() == 0 else init.reshape(batch, -1)
    membranes = []
    for t in range(steps):
        current = currents[0 if static else t]
        h = current if u is None else (u * leak if leak != 1.0 else u) + current
        membranes.append(h)
        if t < steps - 1:
            s = spikes[t]
            u = h - theta * s if soft_reset else h * (1.0 - s)
    return MembraneTrace(layer, torch.stack(membranes), theta)


__all__ = ["MembraneTrace", "membrane_trace"]
