"""Regularizers: weight penalties for the objectives' ``regularizer=`` hook
(``regularizer(model) -> loss``) and the membrane-margin penalty of the finetuning objectives.

:class:`OrthogonalityRegularizer` is the Lipschitz/orthogonality term of the SNN-RAT baseline
(PAPER.md section 6). :func:`membrane_margin_penalty` is the term behind the finetuning
objectives' ``margin_weight`` / ``margin`` options (issue 31); :func:`threshold_guarding_penalty`
is the per-layer constraint of the ``tgo`` objective (Threshold Guarding Optimization, issue 32).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from robustsnn.snn.membranes import MembraneTrace

ORTHOGONAL_LAYERS = (nn.Conv2d, nn.Linear)


def orthogonality_penalty(weight: Tensor) -> Tensor:
    """``||W W^T - I||_F^2`` of a weight reshaped to ``W [out, in * kh * kw]``.

    Computed through the smaller Gram matrix: for ``out <= in`` directly from ``W W^T``
    (``out x out``); for ``out > in`` (where ``W W^T`` has rank <= in and the penalty is at least
    ``out - in``) through the identity ``||W W^T - I||^2 = ||W^T W||^2 - 2 ||W||^2 + out``,
    which only forms ``W^T W`` (``in x in``). Both are the same function of ``W`` and give
    the same gradient, ``4 (W W^T - I) W``.
    """
    w = weight.reshape(weight.shape[0], -1)
    rows, cols = w.shape
    if rows <= cols:
        gram = w @ w.t()
        eye = torch.eye(rows, dtype=w.dtype, device=w.device)
        return (gram - eye).pow(2).sum()
    gram = w.t() @ w
    return gram.pow(2).sum() - 2.0 * w.pow(2).sum() + rows


def orthogonal_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(name, weight)`` of every conv and linear layer of ``model`` (the readout included)."""
    for name, module in model.named_modules():
        if isinstance(module, ORTHOGONAL_LAYERS):
            yield name, module.weight


class OrthogonalityRegularizer:
    """``beta * sum_l ||W_l W_l^T - I||_F^2`` over every ``nn.Conv2d`` and ``nn.Linear`` layer.

    What is implemented, exactly: each layer's weight is reshaped to ``W [out, in * kh * kw]``
    (all of its rows, for every layer including the readout; biases, BatchNorm and thresholds are
    not penalized), the squared Frobenius norms are summed over layers and multiplied by
    ``beta``, and the result is added to the training loss, so the optimizer (with its learning
    rate, momentum and schedule) descends on it together with the adversarial loss.

    This is the orthogonality (Parseval tightness) constraint that SNN-RAT (Ding, Bu, Yu & Huang,
    "SNN-RAT: Robustness-enhanced Spiking Neural Network through Regularized Adversarial
    Training", NeurIPS 2022) applies to the weights of an SNN adversarially trained with RFGSM
    to keep each layer's Lipschitz constant near 1; it comes from Parseval networks (Cisse,
    Bojanowski, Grave, Dauphin & Usunier, "Parseval Networks: Improving Robustness to
    Adversarial Examples", ICML 2017). Both papers enforce it with a *retraction* after every
    optimizer step, ``W <- (1 + b) W - b W W^T W``, which is one gradient step of size ``b`` on
    ``||W W^T - I||^2 / 4``; Parseval networks (and SNN-RAT's code) retract only a random 30 %
    of the rows of large linear layers. Here the same function is a loss term instead: a plain
    SGD step of learning rate ``lr`` on it moves ``W`` by ``-4 lr beta (W W^T - I) W``, i.e. a
    retraction with ``b = 4 lr beta`` (about ``4 lr beta / (1 - momentum)`` with momentum),
    decaying with the learning-rate schedule; e.g. ``beta = 1e-3`` at lr 0.1, momentum 0.9
    corresponds to ``b ~= 0.004``.
    """

    def __init__(self, beta: float) -> None:
        if beta < 0:
            raise ValueError(f"orthogonality beta must be >= 0, got {beta}")
        self.beta = float(beta)

    @property
    def name(self) -> str:
        """Label written into the objective's metadata (and the training-state fingerprint)."""
        return f"orthogonality(beta={self.beta:g})"

    def __call__(self, model: nn.Module) -> Tensor:
        total: Tensor | None = None
        for _, weight in orthogonal_weights(model):
            term = orthogonality_penalty(weight)
            total = term if total is None else total + term
        if total is None:
            raise ValueError("orthogonality regularizer: the model has no conv or linear layer")
        return self.beta * total


def membrane_margin_penalty(traces: Sequence[MembraneTrace], margin: float) -> Tensor:
    """``mean relu(margin - |h - theta| / theta)`` over every recorded neuron, step and sample
    (all layers and forward passes of ``traces`` pooled, each neuron-step counting once).

    A neuron whose pre-spike membrane ``h`` ends a step within ``margin`` (a fraction of its
    layer's threshold, so the term is invariant to rescaling a layer's threshold and incoming
    weights) of the threshold fires or not on a hair: the smallest input change flips that
    spike, and a flipped spike in an early layer moves everything after it. This is the
    argument of Threshold Guarding Optimization (ICLR 2026); the penalty pushes such
    membranes out of the band on both sides. The gradient reaches the membranes (and, through
    them, the weights and the inputs before each layer) and the thresholds; the spikes inside
    the membrane recursion are constants (:mod:`robustsnn.snn.membranes`).
    """
    if margin < 0:
        raise ValueError(f"membrane margin must be >= 0, got {margin}")
    if not traces:
        raise ValueError(
            "membrane-margin penalty: no membranes were recorded (the model has no spiking "
            "layer, or ran as its ANN proxy)"
        )
    total: Tensor | None = None
    count = 0
    for trace in traces:
        term = torch.relu(margin - (trace.h - trace.theta).abs() / trace.theta).sum()
        total = term if total is None else total + term
        count += trace.h.numel()
    assert total is not None
    return total / max(count, 1)


def threshold_guarding_penalty(traces: Sequence[MembraneTrace], delta: float) -> Tensor:
    """``sum_l C_l`` with ``C_l = mean_{t, b, i} relu(delta - |h_l[t, b, i] - theta_l| / theta_l)``.

    The membrane constraint of Threshold Guarding Optimization (Wang, Zhang, Jiang et al.,
    "Robust Spiking Neural Networks Against Adversarial Attacks", ICLR 2026, arXiv 2602.20548,
    eqs. 12-13): per spiking layer ``l`` the mean, over time steps, samples and neurons, of the
    hinge ``max(0, delta - |V - V_th|)``, summed over layers. Here ``|V - V_th|`` is measured in
    units of the layer's threshold (``|h - theta| / theta``): identical to the paper's for its
    ``V_th = 1``, and invariant to rescaling a layer's threshold with its incoming weights (a
    converted SNN's thresholds are 2-8). ``h`` is the pre-spike membrane of the forward
    (:mod:`robustsnn.snn.membranes`; with threshold noise, the drawn noisy membrane).

    Unlike :func:`membrane_margin_penalty` (every neuron-step of the network pooled, one mean),
    each layer counts once whatever its size, as in the paper. A layer seen in several forward
    passes (clean and adversarial inputs) is averaged over all of its recorded membranes.
    """
    if delta < 0:
        raise ValueError(f"threshold-guarding delta must be >= 0, got {delta}")
    if not traces:
        raise ValueError(
            "threshold-guarding penalty: no membranes were recorded (the model has no spiking "
            "layer, or ran as its ANN proxy)"
        )
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    for trace in traces:
        term = torch.relu(delta - (trace.h - trace.theta).abs() / trace.theta).sum()
        sums[trace.layer] = sums[trace.layer] + term if trace.layer in sums else term
        counts[trace.layer] = counts.get(trace.layer, 0) + trace.h.numel()
    layers = list(sums)
    total = sums[layers[0]] / max(counts[layers[0]], 1)
    for layer in layers[1:]:
        total = total + sums[layer] / max(counts[layer], 1)
    return total


__all__ = [
    "ORTHOGONAL_LAYERS",
    "OrthogonalityRegularizer",
    "membrane_margin_penalty",
    "orthogonal_weights",
    "orthogonality_penalty",
    "threshold_guarding_penalty",
]
