"""A run config's model options that the chosen zoo model does not take fail in one line that
says how to leave them out (``model.fc`` defaults to cnn_small's 64, which ResNet-20 has no
use for)."""

import pytest

from robustsnn.errors import UserError
from robustsnn.models import build_model

SHAPE = dict(num_classes=10, in_channels=1, image_size=28, mean=[0.5], std=[0.5])


def test_option_the_model_does_not_take_names_the_fix() -> None:
    with pytest.raises(UserError) as info:
        build_model("resnet20", width=1, fc=64, **SHAPE)
    message = str(info.value)
    assert "\n" not in message
    assert "unexpected keyword argument 'fc'" in message
    assert "set model.fc: null" in message


def test_left_out_option_builds_and_bad_value_has_no_hint() -> None:
    model = build_model("resnet20", width=1, fc=None, **SHAPE)
    assert "fc" not in model.arch
    with pytest.raises(UserError) as info:
        build_model("cnn_small", width="wide", fc=64, **SHAPE)
    assert "set model." not in str(info.value)
