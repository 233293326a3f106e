"""The ``model`` section's width/fc defaults belong to the quickstart's cnn_small only."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustsnn.config import load_config
from robustsnn.errors import UserError
from robustsnn.models import build_model

MNIST = {"num_classes": 10, "in_channels": 1, "image_size": 28, "mean": [0.1], "std": [0.3]}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_quickstart_model_keeps_its_sizes() -> None:
    model = load_config().model
    assert (model.name, model.width, model.fc) == ("cnn_small", 8, 64)


def test_another_model_gets_its_own_defaults(tmp_path: Path) -> None:
    model = load_config(_write(tmp_path, "model: {name: resnet20}\n")).model
    assert (model.width, model.fc) == (None, None)
    net = build_model(model.name, **MNIST, **model.kwargs())
    assert net.fc.in_features == 64  # ResNet-20 at width 1: 16/32/64 channels, not 128/256/512


def test_given_sizes_are_kept(tmp_path: Path) -> None:
    model = load_config(_write(tmp_path, "model: {name: vgg_small, width: 4, fc: 32}\n")).model
    assert (model.width, model.fc) == (4, 32)
    model = load_config(overrides=["model.name=resnet20", "model.width=2"]).model
    assert (model.width, model.fc) == (2, None)


def test_named_on_the_command_line_too() -> None:
    model = load_config(overrides=["model.name=vgg_small"]).model
    assert (model.width, model.fc) == (None, None)


def test_a_size_the_model_does_not_take_still_says_so(tmp_path: Path) -> None:
    model = load_config(_write(tmp_path, "model: {name: resnet20, fc: 64}\n")).model
    with pytest.raises((UserError, TypeError)):
        build_model(model.name, **MNIST, **model.kwargs())
