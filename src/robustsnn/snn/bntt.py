"""BNTT: batch normalization through time, a separate BatchNorm for every time step.

Kim & Panda, "Revisiting Batch Normalization for Training Low-Latency Deep Spiking Neural
Networks From Scratch", Frontiers in Neuroscience 15, 2021. A baseline of PAPER.md section 6:
instead of one BatchNorm shared by all T steps (what a converted SNN keeps), each step ``t`` has
its own statistics and affine parameters, so the normalization can follow how the input
distribution changes over the simulation.

:func:`bntt_transform` swaps every ``BatchNorm1d``/``BatchNorm2d`` of a spiking body for a
:class:`BatchNormThroughTime` holding T copies of it (so a converted network starts out
computing exactly what it computed before). It is registered as
``robustsnn.io.formats.BODY_TRANSFORMS["bntt"]`` when this module is imported, which is how a
checkpoint whose metadata lists ``"bntt"`` in ``transforms`` is rebuilt (T from ``meta["T"]``).
Unlike the original BNTT, each step's BatchNorm keeps its bias (the original learns a
per-step scale only); the number of steps is fixed when the layer is built.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from robustsnn.errors import UserError
from robustsnn.io.formats import register_body_transform
from robustsnn.snn.estimators import ANNProxy
from robustsnn.snn.neuron import SpikingNeuron, TimeContext

BNTT = "bntt"
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class BatchNormThroughTime(nn.Module):
    """T BatchNorms; step ``t`` of a time-merged input ``[T*B, ...]`` goes through ``bns[t]``.

    Input: time-major merged ``[T*B, ...]`` or a static ``[B, ...]`` tensor (a BatchNorm right
    after the first conv under direct input coding), which is the same at every step and is
    expanded to T copies, each normalized by its own step's BatchNorm; the output is always
    ``[T*B, ...]``. Under the ANN proxy estimator (no time axis, ``[B, ...]`` in and out) the
    output is the mean over steps of ``bns[t](x)``: for a constant input that is the average
    current the next layer receives per step, the rate picture the ANN proxy stands for.

    The layer reads T and B from the time context of the network's neurons (``clock``, any
    neuron of the same body, held as a plain reference, not a submodule), so it must run
    inside the :class:`~robustsnn.snn.SpikingNetwork` that owns that neuron.
    """

    def __init__(self, batchnorm: _BatchNorm, steps: int, clock: SpikingNeuron) -> None:
        super().__init__()
        if int(steps) < 1:
            raise ValueError(f"BNTT needs steps >= 1, got {steps}")
        self.steps = int(steps)
        self.bns = nn.ModuleList(copy.deepcopy(batchnorm) for _ in range(self.steps))
        self.__dict__["_clock"] = clock  # not a submodule: no duplicate parameters

    @property
    def clock(self) -> SpikingNeuron:
        """The neuron whose time context (set by the SpikingNetwork) gives T and the batch."""
        clock = self.__dict__["_clock"]
        assert isinstance(clock, SpikingNeuron)
        return clock

    @property
    def context(self) -> TimeContext:
        return self.clock.context

    def extra_repr(self) -> str:
        return f"steps={self.steps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if isinstance(ctx.estimator, ANNProxy):
            return torch.stack([bn(x) for bn in self.bns]).mean(0)
        steps, batch = ctx.steps, ctx.batch
        if steps != self.steps:
            raise RuntimeError(
                f"BNTT layer has {self.steps} per-step BatchNorms but the network runs T={steps}; "
                f"a BNTT network only runs at the T it was built with ({self.steps})"
            )
        if x.shape[0] == batch and steps != 1:
            chunks = [x] * steps
        elif x.shape[0] == steps * batch:
            chunks = list(x.split(batch))
        else:
            raise RuntimeError(
                f"BNTT layer got batch {x.shape[0]}, expected {batch} or {steps}x{batch}"
            )
        return torch.cat([bn(chunk) for bn, chunk in zip(self.bns, chunks, strict=True)])


def bntt_transform(body: nn.Module, meta: Mapping[str, Any]) -> nn.Module:
    """Replace every BatchNorm1d/2d of ``body`` (in place) by a :class:`BatchNormThroughTime`
    with ``meta["T"]`` steps; returns ``body``. The body must already hold its spiking neurons."""
    if "T" not in meta:
        raise UserError("the BNTT transform needs T (metadata key 'T'): the number of BatchNorms")
    steps = int(meta["T"])
    neurons = [m for m in body.modules() if isinstance(m, SpikingNeuron)]
    if not neurons:
        raise UserError("BNTT needs a spiking body: replace the ReLUs by neurons first")
    names = [name for name, m in body.named_modules() if isinstance(m, _BATCHNORMS)]
    if not names:
        raise UserError("BNTT needs a model with BatchNorm layers; this one has none")
    for name in names:
        bn = body.get_submodule(name)
        assert isinstance(bn, _BatchNorm)
        body.set_submodule(name, BatchNormThroughTime(bn, steps, neurons[0]))
    return body


register_body_transform(BNTT, bntt_transform)

__all__ = ["BNTT", "BatchNormThroughTime", "bntt_transform"]
