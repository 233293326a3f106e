"""Fixtures for the training tests: a tiny separable image dataset and a tiny CNN."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from robustsnn.data import Dataset, DatasetInfo
from robustsnn.models import build_model

TOY_INFO = DatasetInfo(
    name="toy",
    num_classes=2,
    channels=1,
    image_size=8,
    mean=(0.5,),
    std=(0.25,),
    hflip=True,
    crop_padding=1,
    cutout=2,
)


def make_toy_dataset(n_train: int = 48, n_test: int = 32, seed: int = 0) -> Dataset:
    """Class 0: dark images, class 1: bright images (uint8 noise around 70 or 185)."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 2
        base = torch.where(y == 1, 185.0, 70.0).view(n, 1, 1, 1)
        x = base + 25.0 * torch.randn(n, 1, 8, 8, generator=g)
        return x.clamp(0, 255).to(torch.uint8), y.long()

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return Dataset(TOY_INFO, x_train, y_train, x_test, y_test)


def make_small_cnn(seed: int = 0, num_classes: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        "cnn_small",
        num_classes=num_classes,
        in_channels=1,
        image_size=8,
        mean=TOY_INFO.mean,
        std=TOY_INFO.std,
        width=4,
        fc=16,
    )


@pytest.fixture
def toy_dataset() -> Dataset:
    return make_toy_dataset()


@pytest.fixture
def small_cnn() -> Callable[..., nn.Module]:
    return make_small_cnn
