"""Training objectives (registry ``OBJECTIVES``).

An objective is a callable ``(model, x, y, generator) -> (loss, logits)``: ``loss`` is the scalar
to minimize, ``logits`` are the outputs the trainer scores for its running train accuracy (those
of the input the main cross-entropy term sees: clean for natural/TRADES/robust finetuning,
adversarial for PGD-AT/RFGSM-AT/MART). The trainer does not know which objective runs.

Adversaries are generated in eval mode with parameter gradients off (see
:mod:`robustsnn.training.inner`), and the model's previous modes are restored; the loss itself is
computed in whatever mode the caller left the model (train mode inside the trainer).
All KL terms follow the reference code: ``KLDivLoss(log_softmax(f(x_adv)), softmax(f(x)))``
summed and divided by the batch size.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustsnn.attacks import RFGSM
from robustsnn.attacks.base import default_step_size
from robustsnn.errors import UserError
from robustsnn.registry import Registry
from robustsnn.snn import SpikingNetwork
from robustsnn.training.inner import (
    attack_mode,
    finetune_kl_adversary,
    kl_batchmean,
    pgd_ce,
    trades_kl_adversary,
    unwrap,
)
from robustsnn.training.regularizers import membrane_margin_penalty, threshold_guarding_penalty

Regularizer = Callable[[nn.Module], Tensor]


class Objective:
    """Base class: ``objective(model, x, y, generator) -> (loss, logits_for_accuracy)``."""

    name: ClassVar[str] = "objective"

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Any]:
        """The objective's hyperparameters (JSON-serializable), for checkpoint metadata."""
        if dataclasses.is_dataclass(self):
            return {
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if not f.metadata.get(RUNTIME)
            }
        return {}

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}`` as written into metadata."""
        return {"name": self.name, "params": self.params}


OBJECTIVES: Registry[type[Objective]] = Registry("objective")

RUNTIME = "runtime"
"""Field metadata key: a field set at run time (an adversary, a teacher), not a hyperparameter:
left out of ``params`` and of :func:`objective_params`."""


def _runtime_field() -> Any:
    return field(default=None, repr=False, compare=False, metadata={RUNTIME: True})


def _check_eps(name: str, eps: float, steps: int | None = None) -> None:
    if eps < 0:
        raise UserError(f"objective {name!r}: eps must be >= 0, got {eps}; use e.g. 2/255")
    if steps is not None and steps < 1:
        raise UserError(f"objective {name!r}: steps must be >= 1, got {steps}")


def _pgd_step_size(name: str, eps: float, steps: int, step_size: float | None) -> float:
    """Validate ``eps`` and ``steps``; ``step_size`` or its default ``2.5 * eps / steps``
    (:func:`~robustsnn.attacks.base.default_step_size`)."""
    _check_eps(name, eps, steps)
    return default_step_size(eps, steps) if step_size is None else step_size


def _pgd_ce_adversary(
    objective: PGDAT | MART,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator | None,
) -> Tensor:
    """The last PGD-CE iterate with ``objective``'s settings, generated in attack mode."""
    assert objective.step_size is not None
    with attack_mode(model) as net:
        return pgd_ce(
            net,
            x,
            y,
            eps=objective.eps,
            steps=objective.steps,
            step_size=objective.step_size,
            random_start=objective.random_start,
            generator=generator,
        )


@OBJECTIVES.register("natural")
@dataclass
class Natural(Objective):
    """Plain cross-entropy on clean inputs."""

    name: ClassVar[str] = "natural"

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


@OBJECTIVES.register("pgd_at")
@dataclass
class PGDAT(Objective):
    """PGD adversarial training (Madry et al. 2018): cross-entropy on PGD-CE examples.

    ``step_size`` defaults to ``2.5 * eps / steps``; random uniform start in the eps-ball. The
    adversary is the last PGD iterate for every sample (Madry's inner maximization), not
    :class:`robustsnn.attacks.PGD`, whose evaluation bookkeeping stops attacking a sample once it
    is misclassified and returns the worst iterate: a different (weaker) training distribution.
    """

    name: ClassVar[str] = "pgd_at"
    eps: float = 2 / 255
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True

    def __post_init__(self) -> None:
        self.step_size = _pgd_step_size(self.name, self.eps, self.steps, self.step_size)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        x_adv = _pgd_ce_adversary(self, model, x, y, generator)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits


@OBJECTIVES.register("rfgsm_at")
@dataclass
class RFGSMAT(Objective):
    """Adversarial training on R+FGSM examples (Tramer et al. 2018), as in the SNN-RAT baseline:
    cross-entropy on ``x_adv`` only. ``alpha`` (random step) defaults to ``eps / 2``. The
    adversary is :class:`robustsnn.attacks.RFGSM`."""

    name: ClassVar[str] = "rfgsm_at"
    eps: float = 2 / 255
    alpha: float | None = None

    def __post_init__(self) -> None:
        _check_eps(self.name, self.eps)
        self._attack = RFGSM(self.eps, alpha=self.alpha)
        self.alpha = self._attack.alpha

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        with attack_mode(model) as net:
            x_adv = self._attack(net, x, y, generator=generator)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits


@OBJECTIVES.register("trades")
@dataclass
class TRADES(Objective):
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x_adv) || f(x))`` with ``x_adv``
    maximizing the KL by PGD from ``x + 0.001 * N(0, I)``."""

    name: ClassVar[str] = "trades"
    eps: float = 2 / 255
    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None

    def __post_init__(self) -> None:
        self.step_size = _pgd_step_size(self.name, self.eps, self.steps, self.step_size)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        assert self.step_size is not None
        with attack_mode(model) as net:
            x_adv = trades_kl_adversary(
                net,
                x,
                eps=self.eps,
                steps=self.steps,
                step_size=self.step_size,
                generator=generator,
            )
        logits = model(x)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits, y) + self.beta * kl_batchmean(logits_adv, logits)
        return loss, logits


@OBJECTIVES.register("mart")
@dataclass
class MART(Objective):
    """MART (Wang et al. 2020): boosted CE on ``x_adv`` (CE plus ``-log(1 - p_max_wrong)``) +
    ``beta * sum_i KL_i(f(x_adv) || f(x)) * (1 - p_y(x_i)) / B``; ``x_adv`` from PGD-CE."""

    name: ClassVar[str] = "mart"
    eps: float = 2 / 255
    beta: float = 4.0
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True

    def __post_init__(self) -> None:
        self.step_size = _pgd_step_size(self.name, self.eps, self.steps, self.step_size)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        x_adv = _pgd_ce_adversary(self, model, x, y, generator)
        logits = model(x)
        logits_adv = model(x_adv)
        adv_probs = F.softmax(logits_adv, dim=1)
        top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
        wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
        loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(
            torch.log(1.0001 - adv_probs + 1e-12), wrong
        )
        nat_probs = F.softmax(logits, dim=1)
        true_probs = nat_probs.gather(1, y.unsqueeze(1)).squeeze(1)
        kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(dim=1)
        loss_robust = (kl * (1.0000001 - true_probs)).sum() / x.shape[0]
        return loss_adv + self.beta * loss_robust, logits_adv


MARGIN_OPTIONS = ("margin_weight", "margin")
"""The membrane-margin options every finetuning objective takes (left out of its ``params``
while ``margin_weight`` is 0, so runs without the term describe themselves as before)."""


class AdversarialFinetune(Objective):
    """Base of the SNN finetuning objectives: ``x_adv`` comes from ``adversary`` (a
    :class:`~robustsnn.training.adversaries.FinetuneAdversary`, set at run time and recorded in
    ``params``), or, when none is set, from the paper's single-step KL adversary through the
    training estimator.

    ``margin_weight > 0`` adds ``margin_weight * membrane_margin_penalty(margin)``
    (:func:`~robustsnn.training.regularizers.membrane_margin_penalty`) over the membranes of
    every forward pass the loss makes (clean and adversarial inputs; not the attack's passes,
    which :func:`~robustsnn.training.inner.attack_mode` keeps out of the recording).
    Subclasses write their loss in :meth:`finetune_loss`.
    """

    adversary: Any
    eps: float
    alpha: float
    steps: int
    margin_weight: float
    margin: float

    @property
    def params(self) -> dict[str, Any]:
        params = super().params
        if not self.margin_weight:
            for key in MARGIN_OPTIONS:
                params.pop(key, None)
        if self.adversary is not None:
            params["adversary"] = self.adversary.describe()
        return params

    def finetune_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        if not self.margin_weight:
            return self.finetune_loss(model, x, y, generator)
        net = unwrap(model)
        if not isinstance(net, SpikingNetwork):
            raise UserError(
                f"objective {self.name!r}: margin_weight needs a spiking network (membranes), "
                f"got {type(net).__name__}"
            )
        with net.recording_membranes() as traces:
            loss, logits = self.finetune_loss(model, x, y, generator)
        penalty = membrane_margin_penalty(traces, self.margin)
        return loss + self.margin_weight * penalty, logits

    def adversarial(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        if self.adversary is not None:
            return self.adversary(model, x, y, generator)
        with attack_mode(model) as net:
            return finetune_kl_adversary(
                net, x, eps=self.eps, alpha=self.alpha, steps=self.steps, generator=generator
            )


def _check_finetune(
    name: str, eps: float, steps: int, beta: float, alpha: float, margin: tuple[float, float]
) -> None:
    _check_eps(name, eps, steps)
    margin_weight, margin_width = margin
    if margin_weight < 0 or margin_width < 0:
        raise UserError(
            f"objective {name!r}: margin_weight and margin must be >= 0, got {margin_weight} "
            f"and {margin_width} (e.g. margin_weight=0.1, margin=0.1: a tenth of the threshold)"
        )
    if beta < 0:
        raise UserError(f"objective {name!r}: beta must be >= 0, got {beta}")
    if not 0 <= alpha <= eps and beta > 0:
        raise UserError(
            f"objective {name!r}: alpha must lie in [0, eps], got alpha={alpha} eps={eps}"
        )


@OBJECTIVES.register("robust_finetune")
@dataclass
class RobustFinetune(AdversarialFinetune):
    """The paper's SNN finetuning loss: ``CE(f(x), y) + beta * KL(f(x_adv) || f(x))`` with the
    single-step KL adversary (random sign start of size ``alpha``, one step of ``eps - alpha``).
    ``beta = 0`` is plain cross-entropy finetuning and skips the attack. ``steps > 1`` (beyond
    the paper) runs a multi-step KL adversary from the same start, ``2.5 * eps / steps`` per
    step. A finetuning ``adversary`` replaces that attack."""

    name: ClassVar[str] = "robust_finetune"
    eps: float = 2 / 255
    beta: float = 2.0
    alpha: float = 1 / 255
    steps: int = 1
    margin_weight: float = 0.0
    margin: float = 0.1
    adversary: Any = _runtime_field()

    def __post_init__(self) -> None:
        _check_finetune(
            self.name,
            self.eps,
            self.steps,
            self.beta,
            self.alpha,
            (self.margin_weight, self.margin),
        )

    def finetune_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        if self.beta == 0:
            logits = model(x)
            return F.cross_entropy(logits, y), logits
        x_adv = self.adversarial(model, x, y, generator)
        logits = model(x)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits, y) + self.beta * kl_batchmean(logits_adv, logits)
        return loss, logits


TEACHER_INPUTS = ("clean", "adversarial")


@OBJECTIVES.register("distill")
@dataclass
class Distill(AdversarialFinetune):
    """Robust distillation from the source ANN (the teacher ``T``, at hand after conversion)::

        ce_weight * CE(S(x), y) + clean_weight * KL(T(x) || S(x)) + beta * KL(T(x_t) || S(x_adv))

    ``x_t`` is ``x`` (``teacher_input="clean"``: the robust teacher's clean soft labels as the
    target on the student's adversarial examples, as RSLAD does) or ``x_adv`` (the teacher's
    view of the same perturbed image). KL terms in the TRADES convention (summed, divided by
    the batch). The teacher runs in eval mode without gradient; ``x_adv`` from ``adversary``
    (default: the paper's single-step KL adversary through the training estimator).
    """

    name: ClassVar[str] = "distill"
    eps: float = 8 / 255
    beta: float = 6.0
    alpha: float = 1 / 255
    steps: int = 1
    clean_weight: float = 1.0
    ce_weight: float = 0.0
    teacher_input: str = "clean"
    margin_weight: float = 0.0
    margin: float = 0.1
    adversary: Any = _runtime_field()
    teacher: Any = _runtime_field()

    def __post_init__(self) -> None:
        _check_finetune(
            self.name,
            self.eps,
            self.steps,
            self.beta,
            self.alpha,
            (self.margin_weight, self.margin),
        )
        if self.teacher_input not in TEACHER_INPUTS:
            raise UserError(
                f"objective 'distill': teacher_input must be one of {', '.join(TEACHER_INPUTS)}, "
                f"got {self.teacher_input!r}"
            )
        if self.clean_weight < 0 or self.ce_weight < 0:
            raise UserError("objective 'distill': clean_weight and ce_weight must be >= 0")

    def teacher_logits(self, x: Tensor) -> Tensor:
        if self.teacher is None:
            raise UserError(
                "objective 'distill' needs a teacher: finetune with the source ANN "
                "(--teacher PATH, or --teacher proxy for the converted SNN's own ANN proxy)"
            )
        with torch.no_grad():
            return self.teacher(x).detach()

    def finetune_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        target_clean = self.teacher_logits(x)
        logits = model(x)
        loss = self.clean_weight * kl_batchmean(logits, target_clean)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits, y)
        if self.beta > 0:
            x_adv = self.adversarial(model, x, y, generator)
            target = target_clean if self.teacher_input == "clean" else self.teacher_logits(x_adv)
            loss = loss + self.beta * kl_batchmean(model(x_adv), target)
        return loss, logits


@OBJECTIVES.register("adversarial_ce")
@dataclass
class AdversarialCE(AdversarialFinetune):
    """Plain adversarial cross-entropy for finetuning: ``CE(S(x_adv), y) + clean_weight *
    CE(S(x), y)`` (``clean_weight`` 0: PGD-AT's loss on the finetuning adversary's examples)."""

    name: ClassVar[str] = "adversarial_ce"
    eps: float = 8 / 255
    alpha: float = 1 / 255
    steps: int = 1
    clean_weight: float = 0.0
    margin_weight: float = 0.0
    margin: float = 0.1
    adversary: Any = _runtime_field()

    def __post_init__(self) -> None:
        _check_finetune(
            self.name, self.eps, self.steps, 1.0, self.alpha, (self.margin_weight, self.margin)
        )
        if self.clean_weight < 0:
            raise UserError("objective 'adversarial_ce': clean_weight must be >= 0")

    def finetune_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        x_adv = self.adversarial(model, x, y, generator)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        if self.clean_weight:
            loss = loss + self.clean_weight * F.cross_entropy(model(x), y)
        return loss, logits_adv


TGO_SCHEDULES = ("linear", "constant")


@OBJECTIVES.register("tgo")
@dataclass
class ThresholdGuarding(Objective):
    """Threshold Guarding Optimization (TGO): Wang, Zhang, Jiang, Zhang, Belatreche, Liang,
    Shan, Zhou, Yang & Li, "Robust Spiking Neural Networks Against Adversarial Attacks",
    ICLR 2026 (arXiv 2602.20548). Neurons whose membrane ends a step near the threshold are the
    ones a small input change flips; TGO moves membranes away from the threshold (a loss term)
    and makes firing probabilistic (noisy neurons), so such a flip needs more than a hair::

        loss = CE(f(x), y) [+ adversarial_weight * CE(f(x_adv), y)] + lambda(p) * sum_l C_l
        C_l  = mean_{t, b, i} max(0, delta - |h_l[t, b, i] - theta_l| / theta_l)

    ``C_l`` is the paper's eq. 12 per spiking layer (the membranes of this loss's forward
    passes, not the adversary's; distance in threshold units, the paper's for ``V_th = 1``;
    :func:`~robustsnn.training.regularizers.threshold_guarding_penalty`), summed over layers as
    in its eq. 13. **Assumed** (the paper's text on these was not available here; see
    docs/STOCHASTIC.md): the dynamic ``lambda`` rises linearly with training,
    ``lambda(p) = weight * p`` with ``p`` the fraction of the run's optimizer steps done
    (``schedule="linear"``; the paper says a large fixed lambda stalls early training and a
    small one does not enforce the constraint), or stays ``weight`` (``"constant"``); and the
    noisy neuron is Gaussian threshold noise: every neuron, step and sample fires when
    ``h >= theta (1 + noise * xi)``, ``xi ~ N(0, 1)``, i.e. with probability
    ``Phi((h - theta) / (noise * theta))`` (:mod:`robustsnn.snn.encoding`).
    :meth:`prepare` puts that noise into the network before training, so it trains with it and
    is saved, loaded and evaluated with it (a random model: the evaluation uses EOT and
    majority votes, :mod:`robustsnn.evaluation.stochastic`).

    ``adversarial_weight > 0`` adds adversarial cross-entropy (TGO combined with adversarial
    training); ``x_adv`` from the finetuning ``adversary`` if one is set, otherwise R+FGSM at
    ``eps`` through the training estimator. ``progress`` is set by the trainer before every
    step (:meth:`set_progress`); outside a trainer it is 1 (the full ``weight``).
    """

    name: ClassVar[str] = "tgo"
    weight: float = 1.0
    delta: float = 0.2
    schedule: str = "linear"
    noise: float = 0.1
    adversarial_weight: float = 0.0
    eps: float = 2 / 255
    adversary: Any = _runtime_field()
    progress: float = field(default=1.0, repr=False, compare=False, metadata={RUNTIME: True})

    def __post_init__(self) -> None:
        _check_eps(self.name, self.eps)
        for key in ("weight", "delta", "noise", "adversarial_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise UserError(f"objective 'tgo': {key} must be a number >= 0, got {value!r}")
            setattr(self, key, float(value))
        if self.schedule not in TGO_SCHEDULES:
            raise UserError(
                f"objective 'tgo': schedule must be one of {', '.join(TGO_SCHEDULES)}, "
                f"got {self.schedule!r}"
            )
        self._attack = RFGSM(self.eps) if self.adversarial_weight and self.eps > 0 else None

    @property
    def params(self) -> dict[str, Any]:
        params = super().params
        if self.adversary is not None:
            params["adversary"] = self.adversary.describe()
        return params

    @property
    def uses_adversary(self) -> bool:
        """Whether the loss has an adversarial term (else no attack runs)."""
        return self.adversarial_weight > 0

    def set_progress(self, fraction: float) -> None:
        """The fraction of the run's optimizer steps done (drives the dynamic lambda)."""
        self.progress = min(max(float(fraction), 0.0), 1.0)

    def current_weight(self) -> float:
        """``lambda`` at the current progress."""
        return self.weight * (self.progress if self.schedule == "linear" else 1.0)

    def prepare(self, model: nn.Module) -> None:
        """Make every spiking layer of ``model`` a noisy neuron with std ``noise``."""
        net = unwrap(model)
        if not isinstance(net, SpikingNetwork):
            raise UserError(
                f"objective 'tgo' needs a spiking network (membranes), got {type(net).__name__}"
            )
        for neuron in net.neurons():
            neuron.threshold_noise = self.noise

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        net = unwrap(model)
        if not isinstance(net, SpikingNetwork):
            raise UserError(
                f"objective 'tgo' needs a spiking network (membranes), got {type(net).__name__}"
            )
        x_adv = None
        if self.adversarial_weight:
            if self.adversary is not None:
                x_adv = self.adversary(model, x, y, generator)
            elif self._attack is not None:
                with attack_mode(model) as attacked:
                    x_adv = self._attack(attacked, x, y, generator=generator)
            else:  # eps 0: the adversarial example is the image
                x_adv = x
        with net.recording_membranes() as traces:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if x_adv is not None:
                loss = loss + self.adversarial_weight * F.cross_entropy(model(x_adv), y)
        penalty = threshold_guarding_penalty(traces, self.delta)
        return loss + self.current_weight() * penalty, logits


FINETUNE_OBJECTIVES = ("robust_finetune", "distill", "adversarial_ce", "tgo")
"""The objectives ``robustsnn finetune`` accepts (``--objective``, ``finetune.objective``)."""


class Regularized(Objective):
    """An objective plus a weight penalty ``regularizer(model)`` (e.g. SNN-RAT's orthogonality)."""

    def __init__(self, base: Objective, regularizer: Regularizer) -> None:
        self.base = base
        self.regularizer = regularizer

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name

    @property
    def params(self) -> dict[str, Any]:
        label = getattr(self.regularizer, "name", None) or getattr(
            self.regularizer, "__name__", type(self.regularizer).__name__
        )
        return {**self.base.params, "regularizer": str(label)}

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        loss, logits = self.base(model, x, y, generator)
        return loss + self.regularizer(unwrap(model)), logits


class TimeStepDraw(Objective):
    """Latency-aware finetuning: every batch runs ``base`` (its adversary and its loss) with
    the spiking network at a number of time steps drawn uniformly from ``choices`` with the
    step generator (seeded: the same seed draws the same T sequence, and a resumed run repeats
    it); the network's own T is restored after every batch, so the model is saved and
    evaluated at the T it had (the checkpoint's, or the finetuning's ``T``). One choice draws
    nothing. ``draws`` counts the T values drawn so far.

    Under torchrun each rank draws from its own step stream, so the ranks of one global batch
    may run different T values (each rank's slice is still one draw).
    """

    def __init__(self, base: Objective, choices: Sequence[int]) -> None:
        values = list(choices) if not isinstance(choices, (str, bytes)) else []
        if not values or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in values
        ):
            raise UserError(
                f"T_choices must be a non-empty list of integers >= 1 (e.g. [4, 8]), got "
                f"{list(choices)!r}"
            )
        self.base = base
        self.choices = tuple(values)
        self.draws: Counter[int] = Counter()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name

    @property
    def params(self) -> dict[str, Any]:
        return {**self.base.params, "T_choices": list(self.choices)}

    def draw(self, generator: torch.Generator | None) -> int:
        """This batch's T."""
        if len(self.choices) == 1:
            chosen = self.choices[0]
        else:
            index = int(torch.randint(len(self.choices), (1,), generator=generator))
            chosen = self.choices[index]
        self.draws[chosen] += 1
        return chosen

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        net = unwrap(model)
        if not isinstance(net, SpikingNetwork):
            raise UserError(f"T_choices needs a spiking network, got {type(net).__name__}")
        previous = net.T
        net.T = self.draw(generator)
        try:
            return self.base(model, x, y, generator)
        finally:
            net.T = previous


def objective_chain(objective: Any) -> list[Any]:
    """``objective`` and the objectives it wraps (``.base`` of :class:`Regularized`,
    :class:`TimeStepDraw` and the finetuning wrappers), outermost first."""
    chain: list[Any] = []
    while objective is not None and all(objective is not seen for seen in chain):
        chain.append(objective)
        objective = getattr(objective, "base", None)
    return chain


def prepare_model(objective: Any, model: nn.Module) -> None:
    """Let an objective that changes the network it trains (TGO's noisy neurons) do so before
    training, so the change is trained with, saved and evaluated."""
    for part in objective_chain(objective):
        prepare = getattr(part, "prepare", None)
        if callable(prepare):
            prepare(model)


def objective_params(name: str) -> list[str]:
    """Names of the hyperparameters objective ``name`` accepts."""
    cls = OBJECTIVES.get(name)
    if not dataclasses.is_dataclass(cls):
        return []
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get(RUNTIME)]


def build_objective(
    name: str, *, regularizer: Regularizer | None = None, **params: Any
) -> Objective:
    """Build a registered objective; unknown names or parameters fail with the valid ones."""
    cls = OBJECTIVES.get(name)
    valid = objective_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(
            f"objective {name!r}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(valid) or '(none)'}"
        )
    objective = cls(**params)
    return Regularized(objective, regularizer) if regularizer is not None else objective
