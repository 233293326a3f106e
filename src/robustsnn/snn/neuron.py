"""Spiking neuron layer (IF/LIF, hard/soft reset, one learnable threshold) on time-merged batches.

Backends. A layer runs its forward and backward on one of four backends, chosen from the table
:data:`BACKENDS` for the gradient estimator of the network's time context: the first row whose
test accepts the estimator. The neuron chooses when that estimator changes (another object in
``context.estimator``; :attr:`SpikingNeuron.backend`) and keeps the choice, so a forward call
makes no type tests::

    backend       accepts                                  runs
    -----------   --------------------------------------   ---------------------------------------
    ann-proxy     ANNProxy                                 ReLU, or QCFS for a layer converted from
                                                           a QCFS ANN (no spiking dynamics)
    bptt          BPTT with the reset path (exact type)    dynamics.bptt: fused forward and BPTT
    bptr          BPTR                                     dynamics.bptr: fused forward, BPTR
    per-element   every other estimator: BPTT -dr,         estimator_backward.spiking_layer:
                  bptt-rel, ASSG, PDSG, HART, RGA          ElementwiseBPTT / RateGradient

``bptt`` and ``bptr`` accept exactly the estimators of :func:`~robustsnn.snn.estimators.
uses_fused_kernels`. Whatever the backend, a spiking forward that needs no gradient (under
``torch.no_grad()``, or when neither the input nor the threshold requires one) runs
``dynamics.if_forward`` instead: the same spikes without an autograd node. Every backend gets
the layer's dynamics as one :class:`~robustsnn.snn.spec.Dynamics` value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from robustsnn.models.qcfs import qcfs
from robustsnn.snn.dynamics import bptr, bptt, if_forward
from robustsnn.snn.estimator_backward import spiking_layer
from robustsnn.snn.estimators import BPTR, BPTT, DEFAULT_ESTIMATOR, ANNProxy, Estimator
from robustsnn.snn.membranes import MembraneTrace, membrane_trace
from robustsnn.snn.run_state import RunState
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.stochastic import threshold_noise_currents

THRESHOLD_MIN = 0.03
EMIT_MODES = ("scaled", "binary")


def strict_threshold(theta: torch.Tensor) -> torch.Tensor:
    """The threshold ``theta'`` for which ``h >= theta'`` holds exactly when ``h > theta``.

    ``theta'`` is the next float above ``theta`` (same dtype as the membranes), so the dynamics'
    ``>=`` rule fires on the strict rule of NIR, snnTorch and Norse, bit for bit, with every
    estimator (the hard-reset mask ``h < theta'`` is ``h <= theta``). The gradient reaches
    ``theta`` unchanged; surrogates see ``h - theta'``, one ulp from ``h - theta``.
    """
    fixed = theta.detach()
    return theta + (torch.nextafter(fixed, torch.full_like(fixed, float("inf"))) - fixed)


RUN_STATE_KEY = "run_state"
"""Key of :class:`robustsnn.snn.run_state.RunState` in ``TimeContext.extra`` (stateful estimators)."""


def _channel_dim(sample_dims: int, channels_last: bool) -> int | None:
    """Index of the channel axis in one sample's shape (None for a flat, linear layer)."""
    if sample_dims < 2:
        return None
    return sample_dims - 1 if channels_last else 0


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
    membranes: list[MembraneTrace] | None = None  # SpikingNetwork.recording_membranes()
    calibrate: Any = None  # set by conversion to capture one layer's input current
    extra: dict[str, Any] = field(default_factory=dict)


class LayerSite(NamedTuple):
    """Where a layer runs: what the per-element estimators need besides the dynamics (the
    layer's name and channel axis for ASSG's and PDSG's statistics, the attack run's state)."""

    layer: str
    channel_dim: int | None
    state: RunState | None


LayerRun = Callable[[torch.Tensor, Dynamics, Estimator, LayerSite], torch.Tensor]
"""``(inputs, dynamics, estimator, site) -> theta * s [T, B, ...]``: one backend's layer."""


def _run_exact(
    inputs: torch.Tensor, dynamics: Dynamics, estimator: Estimator, site: LayerSite
) -> torch.Tensor:
    """The forward without autograd (no gradient needed), for every estimator."""
    del estimator, site
    out, _ = if_forward(inputs, dynamics.detached(), False)
    return out


def _run_bptt(
    inputs: torch.Tensor, dynamics: Dynamics, estimator: Estimator, site: LayerSite
) -> torch.Tensor:
    del site
    return bptt(inputs, dynamics, cast(BPTT, estimator).surrogate)


def _run_bptr(
    inputs: torch.Tensor, dynamics: Dynamics, estimator: Estimator, site: LayerSite
) -> torch.Tensor:
    del estimator, site
    return bptr(inputs, dynamics)


def _run_per_element(
    inputs: torch.Tensor, dynamics: Dynamics, estimator: Estimator, site: LayerSite
) -> torch.Tensor:
    # the estimators of the later attack literature (ASSG, PDSG, RGA, HART, relative widths,
    # detached reset): per-element backward, state per attack run
    return spiking_layer(
        inputs,
        dynamics,
        estimator,
        layer=site.layer,
        channel_dim=site.channel_dim,
        state=site.state,
    )


def _is_proxy(estimator: Estimator) -> bool:
    return isinstance(estimator, ANNProxy)


def _is_fused_bptt(estimator: Estimator) -> bool:
    return type(estimator) is BPTT and not estimator.detach_reset


def _is_bptr(estimator: Estimator) -> bool:
    return isinstance(estimator, BPTR)


def _any(estimator: Estimator) -> bool:
    del estimator
    return True


@dataclass(frozen=True)
class Backend:
    """One row of :data:`BACKENDS`: a name, which estimators it accepts, and the layer it runs
    (None: the ANN proxy, which runs no spiking dynamics)."""

    name: str
    accepts: Callable[[Estimator], bool]
    run: LayerRun | None


BACKENDS: tuple[Backend, ...] = (
    Backend("ann-proxy", _is_proxy, None),
    Backend("bptt", _is_fused_bptt, _run_bptt),
    Backend("bptr", _is_bptr, _run_bptr),
    Backend("per-element", _any, _run_per_element),
)
"""The backend table (see the module docstring); the first row that accepts an estimator wins."""


def select_backend(estimator: Estimator) -> Backend:
    """The row of :data:`BACKENDS` for ``estimator``."""
    return next(backend for backend in BACKENDS if backend.accepts(estimator))


class CalibrationCapture(Exception):
    """Raised by the layer under calibration to stop the forward pass once its input is seen."""

    def __init__(self, current: torch.Tensor) -> None:
        super().__init__("calibration capture")
        self.current = current


class SpikingNeuron(nn.Module):
    """IF (leak 1) or LIF neurons with hard or soft reset and one scalar threshold per layer.

    Input: currents ``[T*B, ...]`` (time-major, merged) or a static ``[B, ...]`` current that is
    the same at every step (the first layer under direct coding). Output: ``theta * spikes``
    as ``[T*B, ...]``. Under the ANN proxy estimator it is a ReLU, or the QCFS activation
    ``qcfs(x, theta, proxy_levels)`` for a layer converted from a QCFS ANN (the proxy stays the
    network the SNN approximates).

    Initial membrane ``u[-1] = v_init * theta + init_membrane``: ``v_init`` 0 is the paper's
    start, 1/2 turns the spike count under a constant input into rounding instead of floor
    (OPI/QCFS); ``init_membrane`` (a buffer of one sample's neuron shape, only when
    ``init_shape`` is given) holds a per-neuron correction fitted after conversion.

    ``threshold_noise`` (attribute, default 0): the std, relative to the threshold, of a
    Gaussian noise on the threshold per neuron, step and sample (a random neuron;
    :mod:`robustsnn.snn.encoding`).
    """

    init_membrane: torch.Tensor | None
    # the backend chosen for the estimator _backend_estimator (class defaults: none chosen yet)
    _backend_estimator: Estimator | None = None
    _backend: Backend | None = None

    def __init__(
        self,
        threshold: float = 1.0,
        leak: float = 1.0,
        reset: str = "hard",
        threshold_min: float = THRESHOLD_MIN,
        v_init: float = 0.0,
        proxy_levels: int | None = None,
        init_shape: tuple[int, ...] | None = None,
        emit: str = "scaled",
        fire_at_equal: bool = True,
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
        self.v_init = float(v_init)
        self.proxy_levels = None if proxy_levels is None else int(proxy_levels)
        if emit not in EMIT_MODES:
            raise ValueError(f"emit must be one of {EMIT_MODES}, not {emit!r}")
        # emit "binary": 0/1 spikes (a foreign or imported network whose next layer holds theta);
        # fire_at_equal False: spike only when h > theta (NIR, snnTorch, Norse), not at h == theta
        self.emit = emit
        self.fire_at_equal = bool(fire_at_equal)
        self.register_buffer(
            "init_membrane", None if init_shape is None else torch.zeros(tuple(init_shape))
        )
        self.name = ""
        self.context = TimeContext()
        self.threshold_noise = 0.0

    def extra_repr(self) -> str:
        text = f"threshold={self.threshold.item():.4g}, leak={self.leak}, reset={self.reset}"
        if self.v_init:
            text += f", v_init={self.v_init}"
        if self.proxy_levels is not None:
            text += f", proxy=qcfs(L={self.proxy_levels})"
        if self.emit != "scaled" or not self.fire_at_equal:
            text += f", emit={self.emit}, fire_at_equal={self.fire_at_equal}"
        if self.threshold_noise:
            text += f", threshold_noise={self.threshold_noise}"
        return text

    def initial_membrane(
        self, theta: torch.Tensor, batch: int, sample_shape: torch.Size, channels_last: bool
    ) -> torch.Tensor | None:
        """``u[-1]``: None (zero), a 0-dim tensor, or ``[batch, *sample_shape]`` with the
        per-neuron correction (in the layout the dynamics run in)."""
        if self.v_init == 0.0 and self.init_membrane is None:
            return None
        init = theta * self.v_init
        if self.init_membrane is None:
            return init
        offset = self.init_membrane
        if channels_last:
            offset = offset.permute(1, 2, 0)
        if offset.shape != sample_shape:
            raise RuntimeError(
                f"spiking layer {self.name!r}: initial membrane of shape {tuple(offset.shape)} "
                f"for inputs of shape {tuple(sample_shape)}"
            )
        return (init + offset).expand(batch, *sample_shape)

    def clamp_threshold(self) -> None:
        """Keep the threshold at or above its minimum (called after every optimizer step)."""
        with torch.no_grad():
            self.threshold.clamp_(min=self.threshold_min)

    @property
    def backend(self) -> Backend:
        """The backend of the context's estimator: chosen from :data:`BACKENDS` when the
        estimator changes, then kept."""
        estimator = self.context.estimator
        if estimator is not self._backend_estimator or self._backend is None:
            self._backend = select_backend(estimator)
            self._backend_estimator = estimator
        return self._backend

    def _proxy(self, x: torch.Tensor) -> torch.Tensor:
        """The ANN proxy: ReLU (divided by theta for binary emission), or QCFS."""
        if self.proxy_levels is None:
            proxy = torch.relu(x)  # binary emission: relu(x) / theta, the rate it approximates
            if self.emit == "binary":
                proxy = proxy / self.threshold.clamp(min=self.threshold_min)
            return proxy
        return qcfs(x, self.threshold.clamp(min=self.threshold_min), self.proxy_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if ctx.calibrate is self:
            raise CalibrationCapture(x.detach())
        backend = self.backend
        if backend.run is None:
            return self._proxy(x)
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
        if not self.fire_at_equal:
            theta = strict_threshold(theta)
        inputs = x if static else x.view(steps, batch, *x.shape[1:])
        if self.threshold_noise:
            noisy = Dynamics(theta, steps, self.leak, static=static)
            inputs = threshold_noise_currents(inputs, noisy, self.threshold_noise)
            static = False
        init = self.initial_membrane(theta, batch, x.shape[1:], channels_last)
        dynamics = Dynamics(theta, steps, self.leak, self.reset == "soft", static, init)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad)
        run = backend.run if needs_grad else _run_exact
        channel_dim = _channel_dim(inputs.dim() - (1 if static else 2), channels_last)
        site = LayerSite(self.name, channel_dim, ctx.extra.get(RUN_STATE_KEY))
        out = run(inputs, dynamics, ctx.estimator, site)
        if ctx.membranes is not None:
            ctx.membranes.append(membrane_trace(self.name, inputs, out, dynamics))
        if self.emit == "binary":
            out = out / theta  # theta * 1 / theta == 1 exactly
        if ctx.record is not None:
            spikes = out.detach().ne(0)
            ctx.record[self.name] = spikes.permute(0, 1, 4, 2, 3) if channels_last else spikes
        merged = out.reshape(steps * batch, *x.shape[1:])
        return merged.permute(0, 3, 1, 2) if channels_last else merged
