"""Spiking neuron layer (IF/LIF, hard/soft reset, one learnable threshold) on time-merged batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustsnn.snn.dynamics import BPTRFunction, BPTTFunction, if_forward
from robustsnn.snn.estimators import BPTR, BPTT, DEFAULT_ESTIMATOR, ANNProxy, Estimator

THRESHOLD_MIN = 0.03


@dataclass
class TimeContext:
    """State shared by all neurons of one SpikingNetwork during a forward pass.

    It is set by the network at the start of every forward call and holds no membrane state, so
    nothing survives between two calls (each attack iteration starts from ``u = 0``).
    """

    steps: int = 8
    batch: int = 0
    estimator: Estimator = DEFAULT_ESTIMATOR
    record: dict[str, torch.Tensor] | None = None
    calibrate: Any = None  # set by conversion to capture one layer's input current
    extra: dict[str, Any] = field(default_factory=dict)


class CalibrationCapture(Exception):
    """Raised by the layer under calibration to stop the forward pass once its input is seen."""

    def __init__(self, current: torch.Tensor) -> None:
        super().__init__("calibration capture")
        self.current = current


class SpikingNeuron(nn.Module):
    """IF (leak 1) or LIF neurons with hard or soft reset and one scalar threshold per layer.

    Input: currents ``[T*B, ...]`` (time-major, merged) or a static ``[B, ...]`` current that is
    the same at every step (the first layer under direct coding). Output: ``theta * spikes``
    as ``[T*B, ...]``. Under the ANN proxy estimator it is a ReLU.
    """

    def __init__(
        self,
        threshold: float = 1.0,
        leak: float = 1.0,
        reset: str = "hard",
        threshold_min: float = THRESHOLD_MIN,
    ) -> None:
        super().__init__()
        if reset not in ("hard", "soft"):
            raise ValueError(f"reset must be 'hard' or 'soft', not {reset!r}")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], not {leak}")
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.leak = float(leak)
        self.reset = reset
        self.threshold_min = float(threshold_min)
        self.name = ""
        self.context = TimeContext()

    def extra_repr(self) -> str:
        return f"threshold={self.threshold.item():.4g}, leak={self.leak}, reset={self.reset}"

    def clamp_threshold(self) -> None:
        """Keep the threshold at or above its minimum (called after every optimizer step)."""
        with torch.no_grad():
            self.threshold.clamp_(min=self.threshold_min)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if ctx.calibrate is self:
            raise CalibrationCapture(x.detach())
        if isinstance(ctx.estimator, ANNProxy):
            return torch.relu(x)
        steps, batch = ctx.steps, ctx.batch
        # channels-last [N, C, H, W] is a contiguous [N, H, W, C]: run the (elementwise)
        # dynamics on that view and hand back the same layout
        channels_last = (
            x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        )
        if channels_last:
            x = x.permute(0, 2, 3, 1)
        static = x.shape[0] == batch and steps != 1
        if not static and x.shape[0] != steps * batch:
            raise RuntimeError(
                f"spiking layer {self.name!r} got batch {x.shape[0]}, expected {batch} or "
                f"{steps}x{batch}; mixing time-merged and static tensors is not supported"
            )
        theta = self.threshold.clamp(min=self.threshold_min)
        inputs = x if static else x.view(steps, batch, *x.shape[1:])
        soft = self.reset == "soft"
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad)
        if not needs_grad:
            out, _ = if_forward(inputs, theta.detach(), steps, self.leak, soft, static, False)
        elif isinstance(ctx.estimator, BPTT):
            out = BPTTFunction.apply(
                inputs, theta, steps, self.leak, soft, static, ctx.estimator.surrogate
            )
        elif isinstance(ctx.estimator, BPTR):
            out = BPTRFunction.apply(inputs, theta, steps, self.leak, soft, static)
        else:
            raise TypeError(f"unsupported estimator {ctx.estimator!r}")
        if ctx.record is not None:
            spikes = out.detach().ne(0)
            ctx.record[self.name] = spikes.permute(0, 1, 4, 2, 3) if channels_last else spikes
        merged = out.reshape(steps * batch, *x.shape[1:])
        return merged.permute(0, 3, 1, 2) if channels_last else merged
