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
