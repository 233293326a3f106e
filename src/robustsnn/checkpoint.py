"""Deprecated alias of :mod:`robustsnn.io.checkpoint` (safetensors + JSON checkpoints) and
:mod:`robustsnn.io.atomic` (``atomic_write_*``).

Moved in issue 34; this module only re-exports the names and will be removed in the next
release.
"""

import warnings

from robustsnn.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from robustsnn.io.checkpoint import (
    FORMAT_VERSION,
    PATH_DATASETS,
    RELATIVE_SPEC_KEY,
    load_state_into,
    load_tensors,
    metadata_path,
    resolve_dataset,
    save_tensors,
    with_relative_dataset,
)

__all__ = [
    "FORMAT_VERSION",
    "PATH_DATASETS",
    "RELATIVE_SPEC_KEY",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_state_into",
    "load_tensors",
    "metadata_path",
    "resolve_dataset",
    "save_tensors",
    "with_relative_dataset",
]

warnings.warn(
    "robustsnn.checkpoint is deprecated: import from robustsnn.io.checkpoint instead "
    "(atomic_write_bytes/text/json: robustsnn.io.atomic); "
    "robustsnn.checkpoint will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
