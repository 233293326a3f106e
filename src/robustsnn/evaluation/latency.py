"""Robustness vs latency: one SNN evaluated at several numbers of time steps T.

A converted SNN approximates its ANN better as T grows (rate-coding error shrinks as 1/T), and
an adversary can flip a spike count by one where the approximation is coarse. This runs the
same ensemble, eps, images and seeds at each T (the checkpoint's weights and thresholds
unchanged, only the number of steps) and writes ``latency.json``::

    {"T": [4, 8, ...], "n": 200, "eps": ..., "ensemble": "reliable", "model": "...",
     "rows": [{"T", "clean_accuracy", "clean_accuracy_ci95", "robust_accuracy",
               "robust_accuracy_ci95", "ensemble", "diagnostics", "seconds"}, ...],
     "curves": {"<label> clean": [...], "<label> robust": [...]}}

``curves`` is the format :func:`robustsnn.analysis.figures.plot_accuracy_vs_T` draws. Each T
is written as soon as it is done and resumes from its own state folder, so an interrupted
sweep loses at most the T it was on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from robustsnn.data import load_dataset, to_float
from robustsnn.errors import UserError
from robustsnn.evaluation.config import (
    RUN_FIELDS,
    EvaluationConfig,
    EvaluationContext,
    EvaluationRun,
    split_keywords,
    warn_old_call,
)
from robustsnn.evaluation.escalate import evaluate_escalating
from robustsnn.evaluation.evaluate import evaluate, parse_eps
from robustsnn.evaluation.intervals import wilson_interval
from robustsnn.evaluation.run import dataset_spec_from_meta, stratified_indices
from robustsnn.evaluation.table import diagnostics_verdict
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model
from robustsnn.snn import SpikingNetwork

LATENCY_FILE = "latency.json"


def _row(T: int, result: dict[str, Any], n: int) -> dict[str, Any]:
    robust = result.get("robust_accuracy")
    clean = float(result["clean_accuracy"])
    row = {
        "T": T,
        "clean_accuracy": clean,
        "clean_accuracy_ci95": list(wilson_interval(round(clean * n), n)),
        "robust_accuracy": robust,
        "robust_accuracy_ci95": None
        if robust is None
        else list(wilson_interval(round(float(robust) * n), n)),
        "ensemble": result.get("ensemble"),
        "diagnostics": diagnostics_verdict(result.get("diagnostics")),
        "seconds": sum(float(r.get("seconds", 0.0)) for r in result.get("ensembles", {}).values()),
    }
    escalation = result.get("escalation") or {}
    if escalation.get("steps"):
        row["escalation"] = [s["preset"] for s in escalation["steps"]]
    return row


def latency_curve(
    checkpoint: str | Path,
    steps: Sequence[int],
    config: EvaluationConfig | None = None,
    run: EvaluationRun | None = None,
    *,
    label: str | None = None,
    **old: Any,
) -> dict[str, Any]:
    """Evaluate the SNN checkpoint at each T in ``steps``; write and return ``latency.json``.

    ``config`` is each T's evaluation (its ``eps``, ``ensemble``, ``batch_size``, ``seed`` and
    ``diagnostics``); ``run`` says where (``out_dir``, required), on which images (``n``,
    ``data_dir``), the device, progress, and ``escalate``: None evaluates with the ensemble
    alone, a policy escalates at each T as ``evaluate --escalate`` does (the number then names
    ``<ensemble> + escalation``). ``label`` names the curves (default: the checkpoint's name).
    The old keyword style (``out_dir=..., eps=..., n=..., escalation=...``) is deprecated.
    """
    config, run = _latency_configs(config, run, old)
    if run.out_dir is None:
        raise TypeError("latency_curve() needs an output folder: EvaluationRun(out_dir=...)")
    ensemble, eps, seed = config.ensemble, config.eps, config.seed
    n, device, escalation = run.n, run.device, run.escalate
    Ts = [int(t) for t in steps]
    if not Ts or any(t < 1 for t in Ts):
        raise UserError(f"latency: time steps must be integers >= 1, got {list(steps)}")
    path = Path(checkpoint)
    model, meta = load_model(path, device)
    if not isinstance(model, SpikingNetwork):
        raise UserError(f"latency needs an SNN checkpoint; {path} holds a {meta.get('kind')!r}")
    spec = dataset_spec_from_meta(meta)
    if spec is None:
        raise UserError(f"checkpoint {path} does not name its dataset (metadata 'dataset')")
    data = load_dataset(spec, run.data_dir)
    index = stratified_indices(data.y_test, n, data.info.num_classes)
    x, y = to_float(data.x_test[index]).to(device), data.y_test[index].to(device)
    out = Path(run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eps_value = parse_eps(eps)
    name = label or path.stem
    setup = {
        "model": str(path),
        "n": len(index),
        "eps": eps_value,
        "ensemble": ensemble,
        "seed": seed,
        "escalation": None if escalation is None else escalation.__dict__,
    }
    file = out / LATENCY_FILE
    previous = json.loads(file.read_text()) if file.is_file() else {}
    rows: dict[int, dict[str, Any]] = {}
    if previous.get("setup") == setup:
        rows = {int(r["T"]): r for r in previous.get("rows", [])}
    at_T = replace(config, eps=eps_value)
    original_T = model.T
    try:
        for T in Ts:
            if T in rows:
                continue
            model.T = T
            state = out / f"T{T}"
            context = EvaluationContext(state_dir=state, quiet=run.quiet, indices=index.tolist())
            if escalation is None:
                result = evaluate(model, x, y, at_T, context)
            else:
                result = evaluate_escalating(model, x, y, at_T, context, escalation)
            rows[T] = _row(T, result, len(index))
            _write(file, setup, rows, name)
    finally:
        model.T = original_T
    return _write(file, setup, rows, name)


def _latency_configs(
    config: EvaluationConfig | None, run: EvaluationRun | None, old: dict[str, Any]
) -> tuple[EvaluationConfig, EvaluationRun]:
    """The call's config and run; the old keyword style (its defaults: ``reliable``, batches of
    100, quiet) is read and warned about."""
    if old:
        if config is not None or run is not None:
            raise TypeError("latency_curve() takes configs or the old keywords, not both")
        keywords = {"quiet": True, **old}
        if "escalation" in keywords:
            keywords["escalate"] = keywords.pop("escalation")
        config, _, rest = split_keywords(
            {k: v for k, v in keywords.items() if k not in RUN_FIELDS},
            "latency_curve",
            defaults={"ensemble": "reliable", "batch_size": 100},
        )
        if rest:
            raise TypeError(f"latency_curve() got unexpected keyword arguments: {', '.join(rest)}")
        run = EvaluationRun(**{k: v for k, v in keywords.items() if k in RUN_FIELDS})
        warn_old_call(
            "latency_curve(path, steps, out_dir=..., eps=..., ...)",
            "latency_curve(path, steps, EvaluationConfig(eps=..., ...), "
            "EvaluationRun(out_dir=..., n=..., ...))",
        )
    if config is None or run is None:
        raise TypeError(
            "latency_curve() missing its configs: "
            "latency_curve(path, steps, EvaluationConfig(eps=...), EvaluationRun(out_dir=...))"
        )
    return config, run


def _write(
    file: Path, setup: dict[str, Any], rows: dict[int, dict[str, Any]], name: str
) -> dict[str, Any]:
    ordered = [rows[t] for t in sorted(rows)]
    data = {
        "setup": setup,
        "T": [r["T"] for r in ordered],
        "n": setup["n"],
        "eps": setup["eps"],
        "ensemble": setup["ensemble"],
        "rows": ordered,
        "curves": {
            f"{name} clean": [r["clean_accuracy"] for r in ordered],
            f"{name} robust": [r["robust_accuracy"] or 0.0 for r in ordered],
        },
    }
    atomic_write_json(file, data)
    return data
