"""Tiny models and data shared by the evaluation tests (all run in well under a second)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustsnn.conversion import convert
from robustsnn.snn import SpikingNetwork

SHAPE = (1, 4, 4)
NUM_CLASSES = 3


def _init(model: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def tiny_mlp(seed: int = 0, hidden: int = 16) -> nn.Sequential:
    """A 2-layer ReLU MLP on 1x4x4 images with 3 classes."""
    dim = SHAPE[0] * SHAPE[1] * SHAPE[2]
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES)
    )
    _init(model, seed)
    with torch.no_grad():  # centre the logits so that every class gets predicted
        model[3].bias.sub_(model(images(64, seed=seed + 7)).mean(0))
    return model


def tiny_linear(seed: int = 0) -> nn.Sequential:
    """A linear classifier on 1x4x4 images with 3 classes."""
    dim = SHAPE[0] * SHAPE[1] * SHAPE[2]
    model = nn.Sequential(nn.Flatten(), nn.Linear(dim, NUM_CLASSES))
    _init(model, seed, 1.0)
    with torch.no_grad():
        model[1].bias.sub_(model(images(64, seed=seed + 7)).mean(0))
    return model


def images(n: int, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g)


def tiny_snn(seed: int = 0, T: int = 4) -> SpikingNetwork:
    """The tiny MLP converted to an SNN with small calibration settings (the paper's recipe,
    which the evaluation tests were calibrated against)."""
    ann = tiny_mlp(seed)
    paper = dict(reset="hard", v_init=0.0, threshold="percentile", bn="reestimate")
    snn = convert(
        ann, images(32, seed=seed + 100), T=T, calib_T=8, calib_batches=2, calib_batch_size=16,
        **paper,
    )  # fmt: skip
    snn.eval()
    return snn


def labels_of(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


class HardStep(nn.Module):
    """``x -> linear(step(x))`` with ``step = (x > 0.5).float()``: zero input gradient."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.linear = tiny_linear(seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear((x > 0.5).float())


def strip_seconds(obj: Any) -> Any:
    """A copy of a JSON-like object without any ``seconds`` or ``member_seconds`` keys
    (timings differ per run)."""
    if isinstance(obj, dict):
        return {
            k: strip_seconds(v) for k, v in obj.items() if k not in ("seconds", "member_seconds")
        }
    if isinstance(obj, list):
        return [strip_seconds(v) for v in obj]
    return obj


def toy_npz_cnn(
    root: Path, n: int, seed: int, base: float, step: float, spread: float
) -> tuple[str, np.ndarray, np.ndarray, nn.Module]:
    """A 3-class 8x8 npz dataset written to ``root/toy.npz`` (class c's pixels ~ N(base + step c,
    spread), the same images as train and test) and an untrained ``cnn_small`` on it; returns
    the dataset spec, images, labels and the model."""
    from robustsnn.data import load_dataset
    from robustsnn.models import build_model

    g = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = g.normal(base + step * y[:, None, None], spread, size=(n, 8, 8))
    x = x.clip(0, 255).astype(np.uint8)
    npz = root / "toy.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=x, y_test=y)
    spec = f"npz:{npz}"
    info = load_dataset(spec).info
    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=3, in_channels=1, image_size=8, mean=info.mean,
                      std=info.std, width=4, fc=16)  # fmt: skip
    return spec, x, y, ann


def load_oracle_gap() -> Any:
    """``benchmarks/oracle_gap.py`` as a module (benchmarks are scripts, not a package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks/oracle_gap.py"
    spec = importlib.util.spec_from_file_location("oracle_gap", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["oracle_gap"] = module
    spec.loader.exec_module(module)
    return module
