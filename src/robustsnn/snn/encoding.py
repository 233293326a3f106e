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

from torch import nn

from robustsnn.errors import UserError
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.stochastic import INPUT_ENCODINGS, poisson_encode, threshold_noise_currents

__all__ = [
    "INPUT_ENCODINGS",
    "check_stochastic_options",
    "configure_stochastic",
    "poisson_encode",
    "threshold_noise_currents",
]


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


def configure_stochastic(
    snn: nn.Module, input_encoding: str = "direct", threshold_noise: float = 0.0
) -> nn.Module:
    """Set a SpikingNetwork's input encoding and every neuron's threshold noise (checked)."""
    check_stochastic_options(input_encoding, threshold_noise)
    if not isinstance(snn, SpikingNetwork):
        raise UserError("input encoding and threshold noise apply to spiking networks only")
    snn.input_encoding = input_encoding
    for neuron in snn.neurons():
        neuron.threshold_noise = float(threshold_noise)
    return snn
