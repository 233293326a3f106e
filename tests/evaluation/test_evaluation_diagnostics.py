"""Gradient-masking diagnostics: a hard step in front of a linear model must be flagged."""

from __future__ import annotations

import torch
from evaluation_test_utils import SHAPE, HardStep, images, labels_of, tiny_linear, tiny_snn
from torch import Tensor

from robustsnn.evaluation import (
    CHECKS,
    DiagnosticsConfig,
    EvaluationConfig,
    EvaluationContext,
    evaluate,
    input_gradients,
)
from robustsnn.evaluation.diagnostics import check_finite_gradients
from robustsnn.evaluation.views import attack_view
from robustsnn.snn import estimator_names

SMALL = DiagnosticsConfig(n=16, square_queries=100, base_steps=10, convergence_factor=2)
NO_RANDOM_PGD = [{"attack": "pgd", "params": {"steps": 5, "random_start": False}}]


def _near_threshold(n: int) -> Tensor:
    """Images whose every pixel sits within 0.08 of the step at 0.5 (eps 0.1 flips any)."""
    g = torch.Generator().manual_seed(5)
    return 0.5 + 0.08 * (2 * torch.rand(n, *SHAPE, generator=g) - 1)


def test_masked_gradients_are_flagged() -> None:
    model = HardStep()
    x = _near_threshold(16)
    y = labels_of(model, x)
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=0.1, ensemble=NO_RANDOM_PGD, diagnostics=SMALL),
        EvaluationContext(quiet=True),
    )
    assert result["ensembles"]["custom"]["robust_accuracy"] == 1.0  # white-box PGD is helpless
    diagnostics = result["diagnostics"]
    assert set(diagnostics) == set(CHECKS[:5])
    for check in diagnostics.values():
        assert isinstance(check["passed"], bool) and isinstance(check["detail"], str)
        assert "\n" not in check["detail"]
    assert not diagnostics["finite_gradients"]["passed"]
    assert "zero input gradient" in diagnostics["finite_gradients"]["detail"]
    assert not diagnostics["black_box_vs_white_box"]["passed"]
    assert diagnostics["black_box_vs_white_box"]["broken"] > 0


def test_a_smooth_model_passes_the_masking_checks() -> None:
    model = tiny_linear()
    x = images(16)
    y = labels_of(model, x)
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=0.05, ensemble="pgd-fast", diagnostics=SMALL),
        EvaluationContext(quiet=True),
    )
    diagnostics = result["diagnostics"]
    assert diagnostics["finite_gradients"]["passed"], diagnostics["finite_gradients"]["detail"]
    assert diagnostics["black_box_vs_white_box"]["passed"]
    assert diagnostics["eps_monotonic"]["passed"], diagnostics["eps_monotonic"]["detail"]
    assert diagnostics["convergence"]["passed"], diagnostics["convergence"]["detail"]


def test_transfer_from_a_smooth_source_beats_masked_gradients() -> None:
    model = HardStep()
    x = _near_threshold(12)
    y = labels_of(model, x)
    source = model.linear  # same weights, no step: its gradients point the right way
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=0.1, ensemble=NO_RANDOM_PGD, diagnostics=SMALL),
        EvaluationContext(transfer_source=source, quiet=True),
    )
    transfer = result["diagnostics"]["transfer_vs_white_box"]
    assert not transfer["passed"] and transfer["broken"] > 0
    smooth = tiny_linear()
    clean = evaluate(
        smooth,
        x,
        labels_of(smooth, x),
        EvaluationConfig(eps=0.02, ensemble="pgd-fast", diagnostics=SMALL),
        EvaluationContext(transfer_source=smooth, quiet=True),
    )
    assert clean["diagnostics"]["transfer_vs_white_box"]["passed"]


def test_none_skips_and_fast_is_default() -> None:
    model = tiny_linear()
    x = images(4)
    y = labels_of(model, x)
    assert (
        evaluate(
            model,
            x,
            y,
            EvaluationConfig(eps=0.05, ensemble="pgd-fast", diagnostics="none"),
            EvaluationContext(quiet=True),
        )["diagnostics"]
        == {}
    )
    assert DiagnosticsConfig.preset("fast").n == 32 and DiagnosticsConfig.preset("full").n == 64


def test_finite_gradients_checks_every_estimator_of_an_snn() -> None:
    snn = tiny_snn()
    x = images(8)
    y = labels_of(snn, x)
    result = check_finite_gradients(snn, x, y, estimator_names(), SMALL, attack_view)
    assert result["passed"], result["detail"]
    assert set(result["estimators"]) == set(estimator_names())
    grad = input_gradients(HardStep(), x, y)
    assert bool((grad == 0).all())
