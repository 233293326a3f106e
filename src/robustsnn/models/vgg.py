"""VGG-style networks as used for ANN-to-SNN conversion: conv-BN-ReLU blocks, AvgPool, no MaxPool."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from robustsnn.models.layers import Normalize, conv_bn_relu

# "A" = 2x2 average pooling; integers are output channels (before the width multiplier).
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
    "vgg16": [
        64,
        64,
        "A",
        128,
        128,
        "A",
        256,
        256,
        256,
        "A",
        512,
        512,
        512,
        "A",
        512,
        512,
        512,
        "A",
    ],
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
    ) -> int:
        """Create ``normalize`` and ``features``; return the classifier's input size."""
        feats, channels, size = _features(config, in_channels, image_size, scale, bias)
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(*feats)
        return channels * size * size

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(self.normalize(x)))


class VGG(_ConvTrunkNet):
    """VGG with BatchNorm and average pooling; classifier ``hidden-hidden-classes`` with dropout."""

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
        dropout: float = 0.5,
        bias: bool = False,
    ) -> None:
        super().__init__()
        flat = self._build_features(config, in_channels, image_size, mean, std, width, bias)
        hidden_layers: list[nn.Module] = []
        if hidden > 0:
            hidden_layers = [
                nn.Linear(flat, hidden, bias=True),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden, bias=True),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            flat = hidden
        self.classifier = nn.Sequential(
            nn.Flatten(), *hidden_layers, nn.Linear(flat, num_classes, bias=True)
        )


class SmallVGG(_ConvTrunkNet):
    """CPU-scale VGG: ``w, A, 2w, A, 4w, 4w, A`` convolutions, one hidden FC layer, a readout."""

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
        flat = self._build_features(config, in_channels, image_size, mean, std, 1.0, bias)
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(flat, fc), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(fc, num_classes))
        self.classifier = nn.Sequential(*layers)


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
        flat = self._build_features(config, in_channels, image_size, mean, std, 1.0, bias)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, fc), nn.ReLU(), nn.Linear(fc, num_classes)
        )
