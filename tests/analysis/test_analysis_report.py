"""write_report and make_run_figures on a fake run folder."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from analysis_fixtures import write_run

from robustsnn.analysis import figures
from robustsnn.analysis.report import make_run_figures, write_report
from robustsnn.errors import UserError

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}


class BalanceChecker(HTMLParser):
    """Fails on a closing tag that does not match the innermost open one; collects src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def _png(tmp_path: Path) -> bytes:
    path = figures.plot_baselines({"m": {"clean": 0.5}}, tmp_path / "seed.png")
    return path.read_bytes()


def _parse(text: str) -> BalanceChecker:
    checker = BalanceChecker()
    checker.feed(text)
    checker.close()
    return checker


def test_single_run_report(tmp_path: Path) -> None:
    run = write_run(tmp_path, png=_png(tmp_path))
    md_path, html_path = write_report([run])
    assert md_path == run / "report.md" and html_path == run / "report.html"
    md = md_path.read_text(encoding="utf-8")
    for number in ("91.25%", "41.25%", "12.25%", "63.75%", "42.75%", "2.75", "1,234.5"):
        assert number in md, number
    for number in ("4,321.5", "98,765", "0.0163 µJ", "27.87x", "787.5"):  # stats-*.json
        assert number in md, number
    assert "source: evaluation-snn_finetuned.json" in md
    assert "source: stats-snn_finetuned.json" in md and "source: summary.json" in md
    assert "source: config.yaml" in md and "beta: 2.0" in md
    assert "**FAIL**" in md and "**PASS**" in md
    assert "estimate" in md and "Horowitz" in md
    assert "figures/extra.png" in md

    text = html_path.read_text(encoding="utf-8")
    checker = _parse(text)
    assert checker.doctype and not checker.errors and not checker.stack
    assert checker.urls and all(u.startswith("data:image/png;base64,") for u in checker.urls)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", text)
    assert "http://" not in text and "https://" not in text
    assert 'class="fail"' in text and 'class="pass"' in text
    assert "91.25%" in text and "source: evaluation-ann.json" in text


def test_several_runs_and_missing_files(tmp_path: Path) -> None:
    first = write_run(tmp_path, "alpha")
    second = tmp_path / "beta"
    second.mkdir()
    (second / "evaluation-ann.json").write_text('{"model": "ann", "clean_accuracy": 0.5}')
    (second / "stats-snn.json").write_text("{not json")
    out = tmp_path / "out"
    md_path, html_path = write_report([first, second], out)
    md = md_path.read_text(encoding="utf-8")
    assert md_path.parent == out
    assert "Comparison" in md and "| alpha | ann |" in md and "| beta | ann |" in md
    assert "No config.yaml" in md and "stats-snn.json: unreadable" in md
    checker = _parse(html_path.read_text(encoding="utf-8"))
    assert not checker.errors and not checker.stack


def test_make_run_figures(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    made = make_run_figures(run)
    names = {p.name for p in made}
    assert {
        "spikes_per_layer.png",
        "spike_raster-snn_finetuned.png",
        "accuracy_by_model.png",
        "robust_accuracy_vs_eps.png",
        "accuracy_vs_T.png",
    } <= names
    assert all(p.parent == run / "figures" and p.stat().st_size > 1000 for p in made)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_run_figures(empty) == []
    with pytest.raises(UserError, match="no run found"):  # issue 17: not an empty report
        write_report([empty])


def test_square_curve_from_evaluation_extras(tmp_path: Path) -> None:
    import json

    run = tmp_path / "sq"
    run.mkdir()
    evaluation = {
        "model": "snn_finetuned",
        "eps": 8 / 255,
        "clean_accuracy": 0.8,
        "attacks": {"square": {"robust_accuracy": 0.4, "seconds": 3.0, "queries": [0, -1, 4, 9]}},
    }
    (run / "evaluation-snn_finetuned.json").write_text(json.dumps(evaluation))
    assert "square_queries.png" in {p.name for p in make_run_figures(run)}
