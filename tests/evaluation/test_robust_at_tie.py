"""Samples that stand only by argmax's tie rule are counted and reported (never silently
robust): a model whose attacks can push the runner-up class exactly up to the true class's
logit, and no further, keeps every sample by index order alone."""

import pytest
import torch
from torch import nn

from robustsnn.analysis.sections import diagnostics_cell
from robustsnn.evaluation import EvaluationConfig, evaluate
from robustsnn.evaluation.escalate import _came_closer
from robustsnn.evaluation.table import evaluation_lines
from robustsnn.evaluation.ties import robust_at_tie
from robustsnn.pipeline import _verdict


class CappedRunnerUp(nn.Module):
    """Logits [1, min(20 * mean(x), 1), 0, ...]: brightening the image raises class 1 up to an
    exact tie with class 0 and never above it; argmax then still says 0 (the lower index)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        first = torch.ones_like(m)[:, None]
        runner_up = torch.clamp(20 * m, max=1.0)[:, None]
        return torch.cat([first, runner_up, torch.zeros(x.shape[0], 8)], 1)


def _evaluate(eps: float) -> dict:
    x = torch.full((6, 1, 4, 4), 0.02)
    y = torch.zeros(6, dtype=torch.long)
    return evaluate(
        CappedRunnerUp(), x, y, EvaluationConfig(eps=eps, ensemble="pgd-fast", diagnostics="none")
    )


def test_samples_pushed_to_an_exact_tie_are_reported() -> None:
    result = _evaluate(0.1)  # mean 0.12 within reach: runner-up capped at 1 = a tie
    assert result["robust_accuracy"] == 1.0  # argmax keeps class 0 ...
    assert all(r["margin"] == 0.0 for r in result["records"])
    ties = result["ties"]  # ... and the result says on what
    assert ties["count"] == 6
    assert ties["indices"] == [r["index"] for r in result["records"]]
    assert ties["robust_accuracy_ties_broken"] == 0.0
    assert ties["robust_accuracy_ties_broken_ci95"][0] == 0.0
    assert any("argmax's tie rule" in line for line in evaluation_lines(result))
    assert _verdict(result).endswith("6 robust at a tie")
    assert diagnostics_cell(result).text.endswith("; 6 robust at a tie")  # report, compare


def test_no_tie_no_entry() -> None:
    result = _evaluate(0.01)  # mean 0.03 at most: runner-up 0.6, margin 0.4
    assert result["robust_accuracy"] == 1.0
    assert "ties" not in result
    assert not any("tie rule" in line for line in evaluation_lines(result))
    assert "tie" not in _verdict(result)
    assert "tie" not in diagnostics_cell(result).text


@pytest.mark.parametrize(
    ("records", "count"),
    [
        ([{"index": 0, "robust": True, "clean_correct": True, "margin": 0.0}], 1),
        ([{"index": 0, "robust": True, "clean_correct": True, "margin": 1e-6}], 0),
        ([{"index": 0, "robust": False, "clean_correct": True, "margin": -0.5}], 0),
        ([{"index": 0, "robust": True, "clean_correct": True}], 0),  # no attack ran
        # a random model's margins are single draws: its verdicts are majorities
        ([{"index": 0, "robust": True, "clean_correct": True, "margin": 0.0, "draws": 15}], 0),
    ],
)
def test_what_counts_as_a_tie(records: list, count: int) -> None:
    ties = robust_at_tie(records)
    assert (ties["count"] if ties else 0) == count


def test_escalation_keeps_the_closest_call_of_any_step() -> None:
    assert _came_closer({"margin": 0.0}, {"margin": 0.5})
    assert not _came_closer({"margin": 0.7}, {"margin": 0.5})
    assert _came_closer({"margin": 0.2}, {})
    assert not _came_closer({}, {"margin": 0.5})
    assert not _came_closer({"margin": 0.0, "draws": 15}, {"margin": 0.5})


def test_a_break_in_an_escalation_step_carries_its_own_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sample the screen left standing with margin 0.8 and an escalation step breaks at
    margin -0.05 reads margin -0.05 (a broken record with the screen's positive margin would
    contradict itself, and a break at an exact tie must read 0); a sample the step leaves
    standing keeps the closest call of any step."""
    from robustsnn.evaluation import escalate

    step_records = [
        {"index": 7, "clean_correct": True, "robust": False, "broken_by": "m", "prediction": 3,
         "margin": -0.05},
        {"index": 8, "clean_correct": True, "robust": True, "broken_by": None, "prediction": 0,
         "margin": 0.1},
        {"index": 9, "clean_correct": True, "robust": False, "broken_by": "m", "prediction": 2,
         "margin": 0.0},
    ]  # fmt: skip
    monkeypatch.setattr(escalate, "evaluate", lambda *a, **k: {"records": step_records})
    records = [
        {"index": i, "clean_correct": True, "robust": True, "broken_by": None, "prediction": 0,
         "margin": 0.8}
        for i in (7, 8, 9)
    ]  # fmt: skip
    result = {"records": records}
    config = EvaluationConfig(eps=0.1, ensemble="reliable", diagnostics="none")
    x, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long)
    context = escalate.EvaluationContext(quiet=True)
    broken, _ = escalate._attack_standing(nn.Identity(), x, y, result, [0, 1, 2], config, context)
    assert broken == 2
    assert [r["margin"] for r in records] == [-0.05, 0.1, 0.0]
    assert [r["broken_by"] for r in records] == ["reliable:m", None, "reliable:m"]
