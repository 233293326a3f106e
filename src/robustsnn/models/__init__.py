"""Model zoo: ANN architectures that convert to SNNs (registry ``MODELS``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from robustsnn.errors import UserError
from robustsnn.models.layers import Normalize, add_zero_biases
from robustsnn.models.qcfs import use_activation
from robustsnn.models.resnet import ResNet20, WideResNet
from robustsnn.models.vgg import VGG, VGG_CONFIGS, SmallCNN, SmallVGG
from robustsnn.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


@MODELS.register("vgg11")
def vgg11(**kw: Any) -> nn.Module:
    """The paper's CIFAR/SVHN VGG11: 8 conv-BN-ReLU layers with three 2x2 average pools
    (512 x 4 x 4 features at 32x32), then 4096-4096 with dropout 0.2, bias-free."""
    return VGG(VGG_CONFIGS["vgg11"], **kw)


@MODELS.register("vgg16")
def vgg16(**kw: Any) -> nn.Module:
    """The paper's VGG16: 13 conv-BN-ReLU layers, five average pools, 4096-4096 with dropout."""
    return VGG(VGG_CONFIGS["vgg16"], **kw)


@MODELS.register("vgg11_tin")
def vgg11_tin(**kw: Any) -> nn.Module:
    """The paper's VGG11 for 64x64 TinyImageNet: four pools, global average pooling, then
    Linear(512, 4096) -> ReLU -> readout (one hidden layer, no dropout)."""
    kw.setdefault("image_size", 64)
    kw.setdefault("hidden_layers", 1)
    kw.setdefault("dropout", 0.0)
    kw.setdefault("global_pool", True)
    return VGG(VGG_CONFIGS["vgg11_tin"], **kw)


@MODELS.register("vgg11_standard")
def vgg11_standard(**kw: Any) -> nn.Module:
    """The classic VGG11 layout (five pools, 512 x 1 x 1 at 32x32) with BN, AvgPool and a
    4096-4096 classifier (dropout 0.5, biased linear layers): not the paper's network; kept to
    compare with it (and it is what robustsnn called ``vgg11`` before the paper's layout)."""
    kw.setdefault("dropout", 0.5)
    kw.setdefault("classifier_bias", True)
    return VGG(VGG_CONFIGS["vgg11_standard"], **kw)


MODELS.add("resnet20", ResNet20)
MODELS.add("wrn16_4", lambda **kw: WideResNet(depth=16, **{"width": 4, **kw}))
MODELS.add("cnn_small", SmallCNN)
MODELS.add("vgg_small", SmallVGG)


def _unexpected_hint(detail: str) -> str:
    """For an option the model does not take: how to leave it out (e.g. ``model.fc`` given in a
    run config for a model without a hidden FC size)."""
    match = re.search(r"unexpected keyword argument '(\w+)'", detail)
    if match is None:
        return ""
    return f" (this model takes no {match.group(1)!r}: set model.{match.group(1)}: null)"


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; ``model.arch`` records the arguments that rebuild it."""
    factory = MODELS.get(name)
    try:
        arch: dict[str, Any] = dict(
            name=name,
            num_classes=int(num_classes),
            in_channels=int(in_channels),
            image_size=int(image_size),
            mean=[float(m) for m in mean],
            std=[float(s) for s in std],
            **{k: v for k, v in kwargs.items() if v is not None},
        )
        build_args = {k: v for k, v in arch.items() if k != "name"}
        # the activation is swapped after building, so every model takes it (qcfs: QCFS modules)
        activation = build_args.pop("activation", "relu")
        qcfs_args = {
            key[len("qcfs_") :]: build_args.pop(key)
            for key in ("qcfs_levels", "qcfs_lam")
            if key in build_args
        }
        model = factory(**build_args)
        use_activation(model, activation, **qcfs_args)
    except (TypeError, ValueError, RuntimeError) as exc:
        # Wrong names, types or values of the model's arguments (config or checkpoint metadata).
        detail = " ".join(str(exc).split())
        raise UserError(
            f"model {name!r}: bad argument ({detail}); check model.* in the config"
            + _unexpected_hint(detail)
        ) from None
    model.arch = arch  # type: ignore[assignment]
    return model


def rebuild_model(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the ``arch`` dict stored in checkpoint metadata."""
    args = dict(arch)
    name = args.pop("name")
    return build_model(name, **args)


__all__ = ["MODELS", "Normalize", "add_zero_biases", "build_model", "rebuild_model"]
