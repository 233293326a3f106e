"""CIFAR ResNet-20 (He et al. 2016) and WideResNet-16-4 (Zagoruyko & Komodakis 2016), as the
paper's code builds them (IGITUGraz/RobustSNNConversion, ``models/ResNet.py`` and
``models/WideResNet.py``).

Activations are ``nn.ReLU`` modules and pooling is average pooling, so the converter can swap
every ReLU (including the one after each residual merge) for a spiking neuron. Two details of
the paper's code that differ from the textbook networks are kept: a block merges its shortcut
and residual branch with a learnable convex combination (two weights, both starting at 1/2)
instead of a plain sum, and the linear readout has no bias unless ``bias`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

from robustsnn.models.layers import Normalize, init_like_paper


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


def convex_merge(weight: torch.Tensor, skip: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``weight[0] * skip + weight[1] * residual``: the residual merge of the paper's ResNet and
    WRN blocks (its ``ConvexCombination(2)``, weights learnable, both starting at 1/2).

    A plain function on a block's parameter rather than a module of its own, so the converter
    (which accepts only known leaf layers) sees it as arithmetic inside the block."""
    return add_skip(weight[1] * residual, weight[0] * skip)


def merge_weights() -> nn.Parameter:
    """The two learnable weights of :func:`convex_merge`, starting at (1/2, 1/2)."""
    return nn.Parameter(torch.full((2,), 0.5))


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
    """conv-BN-ReLU-conv-BN, merged with the shortcut (convex combination), then ReLU."""

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
        self.merge = merge_weights()
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(convex_merge(self.merge, self.shortcut(x), out))


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 inputs: 3 stages of 3 basic blocks with 16/32/64 channels x width.

    ``bias`` adds biases to the convolutions and the readout (the paper's code: the readout
    only, with ``--use_bias``; its convolutions never have one)."""

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
        self.fc = nn.Linear(cin, num_classes, bias=bias)
        init_like_paper(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(self.normalize(x))))))


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv-BN-ReLU-conv, merged with the shortcut (the
    input itself, or a 1x1 conv of the activated input when the shape changes)."""

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
        self.merge = merge_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return convex_merge(self.merge, skip, out)


class WideResNet(nn.Module):
    """WRN-depth-k: (depth - 4) / 6 wide blocks per stage, widths 16k / 32k / 64k, then
    BN-ReLU, global average pooling (the paper's ``AvgPool2d(8)`` on 32x32 inputs) and a linear
    readout (bias only with ``bias``). No dropout (the paper's default, 0.0)."""

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
        self.fc = nn.Linear(cin, num_classes, bias=bias)
        init_like_paper(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn(self.layers(self.stem(self.normalize(x)))))
        return self.fc(self.flatten(self.pool(out)))
