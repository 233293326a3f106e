"""Model registry: every registered model builds, normalizes first, and is convertible.

Parametrized over ``MODELS`` (timm style), so a newly registered model is tested at once.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import fx, nn

from robustsnn.conversion import check_convertible
from robustsnn.errors import UserError
from robustsnn.models import MODELS, Normalize, build_model, rebuild_model

# Small settings per model so the whole grid stays fast on a CPU (defaults are paper-sized).
TINY: dict[str, dict[str, Any]] = {
    "vgg11": dict(width=0.0625, hidden=16),
    "vgg16": dict(width=0.0625, hidden=16),
    "vgg11_tin": dict(width=0.0625, hidden=16),
    "vgg11_standard": dict(width=0.0625, hidden=16),
    "resnet20": dict(width=1, blocks=1),
    "wrn16_4": dict(width=1),
    "cnn_small": dict(width=4, fc=16),
    "vgg_small": dict(width=4, fc=16),
}
ALLOWED_LEAVES = (
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
    Normalize,
)
SHAPES = [(1, 28), (3, 32)]


class _NormalizeLeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, module_qualified_name)


def _build(name: str, channels: int, size: int, classes: int = 7, **extra: Any) -> nn.Module:
    kw = {**TINY.get(name, {}), **extra}
    mean = [0.1 * (c + 1) for c in range(channels)]
    std = [0.2 + 0.05 * c for c in range(channels)]
    return build_model(
        name,
        num_classes=classes,
        in_channels=channels,
        image_size=size,
        mean=mean,
        std=std,
        **kw,
    )


def test_registry_lists_the_zoo() -> None:
    assert set(MODELS.names()) >= {
        "vgg11",
        "vgg16",
        "vgg11_tin",
        "vgg11_standard",
        "resnet20",
        "wrn16_4",
        "cnn_small",
        "vgg_small",
    }
    assert set(TINY) >= set(MODELS.names()) or pytest.fail(
        f"add tiny settings for {set(MODELS.names()) - set(TINY)}"
    )
    with pytest.raises(UserError, match="valid: .*cnn_small"):
        _build("resnet1000", 3, 32)


@pytest.mark.parametrize(("channels", "size"), SHAPES, ids=["1x28", "3x32"])
@pytest.mark.parametrize("name", MODELS.names())
def test_model_builds_and_runs(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = _build(name, channels, size).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # the last layer is a linear readout
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and linears[-1].out_features == 7


@pytest.mark.parametrize("name", MODELS.names())
def test_model_is_convertible_by_construction(name: str) -> None:
    model = _build(name, 3, 32)
    # starts with Normalize: the first op the traced forward applies to the input
    graph = _NormalizeLeafTracer().trace(model)
    first = next(n for n in graph.nodes if n.op != "placeholder")
    assert first.op == "call_module" and first.args[0].op == "placeholder"
    first_module = model.get_submodule(str(first.target))
    assert isinstance(first_module, Normalize)
    assert torch.allclose(first_module.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    assert next(iter(model.children())) is first_module
    # only module activations (nn.ReLU exactly), no max-pooling, every leaf a convertible layer
    relus = 0
    for mod_name, module in model.named_modules():
        assert not isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)), mod_name
        if not list(module.children()):
            assert isinstance(module, ALLOWED_LEAVES), f"{mod_name}: {type(module).__name__}"
        if isinstance(module, nn.ReLU):
            assert type(module) is nn.ReLU
            relus += 1
    assert relus >= 2
    # no functional activations or reused ReLU modules either
    check_convertible(model)
    # and the readout comes after the last ReLU: nothing but linear ops follow it
    last_module_calls = [n for n in graph.nodes if n.op == "call_module"]
    assert isinstance(model.get_submodule(str(last_module_calls[-1].target)), nn.Linear)


@pytest.mark.parametrize("name", MODELS.names())
def test_rebuild_model_from_arch(name: str) -> None:
    torch.manual_seed(0)
    model = _build(name, 1, 28)
    assert model.arch["name"] == name  # type: ignore[index]
    rebuilt = rebuild_model(model.arch)  # type: ignore[arg-type]
    assert rebuilt.arch == model.arch  # type: ignore[attr-defined]
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_width_changes_the_parameters() -> None:
    small = _build("cnn_small", 1, 28, width=4)
    big = _build("cnn_small", 1, 28, width=8)
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())


def test_normalize_is_per_channel() -> None:
    norm = Normalize([0.5, 0.25], [0.5, 0.25])
    x = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
    assert norm(x).flatten().tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        Normalize([0.5], [0.5, 0.5])


@pytest.mark.parametrize(
    "bad",
    [dict(depth_of_field=2), dict(width="wide"), dict(fc=-1)],
    ids=["unknown-arg", "bad-width", "negative-fc"],
)
def test_bad_arguments_are_user_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(UserError) as info:
        _build("cnn_small", 1, 28, **bad)
    assert "\n" not in str(info.value)


def test_vgg11_default_is_the_papers_layout() -> None:
    """The paper's code (``models/VGG.py``, ``cfg_conv``): VGG11 has 8 convolutions and three
    pools, VGG16 13 convolutions and five; the classic 5-pool VGG11 is ``vgg11_standard``."""
    from robustsnn.models.vgg import VGG_CONFIGS

    assert VGG_CONFIGS["vgg11"] == [64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512]
    assert VGG_CONFIGS["vgg11_tin"] == [64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512]
    assert sum(c != "A" for c in VGG_CONFIGS["vgg16"]) == 13
    assert VGG_CONFIGS["vgg16"].count("A") == 5
    assert VGG_CONFIGS["vgg11_standard"].count("A") == 5
