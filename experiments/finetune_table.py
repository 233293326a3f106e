"""The robust-finetuning ablation as one markdown table, every row on the ANN's images.

Each row is a folder written by ``robustsnn evaluate --out DIR`` (evaluation.json +
records.jsonl). Rows are compared with the reference (the ANN) only on the images both
evaluated, so a 200-image screen and a 1000-image row of the same stratified order share their
first images (``--n 200`` is the first 20 per class, a subset of ``--n 1000``). Per row: clean
and robust accuracy with Wilson intervals on the shared images, the robust ratio to the ANN
with its paired bootstrap interval, the ensemble (with escalation steps) and the checks'
verdict, and the finetuning's time when a finetuning folder (log.jsonl) is given.

Usage:
  python experiments/finetune_table.py ANN_EVAL_DIR LABEL=EVAL_DIR[:FINETUNE_DIR] ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from robustsnn.evaluation.intervals import format_accuracy, format_ratio, paired_ratio_interval
from robustsnn.evaluation.table import diagnostics_verdict


def _records(folder: Path) -> dict[int, dict[str, Any]]:
    if not (folder / "records.jsonl").is_file() or not (folder / "evaluation.json").is_file():
        raise SystemExit(
            f"{folder}: no finished evaluation (records.jsonl and evaluation.json); run "
            "`robustsnn evaluate ... --out` into it first or wait until it ends"
        )
    lines = (folder / "records.jsonl").read_text().splitlines()
    return {int(r["index"]): r for r in (json.loads(line) for line in lines if line.strip())}


def _finetune_seconds(folder: Path | None) -> str:
    """Wall time of the finetuning epochs, and their CPU time where the log records it."""
    if folder is None or not (folder / "log.jsonl").is_file():
        return "-"
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if r.get("phase") == "finetune"]
    wall = sum(float(r.get("seconds", 0.0)) for r in rows)
    text = f"{wall / 60:.0f} min wall"
    if rows and all("cpu_seconds" in r for r in rows):
        text += f", {sum(float(r['cpu_seconds']) for r in rows) / 60:.0f} CPU-min"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="evaluation folder of the ANN")
    parser.add_argument("rows", nargs="+", help="LABEL=EVAL_DIR[:FINETUNE_DIR]")
    parser.add_argument(
        "--common", action="store_true", help="every row (the ANN too) on the images all rows share"
    )
    args = parser.parse_args()
    reference = Path(args.reference)
    ann = _records(reference)
    rows = [("ANN", reference, None)]
    for item in args.rows:
        label, _, paths = item.rpartition("=")
        eval_dir, _, ft_dir = paths.partition(":")
        rows.append((label, Path(eval_dir), Path(ft_dir) if ft_dir else None))
    print(
        "| model | n | clean | robust | robust vs ANN (paired) | ensemble | checks | finetuning |"
    )
    print("|---|---|---|---|---|---|---|---|")
    common = set(ann)
    if args.common:
        for _, folder, _ in rows:
            common &= set(_records(folder))
    for label, folder, ft in rows:
        records = _records(folder)
        shared = sorted(set(records) & common)
        n = len(shared)
        clean = sum(bool(records[i]["clean_correct"]) for i in shared) / n
        robust_flags = [bool(records[i]["robust"]) for i in shared]
        ratio = paired_ratio_interval(robust_flags, [bool(ann[i]["robust"]) for i in shared])
        evaluation = json.loads((folder / "evaluation.json").read_text())
        escalation = evaluation.get("escalation") or {}
        steps = [s["preset"] for s in escalation.get("steps", [])]
        ensemble = str(escalation.get("start") or evaluation.get("ensemble"))
        if steps:
            ensemble += " -> " + " -> ".join(steps)
        print(
            f"| {label} | {n} | {format_accuracy(clean, n)} | "
            f"{format_accuracy(sum(robust_flags) / n, n)} | "
            f"{'1 (reference)' if folder == reference else format_ratio(ratio)} | {ensemble} | "
            f"{diagnostics_verdict(evaluation.get('diagnostics'))} | {_finetune_seconds(ft)} |"
        )


if __name__ == "__main__":
    main()
