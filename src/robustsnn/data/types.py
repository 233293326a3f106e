"""The two value types of the data layer: what a dataset is (`DatasetInfo`) and its tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DatasetInfo:
    """Everything a model, trainer or report needs to know about a dataset besides its pixels."""

    name: str
    num_classes: int
    channels: int
    image_size: int  # square images: H = W
    mean: tuple[float, ...]  # per channel, pixel units in [0, 1]
    std: tuple[float, ...]
    hflip: bool  # horizontal flip is a valid augmentation (False for digits)
    crop_padding: int  # random-crop zero padding (0 = off)
    cutout: int  # side of the square cutout hole (0 = off)
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"dataset {self.name!r}: mean/std need {self.channels} values, "
                f"got {len(self.mean)}/{len(self.std)}"
            )
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(
                f"dataset {self.name!r}: {len(self.classes)} class names "
                f"for {self.num_classes} classes"
            )


@dataclass
class Dataset:
    """A whole dataset in memory: uint8 images NCHW and int64 labels for both splits."""

    info: DatasetInfo
    x_train: torch.Tensor  # uint8 [N, C, H, W]
    y_train: torch.Tensor  # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __post_init__(self) -> None:
        # Catch programming errors in a loader early, not deep inside a training loop.
        info = self.info
        shape = (info.channels, info.image_size, info.image_size)
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != shape:
                raise ValueError(
                    f"dataset {info.name!r}: x_{split} must be uint8 [N, {shape[0]}, {shape[1]}, "
                    f"{shape[2]}], got {x.dtype} {list(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise ValueError(
                    f"dataset {info.name!r}: y_{split} must be int64 [{len(x)}], "
                    f"got {y.dtype} {list(y.shape)}"
                )

    def __repr__(self) -> str:
        info = self.info
        return (
            f"Dataset({info.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"{info.channels}x{info.image_size}x{info.image_size}, classes={info.num_classes})"
        )


def channel_stats(
    x_nchw: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (pixel units in [0, 1]) of uint8 NCHW images.

    Sums are exact integers accumulated in chunks, so memory stays small and the result does
    not depend on the chunk size.
    """
    n, c = x_nchw.shape[:2]
    total = np.zeros(c, dtype=np.int64)
    total_sq = np.zeros(c, dtype=np.int64)
    for start in range(0, n, chunk):
        part = x_nchw[start : start + chunk].astype(np.int64)
        total += part.sum(axis=(0, 2, 3))
        total_sq += (part * part).sum(axis=(0, 2, 3))
    count = max(n * x_nchw.shape[2] * x_nchw.shape[3], 1)
    mean = total / count / 255.0
    var = np.maximum(total_sq / count / 255.0**2 - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std < 1e-6, 1.0, std)  # a constant channel: avoid dividing by zero later
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


@dataclass
class Splits:
    """Decoded arrays of one dataset as numpy: uint8 NCHW images, int64 labels (internal)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as saved in a cache file (class names as a unicode array, no pickle)."""
        out = {
            "x_train": self.x_train,
            "y_train": self.y_train,
            "x_test": self.x_test,
            "y_test": self.y_test,
        }
        if self.classes is not None:
            out["classes"] = np.array(self.classes, dtype=str)
        return out
