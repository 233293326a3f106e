"""Training: the :class:`Trainer` loop (optimizer, schedule, checkpoint, exact resume) and the
objectives it runs (registry ``OBJECTIVES``), plus :func:`train_ann`, the pipeline's first step."""

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
from robustsnn.training.trainer import Trainer

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Regularizer",
    "Trainer",
    "build_objective",
    "evaluate_accuracy",
    "objective_params",
    "train_ann",
]
