"""How the numbers of a run read in reports: counts, percentages, eps, seconds, energy, and
accuracies with their 95% interval and n.

One place for the wording, so the report's tables, its figure labels and ``robustsnn compare``
print the same value the same way ("n/a" where a file gives none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustsnn.analysis.document import Cell
from robustsnn.analysis.runs import accuracy_interval, float_or_none, is_number
from robustsnn.evaluation.intervals import format_accuracy


def pct(value: Any) -> str:
    """``"41.25%"`` for the fraction 0.4125; ``"n/a"`` for anything but a number."""
    return f"{100.0 * float(value):.2f}%" if is_number(value) else "n/a"


def num(value: Any) -> str:
    """A count or measure: thousands separated, whole numbers without decimals."""
    if not is_number(value):
        return "n/a" if value is None else str(value)
    v = float(value)
    if v == int(v):
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def seconds(value: Any) -> str:
    """Seconds with two decimals."""
    return f"{float(value):.2f}" if is_number(value) else "n/a"


def eps_label(eps: Any) -> str:
    """``"8/255"`` when eps is a whole number of 1/255 steps, else the value (figure labels)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        return "eps ?"
    scaled = value * 255
    if abs(scaled - round(scaled)) < 1e-3:
        return f"{int(round(scaled))}/255"
    return f"{value:.4g}"


def eps_text(value: Any) -> str:
    """``"8/255 (0.03137)"``: :func:`eps_label` with the plain value when they differ."""
    if not is_number(value):
        return "n/a"
    label = eps_label(value)
    plain = f"{float(value):.5g}"
    return label if label == plain else f"{label} ({plain})"


def energy_text(stats: Mapping[str, Any] | None, key: str) -> str:
    """An energy of a spike-statistics part, marked as the estimate it is."""
    energy = (stats or {}).get("energy") or {}
    value = energy.get(key)
    return f"{value:.4g} µJ (est.)" if is_number(value) else "n/a"


def accuracy_text(record: Mapping[str, Any], key: str, n: int | None) -> str:
    """``"41.25% [28.7, 55.9] n=50"`` for ``record[key]`` (see
    :func:`robustsnn.analysis.runs.accuracy_interval`); ``"41.25% (n unknown)"`` when the file
    gives no n, ``"n/a"`` without a value."""
    value = float_or_none(record.get(key))
    if value is None:
        return "n/a"
    interval = accuracy_interval(record, key, n)
    if interval is None or not n:
        return f"{pct(value)} (n unknown)"
    if f"{key}_ci95" not in record:
        return format_accuracy(value, n, digits=2)
    low, high = interval
    return f"{100 * value:.2f}% [{100 * low:.2f}, {100 * high:.2f}] n={n}"


def accuracy_cell(record: Mapping[str, Any], key: str, n: int | None) -> Cell:
    """:func:`accuracy_text` as a table cell that HTML keeps on one line."""
    return Cell(accuracy_text(record, key, n), "acc")
