"""The sections of a run report, as document blocks: what each file of a run says, in tables.

:func:`overview_blocks` gives the one table over all runs (one row per run and model);
:func:`run_blocks` gives one run's sections: its configuration, ``summary.json``, each
evaluation (ensembles, their members, escalation, gradient-masking checks), each spike
statistics file (spikes per layer, estimated energy), the saved adversarial examples
(:mod:`robustsnn.analysis.breaks`) and the figures. Every table names the file its numbers
come from. The blocks are rendered by :mod:`robustsnn.analysis.render`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robustsnn.analysis.breaks import saved_breaks_blocks
from robustsnn.analysis.document import Block, Cell, Code, Heading, Image, Paragraph, Table
from robustsnn.analysis.formatting import accuracy_cell, energy_text, eps_text, num, seconds
from robustsnn.analysis.run_figures import figure_about
from robustsnn.analysis.runs import (
    RunFiles,
    clean_and_adversarial,
    float_or_none,
    interval_method,
    is_number,
    robust_records,
    robust_values,
    sample_count,
)
from robustsnn.errors import UserError
from robustsnn.evaluation.intervals import format_ratio
from robustsnn.evaluation.table import diagnostics_verdict
from robustsnn.evaluation.ties import tie_suffix

ENERGY_NOTE = (
    "Energy values are estimates, not measurements: operation counts x energy per operation "
    "(Horowitz, ISSCC 2014, 45 nm CMOS, 32-bit float: 4.6 pJ per multiply-accumulate, 0.9 pJ per "
    "accumulate). Spike-driven synaptic operations count as accumulates; the first layer, which "
    "receives the analog image under direct coding, counts as multiply-accumulates."
)


def overview_blocks(runs: Sequence[RunFiles], several: bool) -> list[Block]:
    """One row per run x model: clean and robust accuracy, spikes, estimated energy."""
    ensemble_names: list[str] = []
    rows_data: list[tuple[Any, ...]] = []
    for run in runs:
        stats_by_model = {model: (file, s) for file, model, s in run.stats}
        models_done = set()
        for file, model, evaluation in run.evaluations:
            robust = robust_values(evaluation)
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
        clean_stats = clean_and_adversarial(stats)[0] if stats else None
        spikes = (clean_stats or {}).get("totals", {}).get("spikes_per_image")
        row: list[Cell | str] = [run.name] if several else []
        row += [
            model,
            str(evaluation.get("dataset", "n/a")),
            eps_text(evaluation.get("eps")),
            num(evaluation.get("T")),
            num(evaluation.get("n")),
            accuracy_cell(evaluation, "clean_accuracy", sample_count(evaluation)),
        ]
        records = robust_records(evaluation)
        row += [
            accuracy_cell(records[n], "robust_accuracy", sample_count(evaluation))
            if n in records
            else "n/a"
            for n in ensemble_names
        ]
        row += [
            diagnostics_cell(evaluation) if file else "n/a",
            num(spikes),
            energy_text(clean_stats, "snn_uj_per_image"),
            energy_text(clean_stats, "ann_uj_per_image"),
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


def diagnostics_cell(evaluation: Mapping[str, Any]) -> Cell:
    """Overview verdict of an evaluation's gradient-masking checks: passed, failed or not run;
    plus how many robust samples stand only by argmax's tie rule, where any do
    (:mod:`robustsnn.evaluation.ties`)."""
    diagnostics = evaluation.get("diagnostics") or {}
    checks = [v for v in diagnostics.values() if isinstance(v, Mapping)]
    ran = [c for c in checks if c.get("skipped") is not True]
    tail = tie_suffix(evaluation)
    if not ran:
        return Cell("not run" + tail)
    failed = sum(1 for c in ran if c.get("passed") is False)
    if failed:
        return Cell(f"FAIL {failed}/{len(ran)}{tail}", "fail")
    return Cell(f"PASS {len(ran)}/{len(ran)}{tail}", "pass")


def _summary_blocks(run: RunFiles) -> list[Block]:
    """``summary.json`` as a table: every numeric column, with the paired ratio to the ANN."""
    if not run.summary:
        return []
    columns = ["clean_accuracy", "robust_accuracy", "spikes_per_image"]
    for rec in run.summary.values():
        if isinstance(rec, Mapping):
            columns += [k for k, v in rec.items() if is_number(v) and k not in columns]
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
            row.append(accuracy_cell(rec, c, n) if c.endswith("accuracy") else num(value))
        if ratios:
            ratio = rec.get("robust_ratio_to_ann")
            missing = rec.get("robust_ratio_to_ann_missing")
            row.append("1 (reference)" if model == "ann" else missing or format_ratio(ratio))
        rows.append(row)
    headers = ["model", *columns] + (["robust vs ANN (paired 95% CI)"] if ratios else [])
    return [Heading(3, "Summary"), Table(headers, rows, "summary.json")]


def _evaluation_blocks(file: str, model: str, ev: Mapping[str, Any]) -> list[Block]:
    """One evaluation file: its facts, ensembles (with their members), attack members,
    escalation steps and gradient-masking checks."""
    blocks: list[Block] = [Heading(3, f"Evaluation: {model}")]
    n = sample_count(ev)
    facts: list[list[Cell | str]] = [
        ["model", str(ev.get("model", "n/a"))],
        ["dataset / split", f"{ev.get('dataset', 'n/a')} / {ev.get('split', 'n/a')}"],
        ["images (n)", num(ev.get("n"))],
        ["eps (L-inf, pixels)", eps_text(ev.get("eps"))],
        ["time steps T", num(ev.get("T")) if ev.get("T") is not None else "n/a (ANN)"],
        ["clean accuracy", accuracy_cell(ev, "clean_accuracy", n)],
        ["intervals", interval_method(ev)],
    ]
    blocks.append(Table(["field", "value"], facts, file))
    verdict = diagnostics_verdict(ev.get("diagnostics"))
    ensembles = ev.get("ensembles") or {}
    if ensembles:
        rows: list[list[Cell | str]] = [
            [
                str(name),
                accuracy_cell(rec, "robust_accuracy", n),
                num(rec.get("members")),
                seconds(rec.get("seconds")),
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
                accuracy_cell(rec, "robust_accuracy", n),
                seconds(rec.get("seconds")),
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
            num(step.get("level")),
            str(step.get("preset", "?")),
            num(step.get("samples_attacked")),
            num(step.get("broken")),
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


def _verdict(passed: Any, skipped: Any = False) -> Cell:
    """A check's verdict as a cell: PASS (green), FAIL (red), SKIPPED or "?"."""
    if skipped is True:
        return Cell("SKIPPED", None)
    if passed is True:
        return Cell("PASS", "pass")
    if passed is False:
        return Cell("FAIL", "fail")
    return Cell("?", None)


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
    rows: list[list[Cell | str]] = [
        [m, num(broken.get(m)), accuracy_cell(after, m, n)] for m in names
    ]
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
    ("neurons", "spiking neurons", num),
    ("spikes_per_image", "spikes per image", num),
    ("spikes_per_image_std", "spikes per image (std over images)", num),
    (
        "firing_rate",
        "firing rate (spikes / neuron / step)",
        lambda v: f"{v:.4g}" if is_number(v) else "n/a",
    ),
    ("synaptic_ops_per_image", "synaptic operations (AC) per image", num),
    ("analog_macs_per_image", "first-layer MACs per image (analog input)", num),
    ("ann_macs_per_image", "ANN MACs per image (same architecture)", num),
]


def _stats_blocks(file: str, model: str, stats: Mapping[str, Any]) -> list[Block]:
    """One stats file: spikes and firing rate per layer, totals and the energy estimate, clean
    and (when the file has them) adversarial side by side."""
    clean, adv = clean_and_adversarial(stats)
    parts = [("clean", clean)] + ([("adversarial", adv)] if adv else [])
    blocks: list[Block] = [Heading(3, f"Spikes and estimated energy: {model}")]
    attack = stats.get("attack")
    if isinstance(attack, Mapping):
        blocks.append(
            Paragraph(
                f"Adversarial inputs: {attack.get('name', '?')} at eps {eps_text(attack.get('eps'))}"
                f" through estimator {attack.get('estimator', '?')}; "
                f"{num(clean.get('n_images'))} images, T = {num(clean.get('T'))}."
            )
        )
    else:
        blocks.append(
            Paragraph(f"{num(clean.get('n_images'))} clean images, T = {num(clean.get('T'))}.")
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
            row: list[Cell | str] = [name, num(first.get("neurons"))]
            for _, part in parts:
                rec = (part.get("layers") or {}).get(name, {})
                rate = rec.get("firing_rate")
                row += [
                    num(rec.get("spikes_per_image")),
                    f"{rate:.4g}" if is_number(rate) else "n/a",
                ]
            rows.append(row)
        blocks.append(Table(headers, rows, file))
    rows = []
    for key, label, fmt in _TOTALS:
        if any(key in (p.get("totals") or {}) for _, p in parts):
            rows.append([label, *[fmt((p.get("totals") or {}).get(key)) for _, p in parts]])
    if any(is_number(p.get("accuracy")) for _, p in parts):
        rows.append(
            [
                "accuracy on these images [95% CI] n",
                *[accuracy_cell(p, "accuracy", _images(p)) for _, p in parts],
            ]
        )
    for key, label in (
        ("snn_uj_per_image", "SNN energy per image (estimate)"),
        ("ann_uj_per_image", "ANN energy per image (estimate)"),
    ):
        rows.append([label, *[energy_text(p, key) for _, p in parts]])
    ratios = [(p.get("energy") or {}).get("ann_over_snn") for _, p in parts]
    rows.append(
        ["ANN / SNN energy (estimate)", *[f"{r:.4g}x" if is_number(r) else "n/a" for r in ratios]]
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
    count = float_or_none(part.get("n_images"))
    return int(count) if count is not None and count >= 1 else None


def run_blocks(run: RunFiles) -> list[Block]:
    """One run's sections: folder, unreadable files, configuration, summary, evaluations, spike
    statistics, saved adversarial examples and figures (each one says so when it is missing)."""
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
            about = figure_about(png.stem)
            blocks.append(Image(png, f"{about}: {caption}" if about else caption))
    return blocks


def _saved_breaks(run: RunFiles) -> list[Block]:
    """The saved-adversarial-examples section (:mod:`robustsnn.analysis.breaks`), or one line
    saying why it could not be drawn."""
    try:
        return saved_breaks_blocks(run.path)
    except UserError as exc:
        return [Paragraph(f"Saved adversarial examples not shown: {exc}", "fail")]
