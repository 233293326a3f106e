"""The records' margins and the close-call gate: on a linear model whose margins have a closed
form, the margin each record reports is exact, and a gated member attacks exactly the samples
whose closest call so far is within its fraction of the clean margin."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from robustsnn.attacks.base import Attack, Model
from robustsnn.attacks.registry import ATTACKS
from robustsnn.errors import UserError
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.evaluation.ensembles import Ensemble, Member, ensemble_from_spec

SEEN: list[Tensor] = []


class _Recorder(Attack):
    """Returns x unchanged and remembers which inputs it was asked to attack."""

    name = "test-recorder"

    def __init__(self, eps: float = 0.0) -> None:
        super().__init__(eps)

    def perturb(
        self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator, target: Tensor | None
    ) -> Tensor:
        SEEN.append(x.clone())
        return x.clone()


try:
    ATTACKS.add("test-recorder", _Recorder)
except ValueError:  # the module imported twice
    pass


def _linear() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """Two classes, logits (s, -s) with s = w . x + b: margin 2 s for label 0; FGSM at eps moves
    s by eps * ||w||_1 toward the boundary while no pixel clips."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    w = torch.tensor([0.5, -0.25, 0.25, 0.0])
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w, -w]))
        model[1].bias.zero_()
    # pixels in [0.3, 0.7] so eps <= 0.3 never clips; s spread over (0, 0.35]
    base = torch.full((10, 1, 2, 2), 0.5)
    shift = torch.linspace(0.02, 0.2, 10)
    x = base.clone()
    x.view(10, 4)[:, 0] += shift
    y = torch.zeros(10, dtype=torch.long)
    s = (x.view(10, 4) @ w).clone()
    return model, x, y, s


def test_records_carry_exact_clean_and_closest_margins() -> None:
    model, x, y, s = _linear()
    eps = 0.05
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=eps, ensemble=[{"attack": "fgsm"}], diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    l1 = 1.0  # ||w||_1
    for r, si in zip(result["records"], s.tolist(), strict=True):
        assert r["clean_margin"] == pytest.approx(2 * si, rel=1e-5)
        assert r["margin"] == pytest.approx(2 * (si - eps * l1), rel=1e-4, abs=1e-6)
        assert r["robust"] == (si - eps * l1 > 0)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6, 1.0])
def test_a_gated_member_attacks_exactly_the_close_calls(fraction: float) -> None:
    model, x, y, s = _linear()
    eps = 0.05
    SEEN.clear()
    ensemble = Ensemble(
        "gated",
        (Member("fgsm"), Member("test-recorder", close_call=fraction)),
    )
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=eps, ensemble=ensemble, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    reached = s - eps  # the FGSM example's s; margin 2 * reached, clean margin 2 * s
    standing = reached > 0
    expected = standing & (reached <= fraction * s)
    attacked = torch.cat(SEEN) if SEEN else torch.zeros(0, 1, 2, 2)
    assert attacked.shape[0] == int(expected.sum())
    # the recorder saw the clean images of exactly those samples
    assert torch.equal(attacked, x[expected])
    name = result["ensembles"]["gated"]["member_names"][1]
    assert name == f"test-recorder@close-{fraction:g}"


def test_close_call_in_specs_and_bad_values() -> None:
    ensemble = ensemble_from_spec([{"attack": "fgsm", "close_call": 0.25}])
    assert ensemble.members[0].close_call == 0.25
    assert ensemble.members[0].describe()["close_call"] == 0.25
    assert "close_call" not in Member("fgsm").describe()  # older fingerprints unchanged
    for bad in (-0.1, "half", True):
        with pytest.raises(UserError, match="close_call"):
            Member("fgsm", close_call=bad)  # type: ignore[arg-type]


def _covers(strong: Member, weak: Member) -> bool:
    """``strong`` runs the same attack through the same estimator at least as long, on at least
    the samples ``weak`` runs on (a looser or no close-call gate)."""
    if strong.attack != weak.attack or strong.estimator != weak.estimator:
        return False
    if weak.close_call is not None and strong.close_call is not None:
        if strong.close_call < weak.close_call:
            return False
    elif strong.close_call is not None:
        return False
    for key, default in (("init", "random"), ("loss", "ce"), ("first_step", 1.0)):
        if strong.params.get(key, default) != weak.params.get(key, default):
            return False  # another start or loss is another attack
    if weak.attack == "race":
        bigger = set(weak.params["estimators"]) <= set(strong.params["estimators"])
        return bigger and strong.params["steps"] >= weak.params["steps"]
    for key in ("steps", "n_iter", "n_queries", "n_target_classes", "restarts", "n_restarts"):
        if key in weak.params and strong.params.get(key, 1) < weak.params[key]:
            return False
    return True


def test_every_reliable_member_is_covered_by_the_escalation_level() -> None:
    """Escalating from `reliable` to `reliable-plus` never drops a kind of member: each of
    `reliable`'s members has one in `reliable-plus` with the same attack and estimator, at
    least its length and targets, on at least its samples."""
    from robustsnn.evaluation.ensembles import ENSEMBLES

    plus = ENSEMBLES.get("reliable-plus").members
    for member in ENSEMBLES.get("reliable").members:
        if member.attack == "race":
            races = [m for m in plus if m.attack == "race"]
            assert any(
                set(member.params["estimators"]) <= set(m.params["estimators"])
                and m.params["steps"] >= member.params["steps"]
                for m in races
            ), member.name
            continue
        assert any(_covers(m, member) for m in plus), member.name


STARTS: list[Tensor] = []


class _StartRecorder(Attack):
    """Returns x unchanged and remembers the start points it was given."""

    name = "test-start-recorder"
    supports_start = True
    wants_start = True  # type: ignore[assignment]

    def __init__(self, eps: float = 0.0) -> None:
        super().__init__(eps)

    def perturb(
        self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator, target: Tensor | None
    ) -> Tensor:
        assert self.given_start is not None
        STARTS.append(self.given_start.clone())
        return x.clone()


try:
    ATTACKS.add("test-start-recorder", _StartRecorder)
except ValueError:  # the module imported twice
    pass


def test_a_member_with_a_given_start_begins_at_each_samples_closest_call() -> None:
    """After FGSM (the closest call on a linear model: its own example, margin 2 (s - eps)), a
    member whose attack starts from a given point receives exactly the FGSM examples of the
    samples still standing; a random start's attack receives none."""
    model, x, y, s = _linear()
    eps = 0.05
    STARTS.clear()
    ensemble = Ensemble("warm", (Member("fgsm"), Member("test-start-recorder")))
    evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=eps, ensemble=ensemble, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    standing = (s - eps) > 0
    x_fgsm = (x - eps * torch.sign(model[1].weight[0]).view(1, 1, 2, 2)).clamp(0, 1)
    (given,) = STARTS
    assert given.shape[0] == int(standing.sum()) > 0
    assert torch.allclose(given, x_fgsm[standing], atol=1e-6)
    assert not torch.allclose(given, x[standing])  # not the clean images


def test_sapgd_from_a_given_start_begins_there() -> None:
    """SA-PGD with init='given' scores the given point first (the clean pass aside), then steps
    from it with the smaller first step; without a start point it refuses in one line, and an
    attack without start support refuses a start."""
    from robustsnn.attacks import SAPGD, build_attack

    model, x, y, s = _linear()
    eps = 0.05
    seen: list[Tensor] = []

    def spy(z: Tensor) -> Tensor:
        seen.append(z.detach().clone())
        return model(z)

    start = (x + 0.03).clamp(0, 1)
    attack = SAPGD(eps, steps=3, init="given", first_step=0.25)
    attack(spy, x, y, generator=torch.Generator().manual_seed(0), start=start)
    assert torch.allclose(seen[1], start)  # seen[0]: the clean pass
    step = (seen[2] - seen[1]).abs().amax()
    assert 0 < float(step) <= 0.25 * eps + 1e-7
    with pytest.raises(UserError, match="start points"):
        attack(model, x, y)
    with pytest.raises(UserError, match="one start point per image"):
        attack(model, x, y, start=start[:3])
    with pytest.raises(UserError, match="does not take a start point"):
        build_attack("fgsm", eps=eps)(model, x, y, start=start)
    with pytest.raises(UserError, match="first_step"):
        SAPGD(eps, first_step=0.0)
    assert "init" not in SAPGD(eps).params()  # earlier logs read as before


def test_reliable_v3_is_reliable_v2_then_the_warm_start_round() -> None:
    """`reliable-v3` runs `reliable-v2`'s members first, the same members in the same order (so
    the same seeds and targets: every break of `reliable-v2` stands), then the warm-start
    round, whose members all start at the closest call."""
    from robustsnn.evaluation.ensembles import ENSEMBLES

    new = ENSEMBLES.get("reliable-v3").members
    v2 = ENSEMBLES.get("reliable-v2").members
    assert new[: len(v2)] == v2
    warm = new[len(v2) :]
    assert warm and all(m.params.get("init") == "given" for m in warm)
    assert all(m.close_call is not None for m in warm)  # only where the attacks came close


def test_reliable_v5_is_reliable_v4_then_the_boundary_restarts() -> None:
    """`reliable-v5` runs every member of `reliable-v4` first, in its order (every `reliable-v4`
    break stands), then SA-PGD-300 from 2 fresh starts through each ASSG anchor, only where
    the attacks came within 0.5 of the clean margin."""
    from robustsnn.evaluation.ensembles import ANCHOR_ESTIMATORS, CLOSE_CALL_LOOSE, ENSEMBLES

    new = ENSEMBLES.get("reliable-v5").members
    v4 = ENSEMBLES.get("reliable-v4").members
    assert new[: len(v4)] == v4
    extra = new[len(v4) :]
    assert [m.estimator for m in extra] == list(ANCHOR_ESTIMATORS)
    for member in extra:
        assert member.attack == "sapgd" and member.close_call == CLOSE_CALL_LOOSE
        assert member.params == {"steps": 300, "restarts": 2}
    assert len({m.name for m in new}) == len(new)  # new names: seeds of their own
    plus = ENSEMBLES.get("reliable-plus-v3").members
    assert plus[: len(ENSEMBLES.get("reliable-plus-v2").members)] == (
        ENSEMBLES.get("reliable-plus-v2").members
    )


def test_reliable_v4_is_reliable_v1_then_the_adaptive_rounds() -> None:
    """`reliable-v4` runs every member of `reliable-v1` first, in its order (the same seeds on
    the same standing samples: every `reliable-v1` break stands), then a race through the
    estimators v1 lacks, the close-call budget and the warm-start round (`reliable-v3`'s)."""
    from robustsnn.evaluation.ensembles import ENSEMBLES

    new = ENSEMBLES.get("reliable-v4").members
    v1 = ENSEMBLES.get("reliable-v1").members
    v3 = ENSEMBLES.get("reliable-v3").members
    assert new[: len(v1)] == v1
    race = new[len(v1)]
    assert race.attack == "race" and race.close_call is None
    assert not set(race.params["estimators"]) & {m.estimator for m in v1}  # only what v1 lacks
    rest = new[len(v1) + 1 :]
    assert rest == tuple(m for m in v3 if m.close_call is not None)  # close calls, warm round


def test_reliable_v6_is_reliable_v5_then_the_wide_close_call_round() -> None:
    """`reliable-v6` runs every member of `reliable-v5` first, in its order (every v5 break
    stands), then APGD-DLR-300 and SA-PGD-300 (reset detached) through the threshold-relative
    width 0.5 within 0.75 of the clean margin, under names of their own; `reliable-plus-v4` is
    its v3 with the same round appended."""
    from robustsnn.evaluation.ensembles import CLOSE_CALL_LOOSE, CLOSE_CALL_WIDE, ENSEMBLES

    new = ENSEMBLES.get("reliable-v6").members
    v5 = ENSEMBLES.get("reliable-v5").members
    assert new[: len(v5)] == v5
    extra = new[len(v5) :]
    assert [(m.attack, m.estimator) for m in extra] == [
        ("apgd-dlr", "bptt-rel-pcw-0.5"),
        ("sapgd", "bptt-rel-pcw-0.5-dr"),
    ]
    assert all(m.close_call == CLOSE_CALL_WIDE > CLOSE_CALL_LOOSE for m in extra)
    assert len({m.name for m in new}) == len(new)
    plus = ENSEMBLES.get("reliable-plus-v4").members
    plus_v3 = ENSEMBLES.get("reliable-plus-v3").members
    assert plus == (*plus_v3, *extra)
    assert not {m.name for m in extra} & {m.name for m in plus_v3}  # seeds of their own


def test_reliable_is_reliable_v6_then_the_mixed_width_round() -> None:
    """`reliable` (v7, also reachable as `reliable-v7`) runs every member of `reliable-v6`
    first, in its order (every v6 break stands), then SA-PGD-300 through 8 draws of per-layer
    threshold-relative widths, each within 0.5 of the clean margin, under names of their own;
    `reliable-plus` is its v4 with the same round appended, so escalating never drops it."""
    from robustsnn.evaluation.ensembles import CLOSE_CALL_LOOSE, ENSEMBLES, MIXED_WIDTH_DRAWS
    from robustsnn.snn.estimators import MixedWidthBPTT, parse_estimator

    new = ENSEMBLES.get("reliable").members
    assert ENSEMBLES.get("reliable-v7").members == new
    v6 = ENSEMBLES.get("reliable-v6").members
    assert new[: len(v6)] == v6
    extra = new[len(v6) :]
    assert len(extra) == MIXED_WIDTH_DRAWS == 8
    estimators = [parse_estimator(m.estimator or "") for m in extra]
    assert estimators == [MixedWidthBPTT(0.25, 1.0, d) for d in range(8)]
    for member in extra:
        assert member.attack == "sapgd" and member.params == {"steps": 300}
        assert member.close_call == CLOSE_CALL_LOOSE
    assert len({m.name for m in new}) == len(new)
    plus = ENSEMBLES.get("reliable-plus").members
    plus_v4 = ENSEMBLES.get("reliable-plus-v4").members
    assert plus == (*plus_v4, *extra)
    assert not {m.name for m in extra} & {m.name for m in plus_v4}
