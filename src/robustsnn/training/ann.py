"""Step 1 of the pipeline: train a (robust) ANN and save it with its metadata."""

from __future__ import annotations

import dataclasses
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from robustsnn import __version__, distributed
from robustsnn.attacks import build_attack
from robustsnn.data import load_dataset, stratified_indices
from robustsnn.errors import UserError
from robustsnn.io.checkpoint import save_tensors
from robustsnn.models import build_model
from robustsnn.training.metrics import evaluate_accuracy
from robustsnn.training.objectives import build_objective, objective_params
from robustsnn.training.trainer import Trainer

ANN_NAME = "ann"


def provenance(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Versions and time, written into every checkpoint's metadata."""
    return {
        "robustsnn": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train_ann(
    dataset_spec: str,
    model_name: str,
    objective: str,
    *,
    eps: float,
    epochs: int,
    out_dir: str | Path,
    batch_size: int = 64,
    lr: float = 0.1,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    seed: int = 0,
    data_dir: str | Path | None = None,
    model_kwargs: dict[str, Any] | None = None,
    eval_n: int = 1000,
    augment: bool = True,
    cutout: int | None = None,
    quiet: bool = False,
    device: str = "cpu",
    **objective_params_: Any,
) -> Path:
    """Train ``model_name`` on ``dataset_spec`` with ``objective`` at training radius ``eps``.

    Writes ``<out>/ann.safetensors`` + ``<out>/ann.json`` (and keeps the resumable
    ``ann.state.safetensors`` and ``log.jsonl``); returns the weights' path. A rerun with the
    same arguments resumes an interrupted run, or only re-evaluates a finished one. The metadata
    records clean and PGD-20 accuracy (at ``eps``) on the first ``eval_n`` test images.
    ``cutout`` overrides the dataset's cutout hole side (0 = off; None = the dataset's default).
    """
    out = Path(out_dir)
    torch.manual_seed(seed)  # weight initialization only; everything else uses generators
    data = load_dataset(dataset_spec, data_dir)
    if cutout is not None:
        if cutout < 0:
            raise UserError(f"cutout must be >= 0 (0 = off), got {cutout}")
        data = dataclasses.replace(data, info=dataclasses.replace(data.info, cutout=int(cutout)))
    info = data.info
    model = build_model(
        model_name,
        num_classes=info.num_classes,
        in_channels=info.channels,
        image_size=info.image_size,
        mean=info.mean,
        std=info.std,
        **(model_kwargs or {}),
    )
    params = dict(objective_params_)
    if "eps" in objective_params(objective):
        params.setdefault("eps", float(eps))
    loss = build_objective(objective, **params)
    trainer = Trainer(
        model,
        loss,
        epochs=epochs,
        out_dir=out,
        name=ANN_NAME,
        phase=ANN_NAME,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        augment=augment,
        quiet=quiet,
    )
    history = trainer.fit(data)

    n = max(0, min(eval_n, len(data.x_test)))
    clean_acc = pgd_acc = None
    if n > 0:
        subset = stratified_indices(data.y_test, n)  # test splits may be grouped by class
        x_eval, y_eval = data.x_test[subset], data.y_test[subset]
        clean_acc = evaluate_accuracy(model, x_eval, y_eval, 256, quiet=quiet, desc="clean")
        eval_gen = torch.Generator().manual_seed(seed)
        pgd20 = build_attack("pgd", eps=float(eps), steps=20)
        pgd_acc = evaluate_accuracy(
            model, x_eval, y_eval, 256, pgd20, generator=eval_gen, quiet=quiet, desc="pgd20"
        )

    arch = dict(getattr(model, "arch", {"name": model_name}))
    metadata: dict[str, Any] = {
        "kind": "ann",
        "arch": arch,
        "dataset": {"spec": dataset_spec, **dataclasses.asdict(info)},
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "objective": loss.describe(),
        "eps": float(eps),
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": {
            "name": optimizer,
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
        },
        "augmentation": {
            "crop_padding": info.crop_padding,
            "hflip": info.hflip,
            "cutout": info.cutout,
        },
        "seed": seed,
        "eval_n": n,
        "clean_accuracy": clean_acc,
        "pgd20_accuracy": pgd_acc,
        "train": history[-1] if history else None,
        "provenance": provenance(device),
    }
    path = out / f"{ANN_NAME}.safetensors"
    if distributed.is_main():  # under torchrun every rank holds rank 0's model after training
        save_tensors(path, model.state_dict(), metadata)
    distributed.barrier()
    return path
