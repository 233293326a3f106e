"""Issue 12 part 5: every accuracy in reports, figures and the `robustsnn run` table carries its
Wilson 95% interval and n, and the run table shows the masking checks' verdict per row.

Reference values: Wilson 95% for 5 of 10 is [0.2366, 0.7634]; for 0 of 10 it is
[0, z^2 / (n + z^2)] = [0, 0.2775]; for 9 of 10 it is [0.5958, 0.9821].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from analysis_fixtures import evaluation
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from robustsnn.analysis import figures
from robustsnn.analysis import report as report_module
from robustsnn.analysis.report import accuracy_text, make_run_figures, write_report
from robustsnn.pipeline import format_summary, write_summary

HALF = (0.2366, 0.7634)  # 5 of 10
NONE = (0.0, 0.2775)  # 0 of 10
NINE = (0.5958, 0.9821)  # 9 of 10
FOUR = (0.1682, 0.6873)  # 4 of 10


def _old_style(model: str, clean: float, robust: float, n: int = 10) -> dict[str, Any]:
    """An evaluation.json written before the *_ci95 keys existed."""
    return dict(evaluation(model, clean, robust), n=n)


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "evaluation-ann.json").write_text(json.dumps(_old_style("ann", 0.9, 0.5)))
    converted = _old_style("snn_converted", 0.5, 0.0)  # its black-box check fails
    (run / "evaluation-snn_converted.json").write_text(json.dumps(converted))
    new = _old_style("snn_finetuned", 0.9, 0.5)
    new["clean_accuracy_ci95"] = [0.11, 0.99]  # stored intervals win over recomputed ones
    new["ensembles"]["pgd-ensemble"]["robust_accuracy_ci95"] = [0.1, 0.9]
    new["interval"] = "Wilson score, 95%, two-sided"
    # `evaluate --escalate` adds the final ensemble and names it as the headline
    new["ensembles"]["pgd-ensemble + escalation"] = {
        "robust_accuracy": 0.4,
        "members": 4,
        "seconds": 9.0,
    }
    new["ensemble"] = "pgd-ensemble + escalation"
    new["escalation"] = {
        "steps": [
            {
                "level": 1,
                "preset": "reliable",
                "samples_attacked": 5,
                "broken": 1,
                "reasons": ["convergence failed"],
            }
        ],
        "stopped": "checks pass",
        "still_failing": [],
    }
    (run / "evaluation-snn_finetuned.json").write_text(json.dumps(new))
    return run


def test_accuracy_text_uses_stored_interval_else_wilson_from_n() -> None:
    assert accuracy_text({"a": 0.5}, "a", 10) == "50.00% [23.66, 76.34] n=10"
    assert accuracy_text({"a": 0.0}, "a", 10) == "0.00% [0.00, 27.75] n=10"
    assert accuracy_text({"a": 0.5, "a_ci95": [0.1, 0.9]}, "a", 10) == "50.00% [10.00, 90.00] n=10"
    assert accuracy_text({"a": 0.5}, "a", None) == "50.00% (n unknown)"
    assert accuracy_text({}, "a", 10) == "n/a"


def test_report_prints_every_accuracy_with_interval_and_n(tmp_path: Path) -> None:
    run = _run(tmp_path)
    md = write_report([run])[0].read_text(encoding="utf-8")
    # old file: computed from accuracy and n
    assert "| clean accuracy | 90.00% [59.58, 98.21] n=10 |" in md
    assert "| pgd-ensemble | 50.00% [23.66, 76.34] n=10 | 2 | 2.75 | **checks PASS (2)** |" in md
    # the failing check is named on the row of the converted SNN's number
    assert (
        "| pgd-ensemble | 0.00% [0.00, 27.75] n=10 | 2 | 2.75 | **checks FAIL: black_box_weaker** |"
        in md
    )
    # new file: its stored intervals and its interval method
    assert "| clean accuracy | 90.00% [11.00, 99.00] n=10 |" in md
    assert "50.00% [10.00, 90.00] n=10" in md
    assert "| intervals | Wilson score, 95%, two-sided |" in md
    assert "Escalation: 1 step(s); stopped: checks pass; checks still failing: none." in md
    assert "| 1 | reliable | 5 | 1 | convergence failed |" in md
    # overview row carries them too
    assert "| snn_converted | toy | 8/255 (0.031373) | 8 | 10 | 50.00% [23.66, 76.34] n=10 |" in md


def test_error_bars_are_the_wilson_bounds() -> None:
    fig = figures.baselines_figure(
        {"m": {"clean": 0.5, "robust": 0.0}}, intervals={"m": {"clean": HALF, "robust": NONE}}
    )
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    ax = fig.axes[0]
    for container, (value, (low, high)) in zip(bars, [(0.5, HALF), (0.0, NONE)], strict=True):
        assert container.patches[0].get_height() == pytest.approx(100 * value)
        segments = container.errorbar.lines[2][0].get_segments()
        ys = sorted(float(y) for y in segments[0][:, 1])
        assert ys == pytest.approx([100 * low, 100 * high])
    assert "95% Wilson" in ax.get_title()


def test_curve_band_is_the_wilson_band() -> None:
    band = figures.wilson_band([(0.0, 0.9), (8 / 255, 0.5)], 10)
    assert [b[0] for b in band] == pytest.approx([0.0, 8 / 255])
    assert band[0][1:] == pytest.approx(NINE, abs=1e-4)
    assert band[1][1:] == pytest.approx(HALF, abs=1e-4)
    fig = Figure()
    ax = fig.add_subplot()
    figures._line_plot(ax, {"m": [(0.0, 0.9), (8 / 255, 0.5)]}, x_scale=255.0, bands={"m": band})
    vertices = ax.collections[0].get_paths()[0].vertices
    for x, low, high in ((0.0, *NINE), (8.0, *HALF)):
        at_x = sorted(float(y) for vx, y in vertices if abs(vx - x) < 1e-9)
        assert at_x[0] == pytest.approx(100 * low, abs=0.01)
        assert at_x[-1] == pytest.approx(100 * high, abs=0.01)


def test_run_figures_get_intervals_and_n(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def capture(results: Any, out_path: Path, **kwargs: Any) -> Path:
        seen.update(results=results, **kwargs)
        return Path(out_path)

    monkeypatch.setattr(report_module.fig, "plot_baselines", capture)
    make_run_figures(_run(tmp_path))
    intervals = seen["intervals"]
    assert intervals["ann\n(n=10)"]["clean"] == pytest.approx(NINE, abs=1e-4)
    assert intervals["snn_converted\n(n=10)"]["robust: pgd-ensemble"] == pytest.approx(
        NONE, abs=1e-4
    )
    assert intervals["snn_finetuned\n(n=10)"]["robust: pgd-ensemble"] == (0.1, 0.9)


def test_run_table_has_intervals_and_the_verdict_per_row(tmp_path: Path) -> None:
    run = _run(tmp_path)
    summary = write_summary(run)
    stored = json.loads((run / "summary.json").read_text())
    assert stored["snn_converted"]["robust_accuracy_ci95"] == pytest.approx(NONE, abs=1e-4)
    assert stored["snn_converted"]["diagnostics"] == "checks FAIL: black_box_weaker"
    # the headline after escalation is the escalated ensemble, not the first one
    assert stored["snn_finetuned"]["ensemble"] == "pgd-ensemble + escalation"
    assert stored["snn_finetuned"]["robust_accuracy"] == 0.4
    assert stored["snn_finetuned"]["robust_accuracy_ci95"] == pytest.approx(FOUR, abs=1e-4)
    lines = format_summary(summary).splitlines()
    converted = next(line for line in lines if line.startswith("snn_converted"))
    assert "50.0% [23.7, 76.3] n=10" in converted and "0.0% [0.0, 27.8] n=10" in converted
    assert converted.endswith("checks FAIL: black_box_weaker")
    ann = next(line for line in lines if line.startswith("ann "))
    assert ann.endswith("checks PASS (2)") and "90.0% [59.6, 98.2] n=10" in ann
    finetuned = next(line for line in lines if line.startswith("snn_finetuned"))
    assert finetuned.endswith("checks PASS (2); escalated 1x")
    assert "40.0% [16.8, 68.7] n=10" in finetuned
    assert "95% Wilson interval" in lines[-1] and "8/255" in lines[-1]


def test_training_metrics_line_carries_interval_and_n() -> None:
    from robustsnn.cli import _metrics

    line = _metrics({"eval_n": 10, "clean_accuracy": 0.5, "pgd20_accuracy": 0.0})
    assert line == "clean 50.0% [23.7, 76.3] n=10, PGD-20 0.0% [0.0, 27.8] n=10"
    assert _metrics({"clean_accuracy": 0.5, "pgd20_accuracy": None}) == (
        "clean 0.5, PGD-20 not measured"
    )
