"""The old keyword call style of the training entry points, kept for one release.

``finetune_snn(path, out_dir=..., beta=...)``, ``train_snn(dataset, model, objective, T=...,
...)``, ``train_ann(dataset, model, objective, eps=..., ...)`` and ``Trainer(model, objective,
epochs=..., lr=...)`` still work and warn (DeprecationWarning): their keywords are split here
into the config objects (:mod:`robustsnn.config`) that are now the one API.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

from robustsnn.config import RunContext

RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunContext))


def warn(old: str, new: str) -> None:
    """The DeprecationWarning of an old call style, pointing at the caller of the entry point
    (called from the entry point's helper that reads the old keywords)."""
    warnings.warn(
        f"{old} is deprecated and goes in the next release; call {new}",
        DeprecationWarning,
        stacklevel=4,
    )


def split_run(keywords: Mapping[str, Any]) -> tuple[RunContext, dict[str, Any]]:
    """The :class:`RunContext` keywords (out_dir, name, seed, device, quiet, data_dir, eval_n) and
    the rest."""
    run = {k: v for k, v in keywords.items() if k in RUN_FIELDS}
    rest = {k: v for k, v in keywords.items() if k not in RUN_FIELDS}
    if "out_dir" not in run:
        raise TypeError("missing the keyword argument out_dir")
    return RunContext(**run), rest


def config_fields(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))
