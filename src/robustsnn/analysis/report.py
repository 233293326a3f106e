"""Run reports: ``report.md`` and a self-contained ``report.html`` from run folders.

:func:`write_report` is the entry (``robustsnn report``, ``robustsnn run``): it reads the run
folders, opens the document with the runs' verdicts, adds the overview table and each run's
sections, and writes both renderings. Every number in the report is printed next to the name of
the file it comes from. The work is done by one module per job, whose names this module keeps
importable for the code that imports them from here:

- :mod:`robustsnn.analysis.runs`: reading run folders and the numbers in their files;
- :mod:`robustsnn.analysis.formatting`: how those numbers read (accuracy with interval and n);
- :mod:`robustsnn.analysis.run_figures`: the figures a run's files support;
- :mod:`robustsnn.analysis.document`: the document model (headings, paragraphs, tables, ...);
- :mod:`robustsnn.analysis.sections`: the report's sections, as document blocks;
- :mod:`robustsnn.analysis.render`: markdown and self-contained HTML of a document.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import robustsnn.analysis.figures as fig  # noqa: F401  (tests patch report.fig's plot functions)
from robustsnn.analysis.document import Block, Cell, Code, Heading, Image, Paragraph, Table
from robustsnn.analysis.formatting import accuracy_text, energy_text, eps_text, num
from robustsnn.analysis.render import CSS, render_html, render_markdown
from robustsnn.analysis.run_figures import make_run_figures
from robustsnn.analysis.runs import (
    RunFiles,
    accuracy_interval,
    clean_and_adversarial,
    interval_method,
    read_run,
    robust_records,
    sample_count,
)
from robustsnn.analysis.sections import (
    ENERGY_NOTE,
    diagnostics_cell,
    overview_blocks,
    run_blocks,
)
from robustsnn.analysis.verdict import run_verdict
from robustsnn.errors import UserError

__all__ = [
    "CSS",
    "ENERGY_NOTE",
    "Block",
    "Cell",
    "Code",
    "Heading",
    "Image",
    "Paragraph",
    "RunFiles",
    "Table",
    "accuracy_interval",
    "accuracy_text",
    "interval_method",
    "make_run_figures",
    "read_run",
    "render_html",
    "render_markdown",
    "sample_count",
    "write_report",
]

# The names robustsnn.analysis.compare imports from here, from before they had a module of
# their own (and a public name there).
_clean_and_adversarial = clean_and_adversarial
_diagnostics_cell = diagnostics_cell
_energy = energy_text
_eps_text = eps_text
_num = num
_robust_records = robust_records


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
    blocks += overview_blocks(runs, several)
    for run in runs:
        blocks += run_blocks(run)
    md_path = out / "report.md"
    html_path = out / "report.html"
    _write_text(md_path, render_markdown(blocks, out))
    _write_text(html_path, render_html(blocks, title))
    return md_path, html_path


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
