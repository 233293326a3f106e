"""Adaptive robustness evaluation: ensembles of (attack, gradient estimator), per-sample worst
case, resumable runs and gradient-masking diagnostics (PAPER.md section 5, DESIGN.md section 5).

Spikes and attacks meet here: an ensemble member runs a plain attack on the SNN seen through one
gradient estimator, and every verdict uses the SNN's real forward pass.
"""

from __future__ import annotations

from robustsnn.evaluation.config import EvaluationConfig, EvaluationContext, EvaluationRun
from robustsnn.evaluation.diagnostics import (
    CHECKS,
    DIAGNOSTICS_MODES,
    DiagnosticsConfig,
    DiagnosticsRun,
    input_gradients,
    run_diagnostics,
)
from robustsnn.evaluation.ensembles import (
    ADAPTIVE_ESTIMATORS,
    BLACK_BOX_ATTACKS,
    ENSEMBLES,
    Ensemble,
    Member,
    attack_grid,
    ensemble_from_spec,
    estimator_grid,
    resolve_ensemble,
)
from robustsnn.evaluation.evaluate import DEFAULT_BATCH_SIZE, STATE_FILE, evaluate, parse_eps
from robustsnn.evaluation.run import (
    DEFAULT_ENSEMBLE,
    EVALUATION_FILE,
    RECORDS_FILE,
    dataset_spec_from_meta,
    run_evaluation,
    stratified_indices,
)
from robustsnn.evaluation.views import attack_view, derive_seed, is_snn, real_predict

__all__ = [
    "ADAPTIVE_ESTIMATORS",
    "BLACK_BOX_ATTACKS",
    "CHECKS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ENSEMBLE",
    "DIAGNOSTICS_MODES",
    "ENSEMBLES",
    "EVALUATION_FILE",
    "RECORDS_FILE",
    "STATE_FILE",
    "DiagnosticsConfig",
    "DiagnosticsRun",
    "Ensemble",
    "EvaluationConfig",
    "EvaluationContext",
    "EvaluationRun",
    "Member",
    "attack_grid",
    "attack_view",
    "dataset_spec_from_meta",
    "derive_seed",
    "ensemble_from_spec",
    "estimator_grid",
    "evaluate",
    "input_gradients",
    "is_snn",
    "parse_eps",
    "real_predict",
    "resolve_ensemble",
    "run_diagnostics",
    "run_evaluation",
    "stratified_indices",
]
