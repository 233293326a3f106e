"""Save and load ANN and SNN checkpoints as models (safetensors + JSON metadata).

``load_model(path)`` returns a ready-to-use ``nn.Module`` (an ANN, or a SpikingNetwork whose
forward gives mean logits over T) plus its metadata, whatever kind the checkpoint holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsnn.conversion import ConversionConfig, spiking_body
from robustsnn.errors import UserError
from robustsnn.io.checkpoint import load_state_into, load_tensors, save_tensors
from robustsnn.io.formats import ARCH_BUILDERS, BODY_TRANSFORMS
from robustsnn.models import rebuild_model
from robustsnn.snn.encoding import configure_stochastic
from robustsnn.snn.network import SpikingNetwork

# BODY_TRANSFORMS (structural transforms applied to a rebuilt SNN body before its weights are
# loaded, e.g. BNTT) and ARCH_BUILDERS (architectures that are not zoo models, e.g. imported
# graphs) live in robustsnn.io.formats: the modules that define them register there, and
# this module reads them without importing those modules (``import robustsnn`` does).
__all__ = ["ARCH_BUILDERS", "BODY_TRANSFORMS", "build_snn_from_metadata", "load_model",
           "save_ann", "save_snn", "snn_metadata"]  # fmt: skip


def snn_metadata(snn: SpikingNetwork, **extra: Any) -> dict[str, Any]:
    """Metadata describing an SNN: architecture, neuron settings, thresholds, T, conversion."""
    arch = getattr(snn, "arch", None)
    if arch is None:
        raise ValueError("SpikingNetwork has no .arch (build it with convert() or an SNN trainer)")
    conversion = dict(getattr(snn, "conversion", None) or {})
    return {
        "kind": "snn",
        "arch": arch,
        "conversion": conversion,
        "transforms": list(getattr(snn, "transforms", [])),
        **snn.describe(),
        **extra,
    }


def save_snn(path: str | Path, snn: SpikingNetwork, **metadata: Any) -> Path:
    """Write ``snn`` to ``path`` (.safetensors) with metadata beside it, atomically."""
    meta = snn_metadata(snn, **metadata)
    save_tensors(path, snn.state_dict(), meta)
    return Path(path)


def save_ann(path: str | Path, ann: nn.Module, **metadata: Any) -> Path:
    arch = getattr(ann, "arch", None)
    if arch is None:
        raise ValueError("ANN has no .arch (build it with robustsnn.models.build_model)")
    save_tensors(path, ann.state_dict(), {"kind": "ann", "arch": arch, **metadata})
    return Path(path)


def build_snn_from_metadata(meta: dict[str, Any]) -> SpikingNetwork:
    """Rebuild an (untrained) SpikingNetwork with the structure the metadata describes."""
    ann = ARCH_BUILDERS.get(meta["arch"]["name"], rebuild_model)(meta["arch"])
    known = set(ConversionConfig.__dataclass_fields__)
    conv = {k: v for k, v in (meta.get("conversion") or {}).items() if k in known}
    conv.setdefault("reset", meta.get("reset", "hard"))
    conv.setdefault("leak", meta.get("leak", 1.0))
    conv.setdefault("v_init", 0.0)  # written before the option existed: the paper's zero start
    cfg = ConversionConfig(**conv)
    body = spiking_body(ann, cfg)
    for name in meta.get("transforms", []):
        if name not in BODY_TRANSFORMS:
            raise UserError(f"checkpoint needs the SNN transform {name!r}, unknown to this version")
        body = BODY_TRANSFORMS[name](body, meta)
    snn = SpikingNetwork(body, T=int(meta.get("T", 8)))
    # random parts (Poisson input, noisy thresholds): written only when set
    configure_stochastic(
        snn, str(meta.get("input_encoding", "direct")), float(meta.get("threshold_noise", 0.0))
    )
    snn.arch = meta["arch"]  # type: ignore[assignment]
    snn.conversion = meta.get("conversion") or {}  # type: ignore[assignment]
    snn.transforms = list(meta.get("transforms", []))  # type: ignore[assignment]
    return snn


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an ANN or SNN checkpoint as a model in eval mode, plus its metadata."""
    state, meta = load_tensors(path)
    kind = meta.get("kind")
    if not isinstance(meta.get("arch"), dict) or "name" not in meta["arch"]:
        raise UserError(f"checkpoint {path} metadata has no valid 'arch'; it cannot be rebuilt")
    if kind not in ("ann", "snn"):
        raise UserError(f"checkpoint {path} has kind {kind!r}; expected 'ann' or 'snn'")
    model: nn.Module
    try:
        model = rebuild_model(meta["arch"]) if kind == "ann" else build_snn_from_metadata(meta)
    except UserError as exc:
        raise UserError(f"checkpoint {path}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        # Metadata edited by hand or written by another version: say so in one line.
        detail = " ".join(str(exc).split())
        raise UserError(
            f"checkpoint {path}: its metadata does not describe a model this version can "
            f"build ({type(exc).__name__}: {detail}); re-create the checkpoint"
        ) from None
    for key, value in state.items():  # a diverged or damaged model must not be evaluated
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(
                f"checkpoint {path}: tensor {key!r} holds {bad} NaN or infinite value(s); the "
                "model diverged or the file is damaged: re-create it"
            )
    load_state_into(model, state, path)
    model.to(device)
    model.eval()
    return model, meta


def expected_input(meta: dict[str, Any]) -> tuple[int, ...] | None:
    """The input shape ``[C, H, W]`` a checkpoint's model reads, when its metadata says."""
    arch = meta.get("arch") if isinstance(meta.get("arch"), dict) else {}
    assert isinstance(arch, dict)
    if "in_channels" in arch and "image_size" in arch:
        size = int(arch["image_size"])
        return (int(arch["in_channels"]), size, size)
    shape = meta.get("input_shape") or arch.get("image_shape")
    if isinstance(shape, (list, tuple)) and shape:
        return tuple(int(s) for s in shape)
    return None


def _describe_shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"{shape[0]}-channel {shape[1]}x{shape[2]} images"
    return f"inputs of shape {list(shape)}"


def check_input(model: nn.Module, meta: dict[str, Any], x: torch.Tensor, dataset: str) -> None:
    """Refuse, in one line, a dataset whose images the model cannot read, before any attack:
    the shape the metadata names, else one forward pass on one sample."""
    got = tuple(int(s) for s in x.shape[1:])
    expected = expected_input(meta)
    if expected is not None and expected != got:
        raise UserError(
            f"the model reads {_describe_shape(expected)}; dataset {dataset} has "
            f"{_describe_shape(got)}: evaluate it on a dataset of that shape (--dataset)"
        )
    if expected is not None or x.shape[0] == 0:
        return
    try:
        with torch.no_grad():
            model(x[:1])
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:160]
        raise UserError(
            f"the model does not run on dataset {dataset} ({_describe_shape(got)}): {detail}"
        ) from None
