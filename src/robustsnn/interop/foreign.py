"""A user's model named as ``module:factory`` with a state dict: built, loaded, wrapped, checked.

``robustsnn evaluate mypkg.nets:make_csnn --weights csnn.safetensors --T 4 --dataset mnist5k``
imports ``mypkg.nets`` (from the current directory or the installed packages), calls
``make_csnn()`` for an untrained ``nn.Module``, loads the weights (``.safetensors`` with
safetensors; ``.pt``/``.pth`` with ``torch.load(..., weights_only=True)``, so a pickle that would
run code is refused, never run), and wraps it (:func:`robustsnn.interop.stepwise.wrap`), checked
against the unwrapped model on the first samples of the dataset it is evaluated on, so the input
shape and the dataset are checked before any attack runs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.interop.frameworks import AdapterInfo
from robustsnn.interop.stepwise import wrap

SAFETENSORS = (".safetensors",)
TORCH_STATE = (".pt", ".pth")


def is_factory_spec(text: str) -> bool:
    """Whether ``text`` names a factory (``package.module:function``) rather than a file."""
    if ":" not in text or Path(text).exists():
        return False
    module, _, name = text.partition(":")
    return bool(module) and name.isidentifier() and all(p.isidentifier() for p in module.split("."))


def build_from_factory(spec: str) -> nn.Module:
    """Import ``module`` and call ``factory()`` of ``module:factory``; it must return a Module."""
    module_name, _, name = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"cannot import {module_name!r} for {spec!r} ({exc}); run from the folder that holds "
            "it or install it"
        ) from None
    except SyntaxError as exc:
        raise UserError(
            f"{module_name!r} ({spec!r}) has a syntax error at {exc.filename}:{exc.lineno} "
            f"({exc.msg}); fix the module"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed on import: one line
        detail = " ".join(str(exc).split())[:160]
        raise UserError(
            f"importing {module_name!r} ({spec!r}) failed: {type(exc).__name__}: {detail}"
        ) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"{module_name!r} has no callable {name!r} (the factory in {spec!r})")
    import inspect

    try:
        inspect.signature(factory).bind()
    except TypeError as exc:
        raise UserError(
            f"{spec} must be callable without arguments ({exc}); wrap it, e.g. "
            f"def make(): return {name}(...)"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): call it and see
        pass
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory failed: one line
        detail = " ".join(str(exc).split())[:160]
        raise UserError(f"{spec}() raised {type(exc).__name__}: {detail}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{spec}() returned {type(model).__name__}, not a torch nn.Module")
    return model


def load_state(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or ``.pt``/``.pth`` (tensors only, no code run)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise UserError(f"{path} is not a readable safetensors file ({detail})") from None
    if suffix in TORCH_STATE:
        import warnings

        try:
            with warnings.catch_warnings():  # the refusal below is the one line to show
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the unpickler refuses anything but tensors
            detail = " ".join(str(exc).split())[:160]
            raise UserError(
                f"{path} is not a state dict of tensors torch.load(weights_only=True) accepts "
                f"({type(exc).__name__}: {detail}); save it with torch.save(model.state_dict())"
            ) from None
        if (
            isinstance(state, dict)
            and "state_dict" in state
            and isinstance(state["state_dict"], dict)
        ):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise UserError(f"{path} does not hold a state dict (names -> tensors)")
        return state
    raise UserError(f"weights {path}: expected a .safetensors, .pt or .pth file, not {suffix!r}")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the state dict at ``path`` into ``model`` (every key must match)."""
    state = load_state(path)
    own = model.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise UserError(
                f"weights {path}: tensor {key!r} has shape {list(value.shape)}, the model's is "
                f"{list(own[key].shape)}; save them from the same model class and settings"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(f"weights {path}: tensor {key!r} holds NaN or infinite values")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:160]
        raise UserError(f"weights {path} do not fit the model ({detail})") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise UserError(
            f"weights {path} do not fit the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; save them with torch.save(model.state_dict()) from the same class"
        )


def load_foreign(
    spec: str,
    *,
    weights: str | Path | None,
    T: int | None,
    example: Tensor,
    input_shape: Sequence[int] | None = None,
    time: str = "loop",
    readout: str = "mean",
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """The wrapped model of ``module:factory`` and metadata for the evaluation."""
    if T is None:
        raise UserError(f"{spec} is a model factory: pass --T, the time steps its forward runs")
    sample = tuple(int(s) for s in example.shape[1:])
    if input_shape is not None and tuple(int(s) for s in input_shape) != sample:
        raise UserError(
            f"the model expects inputs of shape {list(input_shape)} (--input-shape), the dataset "
            f"gives {list(sample)}; pass a dataset of that shape (--dataset)"
        )
    model = build_from_factory(spec)
    if weights is not None:
        load_weights(model, weights)
    net = wrap(model, T, example=example, time=time, readout=readout)
    net.to(device)
    info = net.adapter
    assert isinstance(info, AdapterInfo)
    meta: dict[str, Any] = {"kind": "snn", "T": int(T), "source": spec,
                            "weights": None if weights is None else str(weights),
                            "input_shape": list(sample), "adapter": {
                                "framework": info.framework, "version": info.version,
                                "time": info.time_convention, "readout": readout,
                                "verification": info.verification.detail
                                if info.verification is not None else None}}  # fmt: skip
    return net, meta
