"""Small SNNs whose arithmetic is exact in float32 and float64 alike (dyadic weights, inputs and
thresholds), so robustsnn, the numpy NIR reference and an import must agree spike for spike."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustsnn.conversion import ConversionConfig, spiking_body
from robustsnn.models import build_model
from robustsnn.snn.network import SpikingNetwork

SIZE = 8
MEAN, STD = [0.25], [0.5]


def dyadic_(tensor: torch.Tensor, gen: torch.Generator, step: float = 1 / 16, low: int = -12,
            high: int = 13) -> None:  # fmt: skip
    """Fill ``tensor`` with random multiples of ``step`` (exact in every float format)."""
    tensor.copy_(torch.randint(low, high, tensor.shape, generator=gen).to(tensor.dtype) * step)


def dyadic_snn(name: str, leak: float = 1.0, T: int = 4, seed: int = 0, **kw) -> SpikingNetwork:
    """A zoo model converted at random dyadic weights, BN (eps 0) and thresholds."""
    ann = build_model(name, num_classes=4, in_channels=1, image_size=SIZE, mean=MEAN, std=STD, **kw)
    paper_neuron = ConversionConfig(bn="keep", leak=leak, reset="hard", v_init=0.0)
    snn = SpikingNetwork(spiking_body(ann, paper_neuron), T=T)
    gen = torch.Generator().manual_seed(seed)
    thresholds = [0.5, 0.75, 1.0, 1.25, 0.625]
    with torch.no_grad():
        for m in snn.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                dyadic_(m.weight, gen, step=1 / 16, low=-6, high=7)
                if m.bias is not None:
                    dyadic_(m.bias, gen, step=1 / 8, low=-2, high=5)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eps = 0.0
                m.running_var.fill_(0.25)
                dyadic_(m.running_mean, gen, step=1 / 8, low=-2, high=3)
                dyadic_(m.weight, gen, step=1 / 4, low=1, high=5)
                dyadic_(m.bias, gen, step=1 / 8, low=-2, high=5)
        for i, n in enumerate(snn.neurons()):
            n.threshold.fill_(thresholds[i % len(thresholds)])
    snn.eval()
    return snn


def dyadic_images(batch: int = 4, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (batch, 1, SIZE, SIZE), generator=gen).float() / 16


def reference_logits(outputs: np.ndarray) -> np.ndarray:
    return outputs.mean(0)
