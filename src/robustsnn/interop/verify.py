"""Verify before trusting: an imported or adapted SNN must reproduce its source on a batch.

A robustness number of an imported model means something only if the model robustsnn attacks
is the model the source framework runs. :func:`verify` compares logits (and, when given, spike
counts) with the source's on the same inputs; ``robustsnn verify`` stores the verdict beside the
checkpoint and ``robustsnn evaluate`` refuses a checkpoint whose verdict is a failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.io.atomic import atomic_write_json

VERIFICATION_FILE = "verification.json"
LOGIT_ATOL = 1e-4
LOGIT_RTOL = 1e-4
SPIKE_RTOL = 1e-3
VERIFY_SEED = 0


@contextmanager
def same_draws() -> Iterator[None]:
    """Torch's global generator seeded with ``VERIFY_SEED`` inside the block (restored after):
    a model that draws in its forward (a Poisson encoder, ``torch.bernoulli``) draws the same
    numbers in the source run and in each comparison run."""
    with torch.random.fork_rng():
        torch.manual_seed(VERIFY_SEED)
        yield


@dataclass
class Verification:
    """The outcome of one comparison with a reference."""

    passed: bool
    n: int
    max_abs_logit_diff: float
    prediction_agreement: float
    spike_count_rel_diff: float | None
    detail: str


def spike_counts(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Total spikes per sample over all spiking layers and steps (``[B]``)."""
    with torch.no_grad(), model.recording() as record, same_draws():  # type: ignore[operator]
        model(x)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for spikes in record.values():
        total += spikes.reshape(spikes.shape[0], spikes.shape[1], -1).sum(dim=(0, 2)).double()
    return total


def verify(
    model: nn.Module,
    x: torch.Tensor,
    reference_logits: torch.Tensor,
    reference_spikes: torch.Tensor | None = None,
    *,
    atol: float = LOGIT_ATOL,
    rtol: float = LOGIT_RTOL,
) -> Verification:
    """Compare ``model(x)`` with the source's logits (and total spike counts per sample).

    Each forward runs under :func:`same_draws`: a random model is compared on the draws its
    source made under the same seed (the source run must use :func:`same_draws` too)."""
    with torch.no_grad(), same_draws():
        logits = model(x).detach().double().cpu()
    ref = torch.as_tensor(reference_logits).double().cpu()
    if logits.shape != ref.shape:
        raise UserError(
            f"the reference logits have shape {tuple(ref.shape)}, the model gives "
            f"{tuple(logits.shape)}; they are not outputs of the same model on the same inputs"
        )
    diff = (logits - ref).abs()
    within = bool(torch.all(diff <= atol + rtol * ref.abs()))
    agree = float((logits.argmax(1) == ref.argmax(1)).double().mean())
    spike_diff = None
    if reference_spikes is not None and hasattr(model, "recording"):
        ours = spike_counts(model, x)
        theirs = torch.as_tensor(reference_spikes).double().reshape(-1)
        spike_diff = float((ours.sum() - theirs.sum()).abs() / theirs.sum().clamp(min=1.0))
    passed = within and agree == 1.0 and (spike_diff is None or spike_diff <= SPIKE_RTOL)
    detail = (
        f"max |logit diff| {float(diff.max()):.3g} (allowed {atol:g} + {rtol:g}|ref|), "
        f"predictions agree on {agree:.1%}"
    )
    if spike_diff is not None:
        detail += f", total spikes differ by {spike_diff:.3%}"
    return Verification(passed, int(x.shape[0]), float(diff.max()), agree, spike_diff, detail)


def require(verification: Verification, what: str = "the imported model") -> Verification:
    """Raise a one-line UserError unless the verification passed."""
    if not verification.passed:
        raise UserError(
            f"{what} does not reproduce its source ({verification.detail}); robustness numbers "
            "of it would not be the source's: fix the import (dt, T, readout) before evaluating"
        )
    return verification


def read_reference(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A reference batch ``.npz``: ``x`` (pixels in [0, 1], NCHW), ``logits`` and optionally
    ``spike_counts`` (total spikes per sample), as the source framework computed them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc})") from None
    missing = [k for k in ("x", "logits") if k not in arrays]
    if missing:
        raise UserError(
            f"reference {path} lacks {missing}; it needs x and logits (spike_counts optional)"
        )
    spikes = arrays.get("spike_counts")
    return (
        torch.tensor(arrays["x"], dtype=torch.float32),
        torch.tensor(arrays["logits"], dtype=torch.float64),
        None if spikes is None else torch.tensor(spikes, dtype=torch.float64),
    )


def verification_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).parent / VERIFICATION_FILE


def save_verification(checkpoint: str | Path, result: Verification, reference: str) -> Path:
    path = verification_path(checkpoint)
    atomic_write_json(path, {"checkpoint": Path(checkpoint).name, "reference": reference,
                             **asdict(result)})  # fmt: skip
    return path


def check_verified(checkpoint: str | Path) -> dict[str, Any] | None:
    """The stored verdict of an imported checkpoint; a failed one is a UserError."""
    path = verification_path(checkpoint)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("checkpoint") == Path(checkpoint).name and not record.get("passed", True):
        raise UserError(
            f"{checkpoint} failed verification against {record.get('reference')} "
            f"({record.get('detail')}); robustsnn will not report robustness for it"
        )
    return record


def verify_checkpoint(checkpoint: str | Path, reference: str | Path) -> Verification:
    """``robustsnn verify``: compare a checkpoint with a reference batch; store the verdict."""
    from robustsnn.io.models import load_model

    model, _ = load_model(checkpoint)
    x, logits, spikes = read_reference(reference)
    result = verify(model, x, logits, spikes)
    save_verification(checkpoint, result, str(reference))
    return result
