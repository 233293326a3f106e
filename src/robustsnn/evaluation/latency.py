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
from pathlib import Path
from typing import Any

from robustsnn.data import load_dataset, to_float
from robustsnn.errors import UserError
from robustsnn.evaluation.escalate import EscalationPolicy, evaluate_escalating
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
    *,
    out_dir: str | Path,
    ensemble: str = "reliable",
    eps: float | str,
    n: int,
    label: str | None = None,
    seed: int = 0,
    batch_size: int = 100,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    diagnostics: str = "fast",
    escalation: EscalationPolicy | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Evaluate the SNN checkpoint at each T in ``steps``; write and return ``latency.json``.

    ``escalation`` None evaluates with ``ensemble`` alone; a policy escalates at each T as
    ``evaluate --escalate`` does (the number then names ``<ensemble> + escalation``).
    """
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
    data = load_dataset(spec, data_dir)
    index = stratified_indices(data.y_test, n, data.info.num_classes)
    x, y = to_float(data.x_test[index]).to(device), data.y_test[index].to(device)
    out = Path(out_dir)
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
    original_T = model.T
    try:
        for T in Ts:
            if T in rows:
                continue
            model.T = T
            state = out / f"T{T}"
            common: dict[str, Any] = dict(
                eps=eps_value, ensemble=ensemble, batch_size=batch_size, seed=seed,
                state_dir=state, quiet=quiet, diagnostics=diagnostics,
                indices=index.tolist(),
            )  # fmt: skip
            if escalation is None:
                result = evaluate(model, x, y, **common)
            else:
                result = evaluate_escalating(
                    model, x, y, max_levels=escalation.levels,
                    budget_seconds=escalation.seconds, at_least=escalation.at_least, **common,
                )  # fmt: skip
            rows[T] = _row(T, result, len(index))
            _write(file, setup, rows, name)
    finally:
        model.T = original_T
    return _write(file, setup, rows, name)


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
