"""ANN -> SNN conversion: copy weights, calibrate thresholds layer by layer, set T.

Recipe (PAPER.md section 4, step 2), every constant a parameter with the paper's default:
each spiking layer's threshold, first layer first, is the ``percentile`` (99.7) of the input
current that layer receives while the earlier layers already spike, run for ``calib_T`` (100)
steps, maximised over ``calib_batches`` (10) batches; then every threshold is multiplied by
``scale`` (0.3) and T is set to the target. The ANN is never modified.

Low-latency options (``../shared/research/conversion.md`` sections 2, 3 and 7), each a field of
:class:`ConversionConfig` recorded in the checkpoint metadata:

- ``v_init``: initial membrane as a fraction of the threshold (0: the paper; 1/2: with soft reset
  a constant input ``z`` gives ``clip(floor(z T / theta + 1/2), 0, T)`` spikes, rounding);
- ``threshold``: ``percentile`` (above), ``mse`` (per layer, the threshold minimising the error of
  the T-step rate quantiser against the ANN's activations on the calibration images; Li et al.
  2021), or ``qcfs`` (a QCFS ANN's trained clip levels ``lam``, no calibration);
- ``calibration``: ``none``, ``bias`` (per channel, the mean SNN-ANN output difference is
  subtracted from the bias of the layer feeding each spiking layer) or ``potential`` (per neuron,
  the initial membrane gains ``T * (ANN - SNN)`` mean output), layer by layer in execution order
  on ``correction_images`` clean calibration images (Li et al., ICML 2021).
A QCFS ANN's activations become IF neurons whose ANN proxy is the QCFS activation itself.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx, nn

from robustsnn.errors import UserError
from robustsnn.models.qcfs import QCFS
from robustsnn.snn.estimators import ANNProxy
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.neuron import CalibrationCapture, SpikingNeuron

SUPPORTED_LAYERS = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
    nn.ReLU,
    QCFS,
    nn.Sequential,
    nn.ModuleList,
)
ACTIVATION_LAYERS = (nn.ReLU, QCFS)  # what becomes a spiking layer
BN_MODES = ("keep", "reset", "reestimate", "fold")
THRESHOLD_RULES = ("percentile", "mse", "qcfs")
CORRECTIONS = ("none", "bias", "potential")
# Functions a converter cannot see as modules: a ReLU or max-pool here would stay an ANN op.
# Matched by identity and, for torch functions and tensor methods, by name (so in-place and
# dispatch-wrapped variants such as ``torch.relu_`` or ``F.max_pool1d`` are caught too).
_FUNCTIONAL_NONLINEAR_NAMES = frozenset(
    {
        "relu", "relu_", "relu6", "gelu", "elu", "elu_", "selu", "selu_", "celu", "celu_",
        "silu", "silu_", "mish", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh", "hardtanh_",
        "hardswish", "hardsigmoid", "leaky_relu", "leaky_relu_", "prelu", "rrelu", "rrelu_",
        "softplus", "softsign", "logsigmoid", "threshold", "threshold_", "glu",
        "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
        "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
        "adaptive_max_pool2d", "adaptive_max_pool3d", "fractional_max_pool2d", "lp_pool2d",
    }
)  # fmt: skip
_FUNCTIONAL_ACTIVATIONS = {
    torch.relu,
    torch.nn.functional.relu,
    torch.nn.functional.max_pool2d,
    torch.max_pool2d,
    torch.nn.functional.gelu,
    torch.sigmoid,
    torch.tanh,
    torch.nn.functional.silu,
    torch.nn.functional.leaky_relu,
}


@dataclass
class ConversionConfig:
    """Every constant of the conversion recipe.

    Defaults: soft reset, initial membrane theta/2, T-aware MSE thresholds, BN kept: the best
    setting of the issue-14 grid on the CIFAR-10 subset (T = 4 and 8) and at least as good as
    the paper's recipe on MNIST-5k (docs/RESULTS.md section 8). The paper's recipe is
    ``reset="hard", v_init=0.0, threshold="percentile", scale=0.3, bn="reestimate"``.
    """

    T: int = 8
    calib_T: int = 100
    percentile: float = 99.7
    calib_batches: int = 10
    calib_batch_size: int = 64
    scale: float = 0.3  # multiplies percentile thresholds only
    reset: str = "soft"
    leak: float = 1.0
    bn: str = "keep"
    threshold_min: float = 0.03
    max_quantile_elements: int = 1 << 24
    v_init: float = 0.5
    threshold: str = "mse"
    calibration: str = "none"
    correction_images: int = 1024
    correction_batch_size: int = 128
    mse_grid: int = 200


def check_convertible(ann: nn.Module) -> None:
    """Fail with a clear error naming the first layer the converter cannot turn into an SNN op."""
    from robustsnn.models.layers import Normalize

    for name, module in ann.named_modules():
        if module is ann or isinstance(module, (*SUPPORTED_LAYERS, Normalize)):
            continue
        if type(module).forward is nn.Module.forward or not list(module.children()):
            # A leaf of an unsupported type (MaxPool, GELU, ...): cannot be converted.
            if not list(module.children()):
                raise UserError(
                    f"layer {name!r} ({type(module).__name__}) cannot be converted to a spiking "
                    f"layer; use Conv/Linear/BatchNorm/AvgPool/ReLU modules (e.g. AvgPool instead of MaxPool)"
                )
    try:
        graph = fx.symbolic_trace(ann).graph
    except Exception:  # noqa: BLE001 - tracing is a best-effort extra check
        return
    modules = dict(ann.named_modules())
    relu_calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(
            modules.get(str(node.target)), ACTIVATION_LAYERS
        ):
            relu_calls[str(node.target)] = relu_calls.get(str(node.target), 0) + 1
        if _is_functional_nonlinearity(node):
            fn = getattr(node.target, "__name__", str(node.target))
            raise UserError(
                f"{_calling_module(node)} calls {fn} functionally in its forward (graph node "
                f"{node.name!r}); the converter only swaps modules: use an nn.ReLU module "
                f"(and AvgPool instead of max-pool)"
            )
    for name, calls in relu_calls.items():
        if calls > 1:
            raise UserError(
                f"the activation module {name!r} is used {calls} times in forward; every "
                f"activation becomes its own spiking layer with its own threshold: give each its "
                f"own nn.ReLU"
            )


def _is_functional_nonlinearity(node: fx.Node) -> bool:
    if node.op == "call_method":
        return str(node.target) in _FUNCTIONAL_NONLINEAR_NAMES
    if node.op != "call_function":
        return False
    if node.target in _FUNCTIONAL_ACTIVATIONS:
        return True
    name = getattr(node.target, "__name__", "")
    origin = getattr(node.target, "__module__", None) or ""
    return name in _FUNCTIONAL_NONLINEAR_NAMES and origin.startswith("torch")


def _calling_module(node: fx.Node) -> str:
    """The innermost module whose forward made ``node``'s call, for error messages."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model's own forward"
    path, cls = list(stack.values())[-1]
    cls_name = getattr(cls, "__name__", str(cls))
    return f"layer {path!r} ({cls_name})"


def spiking_body(
    ann: nn.Module, cfg: ConversionConfig, example: torch.Tensor | None = None
) -> nn.Module:
    """A deep copy of ``ann`` (BN folded if asked) with every nn.ReLU / QCFS module replaced by
    a SpikingNeuron (a QCFS layer's: threshold ``lam``, ANN proxy the same QCFS activation).

    With ``calibration="potential"`` each neuron gets a zero per-neuron initial-membrane buffer;
    its shape comes from one ANN pass on ``example`` (default: a zero image of ``ann.arch``).
    """
    body = copy.deepcopy(ann)
    body.eval()
    if cfg.bn == "fold":
        fold_batchnorm(body)
    acts = [(name, m) for name, m in body.named_modules() if isinstance(m, ACTIVATION_LAYERS)]
    if not acts:
        raise UserError("the ANN has no nn.ReLU modules: nothing to convert into spiking layers")
    shapes = _activation_shapes(body, example) if cfg.calibration == "potential" else {}
    param = next(body.parameters(), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else torch.device("cpu")
    for name, act in acts:
        levels = act.levels if isinstance(act, QCFS) else None
        neuron = SpikingNeuron(
            1.0,
            leak=cfg.leak,
            reset=cfg.reset,
            threshold_min=cfg.threshold_min,
            v_init=cfg.v_init,
            proxy_levels=levels,
            init_shape=shapes.get(name),
        ).to(device=device, dtype=dtype)
        if isinstance(act, QCFS):
            with torch.no_grad():
                neuron.threshold.copy_(act.lam)  # theta = lam exactly, in the ANN's dtype
        body.set_submodule(name, neuron)
    return body


@torch.no_grad()
def _activation_shapes(body: nn.Module, example: torch.Tensor | None) -> dict[str, tuple[int, ...]]:
    """One sample's output shape of every activation module (one ANN pass on one image)."""
    if example is None:
        arch = getattr(body, "arch", None) or {}
        if "in_channels" not in arch or "image_size" not in arch:
            raise UserError("calibration='potential' needs example images or a model with .arch")
        size = int(arch["image_size"])
        example = torch.zeros(1, int(arch["in_channels"]), size, size)
    param = next(body.parameters(), None)
    if param is not None:
        example = example.to(param.device, param.dtype)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in body.named_modules():
        if isinstance(module, ACTIVATION_LAYERS):

            def seen(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
                shapes[name] = tuple(out.shape[1:])

            hooks.append(module.register_forward_hook(seen))
    try:
        body(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _calibration_batches(data: torch.Tensor, cfg: ConversionConfig) -> Iterator[torch.Tensor]:
    for i in range(cfg.calib_batches):
        batch = data[i * cfg.calib_batch_size : (i + 1) * cfg.calib_batch_size]
        if len(batch) == 0:
            break
        yield batch


def _percentile(values: torch.Tensor, q: float, max_elements: int, seed: int) -> float:
    flat = values.reshape(-1).float()
    if flat.numel() > max_elements:
        gen = torch.Generator().manual_seed(seed)
        flat = flat[torch.randint(0, flat.numel(), (max_elements,), generator=gen)]
    k = max(1, min(flat.numel(), int(round(q / 100.0 * flat.numel()))))
    return float(flat.kthvalue(k).values)


@torch.no_grad()
def calibrate_thresholds(
    snn: SpikingNetwork, data: torch.Tensor, cfg: ConversionConfig
) -> dict[str, float]:
    """Set each layer's threshold to the percentile of its input current, first layer first."""
    was_training = snn.training
    steps = snn.T
    snn.eval()
    try:
        order = _execution_order(snn, data[:1])
        snn.T = cfg.calib_T
        for index, neuron in enumerate(order):
            best = 0.0
            for b, batch in enumerate(_calibration_batches(data, cfg)):
                snn.context.calibrate = neuron
                try:
                    snn(batch)
                except CalibrationCapture as capture:
                    best = max(
                        best,
                        _percentile(
                            capture.current,
                            cfg.percentile,
                            cfg.max_quantile_elements,
                            1000 * index + b,
                        ),
                    )
                else:
                    raise RuntimeError(
                        f"spiking layer {neuron.name!r} was not reached by the forward pass"
                    )
                finally:
                    snn.context.calibrate = None
            if best <= 0:
                best = 1.0  # a layer that never receives positive current: any threshold is silent
            neuron.threshold.fill_(best)
    finally:
        snn.T = steps
        snn.train(was_training)
    return snn.thresholds()


def rate_quantiser_mse(
    z: torch.Tensor, theta: torch.Tensor, steps: int, v_init: float
) -> torch.Tensor:
    """Mean squared error between ``relu(z)`` and what ``steps`` soft-reset steps of a neuron
    starting at ``v_init * theta`` emit for a constant input ``z`` (one value per threshold).

    ``theta`` is a 1-D tensor of candidate thresholds; the quantiser is
    ``theta * clip(floor(z T / theta + v_init), 0, T) / T`` (exact for constant inputs).
    """
    z = z.reshape(1, -1)
    th = theta.reshape(-1, 1).to(z.dtype)
    counts = torch.floor(z * steps / th + v_init).clamp_(0, steps)
    return (counts * th / steps - z.clamp(min=0)).pow_(2).mean(1)


def mse_threshold(
    z: torch.Tensor, steps: int, v_init: float, grid: int = 200, chunk: int = 10
) -> float:
    """The threshold in ``max(relu(z)) * (1..grid)/grid`` with the least rate-quantiser MSE
    (:func:`rate_quantiser_mse`) on the samples ``z``; 1.0 when ``z`` is never positive."""
    z = z.reshape(-1).float()
    top = float(z.max()) if z.numel() else 0.0
    if top <= 0:
        return 1.0
    candidates = torch.arange(1, grid + 1, dtype=torch.float32) * (top / grid)
    errors = torch.cat(
        [
            rate_quantiser_mse(z, candidates[i : i + chunk], steps, v_init)
            for i in range(0, grid, chunk)
        ]
    )
    return float(candidates[int(errors.argmin())])


def _subsample(values: torch.Tensor, max_elements: int, seed: int) -> torch.Tensor:
    flat = values.reshape(-1).float()
    if flat.numel() > max_elements:
        gen = torch.Generator().manual_seed(seed)
        flat = flat[torch.randint(0, flat.numel(), (max_elements,), generator=gen)]
    return flat


@torch.no_grad()
def calibrate_thresholds_mse(
    snn: SpikingNetwork, data: torch.Tensor, cfg: ConversionConfig
) -> dict[str, float]:
    """Set each layer's threshold by :func:`mse_threshold` on the ANN's pre-activations.

    The currents are those of the ANN (the SNN under the ANN proxy), whose activations are the
    target of the rate code; the error model is that of a soft-reset neuron at the target T
    starting at ``cfg.v_init * theta``. Up to ``1 << 20`` values per layer are searched.
    """
    was_training = snn.training
    snn.eval()
    per_batch = max(1, (1 << 20) // max(1, cfg.calib_batches))
    try:
        for index, neuron in enumerate(_execution_order(snn, data[:1])):
            values = []
            for b, batch in enumerate(_calibration_batches(data, cfg)):
                snn.context.calibrate = neuron
                try:
                    with snn.use_estimator(ANNProxy()):
                        snn(batch)
                except CalibrationCapture as capture:
                    values.append(_subsample(capture.current, per_batch, 1000 * index + b))
                else:
                    raise RuntimeError(
                        f"spiking layer {neuron.name!r} was not reached by the forward pass"
                    )
                finally:
                    snn.context.calibrate = None
            neuron.threshold.fill_(
                mse_threshold(torch.cat(values), cfg.T, cfg.v_init, cfg.mse_grid)
            )
    finally:
        snn.train(was_training)
    return snn.thresholds()


class _OutputCapture(Exception):
    """Raised by a forward hook to stop the pass once one spiking layer's output is seen."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__("output capture")
        self.output = output


def _layer_mean(
    snn: SpikingNetwork, neuron: SpikingNeuron, batches: list[torch.Tensor], ann: bool
) -> torch.Tensor:
    """Mean output of ``neuron`` over the images (and, for the SNN, over T): one sample's shape."""

    def stop(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        raise _OutputCapture(out.detach())

    hook = neuron.register_forward_hook(stop)
    total: torch.Tensor | None = None
    count = 0
    try:
        for batch in batches:
            try:
                if ann:
                    with snn.use_estimator(ANNProxy()):
                        snn(batch)
                else:
                    snn(batch)
            except _OutputCapture as capture:
                out = capture.output
                if not ann:
                    out = out.reshape(snn.T, len(batch), *out.shape[1:]).mean(0)
                part = out.double().sum(0)
                total = part if total is None else total + part
                count += len(batch)
            else:
                raise RuntimeError(f"spiking layer {neuron.name!r} was not reached")
    finally:
        hook.remove()
    assert total is not None
    return total / count


class _LeafTracer(fx.Tracer):
    """fx tracer that keeps spiking and QCFS layers as opaque calls."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (SpikingNeuron, QCFS)) or super().is_leaf_module(
            m, module_qualified_name
        )


def _bias_feeding(body: nn.Module) -> dict[str, nn.Parameter]:
    """For each spiking layer, the bias of the BN/conv/linear layer whose output it receives."""
    try:
        graph = _LeafTracer().trace(body)
    except Exception as exc:  # noqa: BLE001
        raise UserError(
            f"calibration='bias' needs a traceable model ({exc}); use calibration='potential'"
        ) from None
    modules = dict(body.named_modules())
    found: dict[str, nn.Parameter] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), SpikingNeuron):
            continue
        prev = node.args[0] if node.args else None
        layer = None
        if isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1:
            layer = modules.get(str(prev.target))
        bias = getattr(layer, "bias", None)
        if not isinstance(layer, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)) or not (
            isinstance(bias, nn.Parameter)
        ):
            raise UserError(
                f"calibration='bias': spiking layer {node.target!r} is not fed by a conv, linear "
                f"or BatchNorm layer with a bias; use calibration='potential'"
            )
        found[str(node.target)] = bias
    return found


@torch.no_grad()
def calibrate_corrections(
    snn: SpikingNetwork, data: torch.Tensor, cfg: ConversionConfig
) -> dict[str, float]:
    """Bias or potential correction (Li et al. 2021), layer by layer in execution order.

    For each spiking layer, with the earlier layers already corrected: ``d`` = mean SNN output
    (rate x theta, averaged over T and the images) minus mean ANN output of that layer (the
    network under the ANN proxy). ``bias``: the bias feeding the layer loses ``d`` averaged per
    channel; ``potential``: the per-neuron initial membrane gains ``-T * d``. Returns the mean
    absolute correction per layer.
    """
    if cfg.calibration == "none":
        return {}
    was_training = snn.training
    snn.eval()
    images = data[: cfg.correction_images]
    batches = [
        images[i : i + cfg.correction_batch_size]
        for i in range(0, len(images), cfg.correction_batch_size)
    ]
    biases = _bias_feeding(snn.body) if cfg.calibration == "bias" else {}
    applied: dict[str, float] = {}
    try:
        for neuron in _execution_order(snn, data[:1]):
            ann_mean = _layer_mean(snn, neuron, batches, ann=True)
            diff = _layer_mean(snn, neuron, batches, ann=False) - ann_mean
            if cfg.calibration == "potential":
                if neuron.init_membrane is None:
                    raise RuntimeError(f"spiking layer {neuron.name!r} has no initial membrane")
                step = (-snn.T * diff).to(neuron.init_membrane.dtype)
                neuron.init_membrane.add_(step)
            else:
                bias = biases[neuron.name]
                step = -(diff.reshape(diff.shape[0], -1).mean(1) if diff.dim() > 1 else diff)
                bias.add_(step.to(bias.dtype))
            applied[neuron.name] = float(step.abs().mean())
    finally:
        snn.train(was_training)
    return applied


def _execution_order(snn: SpikingNetwork, example: torch.Tensor) -> list[SpikingNeuron]:
    """Spiking layers in the order the forward pass reaches them (one cheap T = 1 pass).

    Calibration must go first layer first in *execution* order (each layer is calibrated with
    the layers before it spiking); registration order can differ in a hand-written model.
    """
    order: list[SpikingNeuron] = []

    def seen(module: nn.Module, args: Any) -> None:
        if not any(module is m for m in order):
            order.append(module)  # type: ignore[arg-type]

    neurons = snn.neurons()
    hooks = [n.register_forward_pre_hook(seen) for n in neurons]
    steps = snn.T
    try:
        snn.T = 1
        snn(example)
    finally:
        snn.T = steps
        for hook in hooks:
            hook.remove()
    for neuron in neurons:
        if not any(neuron is m for m in order):
            raise RuntimeError(f"spiking layer {neuron.name!r} was not reached by the forward pass")
    return order


def fold_batchnorm(body: nn.Module) -> list[str]:
    """Fold every BatchNorm that directly follows a conv/linear into that layer (eval form)."""
    try:
        graph = fx.symbolic_trace(body).graph
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"bn='fold' needs a traceable model ({exc}); use bn='keep'") from None
    modules = dict(body.named_modules())
    folded: list[str] = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(
            modules.get(node.target), (nn.BatchNorm2d, nn.BatchNorm1d)
        ):
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        layer = modules[prev.target]
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        bn = modules[node.target]
        assert isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm1d))
        assert bn.running_var is not None and bn.running_mean is not None
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        with torch.no_grad():
            bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
            new_bias = (bias - bn.running_mean) * scale + bn.bias
            layer.weight.mul_(scale.view(shape))
            if layer.bias is None:
                layer.bias = nn.Parameter(new_bias.detach().clone())
            else:
                layer.bias.copy_(new_bias)
        body.set_submodule(str(node.target), nn.Identity())
        folded.append(str(node.target))
    return folded


@torch.no_grad()
def reestimate_batchnorm(snn: SpikingNetwork, data: torch.Tensor, cfg: ConversionConfig) -> None:
    """Recompute BN running statistics from the SNN's own per-step activations at target T."""
    bns = [m for m in snn.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = snn.training
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    snn.eval()
    for bn in bns:
        bn.train()
    try:
        for batch in _calibration_batches(data, cfg):
            snn(batch)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        snn.train(was_training)


def _validate(cfg: ConversionConfig, data: torch.Tensor) -> None:
    """Reject settings that would fail deep inside conversion, with a one-line fix."""
    problems = []
    if cfg.threshold not in THRESHOLD_RULES:
        problems.append(
            f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, not {cfg.threshold!r}"
        )
    if cfg.calibration not in CORRECTIONS:
        problems.append(
            f"calibration must be one of {', '.join(CORRECTIONS)}, not {cfg.calibration!r}"
        )
    if not 0.0 <= cfg.v_init < 1.0:
        problems.append(f"v_init (fraction of the threshold) must be in [0, 1), not {cfg.v_init}")
    if cfg.correction_images < 1 or cfg.correction_batch_size < 1 or cfg.mse_grid < 1:
        problems.append("correction_images, correction_batch_size and mse_grid must be >= 1")
    if cfg.reset not in ("hard", "soft"):
        problems.append(f"reset must be 'hard' or 'soft', not {cfg.reset!r}")
    if not 0.0 < cfg.leak <= 1.0:
        problems.append(f"leak must be in (0, 1], not {cfg.leak}")
    if cfg.T < 1 or cfg.calib_T < 1:
        problems.append(f"T and calib_T must be >= 1, not {cfg.T} and {cfg.calib_T}")
    if not 0.0 < cfg.percentile <= 100.0:
        problems.append(f"percentile must be in (0, 100], not {cfg.percentile}")
    if not cfg.scale > 0.0:
        problems.append(f"scale must be > 0, not {cfg.scale}")
    if cfg.calib_batches < 1 or cfg.calib_batch_size < 1:
        problems.append("calib_batches and calib_batch_size must be >= 1")
    if len(data) == 0:
        problems.append("no calibration images were given")
    if problems:
        raise UserError("conversion settings: " + "; ".join(problems))


def convert(
    ann: nn.Module,
    calibration_data: torch.Tensor,
    cfg: ConversionConfig | None = None,
    **overrides: Any,
) -> SpikingNetwork:
    """Convert ``ann`` into a SpikingNetwork with calibrated thresholds (the ANN is not changed).

    ``calibration_data`` is a float image tensor in [0, 1] (training images); the first
    ``calib_batches * calib_batch_size`` images are used, in order, so conversion is deterministic.
    """
    cfg = ConversionConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    if cfg.bn not in BN_MODES:
        raise UserError(f"unknown BatchNorm treatment {cfg.bn!r}; valid: {', '.join(BN_MODES)}")
    _validate(cfg, calibration_data)
    check_convertible(ann)
    device = next(ann.parameters()).device
    data = calibration_data.to(device)
    body = spiking_body(ann, cfg, example=data[:1])
    snn = SpikingNetwork(body, T=cfg.T)
    snn.eval()
    if cfg.threshold == "qcfs":
        plain = [n.name for n in snn.neurons() if n.proxy_levels is None]
        if plain:
            raise UserError(
                f"threshold='qcfs' needs a QCFS ANN (model activation qcfs); layer {plain[0]!r} "
                f"is a ReLU: use threshold='percentile' or 'mse'"
            )
    elif cfg.threshold == "mse":
        calibrate_thresholds_mse(snn, data, cfg)
    else:
        calibrate_thresholds(snn, data, cfg)
        with torch.no_grad():
            for neuron in snn.neurons():
                neuron.threshold.mul_(cfg.scale)
    snn.clamp_thresholds()
    if cfg.bn == "reset":
        for m in snn.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
    elif cfg.bn == "reestimate":
        reestimate_batchnorm(snn, data, cfg)
    corrections = calibrate_corrections(snn, data, cfg)
    record: dict[str, Any] = asdict(cfg)
    if corrections:
        record["corrections"] = corrections
    snn.conversion = record  # type: ignore[assignment]
    snn.arch = getattr(ann, "arch", None)  # type: ignore[assignment]
    return snn
