"""Stochastic parts of a spiking network: rate-coded (Poisson/Bernoulli) input, noisy thresholds.

Both draw from torch's global generator, so an evaluation that seeds it
(:mod:`robustsnn.evaluation.stochastic`) repeats bit for bit, and a training run repeats under
its ``--seed``.

- ``input_encoding="poisson"``: at every one of the T steps each pixel of an image in [0, 1]
  emits a spike (1) with probability equal to its intensity and 0 otherwise (Bernoulli rate
  coding, called Poisson coding in snnTorch's ``spikegen.rate`` and SpikingJelly's
  ``PoissonEncoder``). The mean over T steps is an unbiased estimate of the image.
  **Gradient: straight-through.** The spikes' gradient with respect to the pixel is taken as 1,
  the derivative of their expected value ``E[s] = x``: the standard estimator for rate coding,
  and the one an adaptive attacker uses (with expectation over the draws). The ANN proxy
  estimator sees the expected input (the image itself).
- ``threshold_noise=sigma``: every neuron's threshold at every step is ``theta (1 + sigma
  xi)`` with ``xi ~ N(0, 1)`` drawn per neuron, step and sample (noisy spiking neurons, as in
  the noisy-neuron defenses). Implemented exactly, for soft reset, by adding
  ``-eps[t] + leak * eps[t-1]`` to the input current with ``eps[t] = sigma theta xi[t]``: the
  membrane then runs ``eps[t]`` below the noise-free one at every step, so the neuron fires
  when ``h[t] >= theta + eps[t]``. With hard reset the same current leaves a residual
  ``leak * eps[t-1]`` after a spike (threshold noise plus a small membrane noise). The noise is
  a constant to autograd: gradients are those of the noise-free dynamics at the drawn spikes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.snn.spec import Dynamics

INPUT_ENCODINGS = ("direct", "poisson")


def check_stochastic_options(
    input_encoding: str = "direct", threshold_noise: float = 0.0, where: str = ""
) -> None:
    """Refuse, in one line naming the option, an unknown encoding or a bad noise level."""
    if input_encoding not in INPUT_ENCODINGS:
        raise UserError(
            f"{where}input_encoding must be one of {', '.join(INPUT_ENCODINGS)}, got "
            f"{input_encoding!r}"
        )
    if (
        isinstance(threshold_noise, bool)
        or not isinstance(threshold_noise, (int, float))
        or not math.isfinite(threshold_noise)
        or threshold_noise < 0
    ):
        raise UserError(
            f"{where}threshold_noise must be a number >= 0 (std relative to the threshold), "
            f"got {threshold_noise!r}"
        )


def poisson_encode(x: Tensor, steps: int) -> Tensor:
    """Bernoulli rate code of ``x`` in [0, 1]: ``[T*B, ...]`` time-major spikes (0/1 values)
    whose gradient is straight-through (that of the expected value ``x``)."""
    expanded = x.unsqueeze(0).expand(steps, *x.shape)
    spikes = torch.bernoulli(expanded.detach().clamp(0.0, 1.0))
    coded = expanded + (spikes - expanded).detach()
    return coded.reshape(steps * x.shape[0], *x.shape[1:])


def threshold_noise_currents(inputs: Tensor, dynamics: Dynamics, sigma: float) -> Tensor:
    """Input currents ``[T, B, ...]`` whose noise-free dynamics fire as the neuron with a
    threshold ``theta (1 + sigma xi[t])`` would (exact for soft reset; see the module doc).

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


def configure_stochastic(
    snn: nn.Module, input_encoding: str = "direct", threshold_noise: float = 0.0
) -> nn.Module:
    """Set a SpikingNetwork's input encoding and every neuron's threshold noise (checked)."""
    from robustsnn.snn.network import SpikingNetwork

    check_stochastic_options(input_encoding, threshold_noise)
    if not isinstance(snn, SpikingNetwork):
        raise UserError("input encoding and threshold noise apply to spiking networks only")
    snn.input_encoding = input_encoding
    for neuron in snn.neurons():
        neuron.threshold_noise = float(threshold_noise)
    return snn
