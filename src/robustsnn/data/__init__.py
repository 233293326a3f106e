"""Datasets (registry, file formats), whole splits in memory as uint8, batched augmentation.

Images leave this package as float32 in [0, 1], NCHW; normalization is the model's first layer.
"""

from __future__ import annotations

from robustsnn.data.augment import augment, iterate_batches, to_float
from robustsnn.data.datasets import (
    DATASETS,
    DatasetRequest,
    default_data_dir,
    load_dataset,
    mnist5k_split,
)
from robustsnn.data.subsets import shuffled_indices, stratified_indices
from robustsnn.data.types import Dataset, DatasetInfo, channel_stats

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "DatasetRequest",
    "augment",
    "channel_stats",
    "default_data_dir",
    "iterate_batches",
    "load_dataset",
    "mnist5k_split",
    "shuffled_indices",
    "stratified_indices",
    "to_float",
]
