"""VGG-style networks for ANN-to-SNN conversion: conv-BN-ReLU blocks, AvgPool, no MaxPool.

``vgg11``, ``vgg11_tin`` and ``vgg16`` are the networks of the paper's public code
(IGITUGraz/RobustSNNConversion, ``models/VGG.py``); ``vgg11_standard`` is the classic VGG11
layout (Simonyan & Zisserman: five pools) kept for comparison; ``vgg_small`` and ``cnn_small``
are CPU-scale nets of this project.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from robustsnn.models.layers import Normalize, conv_bn_relu, init_like_paper

# "A" = 2x2 average pooling; integers are output channels (before the width multiplier).
VGG16_LAYOUT: list[int | str] = [64, 64, "A", 128, 128, "A", 256, 256, 256, "A"]
VGG16_LAYOUT += [512, 512, 512, "A", 512, 512, 512, "A"]
VGG_CONFIGS: dict[str, list[int | str]] = {
    # The paper's CIFAR/SVHN VGG11: three pools, so a 32x32 input leaves 512 x 4 x 4 features.
    "vgg11": [64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512],
    # The paper's TinyImageNet VGG11: four pools, then global average pooling.
    "vgg11_tin": [64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512],
    # The paper's VGG16 (and the classic one): five pools, 512 x 1 x 1 on 32x32 inputs.
    "vgg16": VGG16_LAYOUT,
    # The classic VGG11 layout (configuration "A" of Simonyan & Zisserman, 2015): five pools.
    "vgg11_standard": [64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
}


def _features(
    config: Sequence[int | str], in_channels: int, image_size: int, scale: float, bias: bool
) -> tuple[list[nn.Module], int, int]:
    """Build the convolutional trunk; pools that would shrink the map below 1x1 are skipped."""
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    for item in config:
        if item == "A":
            if size >= 2:
                layers.append(nn.AvgPool2d(2))
                size //= 2
        else:
            out = max(1, int(round(int(item) * scale)))
            layers += conv_bn_relu(channels, out, bias)
            channels = out
    return layers, channels, size


class _ConvTrunkNet(nn.Module):
    """``classifier(features(normalize(x)))``: the layout shared by the VGG-style models."""

    classifier: nn.Sequential

    def _build_features(
        self,
        config: Sequence[int | str],
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: float,
        bias: bool,
    ) -> tuple[int, int]:
        """Create ``normalize`` and ``features``; return the trunk's channels and map size."""
        feats, channels, size = _features(config, in_channels, image_size, scale, bias)
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(*feats)
        return channels, size

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(self.normalize(x)))


class VGG(_ConvTrunkNet):
    """VGG with BatchNorm and average pooling, as the paper's code builds it.

    Classifier: [global average pool] -> Flatten -> ``hidden_layers`` x (Linear(hidden) -> ReLU
    [-> Dropout]) -> Linear(classes). ``bias`` switches the biases of every conv and linear
    layer (the paper trains without and adds zero biases for finetuning); ``classifier_bias``
    overrides it for the linear layers. Weights start as in the paper's code (Kaiming-normal
    convolutions, fan_out).
    """

    def __init__(
        self,
        config: Sequence[int | str],
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: float = 1.0,
        hidden: int = 4096,
        hidden_layers: int = 2,
        dropout: float = 0.2,
        global_pool: bool = False,
        bias: bool = False,
        classifier_bias: bool | None = None,
    ) -> None:
        super().__init__()
        if hidden < 0 or hidden_layers < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"VGG needs hidden >= 0, hidden_layers >= 0 and 0 <= dropout < 1 "
                f"(got hidden={hidden}, hidden_layers={hidden_layers}, dropout={dropout})"
            )
        channels, size = self._build_features(
            config, in_channels, image_size, mean, std, width, bias
        )
        linear_bias = bias if classifier_bias is None else classifier_bias
        head: list[nn.Module] = []
        if global_pool:
            head.append(nn.AdaptiveAvgPool2d(1))
            size = 1
        head.append(nn.Flatten())
        flat = channels * size * size
        for _ in range(hidden_layers if hidden > 0 else 0):
            head += [nn.Linear(flat, hidden, bias=linear_bias), nn.ReLU()]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            flat = hidden
        head.append(nn.Linear(flat, num_classes, bias=linear_bias))
        self.classifier = nn.Sequential(*head)
        init_like_paper(self)


class SmallVGG(_ConvTrunkNet):
    """CPU-scale VGG: ``w, A, 2w, A, 4w, 4w, A`` convolutions, one hidden FC layer, a readout.

    Initialised like the paper's networks (Kaiming-normal convolutions)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 32,
        fc: int = 512,
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        config: list[int | str] = [width, "A", 2 * width, "A", 4 * width, 4 * width, "A"]
        channels, size = self._build_features(config, in_channels, image_size, mean, std, 1.0, bias)
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(channels * size * size, fc), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(fc, num_classes))
        self.classifier = nn.Sequential(*layers)
        init_like_paper(self)


class SmallCNN(_ConvTrunkNet):
    """Two conv-BN-ReLU-AvgPool blocks and a small classifier: the fastest model, for tests and MNIST."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 16,
        fc: int = 128,
        bias: bool = False,
    ) -> None:
        super().__init__()
        config: list[int | str] = [width, "A", 2 * width, "A"]
        channels, size = self._build_features(config, in_channels, image_size, mean, std, 1.0, bias)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, fc),
            nn.ReLU(),
            nn.Linear(fc, num_classes),
        )
