"""Apples to apples: paired SNN/ANN ratios, escalation up to a shared preset, and the verdict."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from robustsnn.analysis.verdict import run_verdict
from robustsnn.errors import UserError
from robustsnn.evaluation.config import EscalationPolicy, EvaluationConfig, EvaluationContext
from robustsnn.evaluation.escalate import evaluate_escalating, final_preset, ladder_level
from robustsnn.evaluation.intervals import format_ratio, paired_ratio_interval


def test_paired_ratio_is_the_ratio_of_counts_with_a_paired_interval():
    rng = random.Random(0)
    ann = [rng.random() < 0.3 for _ in range(400)]
    snn = [a and rng.random() < 0.8 for a in ann]  # loses a fifth of the ANN's survivors
    result = paired_ratio_interval(snn, ann)
    assert result is not None
    assert result["ratio"] == pytest.approx(sum(snn) / sum(ann))
    low, high = result["ci95"]
    assert low <= result["ratio"] <= high < 1.0  # paired: a consistent loss is significant
    assert paired_ratio_interval(snn, ann) == result  # deterministic
    same = paired_ratio_interval(ann, ann)
    assert same is not None and same["ratio"] == 1.0 and same["ci95"] == [1.0, 1.0]
    assert paired_ratio_interval([True, False], [False, False]) is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_ratio_interval([True], [True, False])
    assert format_ratio(same) == "1.00x [1.00, 1.00]"


def test_paired_interval_is_narrower_than_an_unpaired_one():
    """The same outcomes resampled independently (pairing broken) give a wider interval."""
    rng = random.Random(1)
    ann = [rng.random() < 0.3 for _ in range(300)]
    snn = [a and rng.random() < 0.9 for a in ann]
    paired = paired_ratio_interval(snn, ann)
    shuffled = snn[:]
    random.Random(2).shuffle(shuffled)
    unpaired = paired_ratio_interval(shuffled, ann)
    assert paired and unpaired and paired["ratio"] == unpaired["ratio"]
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert width(paired) < width(unpaired)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_escalation_reaches_the_requested_preset_even_when_checks_pass():
    model = Linear().eval()
    x = torch.rand(12, 1, 3, 4)
    y = model(x).argmax(1)
    ladder = ("fgsm-ensemble", "pgd-fast")
    config = EvaluationConfig(eps=0.01, ensemble="fgsm-ensemble", diagnostics="none")
    quiet = EvaluationContext(quiet=True)
    plain = evaluate_escalating(model, x, y, config, quiet, EscalationPolicy(0), ladder=ladder)
    assert final_preset(plain) == "fgsm-ensemble" and not plain["escalation"]["steps"]
    to_pgd_fast = EscalationPolicy(levels=0, at_least="pgd-fast")
    matched = evaluate_escalating(model, x, y, config, quiet, to_pgd_fast, ladder=ladder)
    steps = matched["escalation"]["steps"]
    assert [s["preset"] for s in steps] == ["pgd-fast"]
    assert "matching the protocol" in steps[0]["reasons"][-1]
    assert final_preset(matched) == "pgd-fast" and matched["escalation"]["at_least"] == "pgd-fast"
    assert matched["robust_accuracy"] <= plain["robust_accuracy"]
    assert ladder_level("pgd-fast", ladder) == 1 and ladder_level("nope", ladder) == -1
    with pytest.raises(UserError, match="not on the ladder"):
        evaluate_escalating(
            model, x, y, config, quiet, EscalationPolicy(at_least="reliable"), ladder=ladder
        )


def _row(robust: float, ratio=None, diagnostics="checks PASS (5)", **extra):
    return {
        "clean_accuracy": 0.5,
        "robust_accuracy": robust,
        "n": 1000,
        "eps": 8 / 255,
        "T": 8,
        "ensemble": "reliable + escalation",
        "diagnostics": diagnostics,
        "robust_ratio_to_ann": ratio,
        **extra,
    }


def test_verdict_follows_the_interval_not_the_point_estimate():
    ann = _row(0.15, T=None)
    kept = {"ratio": 1.05, "ci95": [0.95, 1.15]}
    lost = {"ratio": 0.6, "ci95": [0.5, 0.7]}
    unclear = {"ratio": 0.93, "ci95": [0.85, 1.02]}
    text = run_verdict(
        {"ann": ann, "snn_converted": _row(0.09, lost), "snn_finetuned": _row(0.16, kept)}
    )
    assert text is not None and text.startswith("Verdict. Measured on n = 1000")
    assert "`reliable + escalation` for every row" in text
    assert "The converted SNN (T = 8) keeps 9.0%" in text
    assert "0.60x [0.50, 0.70]" in text and "did not keep" in text
    assert "The finetuned SNN (T = 8) keeps 16.0%" in text and "it kept its ANN's" in text
    assert "checks pass on every row" in text
    text = run_verdict({"ann": ann, "snn_finetuned": _row(0.14, unclear)})
    assert text is not None and "not shown to differ" in text
    failing = _row(0.14, unclear, diagnostics="checks FAIL: eps_monotonic")
    text = run_verdict({"ann": ann, "snn_finetuned": failing})
    assert text is not None and "Masking checks FAIL for the finetuned SNN" in text
    other = _row(0.14, None, ensemble="pgd-fast", robust_ratio_to_ann_missing="different attacks")
    text = run_verdict({"ann": ann, "snn_finetuned": other})
    assert text is not None and "not comparable" in text and "no ratio to the ANN" in text
    assert run_verdict({"ann": ann}) is None and run_verdict(None) is None
