"""ANN -> SNN conversion: copy weights, calibrate thresholds layer by layer, set T.

Recipe (PAPER.md section 4, step 2), every constant a parameter with the paper's default:
each spiking layer's threshold, first layer first, is the ``percentile`` (99.7) of the input
current that layer receives while the earlier layers already spike, run for ``calib_T`` (100)
steps, maximised over ``calib_batches`` (10) batches; then every threshold is multiplied by
``scale`` (0.3) and T is set to the target. The ANN is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx, nn

from robustsnn.errors import UserError
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
    nn.Sequential,
    nn.ModuleList,
)
BN_MODES = ("keep", "reset", "reestimate", "fold")
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
    """Every constant of the conversion recipe (defaults: the paper's)."""

    T: int = 8
    calib_T: int = 100
    percentile: float = 99.7
    calib_batches: int = 10
    calib_batch_size: int = 64
    scale: float = 0.3
    reset: str = "hard"
    leak: float = 1.0
    bn: str = "reestimate"
    threshold_min: float = 0.03
    max_quantile_elements: int = 1 << 24


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
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.ReLU):
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
                f"the nn.ReLU module {name!r} is used {calls} times in forward; every activation "
                f"becomes its own spiking layer with its own threshold: give each its own nn.ReLU"
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


def spiking_body(ann: nn.Module, cfg: ConversionConfig) -> nn.Module:
    """A deep copy of ``ann`` (BN folded if asked) with every nn.ReLU replaced by a SpikingNeuron."""
    body = copy.deepcopy(ann)
    body.eval()
    if cfg.bn == "fold":
        fold_batchnorm(body)
    relus = [name for name, m in body.named_modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise UserError("the ANN has no nn.ReLU modules: nothing to convert into spiking layers")
    for name in relus:
        neuron = SpikingNeuron(1.0, leak=cfg.leak, reset=cfg.reset, threshold_min=cfg.threshold_min)
        body.set_submodule(name, neuron)
    return body


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
    body = spiking_body(ann, cfg)
    snn = SpikingNetwork(body, T=cfg.T)
    snn.eval()
    device = next(ann.parameters()).device
    data = calibration_data.to(device)
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
    snn.conversion = asdict(cfg)  # type: ignore[assignment]
    snn.arch = getattr(ann, "arch", None)  # type: ignore[assignment]
    return snn
