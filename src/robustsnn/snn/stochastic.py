"""The draws of a random spiking network: Bernoulli ("Poisson") input spikes and the input
currents of noisy thresholds, with the names of the input encodings.

What they mean, their gradients and how a network is switched to them:
:mod:`robustsnn.snn.encoding`, which re-exports these names. They live here, below the network
and the neuron that run them, so that ``encoding`` can configure a
:class:`~robustsnn.snn.network.SpikingNetwork` without an import circle.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustsnn.snn.spec import Dynamics

INPUT_ENCODINGS = ("direct", "poisson")


def poisson_encode(x: Tensor, steps: int) -> Tensor:
    """Bernoulli rate code of ``x`` in [0, 1]: ``[T*B, ...]`` time-major spikes (0/1 values)
    whose gradient is straight-through (that of the expected value ``x``)."""
    expanded = x.unsqueeze(0).expand(steps, *x.shape)
    spikes = torch.bernoulli(expanded.detach().clamp(0.0, 1.0))
    coded = expanded + (spikes - expanded).detach()
    return coded.reshape(steps * x.shape[0], *x.shape[1:])


def threshold_noise_currents(inputs: Tensor, dynamics: Dynamics, sigma: float) -> Tensor:
    """Input currents ``[T, B, ...]`` whose noise-free dynamics fire as the neuron with a
    threshold ``theta (1 + sigma xi[t])`` would (exact for soft reset; see
    :mod:`robustsnn.snn.encoding`).

    ``inputs``: ``[B, ...]`` (``dynamics.static``: the same at every step) or ``[T, B, ...]``;
    the currents returned are per step (run them with ``static=False``)."""
    theta, leak, steps = dynamics.theta, dynamics.leak, dynamics.steps
    static = dynamics.static
    currents = inputs.unsqueeze(0).expand(steps, *inputs.shape) if static else inputs
    noise = torch.randn(currents.shape, dtype=currents.dtype, device=currents.device)
    noise = noise.mul_(sigma * theta.detach())
    shift = -noise
    if steps > 1:
        shift[1:] += leak * noise[:-1]
    return currents + shift
