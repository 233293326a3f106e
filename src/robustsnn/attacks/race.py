"""A per-sample race of one attack through many views of a model (successive halving).

Which gradient estimator (surrogate shape and width, per layer) attacks an SNN best differs
between models and between samples of one model; a fixed list either misses the winner or pays
for every loser on every sample. The race gives every candidate view a few iterations of SA-PGD
on every sample, then per sample keeps only the best few (by the margin of the *real* model at
each candidate's best point so far) and continues those, and so on (successive halving,
Jamieson & Talwalkar 2016; Hyperband, Li et al. 2017)::

    all candidates:   iterations [0, checkpoints[0])
    best keep[0]:     iterations [checkpoints[0], checkpoints[1])
    ...
    best keep[-1]:    iterations [checkpoints[-1], steps)

Every candidate runs one SA-PGD trajectory with the schedule of ``steps`` iterations
(:class:`~robustsnn.attacks.sapgd.SAPGDRun`), paused and resumed between rounds, so a candidate
that wins every round walks exactly the trajectory of SA-PGD-``steps`` through its view. A
sample that the real model misclassifies at any candidate's point is broken and leaves every
candidate. Optionally a *finisher* then attacks each standing sample through its winning view:
targeted APGD (DLR) over ``finisher_targets`` runner-up classes.

Limit (by design, and what the gap benchmark measures): a candidate that starts slowly and is
strong only late can be dropped at a checkpoint; ``keep`` and ``checkpoints`` trade that risk
against cost.

The model is a :class:`ViewSet`: the candidate views by name (any ``x -> logits`` callables)
and the real model, which alone decides what counts as broken. Attacks never import spiking
code; the evaluation builds the view set from gradient estimators.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    Attack,
    Model,
    WorstCase,
    check_positive_int,
    predict_logits,
)
from robustsnn.attacks.losses import get_loss
from robustsnn.attacks.registry import ATTACKS, build_attack
from robustsnn.attacks.sapgd import SAPGD, SAPGDRun
from robustsnn.errors import UserError


@dataclass
class ViewSet:
    """Candidate views of one model (name -> ``x -> logits``) and its real forward pass.

    Calling a view set calls the real model, so any code that treats it as a model (input
    checks, black-box fallbacks) sees the real logits.
    """

    views: dict[str, Model]
    real: Model
    left_out: dict[str, str] = field(default_factory=dict)

    def __call__(self, x: Tensor) -> Tensor:
        return self.real(x)


def real_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per sample: below 0 (or a tie lost) means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -math.inf)
    return true - other.amax(1)


@ATTACKS.register("race")
class Race(Attack):
    """SA-PGD through every candidate view, successively halved per sample, then a finisher.

    Args:
        eps: L-inf radius in pixels.
        estimators: the candidate views' names (keys of the :class:`ViewSet`), in a fixed order
            (ties in the ranking go to the earlier one).
        steps: SA-PGD iterations of a candidate that wins every round (its schedule's length).
        checkpoints: iterations after which the candidates are ranked, increasing, < steps.
        keep: candidates kept per sample after each checkpoint, non-increasing, >= 1.
        finisher_iter: APGD-T iterations per target through the winning view (0: no finisher).
        finisher_targets: runner-up classes the finisher targets.
        starts: random starts per view and loss: at a sample the attacks nearly break, whether
            a run breaks it depends on its start, so racing several starts buys that lottery's
            tickets for a few iterations each instead of whole restarts.
        losses: SA-PGD losses per view (``"ce"``, ``"dlr"``: DLR is invariant to the logits'
            scale, so it moves where cross-entropy saturates).

    The candidates are every (view, loss, start) in that nesting order; with one loss and one
    start a candidate is named by its view alone, otherwise ``view/loss#start``.
    """

    param_names = (
        "eps",
        "estimators",
        "steps",
        "checkpoints",
        "keep",
        "finisher_iter",
        "finisher_targets",
        "starts",
        "losses",
    )

    def __init__(
        self,
        eps: float,
        estimators: Sequence[str] = (),
        steps: int = 100,
        checkpoints: Sequence[int] = (8, 30),
        keep: Sequence[int] = (4, 2),
        finisher_iter: int = 0,
        finisher_targets: int = 3,
        starts: int = 1,
        losses: Sequence[str] = ("ce",),
    ) -> None:
        super().__init__(eps)
        self.estimators = tuple(str(e) for e in estimators)
        self.steps = check_positive_int(steps, "race steps")
        self.checkpoints = tuple(int(c) for c in checkpoints)
        self.keep = tuple(int(k) for k in keep)
        if len(self.checkpoints) != len(self.keep):
            raise UserError(
                f"race: checkpoints {list(self.checkpoints)} and keep {list(self.keep)} need "
                "one entry each per round"
            )
        if any(
            b <= a
            for a, b in zip((0, *self.checkpoints), (*self.checkpoints, self.steps), strict=True)
        ):
            raise UserError(
                f"race: checkpoints {list(self.checkpoints)} must increase strictly and stay "
                f"below steps ({self.steps})"
            )
        if any(k < 1 for k in self.keep) or any(
            b > a for a, b in zip(self.keep, self.keep[1:], strict=False)
        ):
            raise UserError(f"race: keep {list(self.keep)} must be >= 1 and non-increasing")
        self.finisher_iter = check_positive_int(finisher_iter, "race finisher_iter", minimum=0)
        self.finisher_targets = check_positive_int(finisher_targets, "race finisher_targets")
        self.starts = check_positive_int(starts, "race starts")
        self.losses = tuple(str(loss) for loss in losses)
        if not self.losses:
            raise UserError("race: losses needs at least one of 'ce', 'dlr'")
        for loss in self.losses:
            get_loss(loss)  # one clear line for an unknown loss
        self.name = "race"
        #: per candidate, samples it was still racing on after each round (for tests and logs)
        self.last_rounds: list[dict[str, int]] = []
        #: per sample of the last call, the winning candidate (None where broken in the race)
        self.last_winners: list[str | None] = []

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        del target
        views = _views_of(model, self.estimators)
        real = model.real if isinstance(model, ViewSet) else model
        candidates = self._candidates(list(views))
        names = list(candidates)
        n, device = x.shape[0], x.device
        # one generator per candidate, drawn in a fixed order from the call's generator
        seeds = torch.randint(0, 2**62, (len(names) + 1,), generator=generator).tolist()
        generators = {}
        for name, seed in zip(names, seeds, strict=False):
            g = torch.Generator(device=generator.device)
            g.manual_seed(int(seed))
            generators[name] = g
        sapgd = SAPGD(self.eps, steps=self.steps)
        # a sample the real model already misclassifies comes back unchanged
        broken = predict_logits(real, x).argmax(1) != y
        x_out = x.clone()
        out_margin = torch.full((n,), math.inf, device=device)
        # per candidate: its best point per sample and whether it may still run there
        bests = {c: WorstCase(x, torch.zeros(n, dtype=torch.bool, device=device)) for c in names}
        active = {c: torch.ones(n, dtype=torch.bool, device=device) for c in names}
        margins = torch.full((len(names), n), math.inf, device=device)
        runs: dict[str, SAPGDRun] = {}
        self.last_rounds = []
        ends = (*self.checkpoints, self.steps)
        for r, until in enumerate(ends):
            counts: dict[str, int] = {}
            for ci, c in enumerate(names):
                run = runs.get(c)
                if run is None:
                    idx = (active[c] & ~broken).nonzero().squeeze(1)
                    if idx.numel() == 0:
                        continue
                    view, loss = candidates[c]
                    run = SAPGDRun(
                        sapgd, views[view], x, y, idx, bests[c], get_loss(loss), generators[c]
                    )
                    runs[c] = run
                else:
                    at = run.positions()
                    run.retain(active[c][at] & ~broken[at])
                ran = run.positions()
                counts[c] = int(ran.numel())
                if counts[c]:
                    run.advance(until)
                # judge with the real model the best points this round moved (elsewhere this
                # candidate's best point, margin and verdict are those of an earlier round)
                seen = ran[~broken[ran]]
                if seen.numel() == 0:
                    continue
                logits = predict_logits(real, bests[c].x[seen])
                margin = real_margin(logits, y[seen])
                fooled = logits.argmax(1) != y[seen]
                margins[ci, seen] = margin
                hit = seen[fooled]
                broken[hit] = True
                x_out[hit] = bests[c].x[hit]
                better = margin < out_margin[seen]
                x_out[seen[better & ~fooled]] = bests[c].x[seen[better & ~fooled]]
                out_margin[seen[better]] = margin[better]
                # a candidate whose own view was fooled (ANN proxy) stops there
                active[c][seen] &= ~bests[c].done[seen]
            self.last_rounds.append(counts)
            if r < len(self.keep):
                self._halve(names, margins, active, broken, self.keep[r])
        standing = (~broken).nonzero().squeeze(1)
        winners: list[str | None] = [None] * n
        if standing.numel():
            best_candidate = margins[:, standing].argmin(0)
            for position, ci in zip(standing.tolist(), best_candidate.tolist(), strict=True):
                winners[position] = names[ci]
        self.last_winners = winners
        if self.finisher_iter > 0 and standing.numel():
            winning = {c: views[candidates[c][0]] for c in names}
            self._finish(winning, real, x, y, standing, winners, generators, x_out, broken)
        return x_out

    def _candidates(self, views: list[str]) -> dict[str, tuple[str, str]]:
        """Candidate name -> (view, loss), every view x loss x start in that order."""
        if self.starts == 1 and self.losses == ("ce",):
            return {v: (v, "ce") for v in views}
        return {
            f"{v}/{loss}#{j}": (v, loss)
            for v in views
            for loss in self.losses
            for j in range(self.starts)
        }

    def _halve(
        self,
        names: list[str],
        margins: Tensor,
        active: Mapping[str, Tensor],
        broken: Tensor,
        keep: int,
    ) -> None:
        """Per sample, keep the ``keep`` active candidates with the lowest real margin."""
        stacked = torch.stack([active[c] for c in names])  # [C, N]
        score = torch.where(stacked, margins, torch.full_like(margins, math.inf))
        k = min(keep, len(names))
        # stable order: ties go to the earlier candidate
        order = torch.sort(score, dim=0, stable=True).indices[:k]  # [k, N]
        chosen = torch.zeros_like(stacked)
        chosen.scatter_(0, order, True)
        chosen &= stacked & ~broken[None, :]
        for ci, c in enumerate(names):
            active[c].copy_(chosen[ci])

    def _finish(
        self,
        views: Mapping[str, Model],
        real: Model,
        x: Tensor,
        y: Tensor,
        standing: Tensor,
        winners: list[str | None],
        generators: Mapping[str, torch.Generator],
        x_out: Tensor,
        broken: Tensor,
    ) -> None:
        """Targeted APGD through each standing sample's winning view."""
        targets = self.finisher_targets
        finisher = build_attack(
            "apgd-t", eps=self.eps, n_iter=self.finisher_iter, n_target_classes=targets
        )
        for c in views:
            rows = torch.tensor(
                [p for p in standing.tolist() if winners[p] == c], dtype=torch.long
            ).to(x.device)
            if rows.numel() == 0:
                continue
            x_adv = finisher(views[c], x[rows], y[rows], generator=generators[c])
            fooled = predict_logits(real, x_adv).argmax(1) != y[rows]
            x_out[rows[fooled]] = x_adv[fooled]
            broken[rows[fooled]] = True


def _views_of(model: Model, estimators: Sequence[str]) -> dict[str, Model]:
    """The candidate views, in the race's order (a plain model: one candidate, itself)."""
    if not isinstance(model, ViewSet):
        return {"model": model}
    if not estimators:
        return dict(model.views)
    views = {e: model.views[e] for e in estimators if e in model.views}
    if not views:
        raise UserError(
            f"race: none of the candidates {list(estimators)} is a view of this model "
            f"(views: {sorted(model.views)})"
        )
    return views
