"""CPU time per evaluated sample of `reliable`, `reliable-v1`, `pgd-ensemble` and `apgd-ensemble`.

One process, one run: for each model, each preset is evaluated once with
``robustsnn.evaluation.evaluate(model, x, y, eps, ensemble=preset, diagnostics="none",
seed=0)`` on the first ``n`` images of the class-balanced test subset, in one batch. Reported
per row: CPU seconds of the ``evaluate`` call (``time.process_time``, this process, all
threads) divided by n, the ratio to ``pgd-ensemble`` on the same model in the same run, and
the robust accuracy with its Wilson 95% interval. The JSON keeps every sample's verdict, so a
later speed-up can be checked per sample against it (same seeds: it must break every sample
this run breaks).

Models (``--models``, each ``label=checkpoint@dataset@eps``); the defaults are the issue's:

    a  the quickstart's finetuned MNIST SNN (``robustsnn run configs/quickstart.yaml --set
       eval.escalate=false --set eval.n=20 --out /tmp/qs22``), mnist5k, eps 0.1
    b  /work/shared/checkpoints/cifar10-strong-ft/snn.safetensors, the CIFAR-10 subset, 8/255
    c  the ANN of (b), ann.safetensors

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_reliable.py \\
        --n 20 --out benchmarks/results/bench_reliable.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
CIFAR = "/work/shared/checkpoints/cifar10-strong-ft"
CIFAR_DATA = "npz:/work/shared/data/cifar10-subset.npz"
DEFAULT_MODELS = (
    "a=/tmp/qs22/snn.safetensors@mnist5k@0.1",
    f"b={CIFAR}/snn.safetensors@{CIFAR_DATA}@8/255",
    f"c={CIFAR}/ann.safetensors@{CIFAR_DATA}@8/255",
)
PRESETS = ("pgd-ensemble", "reliable", "reliable-v1", "apgd-ensemble")


def parse_model(spec: str) -> tuple[str, str, str, str]:
    """``label=checkpoint@dataset@eps`` -> its four parts."""
    label, _, rest = spec.partition("=")
    parts = rest.split("@")
    if not label or len(parts) != 3:
        raise SystemExit(f"--models entry {spec!r}: expected label=checkpoint@dataset@eps")
    return label, parts[0], parts[1], parts[2]


def run_row(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: str, preset: str
) -> dict[str, Any]:
    """One ``evaluate`` call: CPU and wall seconds, accuracies and per-sample verdicts."""
    from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
    from robustsnn.evaluation.intervals import wilson_interval

    cpu, wall = time.process_time(), time.perf_counter()
    config = EvaluationConfig(eps=eps, ensemble=preset, diagnostics="none", seed=0)
    result = evaluate(model, x, y, config, EvaluationContext(quiet=True))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = int(result["n"])
    robust = sum(bool(r["robust"]) for r in result["records"])
    return {
        "preset": preset,
        "n": n,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_per_sample": cpu / n,
        "clean_accuracy": result["clean_accuracy"],
        "robust": robust,
        "robust_accuracy": robust / n,
        "robust_accuracy_ci95": list(wilson_interval(robust, n)),
        "broken_by": result["ensembles"][preset]["broken_by"],
        "records": [
            {k: r[k] for k in ("index", "clean_correct", "robust", "broken_by")}
            for r in result["records"]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--out", default=str(HERE / "results" / "bench_reliable.json"))
    args = parser.parse_args(argv)

    from robustsnn.data import load_dataset
    from robustsnn.io.models import load_model
    from robustsnn.stages import eval_subset

    out = Path(args.out)
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "models": {},
    }
    for spec in args.models:
        label, path, dataset, eps = parse_model(spec)
        model, _ = load_model(path)
        x, y = eval_subset(load_dataset(dataset), args.n)
        rows: list[dict[str, Any]] = []
        for preset in args.presets:
            row = run_row(model, x, y, eps, preset)
            rows.append(row)
            lo, hi = row["robust_accuracy_ci95"]
            print(
                f"{label} {preset:14s} n={row['n']} cpu/sample {row['cpu_per_sample']:.3f} s  "
                f"robust {row['robust_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]",
                flush=True,
            )
            report["models"][label] = {
                "checkpoint": path, "dataset": dataset, "eps": eps, "rows": rows,
            }  # fmt: skip
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1))
        base = next((r for r in rows if r["preset"] == "pgd-ensemble"), None)
        if base is not None:
            for r in rows:
                r["ratio_to_pgd_ensemble"] = r["cpu_per_sample"] / base["cpu_per_sample"]
        out.write_text(json.dumps(report, indent=1))
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    """The markdown table of docs/RESULTS_performance.md."""
    print("| model | preset | n | CPU s / sample | x pgd-ensemble | robust [95% CI] |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, entry in report["models"].items():
        for r in entry["rows"]:
            lo, hi = r["robust_accuracy_ci95"]
            ratio = r.get("ratio_to_pgd_ensemble")
            print(
                f"| {label} | {r['preset']} | {r['n']} | {r['cpu_per_sample']:.3f} | "
                f"{'' if ratio is None else f'{ratio:.2f}'} | "
                f"{r['robust_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] |"
            )


if __name__ == "__main__":
    sys.exit(main())
