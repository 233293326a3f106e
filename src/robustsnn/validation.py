"""One validation layer before any work: every refusal is one line (a :class:`UserError`, exit 2)
that says what is wrong and how to fix it, raised before anything is trained or written.

- :func:`validate_args`: a parsed command line (numbers in range, names that exist, output
  paths that can be written, options that contradict each other);
- :func:`validate_run_config`: a whole resolved run configuration (every ``--set``/YAML value),
  called by :func:`robustsnn.config.load_config`, so ``run`` and every value of a ``sweep`` are
  checked before the first stage starts.

Data and checkpoints are checked where they are read (finite weights: ``io.models.load_model``;
labels 0..K-1 and damaged files: ``robustsnn.data``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from robustsnn.errors import UserError

# attribute -> (lowest allowed value, option name); checked when the command has the attribute
AT_LEAST: dict[str, tuple[float, str]] = {
    "width": (1, "--width"),
    "fc": (1, "--fc"),
    "eval_n": (0, "--eval-n"),  # 0 = no evaluation after training
    "n": (1, "--num-samples"),
    "batch_size": (1, "--batch-size"),
    "epochs": (0, "--epochs"),
    "T": (1, "--T"),
    "calib_T": (1, "--calib-T"),
    "calib_batches": (1, "--calib-batches"),
    "calib_batch_size": (1, "--calib-batch-size"),
    "correction_images": (1, "--correction-images"),
    "qcfs_levels": (1, "--qcfs-levels"),
    "adversary_steps": (1, "--adversary-steps"),
    "cutout": (0, "--cutout"),
    "workers": (0, "--workers"),
    "escalate_levels": (0, "--escalate-levels"),
    "beta": (0, "--beta"),
}
POSITIVE: dict[str, str] = {
    "scale": "--scale",
    "escalate_seconds": "--escalate-seconds",
    "dt": "--dt",
}
# commands whose --out names a file rather than a folder
FILE_OUT = ("export",)


def check_out_dir(path: str | Path, option: str = "--out") -> None:
    """Refuse an output folder that is a file or cannot be created/written; creates nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {p} is an existing file; {option} names a folder for results")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{option} {p} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} {p} cannot be written: no write permission in {probe}")


def check_out_file(path: str | Path, option: str = "--out") -> None:
    """Refuse an output file whose folder cannot be created or that is a folder."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{option} {p} is a folder; {option} names the file to write")
    check_out_dir(p.parent, option)


def check_workers(workers: int, option: str = "--workers") -> None:
    """Refuse more worker processes than this machine has cores (0 = one per core)."""
    from robustsnn.evaluation.workers import available_cores

    cores = available_cores()
    if workers > cores:
        raise UserError(
            f"{option} {workers}: this machine has {cores} CPU core(s); use at most {cores} "
            "(0 = one per core)"
        )


def _numbers(args: argparse.Namespace) -> None:
    for attr, (low, option) in AT_LEAST.items():
        value = getattr(args, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
            raise UserError(f"{option} {value}: must be >= {low:g}")
    for attr, option in POSITIVE.items():
        value = getattr(args, attr, None)
        if isinstance(value, (int, float)) and not value > 0:
            raise UserError(f"{option} {value}: must be > 0")
    for attr, option, low, high in (
        ("percentile", "--percentile", 0.0, 100.0),
        ("leak", "--leak", 0.0, 1.0),
        ("v_init", "--v-init", 0.0, 1.0),
    ):
        value = getattr(args, attr, None)
        if value is None:
            continue
        if attr == "v_init" and not low <= value <= high:
            raise UserError(f"{option} {value}: must lie in [{low:g}, {high:g}]")
        if attr != "v_init" and not low < value <= high:
            raise UserError(f"{option} {value}: must lie in ({low:g}, {high:g}]")


def _evaluation_names(args: argparse.Namespace) -> None:
    """--attack / --ensemble / --estimator: names that exist and fit together."""
    from robustsnn.attacks import ATTACKS
    from robustsnn.evaluation.ensembles import ENSEMBLES, resolve_ensemble

    attack = getattr(args, "attack", None)
    ensemble = getattr(args, "ensemble", None)
    estimator = getattr(args, "estimator", None)
    if attack is not None and attack.strip().lower() == "none":
        if estimator is not None:
            raise UserError(
                f"--estimator {estimator} with --attack none: no attack runs, so no estimator is "
                "used; drop --estimator or name an attack"
            )
        if getattr(args, "escalate", False) or getattr(args, "escalate_to", None):
            raise UserError("--escalate with --attack none: nothing to escalate; drop one")
        if getattr(args, "save_adversarial", False):
            raise UserError("--save-adversarial with --attack none: no attack, nothing to save")
    elif attack is not None:
        if attack.strip() not in ENSEMBLES:
            ATTACKS.get(attack.strip())
            if getattr(args, "escalate", False) or getattr(args, "escalate_to", None):
                raise UserError(
                    "--escalate works with an ensemble, not with --attack; use --ensemble"
                )
    if ensemble is not None:
        resolve_ensemble(ensemble)
    if getattr(args, "escalate_to", None):
        resolve_ensemble(args.escalate_to)
    if estimator is not None:
        from robustsnn.snn.estimators import parse_estimator

        parse_estimator(estimator)


def _report_dirs(dirs: Iterable[str]) -> None:
    for d in dirs:
        p = Path(d)
        if p.is_file():
            raise UserError(
                f"{p} is a file, not a run folder; give the folder that holds evaluation.json "
                "(e.g. runs/quickstart)"
            )
        if not p.exists():
            raise UserError(f"run folder {p} does not exist")


def validate_args(args: argparse.Namespace) -> None:
    """Every check of a parsed command line that needs no model, data or training."""
    _numbers(args)
    command = getattr(args, "command", None)
    out = getattr(args, "out", None)
    if out is not None:
        if command in FILE_OUT:
            check_out_file(out)
        else:
            check_out_dir(out)
    workers = getattr(args, "workers", None)
    if isinstance(workers, int) and workers > 0:
        check_workers(workers)
    if command == "evaluate":
        _evaluation_names(args)
    if command == "latency":
        from robustsnn.evaluation.ensembles import resolve_ensemble

        resolve_ensemble(args.ensemble)
        steps = [t.strip() for t in str(args.steps).split(",") if t.strip()]
        if not steps or not all(t.isdigit() and int(t) >= 1 for t in steps):
            raise UserError(f"--steps takes comma-separated integers >= 1, e.g. 4,8,16, got "
                            f"{args.steps!r}")  # fmt: skip
    if command == "report":
        _report_dirs(args.run_dirs)
    if command == "sweep":
        if not [v for v in str(args.values).split(",") if v.strip()]:
            raise UserError("--values is empty; give comma-separated values, e.g. 0,0.5,1")
        if any(not v.strip() for v in str(args.values).split(",")):
            raise UserError(f"--values {args.values!r} has an empty value; remove the extra comma")
    if command == "finetune" and getattr(args, "objective", None) is not None:
        from robustsnn.training.objectives import FINETUNE_OBJECTIVES

        if args.objective not in FINETUNE_OBJECTIVES:
            raise UserError(
                f"--objective {args.objective!r} is not a finetuning objective; valid: "
                f"{', '.join(FINETUNE_OBJECTIVES)}"
            )


def _at_least(key: str, value: Any, low: int) -> None:
    if value is not None and value < low:
        raise UserError(f"config key {key}: must be >= {low}, got {value}")


def _one_of(key: str, value: Any, valid: Iterable[Any]) -> None:
    valid = tuple(valid)
    if value not in valid:
        shown = ", ".join(str(v) for v in valid)
        raise UserError(f"config key {key}: {value!r} is not one of {shown}")


def validate_run_config(cfg: Any) -> None:
    """Every value of a resolved :class:`robustsnn.config.RunConfig` that no stage can run with,
    named by its key; names are looked up in their registries (one line, the valid ones)."""
    from robustsnn.data.datasets import DATASETS
    from robustsnn.evaluation.ensembles import resolve_ensemble
    from robustsnn.models import MODELS
    from robustsnn.snn.estimators import parse_estimator
    from robustsnn.training.objectives import OBJECTIVES

    m, a, s, f, e = cfg.model, cfg.ann, cfg.snn, cfg.finetune, cfg.eval
    for key, value, low in (
        ("model.width", m.width, 1), ("model.fc", m.fc, 1), ("model.qcfs_levels", m.qcfs_levels, 1),
        ("ann.epochs", a.epochs, 0), ("ann.batch_size", a.batch_size, 1), ("ann.steps", a.steps, 1),
        ("snn.T", s.T, 1), ("snn.calib_T", s.calib_T, 1), ("snn.calib_batches", s.calib_batches, 1),
        ("snn.calib_batch_size", s.calib_batch_size, 1),
        ("snn.correction_images", s.correction_images, 1),
        ("finetune.epochs", f.epochs, 0), ("finetune.batch_size", f.batch_size, 1),
        ("finetune.adversary_steps", f.adversary_steps, 1), ("eval.n", e.n, 1),
        ("eval.batch_size", e.batch_size, 1), ("eval.escalate_levels", e.escalate_levels, 0),
        ("eval.workers", e.workers, 0),
    ):  # fmt: skip
        _at_least(key, value, low)
    if e.workers:
        check_workers(e.workers, "config key eval.workers:")
    for T in e.latency_T or []:
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise UserError(f"config key eval.latency_T: {T!r} is not an integer >= 1")
    for key, value, valid in (
        ("model.activation", m.activation, (None, "relu", "qcfs")),
        ("ann.optimizer", a.optimizer, ("sgd", "adam")),
        ("snn.reset", s.reset, ("hard", "soft")),
        ("snn.bn", s.bn, ("keep", "reset", "reestimate", "fold")),
        ("snn.threshold", s.threshold, ("percentile", "mse", "qcfs")),
        ("snn.calibration", s.calibration, ("none", "bias", "potential")),
        ("eval.diagnostics", e.diagnostics, ("none", "fast", "full")),
        ("eval.split", e.split, ("test", "train")),
    ):
        _one_of(key, value, valid)
    if not 0 < s.leak <= 1:
        raise UserError(f"config key snn.leak: must lie in (0, 1], got {s.leak}")
    if not 0 <= s.v_init <= 1:
        raise UserError(f"config key snn.v_init: must lie in [0, 1], got {s.v_init}")
    if not 0 < s.percentile <= 100:
        raise UserError(f"config key snn.percentile: must lie in (0, 100], got {s.percentile}")
    if not s.scale > 0:
        raise UserError(f"config key snn.scale: must be > 0, got {s.scale}")
    for key, value in (("ann.beta", a.beta), ("finetune.beta", f.beta)):
        if value is not None and value < 0:
            raise UserError(f"config key {key}: must be >= 0, got {value}")
    name = cfg.data.dataset.partition(":")[0].strip().lower()
    if name not in DATASETS:
        raise UserError(
            f"config key data.dataset: unknown dataset {cfg.data.dataset!r}; valid: "
            f"{', '.join(DATASETS.names())} (npz:PATH, imagefolder:PATH)"
        )
    for key, value, registry in (
        ("model.name", m.name, MODELS),
        ("ann.objective", a.objective, OBJECTIVES),
    ):
        if value not in registry:
            raise UserError(f"config key {key}: unknown {value!r}; valid: "
                            f"{', '.join(registry.names())}")  # fmt: skip
    for key, spec in (("eval.ensemble", e.ensemble),):
        try:
            resolve_ensemble(spec)
        except UserError as exc:
            raise UserError(f"config key {key}: {exc}") from None
    try:
        parse_estimator(f.estimator)
    except UserError as exc:
        raise UserError(f"config key finetune.estimator: {exc}") from None


__all__ = [
    "check_out_dir",
    "check_out_file",
    "check_workers",
    "validate_args",
    "validate_run_config",
]
