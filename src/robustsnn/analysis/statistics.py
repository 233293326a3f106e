"""Spike counts, synaptic operations and an energy estimate of a SpikingNetwork (PAPER.md 7.4).

Counting rules (also written into every result under ``counting_rules``):

* **Spikes** are read from ``snn.recording()``: binary events per neuron and time step. The
  firing rate is spikes per neuron per time step.
* **Synaptic operations (SOPs)** are counted at each ``Conv``/``Linear`` layer whose input comes
  from spiking layers: every *nonzero input element* at every time step costs one accumulate
  (AC) per synapse it drives, i.e. its exact fan-out into that layer (output channels x output
  positions that read it, so padding borders, stride, dilation and groups are exact). When an
  AvgPool sits between a neuron and the layer, the pooled (fractional) value is the input: a
  pooled element that is nonzero counts once x its fan-out, however many spikes it averages.
  The fan-out map is computed by differentiating the layer applied with all-ones weights.
* **Analog input**: under direct coding the first layer receives the image, not spikes; every
  layer that runs before any spiking layer (or on a static, not time-merged, input) is counted
  as dense multiply-accumulates (MACs), like the ANN. This implementation computes that current
  once per image and reuses it at every step (``first_layer_per_step=False``); pass ``True`` to
  count it once per time step instead.
* **ANN MACs** are those of the same architecture run as an ANN (every neuron a ReLU):
  output elements x fan-in for every ``Conv``/``Linear`` (zero padding included, the usual
  convention). :func:`count_macs` counts them for any ANN.
* Not counted on either side: BatchNorm, pooling, normalization, membrane updates, resets,
  additions of identity shortcuts (one AC per spike in a residual block) and memory traffic.
* **Energy** is an *estimate*: operations x energy per operation of Horowitz (ISSCC 2014, 45 nm
  CMOS, 32-bit float): 4.6 pJ per MAC (3.7 pJ multiply + 0.9 pJ add) and 0.9 pJ per AC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.snn.estimators import DEFAULT_ESTIMATOR, Estimator
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron

MAC_ENERGY_PJ = 4.6
"""Energy of one 32-bit float multiply-accumulate in pJ (Horowitz, ISSCC 2014, 45 nm)."""
AC_ENERGY_PJ = 0.9
"""Energy of one 32-bit float accumulate (addition) in pJ (Horowitz, ISSCC 2014, 45 nm)."""
ENERGY_SOURCE = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
    "45 nm CMOS, 32-bit float: multiply 3.7 pJ + add 0.9 pJ = 4.6 pJ per MAC, 0.9 pJ per AC"
)
ENERGY_LABEL = "estimated energy (operation counts x energy per operation; not a measurement)"

COUNTING_RULES = [
    "spikes: binary events per neuron and time step (firing rate = spikes / neuron / step)",
    "SOPs (ACs): at each Conv/Linear fed by spiking layers, every nonzero input element per time "
    "step x its exact fan-out into that layer (borders, stride, groups exact); after an AvgPool "
    "the pooled value is the input, counted once if nonzero",
    "analog input (direct coding): layers before the first spiking layer get the image and are "
    "counted as dense MACs, once per image unless first_layer_per_step",
    "ANN MACs: output elements x fan-in of every Conv/Linear of the same architecture as an ANN",
    "not counted: BatchNorm, pooling, normalization, membrane updates, identity-shortcut "
    "additions, memory access",
    f"energy estimate: {MAC_ENERGY_PJ} pJ per MAC, {AC_ENERGY_PJ} pJ per AC ({ENERGY_SOURCE})",
]

_SYNAPTIC_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# --------------------------------------------------------------------------- fan-out and MACs


def fan_in(layer: nn.Module) -> int:
    """Inputs read per output element (the MACs one output costs in an ANN)."""
    if isinstance(layer, nn.Linear):
        return int(layer.in_features)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return int(layer.in_channels // layer.groups * math.prod(layer.kernel_size))
    raise TypeError(f"no fan-in rule for {type(layer).__name__}")


def fan_out_map(layer: nn.Module, input_shape: tuple[int, ...]) -> Tensor:
    """Exact number of synapses each input element drives in ``layer`` (float64, ``input_shape``).

    ``input_shape`` excludes the batch dimension. For a convolution this is the gradient of the
    sum of its outputs under all-ones weights and no bias, which counts every (output channel,
    output position) pair reading the element: border effects, stride, dilation, groups and
    padding modes come out exactly.
    """
    if isinstance(layer, nn.Linear):
        return torch.full(input_shape, float(layer.out_features), dtype=torch.float64)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        probe = torch.zeros((1, *input_shape), dtype=torch.float64, requires_grad=True)
        ones = torch.ones(layer.weight.shape, dtype=torch.float64)
        with torch.enable_grad():
            out = layer._conv_forward(probe, ones, None)
            (grad,) = torch.autograd.grad(out.sum(), [probe])
        return grad[0].detach().round()
    raise TypeError(f"no fan-out rule for {type(layer).__name__}")


def _as_images(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise UserError("statistics need images as a tensor [N, C, H, W] (float in [0, 1])")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.dtype.is_floating_point:
        raise UserError(f"statistics need float images in [0, 1], got dtype {x.dtype}")
    return x


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@torch.no_grad()
def count_macs(model: nn.Module, x: Tensor) -> dict[str, Any]:
    """Multiply-accumulates per image of every Conv/Linear of an ANN, counted with hooks.

    ``x`` is one batch of inputs (only its shape matters; one image is enough). A SpikingNetwork
    is counted as the equivalent ANN (its neurons run as ReLU under the ANN proxy).
    """
    x = _as_images(x)
    layers: dict[str, dict[str, Any]] = {}
    batch = x.shape[0]

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            entry = layers.setdefault(name, {"type": type(module).__name__, "macs_per_image": 0})
            rows = output.shape[0]
            entry["macs_per_image"] += (
                int(output.numel() // rows) * fan_in(module) * (rows // batch)
            )

        return hook

    handles = [
        m.register_forward_hook(hook_for(name))
        for name, m in model.named_modules()
        if isinstance(m, _SYNAPTIC_TYPES)
    ]
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, SpikingNetwork):
            from robustsnn.snn.estimators import ANNProxy

            with model.use_estimator(ANNProxy()):
                model(x)
        else:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total = sum(int(v["macs_per_image"]) for v in layers.values())
    return {"layers": layers, "total_macs_per_image": total}


def energy_estimate(ann_macs: float, snn_macs: float, snn_acs: float) -> dict[str, Any]:
    """Energy per image (estimate) of the ANN and of the SNN from operation counts."""
    ann_pj = ann_macs * MAC_ENERGY_PJ
    snn_pj = snn_macs * MAC_ENERGY_PJ + snn_acs * AC_ENERGY_PJ
    return {
        "estimate": True,
        "label": ENERGY_LABEL,
        "mac_pj": MAC_ENERGY_PJ,
        "ac_pj": AC_ENERGY_PJ,
        "source": ENERGY_SOURCE,
        "ann_uj_per_image": ann_pj * 1e-6,
        "snn_uj_per_image": snn_pj * 1e-6,
        "ann_over_snn": (ann_pj / snn_pj) if snn_pj > 0 else None,
    }


# --------------------------------------------------------------------------- spike statistics


@dataclass
class _SynapseCounter:
    module: nn.Module
    analog: bool | None = None
    ops: float = 0.0  # ACs (spiking input) or MACs (analog input), summed over images
    ann_macs: float = 0.0
    fan_out: dict[tuple[int, ...], Tensor] = field(default_factory=dict)


class _Counter:
    """Forward hooks that count synaptic operations while a SpikingNetwork runs."""

    def __init__(self, snn: SpikingNetwork, first_layer_per_step: bool) -> None:
        self.snn = snn
        self.first_layer_per_step = first_layer_per_step
        self.spiking_seen = False
        self.synapses: dict[str, _SynapseCounter] = {}
        self.handles: list[Any] = []
        for name, module in snn.body.named_modules():
            if isinstance(module, SpikingNeuron):
                self.handles.append(module.register_forward_hook(self._neuron_hook))
            elif isinstance(module, _SYNAPTIC_TYPES):
                self.synapses[name] = _SynapseCounter(module)
                self.handles.append(module.register_forward_hook(self._synapse_hook(name)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def _neuron_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.spiking_seen = True

    def _synapse_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            counter = self.synapses[name]
            inp = inputs[0].detach()
            batch, steps = self.snn.context.batch, self.snn.context.steps
            rows = inp.shape[0]
            macs_per_row = int(output.numel() // output.shape[0]) * fan_in(module)
            counter.ann_macs += macs_per_row * batch
            static = rows == batch and steps != 1
            analog = static or not self.spiking_seen
            counter.analog = analog if counter.analog is None else (counter.analog and analog)
            if analog:
                repeats = steps if (static and self.first_layer_per_step) else rows // batch
                counter.ops += macs_per_row * batch * repeats
                return
            shape = tuple(inp.shape[1:])
            if shape not in counter.fan_out:
                counter.fan_out[shape] = fan_out_map(module, shape).to(inp.device)
            active = inp.ne(0).sum(0, dtype=torch.int64).to(torch.float64)
            counter.ops += float((active * counter.fan_out[shape]).sum())

        return hook


@torch.no_grad()
def spike_statistics(
    snn: SpikingNetwork,
    x: Tensor,
    y: Tensor | None = None,
    *,
    batch_size: int = 64,
    first_layer_per_step: bool = False,
) -> dict[str, Any]:
    """Spikes, firing rates, synaptic operations and an energy estimate of ``snn`` on images ``x``.

    Works for clean or adversarial images alike. With labels ``y`` the accuracy is included.
    Returns a JSON-serializable dict: ``layers`` (per spiking layer: ``neurons``,
    ``spikes_per_image``, ``spikes_per_neuron`` (per image, over T), ``firing_rate`` (per neuron
    per step)), ``synapses`` (per Conv/Linear: ``input`` spikes|analog, ``operation`` AC|MAC,
    ``ops_per_image``, ``ann_macs_per_image``), ``totals``, ``energy`` (an estimate, constants
    and source included) and ``counting_rules``.
    """
    if not isinstance(snn, SpikingNetwork):
        raise UserError("spike_statistics needs a SpikingNetwork (convert the ANN first)")
    x = _as_images(x)
    if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
        raise UserError(f"labels must be a 1-d tensor of length {x.shape[0]}")
    n = int(x.shape[0])
    if n == 0:
        raise UserError("spike_statistics needs at least one image")
    device = next(snn.parameters()).device
    steps = snn.T
    names = [neuron.name for neuron in snn.neurons()]
    spikes = dict.fromkeys(names, 0.0)
    neurons: dict[str, int] = {}
    per_image = torch.zeros(n, dtype=torch.float64)
    correct = 0
    counter = _Counter(snn, first_layer_per_step)
    was_training = snn.training
    snn.eval()
    try:
        with snn.use_estimator(_spiking_estimator(snn)), snn.recording() as record:
            for part in _batches(n, batch_size):
                xb = x[part].to(device)
                counter.spiking_seen = False
                record.clear()
                logits = snn(xb)
                if y is not None:
                    correct += int((logits.argmax(1).cpu() == y[part].cpu()).sum())
                for name in names:
                    if name not in record:
                        raise RuntimeError(f"spiking layer {name!r} recorded no spikes")
                    s = record[name]
                    neurons[name] = int(s[0, 0].numel())
                    counts = s.flatten(2).sum((0, 2), dtype=torch.int64).cpu()
                    spikes[name] += float(counts.sum())
                    per_image[part] += counts.to(torch.float64)
    finally:
        counter.remove()
        snn.train(was_training)

    layers: dict[str, dict[str, Any]] = {}
    for name in names:
        per_img = spikes[name] / n
        layers[name] = {
            "neurons": neurons[name],
            "spikes_per_image": per_img,
            "spikes_per_neuron": per_img / neurons[name],
            "firing_rate": per_img / (neurons[name] * steps),
        }
    synapses: dict[str, dict[str, Any]] = {}
    for name, c in counter.synapses.items():
        if c.analog is None:
            continue  # not reached by the forward pass
        synapses[name] = {
            "type": type(c.module).__name__,
            "input": "analog" if c.analog else "spikes",
            "operation": "MAC" if c.analog else "AC",
            "ops_per_image": c.ops / n,
            "ann_macs_per_image": c.ann_macs / n,
        }
    total_neurons = sum(neurons.values())
    total_spikes = float(per_image.mean())
    acs = sum(s["ops_per_image"] for s in synapses.values() if s["operation"] == "AC")
    macs = sum(s["ops_per_image"] for s in synapses.values() if s["operation"] == "MAC")
    ann_macs = sum(s["ann_macs_per_image"] for s in synapses.values())
    totals = {
        "neurons": total_neurons,
        "spikes_per_image": total_spikes,
        "spikes_per_image_std": float(per_image.std(unbiased=False)) if n > 1 else 0.0,
        "spikes_per_neuron": total_spikes / total_neurons,
        "firing_rate": total_spikes / (total_neurons * steps),
        "synaptic_ops_per_image": acs,
        "analog_macs_per_image": macs,
        "ann_macs_per_image": ann_macs,
    }
    return {
        "kind": "spike_statistics",
        "n_images": n,
        "T": steps,
        "first_layer_per_step": bool(first_layer_per_step),
        "accuracy": (correct / n) if y is not None else None,
        "layers": layers,
        "synapses": synapses,
        "totals": totals,
        "energy": energy_estimate(ann_macs, macs, acs),
        "counting_rules": list(COUNTING_RULES),
    }


def _spiking_estimator(snn: SpikingNetwork) -> Estimator:
    """The network's estimator unless it is the ANN proxy (which would not spike)."""
    from robustsnn.snn.estimators import ANNProxy

    return DEFAULT_ESTIMATOR if isinstance(snn.estimator, ANNProxy) else snn.estimator


# --------------------------------------------------------------------------- rasters, attacks


@torch.no_grad()
def raster_data(
    snn: SpikingNetwork,
    clean: Tensor,
    adversarial: Tensor,
    *,
    layer: str | None = None,
    n_neurons: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Spike trains of one image, clean and adversarial, for the raster figure (paper Figure 1).

    ``clean`` and ``adversarial`` are single images ``[C, H, W]`` (or ``[1, C, H, W]``).
    ``layer`` defaults to the first spiking layer (the first conv's output under direct coding).
    The same random subset of ``n_neurons`` neurons is kept for both; spikes are 0/1 lists
    ``[T][n_neurons]``.
    """
    clean = _as_images(clean if clean.dim() == 4 else clean.unsqueeze(0))[:1]
    adversarial = _as_images(adversarial if adversarial.dim() == 4 else adversarial.unsqueeze(0))
    adversarial = adversarial[:1]
    names = [neuron.name for neuron in snn.neurons()]
    layer = layer or names[0]
    if layer not in names:
        raise UserError(f"unknown spiking layer {layer!r}; valid: {', '.join(names)}")
    device = next(snn.parameters()).device
    trains = []
    was_training = snn.training
    snn.eval()
    try:
        with snn.use_estimator(_spiking_estimator(snn)), snn.recording() as record:
            for image in (clean, adversarial):
                snn(image.to(device))
                trains.append(record[layer][:, 0].flatten(1).cpu())
    finally:
        snn.train(was_training)
    total = trains[0].shape[1]
    gen = torch.Generator().manual_seed(seed)
    keep = torch.randperm(total, generator=gen)[: min(n_neurons, total)].sort().values
    return {
        "layer": layer,
        "T": snn.T,
        "neurons_in_layer": int(total),
        "neuron_indices": keep.tolist(),
        "clean_image": _rounded(clean[0]),
        "adversarial_image": _rounded(adversarial[0]),
        "clean_spikes": trains[0][:, keep].to(torch.int64).tolist(),
        "adversarial_spikes": trains[1][:, keep].to(torch.int64).tolist(),
    }


@torch.no_grad()
def choose_raster_sample(
    snn: SpikingNetwork, x: Tensor, x_adv: Tensor, y: Tensor, batch_size: int = 64
) -> tuple[int, str]:
    """The sample whose raster shows what the attack does to the spikes (paper Figure 1).

    First choice: a correctly classified image that the attack flipped; else the correctly
    classified image with the strongest perturbation the attack found (largest L2 norm of
    ``x_adv - x``); else any perturbed image; else the first one. Attacks skip images that are
    already misclassified, so the first image of a batch may be left unchanged. Returns the
    index and a short note saying which case applied.
    """
    device = next(snn.parameters()).device
    was_training = snn.training
    snn.eval()
    try:
        with snn.use_estimator(_spiking_estimator(snn)):
            clean_pred = torch.cat(
                [snn(x[p].to(device)).argmax(1).cpu() for p in _batches(len(x), batch_size)]
            )
            adv_pred = torch.cat(
                [snn(x_adv[p].to(device)).argmax(1).cpu() for p in _batches(len(x), batch_size)]
            )
    finally:
        snn.train(was_training)
    y = y.cpu()
    size = (x_adv.cpu() - x.cpu()).flatten(1).norm(dim=1)
    correct = clean_pred == y
    flipped = correct & (adv_pred != y)
    if flipped.any():
        index = int(flipped.nonzero()[0, 0])
        return index, (
            f"image {index}: class {int(y[index])}, the attack flipped the prediction to "
            f"{int(adv_pred[index])}"
        )
    if (correct & (size > 0)).any():
        index = int(torch.where(correct, size, torch.full_like(size, -1.0)).argmax())
        return index, (
            f"image {index}: class {int(y[index])}, still correct under the strongest "
            "perturbation the attack found (no image was flipped)"
        )
    if (size > 0).any():
        index = int(size.argmax())
        return index, f"image {index}: no correctly classified image; the largest perturbation"
    return 0, "image 0: the attack changed no image"


def _rounded(image: Tensor) -> list[Any]:
    values: list[Any] = (image.detach().cpu().double() * 1e5).round().div(1e5).tolist()
    return values


def adversarial_statistics(
    snn: SpikingNetwork,
    x: Tensor,
    y: Tensor,
    attack: Any,
    *,
    estimator: Estimator | None = None,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    raster: bool = True,
    first_layer_per_step: bool = False,
) -> dict[str, Any]:
    """Run ``attack`` on ``snn`` and report spike statistics on the clean and adversarial images.

    ``attack`` is any :class:`robustsnn.attacks.Attack` (called as ``attack(model, x, y)``);
    the SNN is attacked through ``estimator`` (default: its current one). With ``raster`` the
    result holds :func:`raster_data` of one image for the raster figure, chosen by
    :func:`choose_raster_sample` (an image the attack flipped, if any).
    """
    x = _as_images(x)
    device = next(snn.parameters()).device
    model: Callable[[Tensor], Tensor] = snn if estimator is None else snn.with_estimator(estimator)
    parts = []
    for part in _batches(x.shape[0], batch_size):
        xb, yb = x[part].to(device), y[part].to(device)
        parts.append(attack(model, xb, yb, generator=generator).detach().cpu())
    x_adv = torch.cat(parts)
    clean = spike_statistics(
        snn, x, y, batch_size=batch_size, first_layer_per_step=first_layer_per_step
    )
    adv = spike_statistics(
        snn, x_adv, y, batch_size=batch_size, first_layer_per_step=first_layer_per_step
    )
    params = attack.params() if hasattr(attack, "params") else {}
    result: dict[str, Any] = {
        "kind": "adversarial_statistics",
        "attack": {
            "name": str(getattr(attack, "name", type(attack).__name__)),
            "eps": float(getattr(attack, "eps", float("nan"))),
            "estimator": estimator.name if estimator is not None else snn.estimator.name,
            "params": {k: _jsonable(v) for k, v in params.items()},
        },
        "clean": clean,
        "adversarial": adv,
    }
    if raster:
        index, note = choose_raster_sample(snn, x, x_adv, y, batch_size)
        result["raster"] = raster_data(snn, x[index], x_adv[index])
        result["raster"]["eps"] = result["attack"]["eps"]
        result["raster"]["sample"] = index
        result["raster"]["sample_note"] = note
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
