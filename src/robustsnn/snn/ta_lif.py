"""HoSNN's threshold-adapting LIF neuron (TA-LIF) as the ``"ta_lif"`` body transform.

Geng & Li, "HoSNNs: Adversarially-Robust Homeostatic Spiking Neural Networks with Adaptive
Firing Thresholds", TMLR 2025 (arXiv 2308.10373). Each neuron's threshold follows a local
feedback law that pulls its membrane potential back to the *neural dynamic signature* (NDS): the
membrane trajectory the neuron has, on average, on clean data. In robustsnn's discrete time
(``h`` before the reset, ``u`` after it; the rule of the authors' ``functions/tsslbp.py``)::

    h[t]     = leak * u[t-1] + I[t]
    e[t]     = h[t] - nds[t]                      # error against the clean signature
    theta[t] = theta[t-1] + theta_v * e[t],       theta[-1] = theta (the layer's threshold)
    s[t]     = 1 if h[t] >= theta[t] else 0
    u[t]     = h[t] - theta s[t] (soft reset)  or  h[t] (1 - s[t]) (hard reset)

``nds[t]`` is a buffer (one value per neuron and step, :func:`fit_signature` averages clean
membranes into it); ``theta_v`` is a learnable per-neuron parameter (``adaptation``). A neuron
emits ``theta * s`` like every robustsnn neuron, so ``theta_v = 0`` is exactly the plain
neuron. A perturbation that raises a neuron's membrane above its signature raises its threshold
too: the neuron fires less than the perturbation alone would make it (the paper's claim of
suppressed error growth, not a claim about robust accuracy: that is for the evaluation).

Gradients: the loop runs in autograd with a surrogate derivative at ``h[t] - theta[t]``: the
surrogate of a BPTT estimator, or a threshold-relative one (``bptt-rel-*``, and ``bptt-mix-*``
with the layer's drawn width); every other
estimator (BPTR, ASSG, PDSG, RGA, HART) falls back to ``bptt-rel-pcw-1`` for a TA-LIF layer, and
the ANN proxy sees a ReLU. The adaptive threshold's dependence on the input is differentiated
(attacks see it). The fused kernels do not apply: a TA-LIF network runs a Python loop per step.

Use :func:`apply_ta_lif` on a converted or trained SNN; the checkpoint lists ``"ta_lif"`` in its
``transforms`` and keeps the neuron shapes in ``conversion["ta_lif"]``, so
loading the checkpoint rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.io.formats import register_body_transform
from robustsnn.snn.estimators import BPTT, ANNProxy, Estimator, MixedWidthBPTT, RelativeBPTT
from robustsnn.snn.neuron import SpikingNeuron, strict_threshold
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.stochastic import threshold_noise_currents
from robustsnn.snn.surrogates import Surrogate

TA_LIF = "ta_lif"
FALLBACK = RelativeBPTT(Surrogate("pcw", 1.0))


class _Spike(torch.autograd.Function):
    """Heaviside of a margin ``h - theta[t]`` with a surrogate derivative ``scale * g(m / scale)
    / scale`` (``scale`` 1: absolute width; the threshold: relative width)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, margin: torch.Tensor, surrogate: Surrogate, scale: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(margin, scale)
        ctx.surrogate = surrogate
        return (margin >= 0).to(margin.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        margin, scale = ctx.saved_tensors
        return grad * ctx.surrogate.grad(margin / scale) / scale, None, None


def _surrogate(estimator: Estimator, layer: str) -> tuple[Surrogate, bool, bool]:
    """(surrogate, relative width, detach the reset) TA-LIF layer ``layer`` uses for
    ``estimator`` (a per-layer width draw, ``bptt-mix-*``, gives the layer its own width)."""
    if isinstance(estimator, MixedWidthBPTT):
        return estimator.surrogate(layer), True, estimator.detach_reset
    if isinstance(estimator, BPTT):
        return estimator.surrogate, False, estimator.detach_reset
    if isinstance(estimator, RelativeBPTT):
        return estimator.surrogate, True, estimator.detach_reset
    return FALLBACK.surrogate, True, False


class ThresholdAdaptingNeuron(SpikingNeuron):
    """A :class:`SpikingNeuron` whose threshold adapts toward the clean signature (module doc).

    Buffers/parameters: ``signature`` ``[T, *shape]`` (NDS) and ``adaptation`` ``[*shape]``
    (``theta_v``), where ``shape`` is one sample's neuron shape (``[C, H, W]`` or ``[F]``).
    """

    signature: torch.Tensor

    def __init__(self, base: SpikingNeuron, shape: tuple[int, ...], steps: int, adaptation: float):
        super().__init__(
            float(base.threshold.detach()),
            leak=base.leak,
            reset=base.reset,
            threshold_min=base.threshold_min,
            v_init=base.v_init,
            proxy_levels=base.proxy_levels,
            init_shape=None if base.init_membrane is None else tuple(base.init_membrane.shape),
            emit=base.emit,
            fire_at_equal=base.fire_at_equal,
        )
        param = base.threshold
        self.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            self.threshold.copy_(base.threshold)
            if base.init_membrane is not None and self.init_membrane is not None:
                self.init_membrane.copy_(base.init_membrane)
        self.name, self.context = base.name, base.context
        self.threshold_noise = base.threshold_noise
        device, dtype = param.device, param.dtype
        self.register_buffer(
            "signature", torch.zeros((int(steps), *shape), device=device, dtype=dtype)
        )
        self.adaptation = nn.Parameter(
            torch.full(tuple(shape), float(adaptation), device=device, dtype=dtype)
        )
        self.signature_record: list[torch.Tensor] | None = None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ta_lif(steps={self.signature.shape[0]})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if ctx.calibrate is self or self.backend.run is None:  # the ANN proxy's row
            return super().forward(x)
        steps, batch = ctx.steps, ctx.batch
        if steps != self.signature.shape[0]:
            raise RuntimeError(
                f"TA-LIF layer {self.name!r} has a signature of {self.signature.shape[0]} steps "
                f"but the network runs T={steps}; refit it (fit_signature) at this T"
            )
        x = x.contiguous()
        static = x.shape[0] == batch and steps != 1
        currents = (
            x.unsqueeze(0).expand(steps, *x.shape) if static else x.view(steps, batch, *x.shape[1:])
        )
        if tuple(currents.shape[2:]) != tuple(self.adaptation.shape):
            raise RuntimeError(
                f"TA-LIF layer {self.name!r} was built for neurons of shape "
                f"{tuple(self.adaptation.shape)}, got {tuple(currents.shape[2:])}"
            )
        theta = self.threshold.clamp(min=self.threshold_min)
        if self.threshold_noise:  # the noise shift of robustsnn.snn.encoding (approximate here)
            currents = threshold_noise_currents(
                currents, Dynamics(theta, steps, self.leak), self.threshold_noise
            )
        surrogate, relative, detach_reset = _surrogate(ctx.estimator, self.name)
        scale = theta.detach() if relative else torch.ones_like(theta.detach())
        init = self.initial_membrane(theta, batch, currents.shape[2:], False)
        u = torch.zeros_like(currents[0]) if init is None else init.expand_as(currents[0])
        start = theta if self.fire_at_equal else strict_threshold(theta)
        threshold_t = start.expand_as(currents[0])
        spikes = []
        record = self.signature_record
        for t in range(steps):
            h = self.leak * u + currents[t]
            if record is not None:
                record.append(h.detach().mean(0))
            threshold_t = threshold_t + self.adaptation * (h - self.signature[t])
            s = _Spike.apply(h - threshold_t, surrogate, scale)
            spikes.append(s)
            reset_s = s.detach() if detach_reset else s
            u = h - theta * reset_s if self.reset == "soft" else h * (1 - reset_s)
        out = torch.stack(spikes)
        if self.emit != "binary":
            out = out * theta
        if ctx.record is not None:
            ctx.record[self.name] = out.detach().ne(0)
        return out.reshape(steps * batch, *x.shape[1:])


@torch.no_grad()
def fit_signature(snn: nn.Module, x: torch.Tensor, batch_size: int = 64) -> None:
    """Set every TA-LIF layer's signature to its mean membrane ``h[t]`` on clean images ``x``.

    Layer by layer, so each layer's signature is measured with the adapted layers before it;
    the layer itself runs with ``theta_v = 0`` meanwhile (its plain clean trajectory, which its
    rule then keeps on average: on it the error, and so the adaptation, is zero)."""
    neurons = [m for m in snn.modules() if isinstance(m, ThresholdAdaptingNeuron)]
    if not neurons:
        raise UserError("fit_signature needs a network with TA-LIF neurons (apply_ta_lif)")
    was_training = snn.training
    snn.eval()
    try:
        for neuron in neurons:
            sums: torch.Tensor | None = None
            count = 0
            adaptation = neuron.adaptation.detach().clone()
            neuron.adaptation.data.zero_()
            for chunk in x.split(batch_size):
                neuron.signature_record = []
                snn(chunk)
                means = torch.stack(neuron.signature_record) * chunk.shape[0]
                sums = means if sums is None else sums + means
                count += chunk.shape[0]
            neuron.signature_record = None
            neuron.adaptation.data.copy_(adaptation)
            assert sums is not None
            neuron.signature.copy_(sums / count)
    finally:
        for neuron in neurons:
            neuron.signature_record = None
        snn.train(was_training)


def _replace(body: nn.Module, shapes: Mapping[str, Any], steps: int, adaptation: float) -> None:
    for name, module in list(body.named_modules()):
        if isinstance(module, SpikingNeuron) and not isinstance(module, ThresholdAdaptingNeuron):
            if name not in shapes:
                raise UserError(f"TA-LIF: no neuron shape recorded for layer {name!r}")
            shape = tuple(int(s) for s in shapes[name])
            body.set_submodule(name, ThresholdAdaptingNeuron(module, shape, steps, adaptation))


def ta_lif_transform(body: nn.Module, meta: Mapping[str, Any]) -> nn.Module:
    """The registered transform: TA-LIF neurons with the shapes ``meta["conversion"]["ta_lif"]``
    records (weights, signatures and ``theta_v`` come from the checkpoint)."""
    info = (meta.get("conversion") or {}).get(TA_LIF)
    if not isinstance(info, Mapping) or "shapes" not in info:
        raise UserError("the TA-LIF transform needs conversion.ta_lif.shapes in the metadata")
    _replace(body, info["shapes"], int(info.get("steps", meta.get("T", 8))), 0.0)
    return body


def apply_ta_lif(snn: nn.Module, x: torch.Tensor, adaptation: float = 0.1) -> nn.Module:
    """Turn every spiking layer of a SpikingNetwork into a TA-LIF layer with ``theta_v =
    adaptation`` and fit the signatures on clean images ``x``; returns ``snn`` (changed in place)
    with ``"ta_lif"`` in its ``transforms``."""
    from robustsnn.snn.network import SpikingNetwork

    if not isinstance(snn, SpikingNetwork):
        raise UserError("TA-LIF applies to a SpikingNetwork")
    shapes: dict[str, list[int]] = {}
    hooks = []
    for name, module in snn.body.named_modules():
        if isinstance(module, SpikingNeuron):

            def seen(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
                shapes[name] = list(out.shape[1:])

            hooks.append(module.register_forward_hook(seen))
    try:
        with torch.no_grad(), snn.use_estimator(ANNProxy()):
            snn(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
    _replace(snn.body, shapes, snn.T, adaptation)
    conversion = dict(getattr(snn, "conversion", None) or {})
    conversion[TA_LIF] = {"shapes": shapes, "steps": snn.T, "adaptation_init": adaptation}
    snn.conversion = conversion  # type: ignore[assignment]
    transforms = list(getattr(snn, "transforms", []))
    if TA_LIF not in transforms:
        transforms.append(TA_LIF)
    snn.transforms = transforms  # type: ignore[assignment]
    fit_signature(snn, x)
    return snn


register_body_transform(TA_LIF, ta_lif_transform)

__all__ = ["TA_LIF", "ThresholdAdaptingNeuron", "apply_ta_lif", "fit_signature", "ta_lif_transform"]
