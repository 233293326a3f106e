"""Run reports: ``report.md`` and a self-contained ``report.html`` from run folders.

A run folder (docs/INTERFACES.md) may hold ``config.yaml``, ``summary.json``,
``evaluation-<model>.json`` (and ``evaluation.json``), ``stats-<model>.json``,
``conversion_curve.json`` and ``figures/*.png``; every one of them is optional. Every number
in the report is printed next to the name of the file it comes from. The HTML file embeds its
images as base64 data URIs and its CSS inline, so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustsnn.analysis import figures as fig
from robustsnn.analysis.verdict import run_verdict
from robustsnn.errors import UserError
from robustsnn.evaluation.intervals import format_accuracy, format_ratio, wilson_interval
from robustsnn.evaluation.table import diagnostics_verdict

ENERGY_NOTE = (
    "Energy values are estimates, not measurements: operation counts x energy per operation "
    "(Horowitz, ISSCC 2014, 45 nm CMOS, 32-bit float: 4.6 pJ per multiply-accumulate, 0.9 pJ per "
    "accumulate). Spike-driven synaptic operations count as accumulates; the first layer, which "
    "receives the analog image under direct coding, counts as multiply-accumulates."
)

# --------------------------------------------------------------------------- reading a run


@dataclass
class RunFiles:
    """What one run folder holds (each part optional), with the file each part came from."""

    path: Path
    config_text: str | None = None
    summary: dict[str, Any] | None = None
    evaluations: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    stats: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    conversion_curve: dict[str, Any] | None = None
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> latency.json
    figures: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def empty(self) -> bool:
        """True when the folder holds nothing a report can show (no run was found there)."""
        return not (
            self.config_text is not None
            or self.summary is not None
            or self.evaluations
            or self.stats
            or self.conversion_curve is not None
            or self.figures
            or self.problems
        )


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: unreadable ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: expected a JSON object")
        return None
    return data


def _model_of(path: Path, prefix: str, data: Mapping[str, Any]) -> str:
    stem = path.stem
    if stem.startswith(prefix + "-"):
        return stem[len(prefix) + 1 :]
    if prefix == "evaluation" and stem == "evaluation":
        return "snn_finetuned"
    return str(data.get("model", stem))


def read_run(run_dir: str | Path) -> RunFiles:
    """Read everything a report can use from ``run_dir``; unreadable files are noted, not fatal."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"run folder {str(path)!r} does not exist; pass a runs/<id> folder")
    run = RunFiles(path=path)
    config = path / "config.yaml"
    if config.is_file():
        run.config_text = config.read_text(encoding="utf-8", errors="replace")
    if (path / "summary.json").is_file():
        run.summary = _read_json(path / "summary.json", run.problems)
    seen: dict[str, str] = {}
    evaluation_files = sorted(path.glob("evaluation-*.json"))
    if (path / "evaluation.json").is_file():
        evaluation_files.append(path / "evaluation.json")  # last: a copy of the finetuned one
    for file in evaluation_files:
        data = _read_json(file, run.problems)
        if data is None:
            continue
        key = json.dumps(data, sort_keys=True)
        if key in seen:
            continue  # evaluation.json repeating evaluation-snn_finetuned.json
        seen[key] = file.name
        run.evaluations.append((file.name, _model_of(file, "evaluation", data), data))
    for file in sorted(path.glob("stats-*.json")):
        data = _read_json(file, run.problems)
        if data is not None:
            run.stats.append((file.name, _model_of(file, "stats", data), data))
    if (path / "conversion_curve.json").is_file():
        run.conversion_curve = _read_json(path / "conversion_curve.json", run.problems)
    for file in sorted(path.glob("latency/*/latency.json")):
        data = _read_json(file, run.problems)
        if data is not None:
            run.latency[file.parent.name] = data
    run.figures = sorted((path / "figures").glob("*.png")) + sorted(path.glob("*.png"))
    return run


def _clean_and_adversarial(
    stats: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(clean, adversarial or None)`` from an adversarial_statistics or spike_statistics dict."""
    if isinstance(stats.get("clean"), Mapping):
        adv = stats.get("adversarial")
        return dict(stats["clean"]), (dict(adv) if isinstance(adv, Mapping) else None)
    return dict(stats), None


# --------------------------------------------------------------------------- intervals


def sample_count(record: Mapping[str, Any]) -> int | None:
    """The n an evaluation (or summary row) was measured on; None when it does not say."""
    n = _float_or_none(record.get("n"))
    return int(n) if n is not None and n >= 1 else None


def accuracy_interval(
    record: Mapping[str, Any], key: str, n: int | None
) -> tuple[float, float] | None:
    """95% interval of ``record[key]``: the stored ``<key>_ci95`` when the file has one (new
    evaluation.json), else Wilson from round(accuracy x n) (older files); None without n."""
    stored = record.get(f"{key}_ci95")
    if isinstance(stored, (list, tuple)) and len(stored) == 2 and all(map(_is_number, stored)):
        return float(stored[0]), float(stored[1])
    value = _float_or_none(record.get(key))
    if value is None or not n:
        return None
    return wilson_interval(min(n, max(0, round(value * n))), n)


def accuracy_text(record: Mapping[str, Any], key: str, n: int | None) -> str:
    """``"41.25% [28.7, 55.9] n=50"`` for ``record[key]`` (see :func:`accuracy_interval`);
    ``"41.25% (n unknown)"`` when the file gives no n, ``"n/a"`` without a value."""
    value = _float_or_none(record.get(key))
    if value is None:
        return "n/a"
    interval = accuracy_interval(record, key, n)
    if interval is None or not n:
        return f"{_pct(value)} (n unknown)"
    if f"{key}_ci95" not in record:
        return format_accuracy(value, n, digits=2)
    low, high = interval
    return f"{100 * value:.2f}% [{100 * low:.2f}, {100 * high:.2f}] n={n}"


def _acc_cell(record: Mapping[str, Any], key: str, n: int | None) -> Cell:
    """:func:`accuracy_text` as a table cell that HTML keeps on one line."""
    return Cell(accuracy_text(record, key, n), "acc")


def interval_method(evaluation: Mapping[str, Any]) -> str:
    """How the intervals of an evaluation were computed (its ``interval`` text, if any)."""
    stated = evaluation.get("interval")
    if isinstance(stated, str) and stated:
        return stated
    return "Wilson score 95% interval, computed by the report from accuracy and n"


# --------------------------------------------------------------------------- figures of a run


def _square_data(evaluation: Mapping[str, Any]) -> tuple[Any, int | None] | None:
    """Square-attack curve in an evaluation's extra keys, if any.

    Looked for in ``square_curve`` (``[[queries, accuracy], ...]``), in ``square`` and in every
    ``attacks`` entry whose name contains ``square``: their ``curve`` (pairs) or ``queries``
    (per-sample query counts, 0 = wrong when clean, -1 = never fooled).
    """
    candidates: list[Any] = [evaluation.get("square_curve"), evaluation.get("square")]
    attacks = evaluation.get("attacks") or {}
    candidates += [v for k, v in attacks.items() if "square" in str(k).lower()]
    for item in candidates:
        if item is None:
            continue
        if isinstance(item, Mapping):
            n_queries = item.get("n_queries")
            for key in ("curve", "queries"):
                if item.get(key):
                    return item[key], (int(n_queries) if n_queries else None)
            if "x" in item or "accuracy" in item:
                return item, None
        elif isinstance(item, (list, tuple)) and item:
            return item, None
    return None


def _short_model(file_model: str, evaluation: Mapping[str, Any]) -> str:
    """The model an evaluation belongs to, as a short name for figure labels.

    The file's ``model`` field when it is a plain name (``"snn_finetuned"``); when it is a
    checkpoint path (``runs/x/snn.safetensors``, as ``robustsnn run`` writes it) the name from
    the file name instead, without an ``-eps...`` suffix (``evaluation-<model>-eps4.json``).
    """
    named = evaluation.get("model")
    if isinstance(named, str) and named and not re.search(r"[/\\]|\.(safetensors|pt|pth)$", named):
        return named
    return re.sub(r"-eps[^-]*$", "", file_model) or file_model


def _eps_label(eps: Any) -> str:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        return "eps ?"
    scaled = value * 255
    if abs(scaled - round(scaled)) < 1e-3:
        return f"{int(round(scaled))}/255"
    return f"{value:.4g}"


def _robust_records(evaluation: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Rows with a robust accuracy per ensemble (or per attack when there are no ensembles)."""
    ensembles = evaluation.get("ensembles") or {}
    source = ensembles if ensembles else (evaluation.get("attacks") or {})
    return {
        str(name): rec
        for name, rec in source.items()
        if isinstance(rec, Mapping) and _is_number(rec.get("robust_accuracy"))
    }


def _robust_values(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """Robust accuracy per ensemble (or per attack when the evaluation has no ensembles)."""
    return {k: float(r["robust_accuracy"]) for k, r in _robust_records(evaluation).items()}


def _robust_intervals(evaluation: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """95% interval of each value of :func:`_robust_values` (none without n)."""
    n = sample_count(evaluation)
    out = {}
    for name, rec in _robust_records(evaluation).items():
        interval = accuracy_interval(rec, "robust_accuracy", n)
        if interval is not None:
            out[name] = interval
    return out


def make_run_figures(run_dir: str | Path) -> list[Path]:
    """Draw every figure the run's files support into ``run_dir/figures``; return the paths.

    Spikes per layer (stats-*.json), spike rasters (a stats file's ``raster``), clean and
    robust accuracy per model and robust accuracy vs eps (evaluation files at two or more eps),
    Square accuracy vs queries (an evaluation's extra keys, see :func:`_square_data`) and
    accuracy vs T (``conversion_curve.json``: ``{"T": [...], "curves": {label: [...]}}``).
    """
    run = read_run(run_dir)
    out = run.path / "figures"
    made: list[Path] = []
    spikes: dict[str, Any] = {}
    for _file, model, stats in run.stats:
        clean, adv = _clean_and_adversarial(stats)
        if isinstance(clean.get("layers"), Mapping) and clean["layers"]:
            spikes[f"{model}, clean" if adv else model] = clean
        if adv and isinstance(adv.get("layers"), Mapping) and adv["layers"]:
            attack = stats.get("attack", {}).get("name", "attack")
            spikes[f"{model}, adversarial ({attack})"] = adv
        if isinstance(stats.get("raster"), Mapping):
            made.append(fig.plot_spike_raster(stats["raster"], out / f"spike_raster-{model}.png"))
    if spikes:
        made.append(fig.plot_spikes_per_layer(spikes, out / "spikes_per_layer.png"))

    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for _file, model, evaluation in run.evaluations:
        # group by model (evaluation-<model>-eps4.json is <model>), never by checkpoint path
        by_model.setdefault(_short_model(model, evaluation), []).append(evaluation)
    bars: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    for model, evaluations in by_model.items():
        for ev in evaluations:
            label = model if len(evaluations) == 1 else f"{model} @ {_eps_label(ev.get('eps'))}"
            n = sample_count(ev)
            label += f"\n(n={n})" if n else "\n(n unknown)"
            values: dict[str, float] = {}
            bounds: dict[str, tuple[float, float]] = {}
            if _is_number(ev.get("clean_accuracy")):
                values["clean"] = float(ev["clean_accuracy"])
                clean_interval = accuracy_interval(ev, "clean_accuracy", n)
                if clean_interval is not None:
                    bounds["clean"] = clean_interval
            for name, acc in _robust_values(ev).items():
                values[f"robust: {name}"] = acc
            robust_bounds = _robust_intervals(ev)
            bounds.update({f"robust: {k}": v for k, v in robust_bounds.items()})
            if values:
                bars[label] = values
                intervals[label] = bounds
    if bars:
        all_eps = {
            _eps_label(ev.get("eps"))
            for evs in by_model.values()
            for ev in evs
            if _is_number(ev.get("eps"))
        }
        title = "Clean and robust accuracy per model"
        if len(all_eps) == 1:
            title += f", eps = {all_eps.pop()}"
        made.append(
            fig.plot_baselines(
                bars, out / "accuracy_by_model.png", title=title, intervals=intervals
            )
        )

    curves: dict[str, list[tuple[float, float]]] = {}
    bands: dict[str, list[tuple[float, float, float]]] = {}
    for model, evaluations in by_model.items():
        eps_values = {float(e["eps"]) for e in evaluations if _is_number(e.get("eps"))}
        if len(eps_values - {0.0}) < 2:
            continue
        ns = sorted({n for e in evaluations if (n := sample_count(e))})
        n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={'/'.join(map(str, ns))}" if ns else "n ?"
        for ev in evaluations:
            if not _is_number(ev.get("eps")):
                continue
            eps = float(ev["eps"])
            n = sample_count(ev)
            clean_acc = _float_or_none(ev.get("clean_accuracy"))
            clean_interval = accuracy_interval(ev, "clean_accuracy", n)
            robust_bounds = _robust_intervals(ev)
            for name, acc in _robust_values(ev).items():
                key = f"{model}: {name} ({n_text})"
                curve = curves.setdefault(key, [])
                band = bands.setdefault(key, [])
                curve.append((eps, acc))
                if name in robust_bounds:
                    band.append((eps, *robust_bounds[name]))
                if clean_acc is not None and (0.0, clean_acc) not in curve:
                    curve.append((0.0, clean_acc))
                    if clean_interval is not None:
                        band.append((0.0, *clean_interval))
    curves = {k: v for k, v in curves.items() if len({x for x, _ in v}) >= 2}
    if curves:
        made.append(
            fig.plot_robustness_vs_eps(
                curves,
                out / "robust_accuracy_vs_eps.png",
                bands={k: v for k, v in bands.items() if k in curves and v},
            )
        )

    square: dict[str, Any] = {}
    n_queries: int | None = None
    for _file, model, evaluation in run.evaluations:
        found = _square_data(evaluation)
        if found is not None:
            square[f"{model} @ {_eps_label(evaluation.get('eps'))}"] = found[0]
            n_queries = found[1] or n_queries
    if square:
        made.append(fig.plot_square_curve(square, out / "square_queries.png", n_queries=n_queries))

    if run.conversion_curve and run.conversion_curve.get("curves"):
        made.append(fig.plot_accuracy_vs_T(run.conversion_curve, out / "accuracy_vs_T.png"))
    latency = _latency_curve(run)
    if latency is not None:
        made.append(
            fig.plot_accuracy_vs_T(
                latency,
                out / "robust_accuracy_vs_T.png",
                title=f"Robustness vs latency ({latency['ensemble']}, eps "
                f"{_eps_label(latency['eps'])}, n={latency['n']})",
                ylabel="accuracy (%)",
                reference_label="ANN robust",
            )
        )
    return made


def _latency_curve(run: RunFiles) -> dict[str, Any] | None:
    """The run's latency.json files merged into one plot_accuracy_vs_T input: clean and
    robust accuracy per SNN over the T values they share, the ANN's robust accuracy as the
    reference line (from summary.json, measured on the same images)."""
    if not run.latency:
        return None
    shared = sorted(set.intersection(*(set(d.get("T", [])) for d in run.latency.values())))
    if not shared:
        return None
    curves: dict[str, list[float]] = {}
    first = next(iter(run.latency.values()))
    for data in run.latency.values():
        at = dict(zip(data["T"], range(len(data["T"])), strict=True))
        for label, values in (data.get("curves") or {}).items():
            curves[label] = [float(values[at[t]]) for t in shared]
    result: dict[str, Any] = {
        "T": shared,
        "curves": curves,
        "n": first.get("n"),
        "eps": first.get("eps"),
        "ensemble": first.get("ensemble"),
    }
    ann = (run.summary or {}).get("ann") if isinstance(run.summary, Mapping) else None
    if isinstance(ann, Mapping) and _is_number(ann.get("robust_accuracy")):
        result["ann"] = float(ann["robust_accuracy"])
    return result


# --------------------------------------------------------------------------- document model


@dataclass
class Cell:
    """A table cell; ``style`` ("pass" / "fail") marks a verdict."""

    text: str
    style: str | None = None


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str
    style: str | None = None


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell | str]]
    source: str


@dataclass
class Code:
    text: str
    source: str


@dataclass
class Image:
    path: Path
    caption: str


Block = Heading | Paragraph | Table | Code | Image


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _float_or_none(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _pct(value: Any) -> str:
    return f"{100.0 * float(value):.2f}%" if _is_number(value) else "n/a"


def _num(value: Any) -> str:
    if not _is_number(value):
        return "n/a" if value is None else str(value)
    v = float(value)
    if v == int(v):
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def _seconds(value: Any) -> str:
    return f"{float(value):.2f}" if _is_number(value) else "n/a"


def _eps_text(value: Any) -> str:
    if not _is_number(value):
        return "n/a"
    label = _eps_label(value)
    plain = f"{float(value):.5g}"
    return label if label == plain else f"{label} ({plain})"


def _verdict(passed: Any, skipped: Any = False) -> Cell:
    if skipped is True:
        return Cell("SKIPPED", None)
    if passed is True:
        return Cell("PASS", "pass")
    if passed is False:
        return Cell("FAIL", "fail")
    return Cell("?", None)


def _energy(stats: Mapping[str, Any] | None, key: str) -> str:
    energy = (stats or {}).get("energy") or {}
    value = energy.get(key)
    return f"{value:.4g} µJ (est.)" if _is_number(value) else "n/a"


# --------------------------------------------------------------------------- report sections


def _overview(runs: Sequence[RunFiles], several: bool) -> list[Block]:
    """One row per run x model: clean and robust accuracy, spikes, estimated energy."""
    ensemble_names: list[str] = []
    rows_data: list[tuple[Any, ...]] = []
    for run in runs:
        stats_by_model = {model: (file, s) for file, model, s in run.stats}
        models_done = set()
        for file, model, evaluation in run.evaluations:
            robust = _robust_values(evaluation)
            ensemble_names += [n for n in robust if n not in ensemble_names]
            stats_file, stats = stats_by_model.get(model, (None, None))
            rows_data.append((run, model, file, evaluation, robust, stats_file, stats))
            models_done.add(model)
        for model, (stats_file, stats) in stats_by_model.items():
            if model not in models_done:
                rows_data.append((run, model, None, {}, {}, stats_file, stats))
    if not rows_data:
        return []
    headers = (["run"] if several else []) + ["model", "dataset", "eps", "T", "n", "clean"]
    headers += [f"robust: {n}" for n in ensemble_names]
    headers += ["diagnostics", "spikes/image (clean)", "SNN energy/image", "ANN energy/image"]
    headers += ["source"]
    rows: list[list[Cell | str]] = []
    for run, model, file, evaluation, _robust, stats_file, stats in rows_data:
        clean_stats = _clean_and_adversarial(stats)[0] if stats else None
        spikes = (clean_stats or {}).get("totals", {}).get("spikes_per_image")
        row: list[Cell | str] = [run.name] if several else []
        row += [
            model,
            str(evaluation.get("dataset", "n/a")),
            _eps_text(evaluation.get("eps")),
            _num(evaluation.get("T")),
            _num(evaluation.get("n")),
            _acc_cell(evaluation, "clean_accuracy", sample_count(evaluation)),
        ]
        records = _robust_records(evaluation)
        row += [
            _acc_cell(records[n], "robust_accuracy", sample_count(evaluation))
            if n in records
            else "n/a"
            for n in ensemble_names
        ]
        row += [
            _diagnostics_cell(evaluation) if file else "n/a",
            _num(spikes),
            _energy(clean_stats, "snn_uj_per_image"),
            _energy(clean_stats, "ann_uj_per_image"),
            "; ".join(f for f in (file, stats_file) if f),
        ]
        rows.append(row)
    title = "Comparison (one row per run and model)" if several else "Overview"
    note = (
        "Robust accuracy: a sample counts as robust only if it survives every member of the "
        "ensemble (per-sample worst case). Every accuracy is shown with its 95% confidence "
        "interval [low, high] (Wilson score) and the number of images n it was measured on. "
        "Columns marked (est.) are energy estimates."
    )
    return [Heading(2, title), Paragraph(note), Table(headers, rows, "the files named per row")]


def _diagnostics_cell(evaluation: Mapping[str, Any]) -> Cell:
    """Overview verdict of an evaluation's gradient-masking checks: passed, failed or not run."""
    diagnostics = evaluation.get("diagnostics") or {}
    checks = [v for v in diagnostics.values() if isinstance(v, Mapping)]
    ran = [c for c in checks if c.get("skipped") is not True]
    if not ran:
        return Cell("not run")
    failed = sum(1 for c in ran if c.get("passed") is False)
    if failed:
        return Cell(f"FAIL {failed}/{len(ran)}", "fail")
    return Cell(f"PASS {len(ran)}/{len(ran)}", "pass")


def _summary_blocks(run: RunFiles) -> list[Block]:
    if not run.summary:
        return []
    columns = ["clean_accuracy", "robust_accuracy", "spikes_per_image"]
    for rec in run.summary.values():
        if isinstance(rec, Mapping):
            columns += [k for k, v in rec.items() if _is_number(v) and k not in columns]
    evaluation_n = {model: sample_count(ev) for _, model, ev in run.evaluations}
    rows: list[list[Cell | str]] = []
    ratios = any(
        isinstance(r, Mapping) and "robust_ratio_to_ann" in r for r in run.summary.values()
    )
    for model, rec in run.summary.items():
        if not isinstance(rec, Mapping):
            continue
        n = sample_count(rec) or evaluation_n.get(model)
        row: list[Cell | str] = [model]
        for c in columns:
            value = rec.get(c)
            row.append(_acc_cell(rec, c, n) if c.endswith("accuracy") else _num(value))
        if ratios:
            ratio = rec.get("robust_ratio_to_ann")
            missing = rec.get("robust_ratio_to_ann_missing")
            row.append("1 (reference)" if model == "ann" else missing or format_ratio(ratio))
        rows.append(row)
    headers = ["model", *columns] + (["robust vs ANN (paired 95% CI)"] if ratios else [])
    return [Heading(3, "Summary"), Table(headers, rows, "summary.json")]


def _evaluation_blocks(file: str, model: str, ev: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading(3, f"Evaluation: {model}")]
    n = sample_count(ev)
    facts: list[list[Cell | str]] = [
        ["model", str(ev.get("model", "n/a"))],
        ["dataset / split", f"{ev.get('dataset', 'n/a')} / {ev.get('split', 'n/a')}"],
        ["images (n)", _num(ev.get("n"))],
        ["eps (L-inf, pixels)", _eps_text(ev.get("eps"))],
        ["time steps T", _num(ev.get("T")) if ev.get("T") is not None else "n/a (ANN)"],
        ["clean accuracy", _acc_cell(ev, "clean_accuracy", n)],
        ["intervals", interval_method(ev)],
    ]
    blocks.append(Table(["field", "value"], facts, file))
    verdict = diagnostics_verdict(ev.get("diagnostics"))
    ensembles = ev.get("ensembles") or {}
    if ensembles:
        rows: list[list[Cell | str]] = [
            [
                str(name),
                _acc_cell(rec, "robust_accuracy", n),
                _num(rec.get("members")),
                _seconds(rec.get("seconds")),
                _verdict_cell(verdict),
            ]
            for name, rec in ensembles.items()
            if isinstance(rec, Mapping)
        ]
        blocks += [
            Paragraph("Ensembles (robust = survives every member):"),
            Table(
                ["ensemble", "robust accuracy [95% CI] n", "members", "seconds", "diagnostics"],
                rows,
                file,
            ),
        ]
        for name, rec in ensembles.items():
            if isinstance(rec, Mapping):
                blocks += _member_blocks(file, str(name), rec, n)
    attacks = ev.get("attacks") or {}
    if attacks:
        rows = [
            [
                str(name),
                _acc_cell(rec, "robust_accuracy", n),
                _seconds(rec.get("seconds")),
                _verdict_cell(verdict),
            ]
            for name, rec in attacks.items()
            if isinstance(rec, Mapping)
        ]
        blocks += [
            Paragraph("Attack members:"),
            Table(
                ["attack member", "robust accuracy [95% CI] n", "seconds", "diagnostics"],
                rows,
                file,
            ),
        ]
    blocks += _escalation_blocks(file, ev)
    blocks += _diagnostics_blocks(file, ev)
    return blocks


def _verdict_cell(verdict: str) -> Cell:
    """A :func:`diagnostics_verdict` text as a cell, red when a check failed."""
    if verdict.startswith("checks FAIL"):
        return Cell(verdict, "fail")
    return Cell(verdict, "pass" if verdict.startswith("checks PASS") else None)


def _escalation_blocks(file: str, ev: Mapping[str, Any]) -> list[Block]:
    """The steps of an escalated evaluation (``evaluate --escalate``) and where it stopped."""
    escalation = ev.get("escalation")
    if not isinstance(escalation, Mapping):
        return []
    steps = [s for s in escalation.get("steps") or [] if isinstance(s, Mapping)]
    rows: list[list[Cell | str]] = [
        [
            _num(step.get("level")),
            str(step.get("preset", "?")),
            _num(step.get("samples_attacked")),
            _num(step.get("broken")),
            "; ".join(str(r) for r in step.get("reasons") or []),
        ]
        for step in steps
    ]
    still = [str(c) for c in escalation.get("still_failing") or []]
    blocks: list[Block] = [
        Paragraph(
            f"Escalation: {len(steps)} step(s); stopped: {escalation.get('stopped', '?')}; "
            f"checks still failing: {', '.join(still) or 'none'}.",
            "fail" if still else None,
        )
    ]
    if rows:
        blocks.append(
            Table(["level", "preset", "standing samples attacked", "broken", "why"], rows, file)
        )
    return blocks


def _diagnostics_blocks(file: str, ev: Mapping[str, Any]) -> list[Block]:
    """Gradient-masking verdicts; says so plainly when none ran."""
    diagnostics = ev.get("diagnostics") or {}
    checks = {k: v for k, v in diagnostics.items() if isinstance(v, Mapping)}
    if not checks:
        settings = (ev.get("settings") or {}).get("diagnostics") or {}
        mode = settings.get("mode") if isinstance(settings, Mapping) else None
        why = f" (diagnostics mode: {mode})" if mode else ""
        return [
            Paragraph(
                f"Diagnostics: none ran{why}, so the robust accuracy above was not checked for "
                "gradient masking.",
                "note",
            )
        ]
    rows: list[list[Cell | str]] = [
        [str(name), _verdict(rec.get("passed"), rec.get("skipped")), str(rec.get("detail", ""))]
        for name, rec in checks.items()
    ]
    failed = sum(1 for rec in checks.values() if rec.get("passed") is False)
    skipped = sum(1 for rec in checks.values() if rec.get("skipped") is True)
    ran = len(checks) - skipped
    if failed:
        verdict = (
            f"Diagnostics: {failed} of {ran} check(s) FAILED: the robust accuracy above may be "
            "overestimated."
        )
    else:
        verdict = f"Diagnostics: all {ran} check(s) that ran passed."
    if skipped:
        verdict += f" {skipped} skipped."
    return [
        Paragraph(verdict, "fail" if failed else "pass"),
        Table(["check", "verdict", "detail"], rows, file),
    ]


def _member_blocks(file: str, name: str, rec: Mapping[str, Any], n: int | None) -> list[Block]:
    """Members of one ensemble in the order they ran: samples each broke, accuracy after it
    (with its 95% interval over the evaluation's n images)."""
    after = rec.get("robust_accuracy_after")
    broken = rec.get("broken_by")
    if not isinstance(after, Mapping) and not isinstance(broken, Mapping):
        return []
    after = after if isinstance(after, Mapping) else {}
    broken = broken if isinstance(broken, Mapping) else {}
    names = [str(n) for n in rec.get("member_names") or []]
    names += [str(n) for n in [*after, *broken] if str(n) not in names]
    rows: list[list[Cell | str]] = [[m, _num(broken.get(m)), _acc_cell(after, m, n)] for m in names]
    mode = rec.get("mode")
    how = (
        "each member attacks only the samples the members before it did not break"
        if mode == "early-exit"
        else f"mode: {mode}"
        if mode
        else "in the order they ran"
    )
    return [
        Paragraph(f"Members of {name} ({how}):"),
        Table(["member", "samples broken", "robust accuracy after it [95% CI] n"], rows, file),
    ]


_TOTALS = [
    ("neurons", "spiking neurons", _num),
    ("spikes_per_image", "spikes per image", _num),
    ("spikes_per_image_std", "spikes per image (std over images)", _num),
    (
        "firing_rate",
        "firing rate (spikes / neuron / step)",
        lambda v: f"{v:.4g}" if _is_number(v) else "n/a",
    ),
    ("synaptic_ops_per_image", "synaptic operations (AC) per image", _num),
    ("analog_macs_per_image", "first-layer MACs per image (analog input)", _num),
    ("ann_macs_per_image", "ANN MACs per image (same architecture)", _num),
]


def _stats_blocks(file: str, model: str, stats: Mapping[str, Any]) -> list[Block]:
    clean, adv = _clean_and_adversarial(stats)
    parts = [("clean", clean)] + ([("adversarial", adv)] if adv else [])
    blocks: list[Block] = [Heading(3, f"Spikes and estimated energy: {model}")]
    attack = stats.get("attack")
    if isinstance(attack, Mapping):
        blocks.append(
            Paragraph(
                f"Adversarial inputs: {attack.get('name', '?')} at eps {_eps_text(attack.get('eps'))}"
                f" through estimator {attack.get('estimator', '?')}; "
                f"{_num(clean.get('n_images'))} images, T = {_num(clean.get('T'))}."
            )
        )
    else:
        blocks.append(
            Paragraph(f"{_num(clean.get('n_images'))} clean images, T = {_num(clean.get('T'))}.")
        )
    layer_names: list[str] = []
    for _, part in parts:
        layer_names += [k for k in (part.get("layers") or {}) if k not in layer_names]
    if layer_names:
        headers = ["layer", "neurons"]
        for label, _ in parts:
            headers += [f"spikes/image ({label})", f"rate ({label})"]
        rows: list[list[Cell | str]] = []
        for name in layer_names:
            first: Mapping[str, Any] = next(
                (p["layers"][name] for _, p in parts if name in (p.get("layers") or {})), {}
            )
            row: list[Cell | str] = [name, _num(first.get("neurons"))]
            for _, part in parts:
                rec = (part.get("layers") or {}).get(name, {})
                rate = rec.get("firing_rate")
                row += [
                    _num(rec.get("spikes_per_image")),
                    f"{rate:.4g}" if _is_number(rate) else "n/a",
                ]
            rows.append(row)
        blocks.append(Table(headers, rows, file))
    rows = []
    for key, label, fmt in _TOTALS:
        if any(key in (p.get("totals") or {}) for _, p in parts):
            rows.append([label, *[fmt((p.get("totals") or {}).get(key)) for _, p in parts]])
    if any(_is_number(p.get("accuracy")) for _, p in parts):
        rows.append(
            [
                "accuracy on these images [95% CI] n",
                *[_acc_cell(p, "accuracy", _images(p)) for _, p in parts],
            ]
        )
    for key, label in (
        ("snn_uj_per_image", "SNN energy per image (estimate)"),
        ("ann_uj_per_image", "ANN energy per image (estimate)"),
    ):
        rows.append([label, *[_energy(p, key) for _, p in parts]])
    ratios = [(p.get("energy") or {}).get("ann_over_snn") for _, p in parts]
    rows.append(
        ["ANN / SNN energy (estimate)", *[f"{r:.4g}x" if _is_number(r) else "n/a" for r in ratios]]
    )
    blocks.append(Table(["quantity", *[label for label, _ in parts]], rows, file))
    energy = clean.get("energy") or {}
    constants = (
        f"Constants: {energy.get('mac_pj', 4.6)} pJ per MAC, {energy.get('ac_pj', 0.9)} pJ per AC "
        f"({energy.get('source', 'Horowitz, ISSCC 2014, 45 nm')})."
    )
    blocks.append(Paragraph(f"{ENERGY_NOTE} {constants}"))
    return blocks


def _images(part: Mapping[str, Any]) -> int | None:
    """Images a spike_statistics part was measured on."""
    count = _float_or_none(part.get("n_images"))
    return int(count) if count is not None and count >= 1 else None


_FIGURES_ABOUT = (
    (
        "accuracy_by_model",
        "Clean and robust accuracy per model with 95% Wilson intervals, from evaluation-*.json",
    ),
    (
        "robust_accuracy_vs_eps",
        "Robust accuracy vs eps with 95% Wilson bands, from evaluation-*.json",
    ),
    ("square_queries", "Square attack accuracy vs queries, from evaluation-*.json"),
    ("spikes_per_layer", "Spikes per image and layer, from stats-*.json"),
    ("spike_raster-", "Spike raster of one image, clean vs adversarial, from stats-{}.json"),
    ("accuracy_vs_T", "Clean accuracy vs time steps, from conversion_curve.json"),
    (
        "robust_accuracy_vs_T",
        "Clean and robust accuracy of each SNN vs time steps T with 95% Wilson bands (the ANN's "
        "robust accuracy on the same images dashed), from latency/*/latency.json",
    ),
)


def _figure_about(stem: str) -> str:
    """What a figure of :func:`make_run_figures` shows and which files it is drawn from."""
    for prefix, about in _FIGURES_ABOUT:
        if stem == prefix or (prefix.endswith("-") and stem.startswith(prefix)):
            return about.format(stem[len(prefix) :])
    return ""


def _run_blocks(run: RunFiles, out_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Run {run.name}"), Paragraph(f"Folder: {run.path}")]
    for problem in run.problems:
        blocks.append(Paragraph(f"Skipped: {problem}", "fail"))
    blocks.append(Heading(3, "Configuration"))
    if run.config_text is not None:
        blocks.append(Code(run.config_text.rstrip(), "config.yaml"))
    else:
        blocks.append(Paragraph("No config.yaml in this run."))
    blocks += _summary_blocks(run)
    if not run.evaluations:
        blocks.append(Paragraph("No evaluation files (evaluation-*.json) in this run."))
    for file, model, evaluation in run.evaluations:
        blocks += _evaluation_blocks(file, model, evaluation)
    if not run.stats:
        blocks.append(Paragraph("No spike statistics (stats-*.json) in this run."))
    for file, model, stats in run.stats:
        blocks += _stats_blocks(file, model, stats)
    blocks += _saved_breaks(run)
    figures = [png for png in run.figures if not png.stem.startswith("saved_breaks-")]
    if figures:
        blocks.append(Heading(3, "Figures"))
        for png in figures:
            caption = f"{png.relative_to(run.path)} (run {run.name})"
            about = _figure_about(png.stem)
            blocks.append(Image(png, f"{about}: {caption}" if about else caption))
    return blocks


def _saved_breaks(run: RunFiles) -> list[Block]:
    """The saved-adversarial-examples section (:mod:`robustsnn.analysis.breaks`), or one line
    saying why it could not be drawn."""
    from robustsnn.analysis.breaks import saved_breaks_blocks

    try:
        return saved_breaks_blocks(run.path)  # type: ignore[no-any-return]
    except UserError as exc:
        return [Paragraph(f"Saved adversarial examples not shown: {exc}", "fail")]


# --------------------------------------------------------------------------- rendering


def _md_cell(cell: Cell | str) -> str:
    if isinstance(cell, Cell):
        text = f"**{cell.text}**" if cell.style in ("pass", "fail") else cell.text
    else:
        text = cell
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], out_dir: Path) -> str:
    """Markdown text of the report (images linked relative to ``out_dir``)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            text = f"**{block.text}**" if block.style == "fail" else block.text
            lines += [f"> {text}" if block.style == "verdict" else text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            for row in block.rows:
                lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            lines += ["", f"_source: {block.source}_", ""]
        elif isinstance(block, Code):
            lines += ["```yaml", block.text, "```", "", f"_source: {block.source}_", ""]
        elif isinstance(block, Image):
            rel = Path(os.path.relpath(block.path, out_dir)).as_posix()
            lines += [f"![{block.caption}]({rel})", "", f"_figure: {block.caption}_", ""]
    return "\n".join(lines).rstrip() + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 0 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
div.table { max-width: 100%; overflow-x: auto; }
th { background: #eef1f5; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: bottom; text-align: left; font-size: .8em; color: #666;
          padding-top: .2em; font-style: italic; }
td.pass, p.pass { color: #146c2e; font-weight: bold; }
td.fail, p.fail { color: #b00020; font-weight: bold; }
td.pass { background: #e6f4ea; } td.fail { background: #fde7e9; }
td.acc { font-variant-numeric: tabular-nums; }
pre { background: #f5f5f5; border: 1px solid #ddd; padding: .6em; overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, p.source { font-size: .8em; color: #666; font-style: italic; }
p.note { font-size: .9em; color: #444; }
p.verdict { background: #f3f6fb; border-left: 4px solid #3b6fb6; padding: .6em .9em; }
"""


def _html_cell(cell: Cell | str, tag: str = "td") -> str:
    if isinstance(cell, Cell):
        cls = f' class="{cell.style}"' if cell.style else ""
        text = html.escape(cell.text)
        if cell.style == "acc":  # "91.25% [81.16, 96.85]" stays on one line, n may wrap
            head, sep, tail = text.partition(" n=")
            text = head.replace(" ", "&nbsp;") + sep + tail
        else:
            text = _breakable(text)
        return f"<{tag}{cls}>{text}</{tag}>"
    return f"<{tag}>{_breakable(html.escape(cell))}</{tag}>"


def _breakable(text: str) -> str:
    """Let long paths and file lists wrap after ``/``, ``_`` and ``;`` (the overview stays as
    wide as the page)."""
    for mark in ("/", "_", ";"):
        text = text.replace(mark, mark + "<wbr>")
    return text


def render_html(blocks: Sequence[Block], title: str) -> str:
    """A single-file HTML5 document: inline CSS, images as base64 data URIs, no external links."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            cls = f' class="{block.style}"' if block.style else ""
            body.append(f"<p{cls}>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            body.append('<div class="table"><table>')
            body.append(f"<caption>source: {html.escape(block.source)}</caption>")
            body.append("<thead><tr>" + "".join(_html_cell(h, "th") for h in block.headers))
            body.append("</tr></thead><tbody>")
            for row in block.rows:
                body.append("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>")
            body.append("</tbody></table></div>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            body.append(f'<p class="source">source: {html.escape(block.source)}</p>')
        elif isinstance(block, Image):
            try:
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            except OSError as exc:
                body.append(
                    f'<p class="fail">figure {html.escape(block.caption)} unreadable: {html.escape(str(exc))}</p>'
                )
                continue
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                f"<figcaption>figure: {html.escape(block.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out_dir: str | Path | None = None,
    *,
    title: str = "robustsnn report",
    draw_figures: bool = False,
) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` for one or several run folders.

    ``out_dir`` defaults to the run folder (one run) or to the folder that contains all of them
    (several runs, which also get one comparison table). With ``draw_figures`` the figures the
    runs' files support are drawn first (:func:`make_run_figures`). Missing files are tolerated.
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise UserError("write_report needs at least one run folder")
    if draw_figures:
        for d in dirs:
            if d.is_dir():
                make_run_figures(d)
    runs = [read_run(d) for d in dirs]
    empty = [str(r.path) for r in runs if r.empty]
    if empty:
        raise UserError(
            f"no run found in {', '.join(empty)}: none of config.yaml, summary.json, "
            "evaluation*.json, stats-*.json or figures is there; pass a folder written by "
            "`robustsnn run` or `robustsnn evaluate`"
        )
    if out_dir is None:
        out = dirs[0] if len(dirs) == 1 else Path(os.path.commonpath([d.resolve() for d in dirs]))
    else:
        out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(1, title),
        Paragraph(
            f"Generated {stamp} from {len(runs)} run folder(s): {', '.join(r.name for r in runs)}. "
            "Accuracies are fractions of the evaluated images, shown in percent with their 95% "
            "confidence interval [low, high] and the number of images n; every table names the "
            "file its numbers come from."
        ),
    ]
    several = len(runs) > 1
    for run in runs:
        verdict = run_verdict(run.summary)
        if verdict:
            prefix = f"Run {run.name}: " if several else ""
            blocks.append(Paragraph(prefix + verdict, "verdict"))
    blocks += _overview(runs, several)
    for run in runs:
        blocks += _run_blocks(run, out)
    md_path = out / "report.md"
    html_path = out / "report.html"
    _write_text(md_path, render_markdown(blocks, out))
    _write_text(html_path, render_html(blocks, title))
    return md_path, html_path


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
