"""What the SpikingJelly and snnTorch doors share: reading a framework neuron's numbers, the
neurons neither door runs (with the reason), counting a source model's spikes, and the record
an adapted or wrapped network keeps of its source.

:mod:`robustsnn.interop.adapters` (``nn.Sequential`` models rebuilt as a graph) and
:mod:`robustsnn.interop.stepwise` (class-style models run through their own forward) both read
from here; neither imports the other's private names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.interop.verify import Verification

__all__ = ["SJ_WHY", "SNNTORCH_WHY", "AdapterInfo", "SpikeCounter", "scalar"]


@dataclass
class AdapterInfo:
    """What an adapter read and assumed, kept on the adapted network as ``snn.adapter``."""

    framework: str
    version: str
    T: int
    readout: str
    time_convention: str
    reset_gradient: str
    notes: list[str] = field(default_factory=list)
    verification: Verification | None = None


def scalar(name: str, what: str, value: Any) -> float:
    """One number for a whole layer; per-neuron values are refused."""
    tensor = torch.as_tensor(value).detach().double().reshape(-1)
    if tensor.numel() == 0:
        raise UserError(f"neuron {name!r}: {what} is empty")
    if not torch.all(tensor == tensor[0]):
        raise UserError(
            f"neuron {name!r}: {what} differs between neurons (per-neuron values); robustsnn "
            "runs one value per layer"
        )
    return float(tensor[0])


# SpikingJelly and snnTorch neuron classes that have no robustsnn equivalent, with the reason
SJ_WHY = {
    "ParametricLIFNode": "its time constant is learnt through a sigmoid (a charge formula "
    "robustsnn does not run)",
    "HalfThresholdIFNode": "it starts from v = theta/2 (SpikingJelly's ann2snn node)",
    "QIFNode": "quadratic integrate-and-fire dynamics",
    "EIFNode": "exponential integrate-and-fire dynamics",
    "IzhikevichNode": "two-variable Izhikevich dynamics",
    "KLIFNode": "its output is a nonlinear function of the membrane, not a binary spike",
    "LIAFNode": "it emits an analog activation, not binary spikes",
    "PSN": "parallel spiking neurons mix time steps with a learnt matrix",
    "MaskedPSN": "parallel spiking neurons mix time steps with a learnt matrix",
    "SlidingPSN": "parallel spiking neurons mix time steps with a learnt matrix",
    "NonSpikingIFNode": "a non-spiking integrator readout has no robustsnn layer",
    "NonSpikingLIFNode": "a non-spiking integrator readout has no robustsnn layer",
}

SNNTORCH_WHY = {
    "RLeaky": "it has recurrent connections",
    "RSynaptic": "it has recurrent connections and a synaptic current",
    "Synaptic": "its synaptic current is a second state robustsnn neurons do not have",
    "Alpha": "its alpha-shaped synapse needs two states",
    "Lapicque": "its RC parameterisation is not checked against robustsnn's leak",
    "SLSTM": "it is a spiking LSTM",
    "SConv2dLSTM": "it is a spiking convolutional LSTM",
}


class SpikeCounter:
    """Forward hooks counting each sample's spikes over the source's neurons and steps."""

    def __init__(self, neurons: Sequence[nn.Module], batch: int) -> None:
        self.total = torch.zeros(batch, dtype=torch.float64)
        self.handles = [n.register_forward_hook(self._hook) for n in neurons]

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        del inputs
        spikes = output[0] if isinstance(output, tuple) else output
        fired = spikes.detach().ne(0).double().cpu()
        if getattr(module, "step_mode", "s") == "m":  # [T, B, ...]
            fired = fired.transpose(0, 1)
        self.total += fired.reshape(self.total.shape[0], -1).sum(1)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
