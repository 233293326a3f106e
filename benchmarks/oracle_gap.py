"""Oracle-gap benchmark: does an evaluation preset break everything a much wider pool breaks?

The reference pool (``reference-pool`` in :mod:`robustsnn.evaluation.ensembles`: SA-PGD-300
through 32 estimators, APGD-CE/DLR-300, APGD-T with 9 targets, Square-5000) runs on every model
of a suite; its per-sample union, together with ``reliable-v1`` (whose members it contains by
reference), is the ground truth. For each model and each evaluated preset the report gives the
pool's robust accuracy, the preset's, and the **gap**: the samples the ground truth breaks and
the preset does not, with their dataset indices and the members that broke them, plus CPU
seconds per sample of each run (one process, one thread: wall time is CPU time).

    # the suite: experiments/oracle_suite.py writes <models>/suite.json
    OMP_NUM_THREADS=1 python benchmarks/oracle_gap.py run --suite /work/exp/oracle/models/suite.json \\
        --out /work/exp/oracle/evals --evals reliable,reliable-v1,reference-pool --n 200
    python benchmarks/oracle_gap.py report --out /work/exp/oracle/evals --preset reliable \\
        --markdown /work/exp/oracle/gap.md --json /work/exp/oracle/gap.json

The pool's cost can be spent only where a gap can be: ``--pool-on-survivors-of reliable`` runs it
on the samples ``reliable`` left standing (folder ``reference-pool@survivors-of-reliable``,
merged with a full or partial pool run if there is one). The gap to ``reliable`` is then exactly
the full pool's (a sample the preset broke cannot be in it), and the ground truth's robust
accuracy counts the preset's breaks too.

    OMP_NUM_THREADS=1 python benchmarks/oracle_gap.py run --suite ... --out ... \
        --evals reliable,reliable-v1,reference-pool --pool-on-survivors-of reliable --n 200

Every run resumes where it stopped (each evaluation keeps its resume state in its folder);
``run`` skips a (model, preset) whose evaluation.json already holds ``n`` samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from robustsnn.evaluation import run_evaluation
from robustsnn.evaluation.config import EvaluationConfig, EvaluationRun
from robustsnn.evaluation.ensembles import REFERENCE_POOL_VERSION
from robustsnn.evaluation.intervals import wilson_interval
from robustsnn.io.atomic import atomic_write_json, atomic_write_text

POOL = "reference-pool"
GROUND_TRUTH = (POOL, "reliable-v1")
"""The runs whose per-sample union is the ground truth."""
SURVIVORS_FILE = "survivors.json"
"""In a pool folder run with ``--pool-on-survivors-of P``: P and the indices the pool attacked."""


def survivors_folder(preset: str) -> str:
    """The folder (in a model's folder) of the pool run on ``preset``'s survivors; apart from
    a full pool run's, so neither overwrites the other's resume state."""
    return f"{POOL}@survivors-of-{preset}"


def load_suite(path: Path) -> list[dict[str, Any]]:
    """The suite's entries (``name``, ``path``, ``dataset``, ``eps``, ...)."""
    entries = json.loads(path.read_text())
    if isinstance(entries, Mapping):
        entries = entries.get("models", [])
    base = path.parent
    for entry in entries:
        p = Path(entry["path"])
        entry["path"] = str(p if p.is_absolute() or p.exists() else base / p)
    return list(entries)


def _loaded(entry: Mapping[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]] | None:
    """A class-style framework model described by a ``model.json`` (factory + weights)."""
    if not str(entry["path"]).endswith("model.json"):
        return None
    from robustsnn.data import load_dataset, to_float
    from robustsnn.interop.foreign import load_foreign

    spec = json.loads(Path(entry["path"]).read_text())
    data = load_dataset(str(spec.get("dataset", entry["dataset"])), None)
    return load_foreign(  # type: ignore[no-any-return]
        str(spec["factory"]),
        weights=spec.get("weights"),
        T=spec.get("T"),
        example=to_float(data.x_test[:32]),
        time=str(spec.get("time", "loop")),
        readout=str(spec.get("readout", "mean")),
        device="cpu",
    )


def _finished(folder: Path, n: int) -> bool:
    path = folder / "evaluation.json"
    if not path.exists():
        return False
    try:
        return int(json.loads(path.read_text()).get("n", -1)) == n
    except (ValueError, OSError):
        return False


def survivors(model_dir: Path, preset: str) -> list[int]:
    """Dataset indices of the samples ``preset`` left standing in ``model_dir`` (clean-correct
    and robust): the only samples where the pool can find a gap to it."""
    records = _records(model_dir / preset)
    if records is None:
        raise SystemExit(
            f"{model_dir.name}: --pool-on-survivors-of {preset} needs {preset}'s finished run "
            f"in {model_dir / preset}; run it first (--evals {preset})"
        )
    return standing(records)


def standing(records: Mapping[int, Mapping[str, Any]]) -> list[int]:
    """Dataset indices of the clean-correct samples a run left robust, in order."""
    return sorted(i for i, r in records.items() if r["clean_correct"] and r["robust"])


def _finished_run(folder: Path, n: int, indices: Sequence[int] | None) -> bool:
    if indices is None:
        return _finished(folder, n)
    marker = folder / SURVIVORS_FILE
    return (
        _finished(folder, len(indices))
        and marker.exists()
        and json.loads(marker.read_text()).get("indices") == list(indices)
    )


def pool_batch(args: argparse.Namespace, preset: str, folder: Path) -> dict[str, int]:
    """``--pool-batch-size``: the pool's samples per attack call (its resume granularity: a
    long pool run killed mid-way keeps every finished batch). Only the pool's: a preset's
    records depend on its batch size (float32 rounding, RESULTS.md 12h) and must stay
    comparable with its other runs. Recorded in the folder, so a resume uses the same."""
    marker = folder / "pool-batch-size.json"
    if preset != POOL:
        return {}
    if marker.exists():
        return {"batch_size": int(json.loads(marker.read_text())["batch_size"])}
    if args.pool_batch_size is None:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"batch_size": args.pool_batch_size})
    return {"batch_size": int(args.pool_batch_size)}


def run(args: argparse.Namespace) -> None:
    suite = load_suite(Path(args.suite))
    wanted = set(args.models.split(",")) if args.models else None
    evals = [e.strip() for e in args.evals.split(",") if e.strip()]
    out = Path(args.out)
    for entry in suite:
        if wanted is not None and entry["name"] not in wanted:
            continue
        for preset in evals:
            folder = out / entry["name"] / preset
            indices = None
            if preset == POOL and args.pool_on_survivors_of:
                indices = survivors(out / entry["name"], args.pool_on_survivors_of)
                folder = out / entry["name"] / survivors_folder(args.pool_on_survivors_of)
            if _finished_run(folder, args.n, indices):
                continue
            print(f"[oracle-gap] {entry['name']} / {preset} ...", file=sys.stderr, flush=True)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if indices is not None:
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_json(
                    folder / SURVIVORS_FILE, {"of": args.pool_on_survivors_of, "indices": indices}
                )
            if indices == []:  # nothing stands: nothing for the pool to break
                atomic_write_json(folder / "evaluation.json", {"n": 0})
                atomic_write_text(folder / "records.jsonl", "")
                continue
            result = run_evaluation(
                entry["path"],
                EvaluationConfig(
                    eps=entry["eps"],
                    ensemble=preset,
                    seed=args.seed,
                    diagnostics="none" if preset == POOL else args.diagnostics,
                    **pool_batch(args, preset, folder),
                ),
                EvaluationRun(
                    n=args.n if indices is None else None,
                    indices=indices,
                    dataset=entry.get("dataset"),
                    out_dir=folder,
                    quiet=True,
                    workers=1,
                ),
                loaded=_loaded(entry),
            )
            cost = {
                "cpu_seconds": time.process_time() - cpu0,
                "wall_seconds": time.perf_counter() - wall0,
                "threads": torch.get_num_threads(),
                "resumed": bool(folder.joinpath("cost.json").exists()),
            }
            previous = folder / "cost.json"
            if previous.exists():  # a resumed run: add the earlier part's CPU time
                before = json.loads(previous.read_text())
                cost["cpu_seconds"] += float(before.get("cpu_seconds", 0.0))
                cost["wall_seconds"] += float(before.get("wall_seconds", 0.0))
            atomic_write_json(folder / "cost.json", cost)
            print(
                f"[oracle-gap] {entry['name']} / {preset}: robust {result['robust_accuracy']:.3f} "
                f"({cost['cpu_seconds']:.0f} CPU-s)",
                file=sys.stderr,
                flush=True,
            )


def _records(folder: Path, partial: bool = False) -> dict[int, dict[str, Any]] | None:
    """Per-sample records of a finished run; with ``partial``, of an unfinished one's finished
    batches too (read from its resume state: every finished batch is saved there)."""
    path = folder / "records.jsonl"
    if path.exists() and (folder / "evaluation.json").exists():
        lines = path.read_text().splitlines()
        return {int(r["index"]): r for r in (json.loads(line) for line in lines)}
    if not partial:
        return None
    records: dict[int, dict[str, Any]] = {}
    for state in sorted(folder.glob("evaluation-state*.json")):
        for batch in json.loads(state.read_text()).get("batches", {}).values():
            records.update({int(r["index"]): r for r in batch["records"]})
    return records or None


def _merged(
    first: Mapping[int, dict[str, Any]], second: Mapping[int, dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """Two pool runs' records as one: a sample either run broke is broken."""
    merged = dict(first)
    for i, record in second.items():
        if i not in merged or (_broken(record) and not _broken(merged[i])):
            merged[i] = record
    return merged


def _broken(record: Mapping[str, Any]) -> bool:
    return bool(record["clean_correct"]) and not bool(record["robust"])


def _cost(folder: Path, n: int) -> float | None:
    path = folder / "cost.json"
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["cpu_seconds"]) / n


def _verdict(folder: Path) -> str:
    evaluation = json.loads((folder / "evaluation.json").read_text())
    failing = [k for k, d in evaluation.get("diagnostics", {}).items() if not d.get("passed", True)]
    if not evaluation.get("diagnostics"):
        return "not run"
    return "pass" if not failing else "FAIL: " + ", ".join(failing)


def covering_pool(
    model_dir: Path, preset: str, mine: Mapping[int, dict[str, Any]]
) -> tuple[dict[int, dict[str, Any]] | None, str | None]:
    """The finished pool run on survivors that covers every survivor of ``preset`` (its
    records, and the preset whose survivors it ran on), or ``(None, None)``.

    The pool on ``preset``'s own survivors first; else one run on another preset's survivors
    that include all of ``preset``'s (e.g. ``reliable-v5``'s, for a ``reliable-v6`` that runs
    v5 whole and first and so leaves a subset of them standing): the gap is the pool's breaks
    among the preset's survivors, which that run attacked, every one of them."""
    own = _records(model_dir / survivors_folder(preset))
    if own is not None:
        return own, preset
    left = set(standing(mine))
    for folder in sorted(model_dir.glob(f"{POOL}@survivors-of-*")):
        records = _records(folder)
        marker = folder / SURVIVORS_FILE
        if records is None or not marker.exists():
            continue
        if left <= set(records):
            return records, str(json.loads(marker.read_text()).get("of", preset))
    return None, None


def model_gap(model_dir: Path, preset: str) -> dict[str, Any] | None:
    """The gap row of one model (None while the preset or the pool has not finished).

    The pool may have run on fewer samples than the presets (a class-balanced subset: the first
    k images of each class, which the presets' selection contains); the gap is computed on the
    samples every run evaluated, and the preset is compared with ``reliable-v1`` on all the
    samples both evaluated.
    """
    runs = {
        name: _records(model_dir / name, partial=name == POOL) for name in (preset, *GROUND_TRUTH)
    }
    mine = runs[preset]
    on_survivors, covered = (
        covering_pool(model_dir, preset, mine) if mine is not None else (None, None)
    )
    if on_survivors is not None:  # the pool on the preset's survivors, with any full pool run
        runs[POOL] = _merged(runs[POOL] or {}, on_survivors)
    truth_runs = {k: v for k, v in runs.items() if k in GROUND_TRUTH and v is not None}
    if mine is None or POOL not in truth_runs:
        return None
    common = set(mine)
    for name, records in truth_runs.items():
        if not (on_survivors is not None and name == POOL):  # it covers every survivor
            common &= set(records)
    if not common:
        raise SystemExit(f"{model_dir.name}: the pool and {preset} share no sample")
    samples = sorted(common)
    broken_truth = {
        i: [name for name, rec in truth_runs.items() if i in rec and _broken(rec[i])]
        for i in samples
    }
    members = {
        i: [f"{name}: {truth_runs[name][i]['broken_by']}" for name in broken_truth[i]]
        for i in samples
    }
    gap = [i for i in samples if broken_truth[i] and bool(mine[i]["robust"])]
    # a break whose every breaking run reached margin exactly 0: the label ties another class
    # and argmax's index order decides (RESULTS 12f); the records of older runs have no margin
    at_tie = {
        i: all(truth_runs[name][i].get("margin") == 0 for name in broken_truth[i]) for i in gap
    }
    n = len(samples)
    old = runs.get("reliable-v1")
    row: dict[str, Any] = {
        "model": model_dir.name,
        "n": n,
        "n_preset": len(mine),
        "n_pool": len(truth_runs[POOL]),
        "pool_finished": on_survivors is not None
        or (model_dir / POOL / "evaluation.json").exists(),
        "clean": sum(bool(mine[i]["clean_correct"]) for i in samples),
        # on survivors, the pool never saw the preset's breaks: the truth counts those too
        "truth_robust": sum(
            1
            for i in samples
            if mine[i]["clean_correct"]
            and not broken_truth[i]
            and not (on_survivors is not None and _broken(mine[i]))
        ),
        "pool_on_survivors": covered,
        "preset_robust": sum(bool(mine[i]["robust"]) for i in samples),
        "gap": len(gap),
        "gap_samples": [{"index": i, "broken_by": members[i], "at_tie": at_tie[i]} for i in gap],
        "preset_checks": _verdict(model_dir / preset),
        "cpu_per_sample": {
            name: _cost(model_dir / name, len(runs[name] or {}))
            for name in (preset, *GROUND_TRUTH)
            if runs[name]
        },
    }
    if old is not None and preset != "reliable-v1":
        both = sorted(set(mine) & set(old))
        row["old_robust"] = sum(bool(old[i]["robust"]) for i in samples)
        row["vs_v1_n"] = len(both)
        row["v1_breaks_missed"] = [i for i in both if _broken(old[i]) and mine[i]["robust"]]
        row["new_breaks"] = [i for i in both if _broken(mine[i]) and old[i]["robust"]]
        row["preset_robust_all"] = sum(bool(mine[i]["robust"]) for i in both)
        row["old_robust_all"] = sum(bool(old[i]["robust"]) for i in both)
    return row


def _pct(count: int, n: int) -> str:
    lo, hi = wilson_interval(count, n)
    return f"{100 * count / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown(rows: Sequence[Mapping[str, Any]], preset: str) -> str:
    head = (
        f"| model | n (pool) | clean | ground truth | {preset} | reliable-v1 | gap | "
        f"{preset} checks | {preset} vs v1 on all n: robust, v1 breaks missed, new breaks | "
        f"CPU s/sample {preset} / v1 / pool |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        n = int(r["n"])
        cost = r["cpu_per_sample"]

        def c(name: str, cost: Mapping[str, Any] = cost) -> str:
            v = cost.get(name)
            return "-" if v is None else f"{v:.2f}"

        old = _pct(int(r["old_robust"]), n) if "old_robust" in r else "-"
        gap = str(r["gap"])
        if r["gap_samples"]:
            gap += (
                " ("
                + "; ".join(
                    f"#{s['index']}{' (a tie)' if s.get('at_tie') else ''}: "
                    f"{', '.join(s['broken_by'])}"
                    for s in r["gap_samples"][:4]
                )
                + (", ..." if len(r["gap_samples"]) > 4 else "")
                + ")"
            )
        versus = "-"
        if "vs_v1_n" in r:
            m = int(r["vs_v1_n"])
            versus = (
                f"n={m}: {_pct(int(r['preset_robust_all']), m)} vs "
                f"{_pct(int(r['old_robust_all']), m)}; {len(r['v1_breaks_missed'])}"
                f"{' ' + str(r['v1_breaks_missed']) if r['v1_breaks_missed'] else ''}; "
                f"{len(r['new_breaks'])}"
            )
        where = "" if r.get("pool_finished", True) else " (pool: finished batches only)"
        if r.get("pool_on_survivors"):
            where += f" (pool on {r['pool_on_survivors']}'s survivors)"
        lines.append(
            f"| {r['model']}{where} | {n} | {_pct(int(r['clean']), n)} | "
            f"{_pct(int(r['truth_robust']), n)} | {_pct(int(r['preset_robust']), n)} | {old} | "
            f"{gap} | {r['preset_checks']} | {versus} | "
            f"{c(preset)} / {c('reliable-v1')} / {c(POOL)} |"
        )
    return head + "\n".join(lines) + "\n"


def versus_v1(out: Path, preset: str) -> str:
    """Per model where both finished: the preset against ``reliable-v1`` on every sample."""
    lines = [
        f"| model | n | clean | {preset} | reliable-v1 | v1 breaks {preset} misses | "
        f"{preset} breaks v1 misses | CPU s/sample {preset} / v1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        mine, old = _records(model_dir / preset), _records(model_dir / "reliable-v1")
        if mine is None or old is None or preset == "reliable-v1":
            continue
        both = sorted(set(mine) & set(old))
        n = len(both)
        missed = [i for i in both if _broken(old[i]) and mine[i]["robust"]]
        new = [i for i in both if _broken(mine[i]) and old[i]["robust"]]
        cost = [_cost(model_dir / name, n) for name in (preset, "reliable-v1")]
        lines.append(
            f"| {model_dir.name} | {n} | {_pct(sum(bool(mine[i]['clean_correct']) for i in both), n)}"
            f" | {_pct(sum(bool(mine[i]['robust']) for i in both), n)}"
            f" | {_pct(sum(bool(old[i]['robust']) for i in both), n)}"
            f" | {len(missed)}{' ' + str(missed) if missed else ''}"
            f" | {len(new)}{' ' + str(new) if new else ''}"
            f" | {' / '.join('-' if v is None else f'{v:.2f}' for v in cost)} |"
        )
    return "\n".join(lines) + "\n"


def member_credit(out: Path, preset: str) -> tuple[list[dict[str, Any]], str]:
    """Where the preset's time goes and what it buys, summed over the suite's finished runs:
    per member, its CPU seconds (``member_seconds``: each member runs only on the samples still
    standing when its turn comes), their share, and its **first breaks** (the samples the
    records credit to it: no earlier member had broken them) with the models they were on.

    A member with a large share and no first break on any model is where a cheaper
    allocation would look first; it is not proof that dropping it is free: a later member
    may have broken only what it would have broken first, and its breaks may sit on models
    outside the suite."""
    seconds: dict[str, float] = {}
    firsts: dict[str, dict[str, int]] = {}
    for model_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        folder = model_dir / preset
        records = _records(folder)
        if records is None:
            continue
        evaluation = json.loads((folder / "evaluation.json").read_text())
        spent = evaluation.get("ensembles", {}).get(preset, {}).get("member_seconds", {})
        for name, value in spent.items():
            seconds[name] = seconds.get(name, 0.0) + float(value)
            firsts.setdefault(name, {})
        for record in records.values():
            if _broken(record):
                name = str(record["broken_by"])
                models = firsts.setdefault(name, {})
                models[model_dir.name] = models.get(model_dir.name, 0) + 1
    total = sum(seconds.values()) or 1.0
    rows: list[dict[str, Any]] = [
        {
            "member": name,
            "cpu_seconds": seconds.get(name, 0.0),
            "share": seconds.get(name, 0.0) / total,
            "first_breaks": sum(firsts.get(name, {}).values()),
            "models": dict(sorted(firsts.get(name, {}).items())),
        }
        for name in {**seconds, **firsts}
    ]
    lines = [
        f"| {preset} member | CPU s (all models) | share | first breaks | on models |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        on = ", ".join(f"{m} {k}" for m, k in row["models"].items() if k) or "-"
        lines.append(
            f"| {row['member']} | {row['cpu_seconds']:.0f} | {100 * row['share']:.1f}% | "
            f"{row['first_breaks']} | {on} |"
        )
    return rows, "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows = []
    for model_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        row = model_gap(model_dir, args.preset)
        if row is None:
            print(f"{model_dir.name}: not finished", file=sys.stderr)
            continue
        rows.append(row)
    text = markdown(rows, args.preset)
    text += "\n" + versus_v1(out, args.preset)
    credit, credit_text = member_credit(out, args.preset)
    if credit:
        text += "\n" + credit_text
    total_gap = sum(int(r["gap"]) for r in rows)
    text += (
        f"\nReference pool v{REFERENCE_POOL_VERSION}; ground truth = union of {', '.join(GROUND_TRUTH)}"
        f"; total gap of {args.preset}: {total_gap} over {len(rows)} models.\n"
    )
    print(text)
    if args.markdown:
        atomic_write_text(Path(args.markdown), text)
    if args.json:
        atomic_write_json(
            Path(args.json),
            {
                "preset": args.preset,
                "pool_version": REFERENCE_POOL_VERSION,
                "rows": rows,
                "members": credit,
            },
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="evaluate every suite model with each preset and the pool")
    r.add_argument("--suite", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--evals", default=f"reliable,reliable-v1,{POOL}")
    r.add_argument("--models", default=None, help="comma-separated names (default: all)")
    r.add_argument("--n", type=int, default=200)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--diagnostics", default="fast")
    r.add_argument(
        "--pool-batch-size",
        type=int,
        default=None,
        help="the pool's samples per attack call (default: the evaluation's); smaller batches "
        "save a long pool run's progress more often (recorded in its folder)",
    )
    r.add_argument(
        "--pool-on-survivors-of",
        default=None,
        metavar="PRESET",
        help="run the pool only on the samples PRESET left standing (its finished run in the "
        "same model folder): the gap to PRESET is the same, at a fraction of the pool's cost; "
        "the ground truth's robust accuracy then counts PRESET's breaks too",
    )
    r.set_defaults(fn=run)
    p = sub.add_parser("report", help="the gap table of a preset against the pool")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="reliable")
    p.add_argument("--markdown", default=None)
    p.add_argument("--json", default=None)
    p.set_defaults(fn=report)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
