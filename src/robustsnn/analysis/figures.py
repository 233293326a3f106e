"""Figures of the paper (PAPER.md section 7) drawn from plain data (dicts, lists) into PNG files.

Every function takes its data and an output path, writes a PNG and returns the path. Accuracies
are fractions in [0, 1] (as in the JSON files) and are shown in percent. Figures are drawn with
matplotlib's object API on the Agg canvas: no pyplot, no global backend change, no display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustsnn.errors import UserError
from robustsnn.evaluation.intervals import wilson_interval

DPI = 120
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")

Series = Any  # list of (x, y) pairs, {"x": [...], "y": [...]}, or {x: y}
Band = Sequence[tuple[float, float, float]]  # (x, low, high) of a 95% interval, as fractions
Interval = tuple[float, float]  # (low, high) of a 95% interval, as fractions
INTERVAL_NOTE = "shaded: 95% Wilson interval"
ERROR_BAR_NOTE = "error bars: 95% Wilson interval"


# --------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_path: str | Path) -> Path:
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def series_xy(series: Series) -> tuple[list[float], list[float]]:
    """Normalize a curve to sorted ``(xs, ys)``.

    Accepts a list of ``(x, y)`` pairs, a dict with two parallel lists (``x``/``y`` or any two
    list-valued keys, the first being x), or a mapping ``{x: y}`` (keys may be numeric strings).
    """
    if isinstance(series, Mapping):
        lists = [(k, v) for k, v in series.items() if isinstance(v, (list, tuple, np.ndarray))]
        if "x" in series and "y" in series:
            xs, ys = list(series["x"]), list(series["y"])
        elif len(lists) >= 2:
            xs, ys = list(lists[0][1]), list(lists[1][1])
        else:
            xs, ys = [float(k) for k in series], list(series.values())
    else:
        pairs = list(series)
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(xs) != len(ys):
        raise UserError(f"a curve needs as many x as y values, got {len(xs)} and {len(ys)}")
    order = sorted(range(len(xs)), key=lambda i: float(xs[i]))
    return [float(xs[i]) for i in order], [float(ys[i]) for i in order]


def _percent(values: Sequence[float]) -> list[float]:
    return [100.0 * v for v in values]


def _percent_label(value: float) -> str:
    """A bar label in percent, as precise as the report's tables (up to 2 decimals): 91.25, 50."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def wilson_band(series: Series, n: int) -> list[tuple[float, float, float]]:
    """``[(x, low, high), ...]``: the Wilson 95% interval of each accuracy of a curve measured
    on ``n`` samples (successes = round(accuracy x n)), for the ``bands`` of the line plots."""
    xs, ys = series_xy(series)
    return [(x, *wilson_interval(round(y * n), n)) for x, y in zip(xs, ys, strict=True)]


def _line_plot(
    ax: Axes,
    curves: Mapping[str, Series],
    *,
    x_scale: float = 1.0,
    percent: bool = True,
    bands: Mapping[str, Band] | None = None,
) -> None:
    """One line per curve; ``bands[label]`` (``(x, low, high)``) shades its 95% interval."""
    if not curves:
        raise UserError("nothing to plot: no curves given")
    for i, (label, series) in enumerate(curves.items()):
        xs, ys = series_xy(series)
        (line,) = ax.plot(
            [x * x_scale for x in xs],
            _percent(ys) if percent else ys,
            marker=_MARKERS[i % len(_MARKERS)],
            label=str(label),
        )
        band = sorted((bands or {}).get(label) or [])
        if band:
            scale = 100.0 if percent else 1.0
            ax.fill_between(
                [x * x_scale for x, _, _ in band],
                [scale * low for _, low, _ in band],
                [scale * high for _, _, high in band],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _accuracy_axis(ax: Axes, label: str = "accuracy (%)") -> None:
    ax.set_ylabel(label)
    low, high = ax.get_ylim()
    ax.set_ylim(max(-2.0, min(low, 0.0)), min(102.0, max(high, 10.0)))


def _image_hwc(image: Any) -> np.ndarray:
    arr = np.asarray(image, dtype=float)
    if arr.ndim == 4:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))  # CHW, this package's layout (else HWC)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _show_image(ax: Axes, image: np.ndarray, title: str) -> None:
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    ax.set_title(title, fontsize="medium")
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- Figure 1


def plot_spike_raster(
    data: Mapping[str, Any],
    out_path: str | Path,
    *,
    max_neurons: int = 200,
    seed: int = 0,
) -> Path:
    """Paper Figure 1: clean/adversarial image, amplified perturbation, spike rasters.

    ``data`` (as made by :func:`robustsnn.analysis.statistics.raster_data`): ``clean_image`` and
    ``adversarial_image`` (``[C, H, W]`` or ``[H, W]`` in [0, 1]), ``clean_spikes`` and
    ``adversarial_spikes`` (0/1 ``[T][neurons]``, the same neurons in both), optional ``layer``,
    ``eps`` (pixels) and ``neurons_in_layer``. More than ``max_neurons`` neurons are subsampled.
    """
    clean = _image_hwc(data["clean_image"])
    adv = _image_hwc(data["adversarial_image"])
    if clean.shape != adv.shape:
        raise UserError(
            f"clean and adversarial images differ in shape: {clean.shape} vs {adv.shape}"
        )
    s_clean = np.asarray(data["clean_spikes"], dtype=float)
    s_adv = np.asarray(data["adversarial_spikes"], dtype=float)
    if s_clean.ndim != 2 or s_clean.shape != s_adv.shape:
        raise UserError("clean_spikes and adversarial_spikes must both be 0/1 arrays [T][neurons]")
    steps, count = s_clean.shape
    if count > max_neurons:
        keep = np.sort(np.random.default_rng(seed).choice(count, max_neurons, replace=False))
        s_clean, s_adv, count = s_clean[:, keep], s_adv[:, keep], max_neurons
    delta = adv - clean
    largest = float(np.abs(delta).max())
    factor = 0.5 / largest if largest > 0 else 1.0
    shown = 0.5 + delta * factor

    layer = str(data.get("layer", "first spiking layer"))
    eps = data.get("eps")
    eps_text = f", eps = {_eps_text(float(eps))}" if eps is not None else ""
    fig = _figure(11.0, 7.0)
    grid = fig.add_gridspec(2, 6, height_ratios=[1.0, 1.3])
    _show_image(fig.add_subplot(grid[0, 0:2]), clean, "clean image")
    _show_image(fig.add_subplot(grid[0, 2:4]), adv, f"adversarial image{eps_text}")
    if largest > 0:
        delta_title = (
            f"perturbation x{factor:.3g} (gray = 0)\nwhite: positive, black: negative\n"
            f"max |delta| = {largest * 255:.2f}/255"
        )
    else:
        delta_title = "perturbation: none\n(the attack left this image unchanged)"
    _show_image(fig.add_subplot(grid[0, 4:6]), shown, delta_title)
    total = data.get("neurons_in_layer")
    subset = f"{count} random neurons" + (f" of {int(total)}" if total else "")
    added = (s_adv > 0) & (s_clean <= 0)
    removed = (s_clean > 0) & (s_adv <= 0)
    for col, (name, spikes) in enumerate((("clean", s_clean), ("adversarial", s_adv))):
        ax = fig.add_subplot(grid[1, 3 * col : 3 * col + 3])
        rgb = np.ones((*spikes.T.shape, 3))
        rgb[spikes.T > 0] = (0.0, 0.0, 0.0)
        title = f"{name}: {int(spikes.sum())} spikes, rate {spikes.mean():.3f} /neuron/step"
        if col == 1:
            rgb[added.T] = (0.85, 0.1, 0.1)
            rgb[removed.T] = (0.55, 0.75, 1.0)
            title += (
                f"\nblack: kept, red: {int(added.sum())} added, blue: {int(removed.sum())} removed"
            )
        ax.imshow(
            rgb,
            aspect="auto",
            interpolation="nearest",
            extent=(0.5, steps + 0.5, count - 0.5, -0.5),
        )
        ax.set_xticks(range(1, steps + 1))
        ax.set_xlabel("time step")
        ax.set_ylabel(f"neuron ({subset})")
        ax.set_title(title, fontsize="medium")
    note = data.get("sample_note")
    fig.suptitle(
        f"Spike raster of layer {layer!r}: clean vs adversarial input"
        + (f"\n{note}" if note else "")
    )
    return _save(fig, out_path)


def _eps_text(eps: float) -> str:
    scaled = eps * 255
    if abs(scaled - round(scaled)) < 1e-3:
        return f"{int(round(scaled))}/255"
    return f"{eps:.4g}"


# --------------------------------------------------------------------------- Figures 2 and 3


def plot_robustness_vs_beta(
    curves: Mapping[str, Series],
    out_path: str | Path,
    *,
    attack: str = "PGD-20, eps = 8/255",
    title: str = "Robust accuracy vs finetuning beta",
    bands: Mapping[str, Band] | None = None,
) -> Path:
    """Paper Figure 2: robust accuracy against beta, one curve per label (e.g. training eps).

    ``curves``: ``{label: [(beta, robust_accuracy), ...]}`` (or any form :func:`series_xy` reads);
    ``bands``: ``{label: [(beta, low, high), ...]}`` 95% intervals, shaded (see
    :func:`wilson_band`).
    """
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    _line_plot(ax, curves, bands=bands)
    ax.set_xlabel("beta (weight of the KL term in robust finetuning)")
    _accuracy_axis(ax, f"robust accuracy (%), {attack}")
    ax.set_title(title + (f"\n({INTERVAL_NOTE})" if bands else ""), fontsize="medium")
    return _save(fig, out_path)


def plot_robustness_vs_eps(
    curves: Mapping[str, Series],
    out_path: str | Path,
    *,
    attack: str = "",
    title: str = "Robust accuracy vs perturbation size",
    bands: Mapping[str, Band] | None = None,
) -> Path:
    """Robust accuracy against the L-inf radius, one curve per model (eps in pixels, shown x255).

    ``curves``: ``{model: [(eps, accuracy), ...]}``; eps 0 is the clean accuracy. ``bands``:
    ``{model: [(eps, low, high), ...]}`` 95% intervals, shaded around their curve.
    """
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    _line_plot(ax, curves, x_scale=255.0, bands=bands)
    ax.set_xlabel("eps (L-inf radius, in units of 1/255 pixel)")
    _accuracy_axis(ax, "robust accuracy (%)" + (f", {attack}" if attack else ""))
    ax.set_title(title + (f"\n({INTERVAL_NOTE})" if bands else ""), fontsize="medium")
    return _save(fig, out_path)


def baselines_figure(
    results: Mapping[str, Mapping[str, float]],
    *,
    title: str = "Clean and robust accuracy per model",
    intervals: Mapping[str, Mapping[str, Interval]] | None = None,
) -> Figure:
    """The figure of :func:`plot_baselines`, not yet saved (tests read its error bars)."""
    if not results:
        raise UserError("nothing to plot: no models given")
    metrics: list[str] = []
    for values in results.values():
        metrics += [m for m in values if m not in metrics]
    models = list(results)
    width = 0.8 / max(1, len(metrics))
    fig = _figure(max(6.0, 1.3 * len(models) * max(1, len(metrics)) * 0.6 + 2.0), 4.6)
    ax = fig.add_subplot()
    for j, metric in enumerate(metrics):
        xs, hs, lows, highs = [], [], [], []
        for i, model in enumerate(models):
            value = results[model].get(metric)
            if value is None or not math.isfinite(float(value)):
                continue
            xs.append(i + (j - (len(metrics) - 1) / 2) * width)
            hs.append(100.0 * float(value))
            low, high = (intervals or {}).get(model, {}).get(metric, (value, value))
            lows.append(100.0 * float(low))
            highs.append(100.0 * float(high))
        errors = [
            [h - lo for h, lo in zip(hs, lows, strict=True)],
            [hi - h for h, hi in zip(hs, highs, strict=True)],
        ]
        shown = intervals is not None and any(e > 0 for side in errors for e in side)
        bars = ax.bar(
            xs,
            hs,
            width=width * 0.95,
            label=metric,
            yerr=errors if shown else None,
            capsize=3 if shown else 0,
            error_kw={"elinewidth": 1.0, "ecolor": "0.25"},
        )
        if shown:  # the value above the whisker, not hidden behind it
            for x, h, hi in zip(xs, hs, highs, strict=True):
                ax.text(
                    x, max(h, hi) + 0.8, _percent_label(h), ha="center", va="bottom",
                    fontsize="x-small",
                )  # fmt: skip
        else:
            ax.bar_label(
                bars, labels=[_percent_label(h) for h in hs], fontsize="x-small", padding=1
            )
    crowded = len(models) > 3 or max(len(m) for m in models) * len(models) > 60
    ax.set_xticks(
        range(len(models)),
        models,
        rotation=20 if crowded else 0,
        ha="right" if crowded else "center",
        rotation_mode="anchor",
    )
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 108 if intervals else 105)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title + (f"\n({ERROR_BAR_NOTE})" if intervals else ""), fontsize="medium")
    return fig


def plot_baselines(
    results: Mapping[str, Mapping[str, float]],
    out_path: str | Path,
    *,
    title: str = "Clean and robust accuracy per model",
    intervals: Mapping[str, Mapping[str, Interval]] | None = None,
) -> Path:
    """Paper Figure 3: grouped bars, one group per model, one bar per metric (clean, robust...).

    ``results``: ``{model: {"clean": 0.81, "robust (PGD)": 0.42, ...}}``; missing values are
    left out of their group. ``intervals`` (same keys): ``(low, high)`` 95% intervals, drawn as
    error bars, with each bar's value above its whisker.
    """
    return _save(baselines_figure(results, title=title, intervals=intervals), out_path)


# --------------------------------------------------------------------------- Figure 4


def _layer_spikes(value: Mapping[str, Any]) -> dict[str, float]:
    """``{layer: spikes per image}`` from either that mapping or a spike_statistics dict."""
    if "layers" in value and isinstance(value["layers"], Mapping):
        return {k: float(v["spikes_per_image"]) for k, v in value["layers"].items()}
    return {k: float(v) for k, v in value.items()}


def _count(value: float) -> str:
    """Spike counts as the report's tables print them: 166.6, 1,234.5, 98,765, 5.938."""
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def plot_spikes_per_layer(
    models: Mapping[str, Mapping[str, Any]],
    out_path: str | Path,
    *,
    title: str = "Spikes per image and layer",
) -> Path:
    """Paper Figure 4: spikes per layer (grouped bars) and in total, e.g. vanilla vs robust SNN.

    ``models``: ``{label: {layer: spikes_per_image}}`` or ``{label: spike_statistics(...)}``.
    """
    if not models:
        raise UserError("nothing to plot: no models given")
    per_model = {label: _layer_spikes(v) for label, v in models.items()}
    layers: list[str] = []
    for values in per_model.values():
        layers += [k for k in values if k not in layers]
    labels = list(per_model)
    width = 0.8 / len(labels)
    fig = _figure(
        max(8.0, 0.6 * len(layers) * max(1.0, len(labels) / 2) + 4.0),
        4.6 + 0.35 * len(labels) + 0.8,
    )
    # two subfigures, so the long labels of the totals do not squeeze the per-layer axes
    parts = fig.subfigures(2, 1, squeeze=False, height_ratios=[4.0, 0.35 * len(labels) + 0.8])
    top, bottom = parts[0, 0], parts[1, 0]
    ax = top.add_subplot()
    for j, label in enumerate(labels):
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(layers))]
        hs = [per_model[label].get(layer, 0.0) for layer in layers]
        ax.bar(xs, hs, width=width * 0.95, label=label, color=f"C{j}")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize="small")
    ax.set_xlabel("spiking layer")
    ax.set_ylabel("spikes per image")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("per layer")
    total_ax = bottom.add_subplot()
    totals = [sum(per_model[label].values()) for label in labels]
    ys = list(range(len(labels)))
    bars = total_ax.barh(ys, totals, color=[f"C{j}" for j in range(len(labels))])
    total_ax.bar_label(bars, labels=[_count(t) for t in totals], fontsize="small", padding=2)
    total_ax.set_yticks(ys, labels, fontsize="small")
    total_ax.invert_yaxis()
    total_ax.set_xlabel("spikes per image, all layers")
    total_ax.set_xlim(0, max(totals + [1.0]) * 1.15)
    total_ax.grid(True, axis="x", alpha=0.3)
    total_ax.set_title("total", fontsize="medium")
    fig.suptitle(title)
    return _save(fig, out_path)


# --------------------------------------------------------------------------- Figure 5


def square_curve_from_queries(
    queries: Sequence[int], n_queries: int | None = None
) -> list[tuple[int, float]]:
    """Accuracy against the query budget from per-sample query counts of the Square attack.

    ``queries[i]`` is the number of queries that fooled sample i (0: misclassified clean,
    -1: never fooled), as in ``Square.last_queries``. The accuracy at budget q is the fraction
    of samples not fooled within q queries.
    """
    counts = np.asarray(list(queries), dtype=np.int64)
    if counts.size == 0:
        raise UserError("no per-sample query counts given")
    fooled = np.sort(counts[counts >= 0])
    last = int(n_queries) if n_queries is not None else int(max(1, counts.max()))
    budgets = sorted({0, *fooled.tolist(), last})
    n = counts.size
    return [(int(q), (n - int(np.searchsorted(fooled, q, side="right"))) / n) for q in budgets]


def _square_samples(value: Any) -> int | None:
    """How many samples a Square curve was measured on, when it is given per sample."""
    if isinstance(value, Mapping) and "queries" in value and "accuracy" not in value:
        return len(value["queries"])
    if isinstance(value, Mapping):
        return None
    items = list(value)
    if items and all(isinstance(v, (int, np.integer)) for v in items):
        return len(items)
    return None


def _square_series(value: Any, n_queries: int | None) -> tuple[list[float], list[float]]:
    if isinstance(value, Mapping) and "queries" in value and "accuracy" not in value:
        return series_xy(square_curve_from_queries(value["queries"], n_queries))
    if isinstance(value, Mapping):
        return series_xy(value)
    items = list(value)
    if items and all(isinstance(v, (int, np.integer)) for v in items):
        return series_xy(square_curve_from_queries(items, n_queries))
    return series_xy(items)


def plot_square_curve(
    curves: Mapping[str, Any],
    out_path: str | Path,
    *,
    n_queries: int | None = None,
    eps: float | None = None,
    title: str = "Square attack: accuracy vs number of queries",
) -> Path:
    """Paper Figure 5: accuracy under the black-box Square attack against the query budget.

    ``curves``: ``{model: [(queries, accuracy), ...]}`` (``Square.last_curve``), or
    ``{model: [per-sample query counts]}`` (``Square.last_queries``: 0 = wrong when clean,
    -1 = never fooled), or ``{model: {"queries": [...]}}``. Per-sample counts also give n: the
    curve is then labelled with it and shaded with its Wilson 95% interval.
    """
    if not curves:
        raise UserError("nothing to plot: no curves given")
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    shaded = False
    for i, (label, value) in enumerate(curves.items()):
        xs, ys = _square_series(value, n_queries)
        n = _square_samples(value)
        shaded = shaded or bool(n)
        shown = f"{label} (n={n})" if n else str(label)
        ax.step(xs, _percent(ys), where="post", label=shown, color=f"C{i}")
        if n:
            band = wilson_band(list(zip(xs, ys, strict=True)), n)
            ax.fill_between(
                xs,
                [100.0 * low for _, low, _ in band],
                [100.0 * high for _, _, high in band],
                step="post",
                color=f"C{i}",
                alpha=0.15,
                linewidth=0,
            )
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("number of queries per image (symlog scale; 0 = clean)")
    _accuracy_axis(ax, "accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    title += f", eps = {_eps_text(eps)}" if eps is not None else ""
    ax.set_title(title + (f"\n({INTERVAL_NOTE})" if shaded else ""), fontsize="medium")
    return _save(fig, out_path)


# --------------------------------------------------------------------------- conversion


def plot_accuracy_vs_T(
    data: Mapping[str, Any],
    out_path: str | Path,
    *,
    title: str = "Accuracy vs time steps after conversion",
    ylabel: str = "clean accuracy (%)",
    reference_label: str = "ANN",
) -> Path:
    """Clean accuracy of converted SNNs against the number of time steps T.

    ``data``: ``{"T": [1, 2, 4, ...], "curves": {label: [accuracy per T, ...]}}`` (labels such
    as ``"hard reset, scale 0.3"``); an optional ``"ann"`` accuracy is drawn as a line; an
    optional ``"n"`` (images per accuracy) shades each curve's Wilson 95% interval.
    """
    steps = [float(t) for t in data["T"]]
    curves = data.get("curves") or {}
    if not curves:
        raise UserError("nothing to plot: conversion curve data has no 'curves'")
    for label, values in curves.items():
        if len(values) != len(steps):
            raise UserError(f"curve {label!r} has {len(values)} values for {len(steps)} T values")
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    series = {k: list(zip(steps, v, strict=True)) for k, v in curves.items()}
    n = int(data["n"]) if data.get("n") else 0
    bands = {k: wilson_band(v, n) for k, v in series.items()} if n > 0 else None
    _line_plot(ax, series, bands=bands)
    if data.get("ann") is not None:
        ax.axhline(100.0 * float(data["ann"]), color="gray", linestyle="--", label=reference_label)
        ax.legend(fontsize="small")
    if steps and min(steps) > 0 and max(steps) / min(steps) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [f"{int(t)}" for t in steps])
    ax.set_xlabel("time steps T")
    _accuracy_axis(ax, ylabel)
    images = "" if f"n={n}" in title else f"n={n} images; "
    ax.set_title(title + (f"\n({images}{INTERVAL_NOTE})" if bands else ""), fontsize="medium")
    return _save(fig, out_path)
