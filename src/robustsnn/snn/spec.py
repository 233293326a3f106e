"""The dynamics of one spiking layer's forward pass as one value.

:class:`Dynamics` is what the reference loops (``snn/dynamics.py``), the per-element backward
passes (``snn/estimator_backward.py``), the Triton launchers (``snn/triton_kernels.py``), the
membrane recorder (``snn/membranes.py``) and the threshold noise (``snn/encoding.py``) share:
the threshold, the number of steps, the leak, the reset, whether the input is static and the
initial membrane. The neuron (``snn/neuron.py``) builds one per forward call and hands it on
unchanged; nothing below it takes these as loose arguments. Only the Triton kernels themselves
take them as scalars (a kernel has no structs): the launchers unpack the value.

A leaf module (it imports nothing from the package), so every path can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Dynamics:
    """IF/LIF dynamics over ``steps`` steps (PAPER.md section 2)::

        h[t] = leak * u[t-1] + I[t],   s[t] = H(h[t] - theta),   o[t] = theta * s[t]
        u[t] = h[t] * (1 - s[t])  (hard reset)   or   h[t] - theta * s[t]  (soft reset)

    ``theta``: the threshold, a 0-dim tensor (it may carry a gradient: autograd functions take
    it, and ``init``, as their own tensor arguments besides this value). ``static``: the input
    is one ``[B, ...]`` current repeated at every step, not ``[T, B, ...]`` currents. ``init``:
    the initial membrane ``u[-1]``, None (zero, the paper's start), a 0-dim tensor or one value
    per neuron ``[B, ...]``.

    Frozen, compared and hashed by identity (``eq=False``: its fields hold tensors). Change a
    field with :func:`dataclasses.replace`.
    """

    theta: Tensor
    steps: int
    leak: float = 1.0
    soft_reset: bool = False
    static: bool = False
    init: Tensor | None = None

    def state_shape(self, inputs: Tensor) -> torch.Size:
        """One step's neuron shape ``[B, ...]`` of ``inputs`` (``[B, ...]`` static or
        ``[T, B, ...]``)."""
        return inputs.shape if self.static else inputs.shape[1:]

    def detached(self) -> Dynamics:
        """The same dynamics with the threshold and the initial membrane detached."""
        init = None if self.init is None else self.init.detach()
        return replace(self, theta=self.theta.detach(), init=init)


__all__ = ["Dynamics"]
