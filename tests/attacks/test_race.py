"""The race (per-sample successive halving over views): SA-PGD paused and resumed walks one
trajectory, one candidate is SA-PGD, the ranking follows the real model, the limit of dropping
a slow starter, determinism, and the argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from robustsnn.attacks import SAPGD, Race, ViewSet
from robustsnn.attacks.base import WorstCase, is_success, predict_logits
from robustsnn.attacks.losses import get_loss
from robustsnn.attacks.race import real_margin
from robustsnn.attacks.sapgd import SAPGDRun
from robustsnn.errors import UserError

EPS = 0.1


def _mlp(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _data(model: nn.Module, n: int = 24) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def test_sapgd_run_in_slices_walks_the_one_shot_trajectory() -> None:
    model = _mlp()
    x, y = _data(model)
    one = SAPGD(EPS, steps=40)
    x_one = one(model, x, y, generator=torch.Generator().manual_seed(1))
    best = WorstCase(x, is_success(predict_logits(model, x), y))
    run = SAPGDRun(
        one, model, x, y, best.remaining(), best, get_loss("ce"), torch.Generator().manual_seed(1)
    )
    for until in (3, 4, 17, 40, 60):
        run.advance(until)
    assert torch.equal(best.x, x_one)
    assert run.etas == one.last_etas and run.finished


def test_one_candidate_is_sapgd_through_it() -> None:
    model = _mlp(1)
    x, y = _data(model, 32)
    race = Race(0.2, estimators=("only",), steps=30, checkpoints=(5, 12), keep=(1, 1))
    x_race = race(ViewSet({"only": model}, real=model), x, y, generator=torch.Generator())
    # the race draws its candidate's generator from the call's generator: the first draw
    seed = int(torch.randint(0, 2**62, (2,), generator=torch.Generator()).tolist()[0])
    x_sapgd = SAPGD(0.2, steps=30)(model, x, y, generator=torch.Generator().manual_seed(seed))
    fooled_race = predict_logits(model, x_race).argmax(1) != y
    fooled_sapgd = predict_logits(model, x_sapgd).argmax(1) != y
    assert torch.equal(fooled_race, fooled_sapgd)
    assert 0 < int(fooled_race.sum()) < len(y)  # a test that can tell


class GradientOverride(nn.Module):
    """The real model's logits, with the gradient of class 1's logit replaced by ``direction``
    (``late`` after ``switch`` forward passes of an attack run): logits stay the real ones."""

    def __init__(
        self, real: nn.Module, direction: Tensor, late: Tensor | None = None, switch: int = 0
    ) -> None:
        super().__init__()
        self.real, self.direction, self.late, self.switch = real, direction, late, switch
        self.calls = 0

    def begin_attack_run(self, n: int) -> None:
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        d = self.late if self.late is not None and self.calls > self.switch else self.direction
        flat = x.flatten(1)
        push = (flat * (d - self.real.w)).sum(1)  # the real gradient of z1 is w
        z = self.real(x)
        return z + torch.stack([torch.zeros_like(push), push - push.detach()], 1)


class Linear2(nn.Module):
    """``z = [m, w.x]`` for 2 classes, label 0: broken iff ``w.(x - x0) > m - w.x0``."""

    def __init__(self, w: Tensor, m: Tensor) -> None:
        super().__init__()
        self.w, self.m = w, m

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.m.expand(x.shape[0]), (x.flatten(1) * self.w).sum(1)], 1)


def _slow_starter_problem() -> tuple[ViewSet, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    x0 = 0.3 + 0.4 * torch.rand(1, 1, 4, 4, generator=g)  # interior: the box never clips
    # breaking needs 70% of the largest possible increase, eps * |w|_1 (at x0 + eps * sign w)
    real = Linear2(w, (x0.flatten() * w).sum() + 0.7 * EPS * w.abs().sum())
    # decoy: the sign of w on the largest entries holding ~75% of |w|_1, the opposite on the
    # rest: its corner gains ~50% of the maximum, a good start and a dead end
    decoy = -w.clone()
    mass = 0.0
    for i in w.abs().argsort(descending=True).tolist():
        if mass >= 0.75 * float(w.abs().sum()):
            break
        decoy[i], mass = w[i], mass + float(w[i].abs())
    views = {
        "decoy": GradientOverride(real, decoy),
        "slow": GradientOverride(real, -w, late=w, switch=10),  # wrong way for 10 passes
    }
    x = x0.repeat(4, 1, 1, 1)  # four samples: four random starts
    return ViewSet(views, real=real), x, torch.zeros(4, dtype=torch.long)


def test_a_slow_starter_is_dropped_when_only_one_candidate_is_kept() -> None:
    """The race's limit, shown: a candidate whose first iterations go the wrong way (here for
    10 passes) ranks last at the first checkpoint; with ``keep`` 1 it is dropped and the decoy
    (a good start, a dead end) cannot break the samples; kept (``keep`` 2), it breaks them
    all, as SA-PGD through it alone does."""
    views, x, y = _slow_starter_problem()
    assert x.shape[0] >= 2
    real = views.real
    alone = SAPGD(EPS, steps=100)(views.views["slow"], x, y, generator=torch.Generator())
    assert bool((real(alone).argmax(1) != y).all())
    decoy = SAPGD(EPS, steps=100)(views.views["decoy"], x, y, generator=torch.Generator())
    assert not bool((real(decoy).argmax(1) != y).any())
    broken = {}
    for keep in (1, 2):
        race = Race(EPS, estimators=("decoy", "slow"), steps=100, checkpoints=(8,), keep=(keep,))
        x_adv = race(views, x, y, generator=torch.Generator())
        broken[keep] = int((real(x_adv).argmax(1) != y).sum())
        if keep == 1:
            assert race.last_rounds[1]["slow"] == 0  # dropped on every sample
    assert broken == {1: 0, 2: x.shape[0]}


def test_only_the_real_model_decides_and_the_race_repeats() -> None:
    model = _mlp(2)
    x, y = _data(model, 20)
    # a view with the real gradient whose logits lie: class 2 everywhere
    liar = nn.Sequential(model, nn.Linear(3, 3))
    with torch.no_grad():
        liar[1].weight.copy_(torch.eye(3) * 1e-6)
        liar[1].bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    views = ViewSet({"liar": liar, "real": model}, real=model)
    race = Race(0.02, estimators=("liar", "real"), steps=20, checkpoints=(4,), keep=(1,))
    first = race(views, x, y, generator=torch.Generator().manual_seed(3))
    winners = list(race.last_winners)
    again = race(views, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and winners == race.last_winners
    fooled = (model(first).argmax(1) != y).tolist()
    # a sample counts as broken (no winner left) exactly where the real model is fooled
    assert [w is None for w in winners] == fooled
    assert not all(fooled[i] for i in range(len(y)) if int(y[i]) != 2)  # the liar's word is not


@pytest.mark.parametrize(
    "kwargs",
    [
        {"checkpoints": (8, 30), "keep": (4,)},
        {"checkpoints": (30, 8), "keep": (4, 2)},
        {"checkpoints": (8, 100), "keep": (4, 2)},
        {"checkpoints": (8, 30), "keep": (2, 4)},
        {"checkpoints": (8,), "keep": (0,)},
    ],
)
def test_bad_schedules_are_one_line(kwargs: dict[str, object]) -> None:
    with pytest.raises(UserError, match="race"):
        Race(EPS, estimators=("a",), steps=100, **kwargs)  # type: ignore[arg-type]


def test_unknown_candidates_are_refused() -> None:
    model = _mlp()
    x, y = _data(model, 4)
    with pytest.raises(UserError, match="none of the candidates"):
        Race(EPS, estimators=("nope",), steps=10, checkpoints=(), keep=())(
            ViewSet({"real": model}, real=model), x, y
        )


def test_real_margin() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, 4.0], [1.0, 5.0, -1.0]])
    assert real_margin(logits, torch.tensor([0, 1, 0])).tolist() == [1.0, 0.0, -4.0]


def test_starts_and_losses_are_candidates_each_walking_its_own_sapgd() -> None:
    """With several starts and losses every (view, loss, start) is a candidate: keeping all of
    them, the race breaks exactly the union of the SA-PGD runs with the seeds it draws, in the
    documented order (view, then loss, then start)."""
    model = _mlp(3)
    x, y = _data(model, 32)
    race = Race(
        0.1,
        estimators=("only",),
        steps=10,
        checkpoints=(3, 6),
        keep=(4, 4),
        starts=2,
        losses=("ce", "dlr"),
    )
    x_race = race(ViewSet({"only": model}, real=model), x, y, generator=torch.Generator())
    assert list(race.last_rounds[0]) == ["only/ce#0", "only/ce#1", "only/dlr#0", "only/dlr#1"]
    seeds = torch.randint(0, 2**62, (5,), generator=torch.Generator()).tolist()[:4]
    union = torch.zeros_like(y, dtype=torch.bool)
    singles = []
    for seed, loss in zip(seeds, ("ce", "ce", "dlr", "dlr"), strict=True):
        x_one = SAPGD(0.1, steps=10, loss=loss)(
            model, x, y, generator=torch.Generator().manual_seed(int(seed))
        )
        fooled = predict_logits(model, x_one).argmax(1) != y
        singles.append(int(fooled.sum()))
        union |= fooled
    fooled_race = predict_logits(model, x_race).argmax(1) != y
    assert torch.equal(fooled_race, union)
    assert int(union.sum()) > max(singles)  # the extra starts and the DLR loss add breaks


def test_one_start_one_loss_names_candidates_by_view_alone() -> None:
    model = _mlp(2)
    x, y = _data(model, 8)
    race = Race(0.05, estimators=("a", "b"), steps=10, checkpoints=(3,), keep=(1,))
    race(ViewSet({"a": model, "b": model}, real=model), x, y, generator=torch.Generator())
    assert set(race.last_rounds[0]) <= {"a", "b"}
    with pytest.raises(UserError, match="loss"):
        Race(0.05, estimators=("a",), losses=("hinge",))
    with pytest.raises(UserError, match="losses"):
        Race(0.05, estimators=("a",), losses=())
