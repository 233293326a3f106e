"""``robustsnn compare DIR...``: one table of evaluated models under their protocols, and a figure.

Each argument is a run folder (``robustsnn run``: one row per evaluated model), an evaluation
folder (``robustsnn evaluate --out DIR``) or an ``evaluation.json`` file. A row shows what the
evaluation measured: the dataset, eps, T, n, clean and robust accuracy with their 95% intervals
(the headline robust accuracy: the evaluation's final ensemble, escalation included), the
ensemble and the verdict of its gradient-masking checks, how randomness was handled (EOT draws
K and prediction draws M for a random model), spikes per image and estimated energy where a
``stats-<model>.json`` is beside it, and the evaluation's wall-clock seconds. Rows measured under
different ensembles or eps are not comparable, and the table says so.

The files are read with :func:`robustsnn.analysis.report.read_run`; the table is rendered with
the report's markdown and HTML writers, and the figure (robust vs clean accuracy, 95% intervals
as error bars) is drawn on the Agg canvas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustsnn.analysis import figures as fig
from robustsnn.analysis.report import (
    Cell,
    Heading,
    Image,
    Paragraph,
    Table,
    _clean_and_adversarial,
    _diagnostics_cell,
    _energy,
    _eps_text,
    _num,
    _robust_records,
    accuracy_interval,
    accuracy_text,
    read_run,
    render_html,
    render_markdown,
    sample_count,
)
from robustsnn.errors import UserError

FIGURE_NAME = "compare-robust-vs-clean.png"


@dataclass
class CompareRow:
    """One evaluated model: its label, the evaluation dict, its source file, its stats."""

    label: str
    evaluation: dict[str, Any]
    source: str
    stats: dict[str, Any] | None = None


def _read_evaluation_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable evaluation file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not an evaluation.json (expected a JSON object)")
    return data


def collect_rows(paths: Sequence[str | Path]) -> list[CompareRow]:
    """The rows of every run folder, evaluation folder or evaluation.json in ``paths``."""
    rows: list[CompareRow] = []
    for item in paths:
        path = Path(item)
        if path.is_file():
            rows.append(
                CompareRow(path.parent.name or str(path), _read_evaluation_file(path), str(path))
            )
            continue
        if not path.is_dir():
            raise UserError(f"{path} is neither a folder nor an evaluation.json file")
        run = read_run(path)
        # an evaluation folder's resume state (evaluation-state*.json) is not an evaluation
        run.evaluations = [e for e in run.evaluations if not e[0].startswith("evaluation-state")]
        if not run.evaluations:
            raise UserError(
                f"no evaluation in {path}: pass a folder written by `robustsnn run` or "
                "`robustsnn evaluate` (with an evaluation.json or evaluation-<model>.json)"
            )
        plain = run.summary is None and run.config_text is None and len(run.evaluations) == 1
        stats = {model: data for _, model, data in run.stats}
        for file, model, evaluation in run.evaluations:
            label = run.name if plain else f"{run.name}/{model}"
            rows.append(CompareRow(label, evaluation, str(path / file), stats.get(model)))
    if not rows:
        raise UserError("compare needs at least one evaluated model")
    return rows


def randomness_text(evaluation: Mapping[str, Any]) -> Cell:
    """How the evaluation treated randomness: deterministic, EOT K / majority M, or unhandled."""
    info = evaluation.get("randomness")
    if not isinstance(info, Mapping):
        return Cell("not recorded")
    if info.get("handled"):
        table = info.get("eot_draws_by_estimator")
        ks = (
            sorted({int(v) for v in table.values()}) if isinstance(table, Mapping) and table else []
        )
        k = f"{ks[0]}-{ks[-1]} by estimator" if len(ks) > 1 else str(info.get("eot_draws"))
        return Cell(f"random: EOT K={k}, majority of M={info.get('prediction_draws')}")
    if info.get("detected"):
        return Cell("random, single draws", "fail")
    return Cell("deterministic")


def _seconds(evaluation: Mapping[str, Any]) -> float | None:
    seconds = evaluation.get("seconds")
    total = 0.0
    if isinstance(seconds, Mapping):
        total += sum(float(v) for v in seconds.values() if isinstance(v, (int, float)))
    escalation = evaluation.get("escalation")
    if isinstance(escalation, Mapping) and isinstance(escalation.get("seconds"), (int, float)):
        total += sum(
            float(step.get("seconds", 0.0))
            for step in escalation.get("steps", [])
            if isinstance(step, Mapping)
        )
    return total if total > 0 else None


def headline(evaluation: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """The evaluation's headline ensemble name and the record holding its robust accuracy:
    the top-level ``robust_accuracy`` (escalation included), else the first ensemble (older
    files), else the first attack; ``(None, {})`` for a clean-only evaluation."""
    if isinstance(evaluation.get("robust_accuracy"), (int, float)):
        return evaluation.get("ensemble"), evaluation
    records = _robust_records(evaluation)
    if records:
        name = next(iter(records))
        return name, records[name]
    return None, {}


def _protocol(evaluation: Mapping[str, Any]) -> tuple[str, str]:
    return str(headline(evaluation)[0]), _eps_text(evaluation.get("eps"))


def read_claims(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """A claims file: ``{label: {"robust_accuracy": 0.43, "source": "paper, table, attack"}}``
    (the numbers papers report for the compared models, shown beside ours)."""
    if path is None:
        return {}
    data = _read_evaluation_file(Path(path))
    claims: dict[str, dict[str, Any]] = {}
    for label, claim in data.items():
        value = claim.get("robust_accuracy") if isinstance(claim, Mapping) else None
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise UserError(
                f"{path}: claim {label!r} needs a robust_accuracy in [0, 1] (and a source), "
                f"got {claim!r}"
            )
        claims[str(label)] = {
            "robust_accuracy": float(value),
            "source": str(claim.get("source", "")),
        }
    return claims


def _claim_text(claim: Mapping[str, Any] | None) -> str:
    if not claim:
        return ""
    source = f" ({claim['source']})" if claim.get("source") else ""
    return f"{100 * float(claim['robust_accuracy']):.2f}%{source}"


def compare_table(
    rows: Sequence[CompareRow], claims: Mapping[str, Mapping[str, Any]] | None = None
) -> Table:
    """The comparison table (one row per evaluated model); with ``claims``, a column of the
    robust accuracy a paper reports for the row's model (matched by label)."""
    headers = ["model", "kind", "dataset", "eps", "T", "n", "clean", "robust", "ensemble",
               "checks", "randomness", "spikes/image", "SNN energy/image", "eval seconds (wall)",
               "source"]  # fmt: skip
    if claims:
        headers.insert(8, "paper's robust (claim)")
    table_rows: list[list[Cell | str]] = []
    for row in rows:
        ev = row.evaluation
        n = sample_count(ev)
        clean_stats = _clean_and_adversarial(row.stats)[0] if row.stats else None
        spikes = (clean_stats or {}).get("totals", {}).get("spikes_per_image")
        seconds = _seconds(ev)
        table_rows.append(
            [
                row.label,
                str(ev.get("kind", "n/a")),
                str(ev.get("dataset", "n/a")),
                _eps_text(ev.get("eps")),
                _num(ev.get("T")),
                _num(ev.get("n")),
                Cell(accuracy_text(ev, "clean_accuracy", n), "acc"),
                Cell(accuracy_text(headline(ev)[1], "robust_accuracy", n), "acc"),
                str(headline(ev)[0] or "none (clean only)"),
                _diagnostics_cell(ev),
                randomness_text(ev),
                _num(spikes),
                _energy(clean_stats, "snn_uj_per_image"),
                f"{seconds:.1f}" if seconds is not None else "n/a",
                row.source,
            ]
        )
        if claims:
            table_rows[-1].insert(8, _claim_text(claims.get(row.label)))
    return Table(headers, table_rows, "the evaluation files named per row")


def compare_figure(rows: Sequence[CompareRow], out_path: str | Path) -> Path | None:
    """Robust vs clean accuracy, one point per model with 95% intervals as error bars; None when
    no row has a robust accuracy."""
    points = []
    for row in rows:
        ev = row.evaluation
        n = sample_count(ev)
        record = headline(ev)[1]
        clean = ev.get("clean_accuracy")
        robust = record.get("robust_accuracy")
        if not isinstance(clean, (int, float)) or not isinstance(robust, (int, float)):
            continue
        clean_ci = accuracy_interval(ev, "clean_accuracy", n) or (clean, clean)
        robust_ci = accuracy_interval(record, "robust_accuracy", n) or (robust, robust)
        points.append((row.label, float(clean), clean_ci, float(robust), robust_ci))
    if not points:
        return None
    figure = fig._figure(7.0, 5.0)
    ax = figure.add_subplot(1, 1, 1)
    for i, (label, clean, clean_ci, robust, robust_ci) in enumerate(points):
        ax.errorbar(
            [100 * clean],
            [100 * robust],
            xerr=[[100 * (clean - clean_ci[0])], [100 * (clean_ci[1] - clean)]],
            yerr=[[100 * (robust - robust_ci[0])], [100 * (robust_ci[1] - robust)]],
            fmt=fig._MARKERS[i % len(fig._MARKERS)],
            capsize=3,
            label=label,
        )
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.plot([0, 100], [0, 100], color="0.8", linewidth=0.8, zorder=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"robust vs clean accuracy ({fig.ERROR_BAR_NOTE})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig._save(figure, out_path)


def write_comparison(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    title: str = "robustsnn comparison",
    claims: str | Path | None = None,
) -> tuple[Path, Path, Path | None]:
    """Write ``compare.md``, a self-contained ``compare.html`` and the figure into ``out_dir``;
    ``claims``: a claims file (:func:`read_claims`) for the papers' numbers."""
    claimed = read_claims(claims)
    rows = collect_rows(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure = compare_figure(rows, out / FIGURE_NAME)
    protocols = {_protocol(r.evaluation) for r in rows}
    note = (
        "Clean and robust accuracy with their 95% interval [low, high] and n; robust is each "
        "evaluation's headline (its final ensemble, escalation included; per-sample worst case). "
        "checks: the gradient-masking checks' verdict. randomness: how a random model was "
        "evaluated (EOT over K draws per gradient, majority of M draws per prediction). "
        "Energy is an estimate (operation counts x energy per operation)."
    )
    blocks: list[Any] = [Heading(1, title), Paragraph(note)]
    if len(protocols) > 1:
        listed = "; ".join(f"{e} at eps {p}" for e, p in sorted(protocols))
        blocks.append(
            Paragraph(
                f"The rows were measured under different protocols ({listed}): compare robust "
                "accuracies only between rows of one protocol.",
                "fail",
            )
        )
    unmatched = sorted(set(claimed) - {r.label for r in rows})
    if unmatched:
        raise UserError(
            f"claims for {', '.join(unmatched)} match no compared model; labels are "
            f"{', '.join(r.label for r in rows)}"
        )
    blocks.append(compare_table(rows, claimed))
    if figure is not None:
        blocks.append(Image(figure, "robust vs clean accuracy, 95% intervals as error bars"))
    md_path, html_path = out / "compare.md", out / "compare.html"
    md_path.write_text(render_markdown(blocks, out), encoding="utf-8")
    html_path.write_text(render_html(blocks, title), encoding="utf-8")
    return md_path, html_path, figure
