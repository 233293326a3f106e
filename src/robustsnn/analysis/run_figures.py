"""The figures of a run: what a run folder's files support, drawn into ``run_dir/figures``.

:func:`make_run_figures` decides which figures a run's files allow and gathers their data (one
function per figure family below); the drawing itself is :mod:`robustsnn.analysis.figures`,
which knows nothing of run folders. :func:`figure_about` says what each figure shows and which
files it is drawn from, for the report's captions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import robustsnn.analysis.figures as fig
from robustsnn.analysis.formatting import eps_label
from robustsnn.analysis.runs import (
    RunFiles,
    accuracy_interval,
    clean_and_adversarial,
    float_or_none,
    is_number,
    read_run,
    robust_intervals,
    robust_values,
    sample_count,
)

# Evaluations grouped by model: {short model name: [evaluation dict, ...]}.
ByModel = dict[str, list[Mapping[str, Any]]]

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


def figure_about(stem: str) -> str:
    """What a figure of :func:`make_run_figures` shows and which files it is drawn from."""
    for prefix, about in _FIGURES_ABOUT:
        if stem == prefix or (prefix.endswith("-") and stem.startswith(prefix)):
            return about.format(stem[len(prefix) :])
    return ""


def make_run_figures(run_dir: str | Path) -> list[Path]:
    """Draw every figure the run's files support into ``run_dir/figures``; return the paths.

    Spikes per layer (stats-*.json), spike rasters (a stats file's ``raster``), clean and
    robust accuracy per model and robust accuracy vs eps (evaluation files at two or more eps),
    Square accuracy vs queries (an evaluation's extra keys, see :func:`_square_data`) and
    accuracy vs T (``conversion_curve.json``: ``{"T": [...], "curves": {label: [...]}}``).
    """
    run = read_run(run_dir)
    out = run.path / "figures"
    by_model: ByModel = {}
    for _file, model, evaluation in run.evaluations:
        # group by model (evaluation-<model>-eps4.json is <model>), never by checkpoint path
        by_model.setdefault(_short_model(model, evaluation), []).append(evaluation)
    made = _spike_figures(run, out)
    made += _accuracy_by_model(by_model, out)
    made += _robustness_vs_eps(by_model, out)
    made += _square_figure(run, out)
    made += _latency_figures(run, out)
    return made


def _spike_figures(run: RunFiles, out: Path) -> list[Path]:
    """Spike rasters (a stats file's ``raster``) and spikes per layer (stats-*.json)."""
    made: list[Path] = []
    spikes: dict[str, Any] = {}
    for _file, model, stats in run.stats:
        clean, adv = clean_and_adversarial(stats)
        if isinstance(clean.get("layers"), Mapping) and clean["layers"]:
            spikes[f"{model}, clean" if adv else model] = clean
        if adv and isinstance(adv.get("layers"), Mapping) and adv["layers"]:
            attack = stats.get("attack", {}).get("name", "attack")
            spikes[f"{model}, adversarial ({attack})"] = adv
        if isinstance(stats.get("raster"), Mapping):
            made.append(fig.plot_spike_raster(stats["raster"], out / f"spike_raster-{model}.png"))
    if spikes:
        made.append(fig.plot_spikes_per_layer(spikes, out / "spikes_per_layer.png"))
    return made


def _accuracy_by_model(by_model: ByModel, out: Path) -> list[Path]:
    """Clean and robust accuracy per model (one bar group per evaluation), with intervals."""
    bars: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    for model, evaluations in by_model.items():
        for ev in evaluations:
            label = model if len(evaluations) == 1 else f"{model} @ {eps_label(ev.get('eps'))}"
            n = sample_count(ev)
            label += f"\n(n={n})" if n else "\n(n unknown)"
            values: dict[str, float] = {}
            bounds: dict[str, tuple[float, float]] = {}
            if is_number(ev.get("clean_accuracy")):
                values["clean"] = float(ev["clean_accuracy"])
                clean_interval = accuracy_interval(ev, "clean_accuracy", n)
                if clean_interval is not None:
                    bounds["clean"] = clean_interval
            for name, acc in robust_values(ev).items():
                values[f"robust: {name}"] = acc
            robust_bounds = robust_intervals(ev)
            bounds.update({f"robust: {k}": v for k, v in robust_bounds.items()})
            if values:
                bars[label] = values
                intervals[label] = bounds
    if not bars:
        return []
    all_eps = {
        eps_label(ev.get("eps"))
        for evs in by_model.values()
        for ev in evs
        if is_number(ev.get("eps"))
    }
    title = "Clean and robust accuracy per model"
    if len(all_eps) == 1:
        title += f", eps = {all_eps.pop()}"
    return [
        fig.plot_baselines(bars, out / "accuracy_by_model.png", title=title, intervals=intervals)
    ]


def _robustness_vs_eps(by_model: ByModel, out: Path) -> list[Path]:
    """Robust accuracy vs eps for every model evaluated at two or more eps (clean at 0)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    bands: dict[str, list[tuple[float, float, float]]] = {}
    for model, evaluations in by_model.items():
        eps_values = {float(e["eps"]) for e in evaluations if is_number(e.get("eps"))}
        if len(eps_values - {0.0}) < 2:
            continue
        ns = sorted({n for e in evaluations if (n := sample_count(e))})
        n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={'/'.join(map(str, ns))}" if ns else "n ?"
        for ev in evaluations:
            if not is_number(ev.get("eps")):
                continue
            eps = float(ev["eps"])
            n = sample_count(ev)
            clean_acc = float_or_none(ev.get("clean_accuracy"))
            clean_interval = accuracy_interval(ev, "clean_accuracy", n)
            robust_bounds = robust_intervals(ev)
            for name, acc in robust_values(ev).items():
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
    if not curves:
        return []
    return [
        fig.plot_robustness_vs_eps(
            curves,
            out / "robust_accuracy_vs_eps.png",
            bands={k: v for k, v in bands.items() if k in curves and v},
        )
    ]


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


def _square_figure(run: RunFiles, out: Path) -> list[Path]:
    """Square accuracy vs queries, one curve per evaluation that holds one."""
    square: dict[str, Any] = {}
    n_queries: int | None = None
    for _file, model, evaluation in run.evaluations:
        found = _square_data(evaluation)
        if found is not None:
            square[f"{model} @ {eps_label(evaluation.get('eps'))}"] = found[0]
            n_queries = found[1] or n_queries
    if not square:
        return []
    return [fig.plot_square_curve(square, out / "square_queries.png", n_queries=n_queries)]


def _latency_figures(run: RunFiles, out: Path) -> list[Path]:
    """Clean accuracy vs T (conversion_curve.json) and robustness vs T (latency.json files)."""
    made: list[Path] = []
    if run.conversion_curve and run.conversion_curve.get("curves"):
        made.append(fig.plot_accuracy_vs_T(run.conversion_curve, out / "accuracy_vs_T.png"))
    latency = _latency_curve(run)
    if latency is not None:
        made.append(
            fig.plot_accuracy_vs_T(
                latency,
                out / "robust_accuracy_vs_T.png",
                title=f"Robustness vs latency ({latency['ensemble']}, eps "
                f"{eps_label(latency['eps'])}, n={latency['n']})",
                ylabel="accuracy (%)",
                reference_label="ANN robust",
            )
        )
    return made


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
    if isinstance(ann, Mapping) and is_number(ann.get("robust_accuracy")):
        result["ann"] = float(ann["robust_accuracy"])
    return result
