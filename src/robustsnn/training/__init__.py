"""Training: the :class:`Trainer` loop (optimizer, schedule, checkpoint, exact resume) and the
objectives it runs (registry ``OBJECTIVES``), plus :func:`train_ann`, the pipeline's first step,
:func:`finetune_snn` (robust finetuning, step 3) and :func:`train_snn` (SNN baselines)."""

from __future__ import annotations

from robustsnn.training.ann import train_ann
from robustsnn.training.metrics import evaluate_accuracy
from robustsnn.training.objectives import (
    OBJECTIVES,
    Objective,
    Regularizer,
    build_objective,
    objective_params,
)
from robustsnn.training.regularizers import OrthogonalityRegularizer, orthogonality_penalty
from robustsnn.training.snn import evaluate_snn, finetune_snn, stratified_indices, train_snn
from robustsnn.training.trainer import Trainer, TrainerConfig

__all__ = [
    "OBJECTIVES",
    "Objective",
    "OrthogonalityRegularizer",
    "Regularizer",
    "Trainer",
    "TrainerConfig",
    "build_objective",
    "evaluate_accuracy",
    "evaluate_snn",
    "finetune_snn",
    "objective_params",
    "orthogonality_penalty",
    "stratified_indices",
    "train_ann",
    "train_snn",
]
