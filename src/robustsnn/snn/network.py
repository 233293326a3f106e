"""SpikingNetwork: an ANN body whose ReLUs are spiking neurons, run for T steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robustsnn.snn.estimators import ANNProxy, Estimator
from robustsnn.snn.membranes import MembraneTrace
from robustsnn.snn.neuron import RUN_STATE_KEY, SpikingNeuron, TimeContext
from robustsnn.snn.run_state import RunState
from robustsnn.snn.stochastic import INPUT_ENCODINGS, poisson_encode

# On CPU the network runs in channels-last (NHWC) layout: oneDNN's convolutions are faster
# there (benchmarks/: forward+backward about 7%, forward up to 30% on the 2-core EPYC), and the
# neurons work on the same memory without a copy. Convolutions sum in another order than in
# NCHW, so logits differ by rounding (about 1e-3 on the benchmark VGG); every path (training,
# attacks, evaluation) goes through this forward, so what is attacked is what is evaluated.
CHANNELS_LAST_ON_CPU = True


class SpikingNetwork(nn.Module):
    """Direct input coding, time merged into the batch, non-spiking readout averaged over T.

    ``body`` is an ANN whose ``nn.ReLU`` modules were replaced by :class:`SpikingNeuron`. The
    image is the input current of the first layer at every step; stateless layers (conv, BN,
    pooling, linear) run once on ``[T*B, ...]``; the last linear layer's outputs are averaged
    over T. ``forward`` returns mean logits ``[B, classes]``, so any attack can use it.

    ``input_encoding="poisson"`` replaces direct coding by Bernoulli rate coding of the image
    (a random network; :mod:`robustsnn.snn.encoding`, straight-through gradient).
    """

    def __init__(self, body: nn.Module, T: int = 8, input_encoding: str = "direct") -> None:
        super().__init__()
        self.body = body
        self.context = TimeContext(steps=int(T))
        for name, module in body.named_modules():
            if isinstance(module, SpikingNeuron):
                module.name = name
                module.context = self.context
        if not self.neurons():
            raise ValueError("SpikingNetwork body has no SpikingNeuron layers")
        self.T = int(T)
        if input_encoding not in INPUT_ENCODINGS:
            raise ValueError(
                f"input_encoding must be one of {INPUT_ENCODINGS}, not {input_encoding!r}"
            )
        self.input_encoding = input_encoding

    @property
    def T(self) -> int:
        """Number of time steps per inference (changeable: calibrate at 100, infer at 8)."""
        return self.context.steps

    @T.setter
    def T(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"T must be >= 1, not {value}")
        self.context.steps = int(value)

    @property
    def estimator(self) -> Estimator:
        return self.context.estimator

    def neurons(self) -> list[SpikingNeuron]:
        """Spiking layers in registration order (the order conversion calibrates them)."""
        return [m for m in self.body.modules() if isinstance(m, SpikingNeuron)]

    def thresholds(self) -> dict[str, float]:
        return {n.name: float(n.threshold.detach()) for n in self.neurons()}

    def threshold_parameters(self) -> list[nn.Parameter]:
        return [n.threshold for n in self.neurons()]

    def clamp_thresholds(self) -> None:
        for n in self.neurons():
            n.clamp_threshold()

    @contextmanager
    def use_estimator(self, estimator: Estimator) -> Iterator[SpikingNetwork]:
        """Run forward/backward passes inside the block with ``estimator``'s backward pass."""
        previous = self.context.estimator
        self.context.estimator = estimator
        try:
            yield self
        finally:
            self.context.estimator = previous

    def with_estimator(self, estimator: Estimator) -> nn.Module:
        """An ``nn.Module`` x -> mean logits that always uses ``estimator`` (for attacks)."""
        return EstimatorView(self, estimator)

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        """Record each layer's binary spikes ``[T, B, ...]`` (bool) of the passes in the block."""
        record: dict[str, torch.Tensor] = {}
        previous = self.context.record
        self.context.record = record
        try:
            yield record
        finally:
            self.context.record = previous

    @contextmanager
    def recording_membranes(self, enabled: bool = True) -> Iterator[list[MembraneTrace]]:
        """Record each spiking layer's differentiable pre-spike membranes (one
        :class:`~robustsnn.snn.membranes.MembraneTrace` per layer and forward pass, in call
        order) of the passes in the block; ``enabled=False`` pauses an outer recording (the
        attacks inside a training step). Off by default: nothing is computed outside."""
        record: list[MembraneTrace] = []
        previous = self.context.membranes
        self.context.membranes = record if enabled else None
        try:
            yield record
        finally:
            self.context.membranes = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        ctx.batch = x.shape[0]
        spiking = not isinstance(ctx.estimator, ANNProxy)  # the proxy stays the ANN, bit for bit
        if spiking and self.input_encoding == "poisson":
            x = poisson_encode(x, ctx.steps)  # [T*B, ...]; the batch stays ctx.batch
        if CHANNELS_LAST_ON_CPU and spiking and x.dim() == 4 and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.body(x)
        if isinstance(ctx.estimator, ANNProxy):
            return out
        if out.shape[0] == ctx.batch and ctx.steps != 1:
            raise RuntimeError(
                "the network output has no time axis: the readout is not after a spiking layer"
            )
        return out.view(ctx.steps, ctx.batch, *out.shape[1:]).mean(0)

    def describe(self) -> dict[str, Any]:
        """Neuron settings and thresholds, for checkpoint metadata."""
        neurons = self.neurons()
        described = {
            "T": self.T,
            "thresholds": self.thresholds(),
            "leak": neurons[0].leak,
            "reset": neurons[0].reset,
            "threshold_min": neurons[0].threshold_min,
        }
        # a random network says so (a deterministic one's metadata stays as it was)
        if self.input_encoding != "direct":
            described["input_encoding"] = self.input_encoding
        if neurons[0].threshold_noise:
            described["threshold_noise"] = neurons[0].threshold_noise
        return described


class EstimatorView(nn.Module):
    """A SpikingNetwork seen through one gradient estimator; shares its parameters.

    A stateful estimator (ASSG) keeps its per-run state here, driven by the attack hooks
    ``begin_attack_run`` / ``select_attack_rows`` (see :mod:`robustsnn.snn.run_state`); two
    views never share state.
    """

    def __init__(self, network: SpikingNetwork, estimator: Estimator) -> None:
        super().__init__()
        self.network = network
        self.estimator = estimator
        self.run_state: RunState | None = RunState() if estimator.stateful else None

    def begin_attack_run(self, n: int | None = None) -> None:
        """A new attack run on ``n`` samples: forget the stateful estimator's state."""
        if self.run_state is not None:
            self.run_state.begin(n)

    def select_attack_rows(self, rows: torch.Tensor | None) -> None:
        """The rows of the current run's batch that the next forward passes cover."""
        if self.run_state is not None:
            self.run_state.select(rows)

    @property  # type: ignore[override]
    def training(self) -> bool:
        """A view has no mode of its own: it is in the mode of its network (eval stays eval)."""
        network = self.__dict__.get("_modules", {}).get("network")
        return bool(network.training) if network is not None else True

    @training.setter
    def training(self, mode: bool) -> None:
        del mode  # train()/eval() on the view reach the network, its child module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.network.context.extra
        previous = extra.get(RUN_STATE_KEY)
        extra[RUN_STATE_KEY] = self.run_state
        try:
            with self.network.use_estimator(self.estimator):
                return self.network(x)
        finally:
            extra[RUN_STATE_KEY] = previous
