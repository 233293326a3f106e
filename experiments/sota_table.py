"""Issue #12's table: clean and robust accuracy (Wilson 95% CI, n) of one checkpoint under the
paper's ensembles, SA-PGD-100 with each new estimator, ``assg-sapgd``, ``reliable`` and
``reliable --escalate``, with seconds per sample. Every column resumes from its own state folder,
so the script can be killed and rerun; finished columns are skipped.

Usage:
  python experiments/sota_table.py OUT_DIR CKPT [--n 200] [--eps 8/255] [--threads 1]
         [--columns reliable,sapgd-rows,pgd-ensemble,apgd-ensemble,escalate] [--dataset SPEC]

Writes ``OUT_DIR/<column>/evaluation.json`` (records included) and ``OUT_DIR/table.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from robustsnn.data import load_dataset
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.evaluation.escalate import EscalationPolicy, evaluate_escalating, failing_checks
from robustsnn.evaluation.intervals import wilson_interval
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model
from robustsnn.stages import dataset_spec_of, eval_subset

SAPGD_ESTIMATORS = (
    "assg-atan-0.425-dr",
    "assg-atan-0.425",
    "rga",
    "pdsg",
    "hart-1",
    "bptt-rel-pcw-0.5",
)
DEFAULT_COLUMNS = "reliable,sapgd-rows,pgd-ensemble,escalate,apgd-ensemble"


def run_column(
    column: str,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: str,
    out: Path,
    levels: int = 2,
) -> dict[str, Any]:
    folder = out / column
    common = EvaluationConfig(eps=eps, batch_size=50, diagnostics="fast")
    started = time.perf_counter()
    if column == "sapgd-rows":
        attacks = [
            {"attack": "sapgd", "estimator": e, "params": {"steps": 100}} for e in SAPGD_ESTIMATORS
        ]
        config = replace(common, attacks=attacks)
        result = evaluate(model, x, y, config, EvaluationContext(state_dir=folder, quiet=True))
    elif column == "escalate":  # resumes the reliable column's first level from its state
        result = evaluate_escalating(
            model,
            x,
            y,
            replace(common, ensemble="reliable"),
            EvaluationContext(state_dir=out / "reliable", quiet=True),
            EscalationPolicy(levels=levels),
            step_batch_size=10,
        )
    else:
        config = replace(common, ensemble=column)
        result = evaluate(model, x, y, config, EvaluationContext(state_dir=folder, quiet=True))
    result["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(folder / "evaluation.json", result)
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    n = result["n"]
    rows: dict[str, Any] = {}
    for name, row in {**result.get("ensembles", {}), **result.get("attacks", {})}.items():
        k = round(row["robust_accuracy"] * n)
        rows[name] = {
            "robust": row["robust_accuracy"],
            "ci95": list(wilson_interval(k, n)),
            "seconds_per_sample": row.get("seconds", 0.0) / n,
        }
    clean = round(result["clean_accuracy"] * n)
    failing = failing_checks(result.get("diagnostics", {}))
    return {
        "n": n,
        "clean": result["clean_accuracy"],
        "clean_ci95": list(wilson_interval(clean, n)),
        "rows": rows,
        "diagnostics_failing": failing,
        "escalation": {k: v for k, v in (result.get("escalation") or {}).items() if k != "steps"}
        | {
            "steps": [
                {k: v for k, v in s.items() if k != "diagnostics"}
                for s in (result.get("escalation") or {}).get("steps", [])
            ]
        },
        "wall_seconds": result.get("wall_seconds"),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--columns", default=DEFAULT_COLUMNS)
    p.add_argument("--dataset", default=None)
    p.add_argument("--escalate-levels", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    model, meta = load_model(a.checkpoint)
    data = load_dataset(a.dataset or dataset_spec_of(meta))
    x, y = eval_subset(data, a.n)
    table_path = out / "table.json"
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    for column in a.columns.split(","):
        done = out / column / "evaluation.json"
        if column in table and done.exists():
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {column}", flush=True)
        result = run_column(column, model, x, y, a.eps, out, a.escalate_levels)
        table[column] = summary(result)
        table["checkpoint"] = a.checkpoint
        atomic_write_json(table_path, table)
        print(json.dumps(table[column], indent=1)[:2000], flush=True)


if __name__ == "__main__":
    main()
