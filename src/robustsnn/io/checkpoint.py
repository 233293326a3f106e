"""Checkpoints: safetensors weights + JSON metadata, written atomically, validated on load.

Nothing is ever unpickled. ``model.safetensors`` holds tensors; ``model.json`` beside it holds
the metadata (architecture, dataset, normalization, T, thresholds, provenance). The metadata is
also embedded in the safetensors header so a lone weights file still says what it is.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from robustsnn.errors import UserError
from robustsnn.io.atomic import atomic_write_json

FORMAT_VERSION = 1


def metadata_path(path: str | Path) -> Path:
    """``runs/x/snn.safetensors`` -> ``runs/x/snn.json``."""
    return Path(path).with_suffix(".json")


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> None:
    """Save tensors (safetensors) and metadata (JSON, beside and in the header), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = with_relative_dataset({"format_version": FORMAT_VERSION, **metadata}, path.parent)
    header = {"robustsnn": json.dumps(meta)}
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(clean, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    atomic_write_json(metadata_path(path), meta)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and metadata; any unreadable or inconsistent file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint not found: {path} (check the path; runs write <run>/ann.safetensors)"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"checkpoint {path} is corrupt or not a safetensors file ({exc}); re-create it"
        ) from None
    meta: dict[str, Any] | None = None
    mpath = metadata_path(path)
    if mpath.is_file():
        try:
            meta = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(
                f"metadata {mpath} is not valid JSON ({exc}); delete it to use the copy in the weights file"
            ) from None
    if meta is None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if "robustsnn" not in header:
            raise UserError(
                f"checkpoint {path} has no robustsnn metadata (no {mpath.name} beside it)"
            )
        meta = json.loads(header["robustsnn"])
    if not isinstance(meta, dict) or "kind" not in meta:
        raise UserError(f"metadata of {path} lacks 'kind'; it was not written by robustsnn")
    return tensors, resolve_dataset(meta, path.parent)


# Dataset specs with a path (``npz:PATH``, ``imagefolder:PATH``) also carry the path relative
# to the checkpoint's folder, so a run folder moved together with its data still evaluates.
PATH_DATASETS = ("npz", "imagefolder")
RELATIVE_SPEC_KEY = "spec_from_checkpoint"


def _spec_path(spec: str) -> tuple[str, str] | None:
    name, sep, argument = spec.strip().partition(":")
    if not sep or name.strip().lower() not in PATH_DATASETS or not argument.strip():
        return None
    return name.strip(), argument.strip()


def with_relative_dataset(meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``meta`` with ``dataset.spec_from_checkpoint``: the dataset path relative to ``folder``."""
    dataset = meta.get("dataset")
    spec = dataset.get("spec") if isinstance(dataset, dict) else dataset
    parts = _spec_path(spec) if isinstance(spec, str) else None
    if parts is None or not Path(parts[1]).expanduser().exists():
        return meta
    relative = os.path.relpath(Path(parts[1]).expanduser().resolve(), folder.resolve())
    entry = dict(dataset) if isinstance(dataset, dict) else {"spec": spec}
    entry[RELATIVE_SPEC_KEY] = f"{parts[0]}:{Path(relative).as_posix()}"
    return {**meta, "dataset": entry}


def resolve_dataset(meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``meta`` whose dataset spec points at an existing path: as written if it exists from
    here, else the path relative to the checkpoint (the run folder was moved)."""
    dataset = meta.get("dataset")
    if not isinstance(dataset, dict) or not isinstance(dataset.get(RELATIVE_SPEC_KEY), str):
        return meta
    spec = dataset.get("spec")
    parts = _spec_path(spec) if isinstance(spec, str) else None
    if parts is not None and Path(parts[1]).expanduser().exists():
        return meta
    relative = _spec_path(dataset[RELATIVE_SPEC_KEY])
    if relative is None or not (folder / relative[1]).exists():
        return meta
    moved = os.path.normpath(folder / relative[1])
    return {**meta, "dataset": {**dataset, "spec": f"{relative[0]}:{moved}"}}


def load_state_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path
) -> None:
    """Load ``state`` into ``model`` strictly; missing/unexpected keys or shapes are a UserError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(
            f"checkpoint {source} does not match the architecture in its metadata "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); it is corrupt or from another version"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise UserError(
                f"checkpoint {source}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"the architecture expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(dict(state), strict=True)
