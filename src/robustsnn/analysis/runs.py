"""Reading run folders for reports: which files a run holds, and the numbers inside them.

A run folder (docs/INTERFACES.md) may hold ``config.yaml``, ``summary.json``,
``evaluation-<model>.json`` (and ``evaluation.json``), ``stats-<model>.json``,
``conversion_curve.json``, ``latency/<model>/latency.json`` and ``figures/*.png``; every one of
them is optional, and an unreadable file is noted, not fatal. Besides the folder reader, this
module holds the lookups every consumer of those files shares (the report's sections and
figures, ``robustsnn compare``, the pipeline): the n an accuracy was measured on, its 95%
interval, and the robust accuracy per ensemble, so that all of them read a file the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustsnn.errors import UserError
from robustsnn.evaluation.intervals import wilson_interval


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


def is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def float_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a number (:func:`is_number`), else None."""
    return float(value) if is_number(value) else None


def clean_and_adversarial(
    stats: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(clean, adversarial or None)`` from an adversarial_statistics or spike_statistics dict."""
    if isinstance(stats.get("clean"), Mapping):
        adv = stats.get("adversarial")
        return dict(stats["clean"]), (dict(adv) if isinstance(adv, Mapping) else None)
    return dict(stats), None


def sample_count(record: Mapping[str, Any]) -> int | None:
    """The n an evaluation (or summary row) was measured on; None when it does not say."""
    n = float_or_none(record.get("n"))
    return int(n) if n is not None and n >= 1 else None


def accuracy_interval(
    record: Mapping[str, Any], key: str, n: int | None
) -> tuple[float, float] | None:
    """95% interval of ``record[key]``: the stored ``<key>_ci95`` when the file has one (new
    evaluation.json), else Wilson from round(accuracy x n) (older files); None without n."""
    stored = record.get(f"{key}_ci95")
    if isinstance(stored, (list, tuple)) and len(stored) == 2 and all(map(is_number, stored)):
        return float(stored[0]), float(stored[1])
    value = float_or_none(record.get(key))
    if value is None or not n:
        return None
    return wilson_interval(min(n, max(0, round(value * n))), n)


def interval_method(evaluation: Mapping[str, Any]) -> str:
    """How the intervals of an evaluation were computed (its ``interval`` text, if any)."""
    stated = evaluation.get("interval")
    if isinstance(stated, str) and stated:
        return stated
    return "Wilson score 95% interval, computed by the report from accuracy and n"


def robust_records(evaluation: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Rows with a robust accuracy per ensemble (or per attack when there are no ensembles)."""
    ensembles = evaluation.get("ensembles") or {}
    source = ensembles if ensembles else (evaluation.get("attacks") or {})
    return {
        str(name): rec
        for name, rec in source.items()
        if isinstance(rec, Mapping) and is_number(rec.get("robust_accuracy"))
    }


def robust_values(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """Robust accuracy per ensemble (or per attack when the evaluation has no ensembles)."""
    return {k: float(r["robust_accuracy"]) for k, r in robust_records(evaluation).items()}


def robust_intervals(evaluation: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """95% interval of each value of :func:`robust_values` (none without n)."""
    n = sample_count(evaluation)
    out = {}
    for name, rec in robust_records(evaluation).items():
        interval = accuracy_interval(rec, "robust_accuracy", n)
        if interval is not None:
            out[name] = interval
    return out
