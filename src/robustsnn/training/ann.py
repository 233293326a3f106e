"""Step 1 of the pipeline: train a (robust) ANN and save it with its metadata."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import robustsnn.training.legacy as legacy
from robustsnn import __version__, distributed
from robustsnn.attacks import build_attack
from robustsnn.config import ANNConfig, RunContext
from robustsnn.data import load_dataset, stratified_indices
from robustsnn.errors import UserError
from robustsnn.io.checkpoint import save_tensors
from robustsnn.models import build_model
from robustsnn.training.metrics import evaluate_accuracy
from robustsnn.training.objectives import build_objective, objective_params
from robustsnn.training.trainer import Trainer, TrainerConfig

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


_ANN_KEYWORDS = frozenset(
    {"objective", "eps", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum",
     "augment", "cutout"}
)  # fmt: skip
"""The old call style's keywords that are :class:`ANNConfig` fields (the rest of its keywords,
but the run context's and ``model_kwargs``, are the objective's parameters)."""


def _train_ann_keywords(
    objective: str | None, keywords: dict[str, Any]
) -> tuple[ANNConfig, RunContext, dict[str, Any]]:
    """The config, run context and objective parameters of the old call ``train_ann(dataset,
    model, objective, eps=..., epochs=..., out_dir=..., **objective_params)``."""
    legacy.warn(
        "train_ann(dataset, model, objective, eps=..., out_dir=..., ...)",
        "train_ann(dataset, model, ANNConfig(...), RunContext(out_dir=...))",
    )
    run, rest = legacy.split_run(keywords)
    options = {k: v for k, v in rest.items() if k in _ANN_KEYWORDS}
    params = {k: v for k, v in rest.items() if k not in _ANN_KEYWORDS}
    if objective is not None:
        options["objective"] = objective
    # beta, steps and the rest stay objective parameters, passed only when given, as before
    return ANNConfig(**options), run, params


def train_ann(
    dataset: str,
    model: str,
    config: ANNConfig | str | None = None,
    run: RunContext | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    objective_options: Mapping[str, Any] | None = None,
    **keywords: Any,
) -> Path:
    """Train the zoo model ``model`` (with ``model_kwargs``) on the dataset spec ``dataset``
    with ``config.objective`` at training radius ``config.eps``: ``train_ann(dataset, model,
    ANNConfig(...), RunContext(out_dir=...))``.

    The objective's parameters are ``config``'s (``beta`` when set, ``steps`` for pgd_at, mart
    and trades; :meth:`ANNConfig.objective_params`), then ``objective_options``. Writes
    ``<out>/ann.safetensors`` + ``<out>/ann.json`` (and keeps the resumable
    ``ann.state.safetensors`` and ``log.jsonl``); returns the weights' path. A rerun with the
    same arguments resumes an interrupted run, or only re-evaluates a finished one. The metadata
    records clean and PGD-20 accuracy (at ``eps``) on the first ``eval_n`` test images.
    ``cutout`` overrides the dataset's cutout hole side (0 = off; None = the dataset's default).
    The old call ``train_ann(dataset, model, objective, eps=..., epochs=..., out_dir=...,
    **objective_params)`` still works for one release, with a DeprecationWarning.
    """
    params = dict(objective_options or {})
    if config is None or isinstance(config, str):
        if run is not None:
            raise TypeError("train_ann(dataset, model, config, run): config is an ANNConfig")
        config, run, legacy_params = _train_ann_keywords(config, keywords)
        params = {**legacy_params, **params}
    else:
        if keywords:
            raise TypeError(f"train_ann: pass {', '.join(keywords)} in the config or run context")
        params = {**config.objective_params(), **params}
    if run is None:
        raise TypeError("train_ann(dataset, model, config, run): give the run context")
    return _train_ann(dataset, model, config, run, dict(model_kwargs or {}), params)


def _train_ann(
    dataset_spec: str,
    model_name: str,
    c: ANNConfig,
    run: RunContext,
    model_kwargs: dict[str, Any],
    objective_params_: dict[str, Any],
) -> Path:
    """:func:`train_ann` with its arguments checked."""
    out = Path(run.out_dir)
    name = run.name or ANN_NAME
    eps, seed, device, quiet = c.eps, run.seed, run.device, run.quiet
    torch.manual_seed(seed)  # weight initialization only; everything else uses generators
    data = load_dataset(dataset_spec, run.data_dir)
    if c.cutout is not None:
        if c.cutout < 0:
            raise UserError(f"cutout must be >= 0 (0 = off), got {c.cutout}")
        data = dataclasses.replace(data, info=dataclasses.replace(data.info, cutout=int(c.cutout)))
    info = data.info
    model = build_model(
        model_name,
        num_classes=info.num_classes,
        in_channels=info.channels,
        image_size=info.image_size,
        mean=info.mean,
        std=info.std,
        **model_kwargs,
    )
    params = dict(objective_params_)
    if "eps" in objective_params(c.objective):
        params.setdefault("eps", float(eps))
    loss = build_objective(c.objective, **params)
    optimizer = c.optimizer_config()
    trainer_config = TrainerConfig(
        epochs=c.epochs, out_dir=out, name=name, phase=name, batch_size=c.batch_size,
        optimizer=optimizer, seed=seed, device=device, augment=c.augment, quiet=quiet,
    )  # fmt: skip
    history = Trainer(model, loss, trainer_config).fit(data)
    eval_n, epochs, batch_size = run.eval_n, c.epochs, c.batch_size

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
            "name": optimizer.name,
            "lr": optimizer.lr,
            "momentum": optimizer.momentum,
            "weight_decay": optimizer.weight_decay,
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
    path = out / f"{name}.safetensors"
    if distributed.is_main():  # under torchrun every rank holds rank 0's model after training
        save_tensors(path, model.state_dict(), metadata)
    distributed.barrier()
    return path
