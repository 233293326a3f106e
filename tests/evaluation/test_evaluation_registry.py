"""Tests over every registered ensemble preset and every gradient estimator (timm-style)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from evaluation_test_utils import images, labels_of, tiny_mlp, tiny_snn

from robustsnn.evaluation import (
    ENSEMBLES,
    EvaluationConfig,
    EvaluationContext,
    evaluate,
    input_gradients,
)
from robustsnn.snn import estimator_names, parse_estimator

# Reduced budgets so that every preset runs in a fraction of a second on the tiny SNN.
TINY_PARAMS = {
    "pgd": {"steps": 2},
    "apgd-ce": {"n_iter": 3},
    "apgd-dlr": {"n_iter": 3},
    "apgd-t": {"n_iter": 3, "n_target_classes": 1},
    "fab-t": {"n_iter": 3, "n_target_classes": 1},
    "square": {"n_queries": 10},
}


@pytest.mark.parametrize("name", ENSEMBLES.names())
def test_every_preset_runs_on_an_snn_and_an_ann(name: str) -> None:
    preset = ENSEMBLES.get(name)
    attacks = {m.attack for m in preset.members}
    cheap = preset.with_params({a: p for a, p in TINY_PARAMS.items() if a in attacks})
    x = images(6)
    y = labels_of(tiny_mlp(), x)
    snn = tiny_snn()
    result = evaluate(
        snn,
        x,
        y,
        EvaluationConfig(eps=0.05, ensemble=cheap, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    entry = result["ensembles"][name]
    assert entry["members"] == len(preset.for_model(snn))
    if name.endswith("-ensemble"):
        assert entry["members"] == 19
    assert 0.0 <= entry["robust_accuracy"] <= result["clean_accuracy"]
    ann = tiny_mlp()
    collapsed = evaluate(
        ann,
        x,
        y,
        EvaluationConfig(eps=0.05, ensemble=cheap, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    # an ANN has one gradient: members that differ only in their estimator become one
    distinct = {replace(m, estimator=None).name for m in cheap.members}
    assert collapsed["ensembles"][name]["members"] == len(distinct)
    if all(len({m.name for m in cheap.members if m.attack == a}) == 1 for a in attacks):
        assert len(distinct) == len(attacks)


@pytest.mark.parametrize("estimator", estimator_names())
def test_every_estimator_gives_a_finite_nonzero_input_gradient_in_eval_mode(
    estimator: str,
) -> None:
    snn = tiny_snn()
    snn.eval()
    x = images(8)
    grad = input_gradients(snn.with_estimator(parse_estimator(estimator)), x, labels_of(snn, x))
    assert bool(torch.isfinite(grad).all())
    assert float(grad.abs().sum()) > 0
    assert not snn.training
