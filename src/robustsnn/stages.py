"""Pipeline steps that sit on top of the library layers: convert a checkpoint, measure accuracy vs T."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from robustsnn.conversion import ConversionConfig, convert
from robustsnn.data import load_dataset, shuffled_indices, stratified_indices, to_float
from robustsnn.data.types import Dataset
from robustsnn.errors import UserError
from robustsnn.io.models import load_model, save_snn
from robustsnn.snn.encoding import check_stochastic_options, configure_stochastic
from robustsnn.snn.network import SpikingNetwork
from robustsnn.snn.ta_lif import apply_ta_lif
from robustsnn.training.ann import provenance
from robustsnn.training.metrics import evaluate_accuracy


def dataset_spec_of(meta: dict[str, Any]) -> str:
    """The dataset spec recorded in checkpoint metadata (``dataset.spec`` or a plain string)."""
    ds = meta.get("dataset")
    if isinstance(ds, dict) and "spec" in ds:
        return str(ds["spec"])
    if isinstance(ds, str):
        return ds
    raise UserError("checkpoint metadata names no dataset; pass --dataset")


def eval_subset(data: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced, deterministic test subset of ``n`` images (float) and labels."""
    idx = stratified_indices(data.y_test, n)
    return to_float(data.x_test[idx]), data.y_test[idx]


def calibration_images(data: Dataset, cfg: ConversionConfig, seed: int) -> torch.Tensor:
    """Shuffled training images for threshold calibration (splits may be grouped by class)."""
    count = cfg.calib_batches * cfg.calib_batch_size
    if cfg.calibration != "none":
        count = max(count, cfg.correction_images)  # the corrections use the first ones
    idx = shuffled_indices(len(data.x_train), count, seed)
    return to_float(data.x_train[idx])


def accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100
) -> float:
    return float(evaluate_accuracy(model, x, y, batch_size, quiet=True))


def convert_checkpoint(
    ann_path: str | Path,
    out_path: str | Path,
    cfg: ConversionConfig,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    eval_n: int = 1000,
    device: str = "cpu",
    input_encoding: str = "direct",
    threshold_noise: float = 0.0,
    ta_lif: float | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Convert an ANN checkpoint to an SNN checkpoint; return its path and a summary.

    ``input_encoding`` / ``threshold_noise`` make the SNN random (:mod:`robustsnn.snn.encoding`);
    the thresholds are calibrated on the deterministic network first. ``ta_lif``: turn the
    neurons into HoSNN's threshold-adapting neurons with this initial ``theta_v``, their
    signatures fitted on the calibration images (:mod:`robustsnn.snn.ta_lif`)."""
    check_stochastic_options(input_encoding, threshold_noise)
    ann, meta = load_model(ann_path, device)
    if meta.get("kind") != "ann":
        raise UserError(f"{ann_path} is an {meta.get('kind')} checkpoint; convert needs an ANN")
    data = load_dataset(dataset_spec_of(meta), data_dir)
    start = time.perf_counter()
    calibration = calibration_images(data, cfg, seed).to(device)
    snn = convert(ann, calibration, cfg)
    if ta_lif is not None:
        apply_ta_lif(snn, calibration, adaptation=ta_lif)
    seconds = time.perf_counter() - start
    configure_stochastic(snn, input_encoding, threshold_noise)
    x, y = eval_subset(data, eval_n)
    ann_acc = accuracy(ann, x, y)
    with torch.random.fork_rng(devices=[]):  # a random SNN's one draw, repeatable by the seed
        torch.manual_seed(seed)
        snn_acc = accuracy(snn, x, y)
    info = {
        "ann_clean_accuracy": ann_acc,
        "snn_clean_accuracy": snn_acc,
        "eval_n": len(y),
        "seconds": round(seconds, 2),
    }
    save_snn(
        out_path,
        snn,
        dataset=meta.get("dataset"),
        normalization=meta.get("normalization"),
        source={"path": str(ann_path), "objective": meta.get("objective"), "eps": meta.get("eps")},
        clean_accuracy=snn_acc,
        stage="converted",
        conversion_summary=info,
        seed=seed,
        provenance=provenance(device),
    )
    return Path(out_path), info


def accuracy_vs_T(
    snn: SpikingNetwork, x: torch.Tensor, y: torch.Tensor, steps: list[int], batch_size: int = 50
) -> list[float]:
    """Clean accuracy of ``snn`` at each T (restores T afterwards)."""
    original = snn.T
    out: list[float] = []
    try:
        for T in steps:
            snn.T = T
            out.append(accuracy(snn, x, y, batch_size))
    finally:
        snn.T = original
    return out
