"""Small layers shared by the model zoo."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``: the first layer of every model, so inputs are pixels."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std must have one value per channel")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def init_like_paper(model: nn.Module) -> nn.Module:
    """The initialisation of the paper's code (IGITUGraz/RobustSNNConversion, every model):
    Kaiming-normal convolution weights (fan_out, ReLU gain), BatchNorm weight 1 and bias 0, and
    zero biases; linear weights keep PyTorch's default. Returns ``model`` for chaining."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


def add_zero_biases(model: nn.Module) -> list[str]:
    """Give every bias-free Conv2d/Linear of ``model`` a zero-initialised trainable bias.

    The paper's finetuning (``--use_bias``) loads bias-free ANN weights into a network with
    biases, which start at zero; this does the same in place and returns the layers it changed.
    The outputs are unchanged until the biases train.
    """
    changed: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is None:
            out = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            weight = module.weight
            module.bias = nn.Parameter(weight.new_zeros(out))
            changed.append(name)
    return changed


def conv_bn_relu(cin: int, cout: int, bias: bool = False) -> list[nn.Module]:
    """3x3 convolution, BatchNorm, ReLU (a module, so conversion can swap it)."""
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU()]
