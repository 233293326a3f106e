"""CIFAR ResNet-20 (He et al. 2016) and WideResNet-16-4 (Zagoruyko & Komodakis 2016).

Activations are ``nn.ReLU`` modules and pooling is average pooling, so the converter can swap
every ReLU (including the one after each residual add) for a spiking neuron.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

from robustsnn.models.layers import Normalize


def add_skip(out: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``out + skip``; a skip with fewer rows is repeated along dim 0 to match ``out``.

    In a converted SNN the tensors before the first spiking layer carry no time axis (direct
    input coding computes the first current once, ``[B, ...]``), while everything after it is
    time-merged ``[T*B, ...]``; a block whose identity shortcut starts before the first spiking
    layer (WRN's first block when the stem width equals the block width) adds the two. Repeating
    the static tensor T times is exactly what the time-merged layout holds at every step.
    """
    if skip.shape[0] != out.shape[0] and skip.shape[0] and out.shape[0] % skip.shape[0] == 0:
        skip = skip.repeat(out.shape[0] // skip.shape[0], *([1] * (skip.dim() - 1)))
    return out + skip


# A leaf for torch.fx: conversion traces models (BN folding, functional checks) and the shape test
# above cannot be traced symbolically.
fx.wrap("add_skip")


def stages(
    block: Callable[[int, int, int, bool], nn.Module],
    cin: int,
    widths: Sequence[int],
    blocks: int,
    bias: bool,
) -> tuple[nn.Sequential, int]:
    """``blocks`` blocks ``block(cin, cout, stride, bias)`` per stage of width ``widths[s]``; the
    first block of every stage but the first has stride 2. Returns the blocks and their output
    channels."""
    layers: list[nn.Module] = []
    for stage, cout in enumerate(widths):
        for i in range(blocks):
            layers.append(block(cin, cout, 2 if (i == 0 and stage > 0) else 1, bias))
            cin = cout
    return nn.Sequential(*layers), cin


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus shortcut, then ReLU (post-activation)."""

    def __init__(self, cin: int, cout: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), nn.BatchNorm2d(cout)
            )
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 inputs: 3 stages of 3 basic blocks with 16/32/64 channels x width."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 1,
        blocks: int = 3,
        bias: bool = False,
    ) -> None:
        super().__init__()
        del image_size  # global average pooling adapts to any size
        c = [16 * width, 32 * width, 64 * width]
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 3, padding=1, bias=bias), nn.BatchNorm2d(c[0]), nn.ReLU()
        )
        self.layers, cin = stages(BasicBlock, c[0], c, blocks, bias)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(self.normalize(x))))))


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv-BN-ReLU-conv plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return add_skip(out, skip)


class WideResNet(nn.Module):
    """WRN-depth-k: (depth - 4) / 6 wide blocks per stage, widths 16k / 32k / 64k."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        depth: int = 16,
        width: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__()
        del image_size
        if (depth - 4) % 6:
            raise ValueError("WideResNet depth must be 6n + 4")
        n = (depth - 4) // 6
        c = [16, 16 * width, 32 * width, 64 * width]
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(in_channels, c[0], 3, padding=1, bias=bias)
        self.layers, cin = stages(WideBlock, c[0], c[1:], n, bias)
        self.bn = nn.BatchNorm2d(cin)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn(self.layers(self.stem(self.normalize(x)))))
        return self.fc(self.flatten(self.pool(out)))
