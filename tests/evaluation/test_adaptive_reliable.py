"""The adaptive `reliable` (a race over estimators): on an SNN whose breaks need a narrow
surrogate it breaks what `reliable-v1` misses; killed in the middle of a race, a rerun gives the
records of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from evaluation_test_utils import images, labels_of, strip_seconds, tiny_mlp, tiny_snn
from torch import nn

from robustsnn.attacks import sapgd
from robustsnn.evaluation import STATE_FILE, EvaluationConfig, EvaluationContext, evaluate
from robustsnn.evaluation.ensembles import ENSEMBLES, Ensemble, Member
from robustsnn.evaluation.views import eval_mode, member_view
from robustsnn.snn import SpikingNetwork
from robustsnn.snn.neuron import SpikingNeuron

EPS = 0.1


def narrow_width_snn(far_weight: float = 20.0) -> SpikingNetwork:
    """Two IF neurons (threshold 1, initial membrane -2, T 4) read the mean pixel m of a
    16-pixel image; label 0 holds until neuron A fires.

    - A: current 0.725 + 0.27 (m - 0.5): at m = 0.5 its membrane reaches 0.9 at the last step;
      it fires only if m rises by 0.093 or more, 93% of what eps = 0.1 allows.
    - B: current 0.65 - 0.25 (m - 0.5): never fires anywhere in the eps-ball (its membrane
      stays below 0.7), but its readout weight is ``far_weight``.

    Every surrogate wide enough to see B (threshold-relative PCW 1, ASSG, PDSG: B's membrane
    spreads over -1.35..0.6), and the rate- and ANN-based estimators (B's current is positive),
    follow B's large weight and lower m, away from the break; a narrow surrogate
    (threshold-relative width 0.25 or 0.125) sees only A and raises m: one step to the corner.
    Black-box search sees a flat margin until A fires.
    """
    lin, out = nn.Linear(16, 2), nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.full((16,), 0.27 / 16), torch.full((16,), -0.25 / 16)]))
        lin.bias.copy_(torch.tensor([0.725 - 0.27 * 0.5, 0.65 + 0.25 * 0.5]))
        out.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, far_weight]]))
        out.bias.copy_(torch.tensor([1 / 8, 0.0]))
    neuron = SpikingNeuron(threshold=1.0, reset="soft", v_init=-2.0)
    return SpikingNetwork(nn.Sequential(nn.Flatten(), lin, neuron, out), T=4).eval()


def _mean_half_images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.02 * (torch.rand(n, 1, 4, 4, generator=g) - 0.5)
    return x - x.mean((1, 2, 3), keepdim=True) + 0.5  # mean pixel exactly 0.5


def test_reliable_breaks_what_reliable_v1_misses_on_a_narrow_width_model() -> None:
    snn = narrow_width_snn()
    x = _mean_half_images(4)
    y = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        assert bool((snn(x).argmax(1) == 0).all())
        assert bool((snn((x + EPS).clamp(0, 1)).argmax(1) == 1).all())  # the corner breaks
    quiet = EvaluationContext(quiet=True)
    old = evaluate(snn, x, y, EvaluationConfig(EPS, "reliable-v1", diagnostics="none"), quiet)
    new = evaluate(snn, x, y, EvaluationConfig(EPS, "reliable", diagnostics="none"), quiet)
    old_broken = {r["index"] for r in old["records"] if not r["robust"]}
    new_broken = {r["index"] for r in new["records"] if not r["robust"]}
    assert old_broken <= new_broken == {0, 1, 2, 3}
    assert len(old_broken) < 4  # v1 misses at least one (its gradient members miss all)
    gradient_members = [
        m for m in old["ensembles"]["reliable-v1"]["broken_by"] if "square" not in m
    ]
    assert all(old["ensembles"]["reliable-v1"]["broken_by"][m] == 0 for m in gradient_members)
    # `reliable` runs v1's members first (same seeds): they break what v1 broke (Square, by
    # chance), and the race through the narrow widths v1 lacks breaks the rest
    by = new["ensembles"]["reliable"]["broken_by"]
    assert {m: by[m] for m in old["ensembles"]["reliable-v1"]["broken_by"]} == dict(
        old["ensembles"]["reliable-v1"]["broken_by"]
    )
    member = next(m for m in ENSEMBLES.get("reliable").members if m.attack == "race")
    assert by[member.name] == 4 - len(old_broken) >= 1
    attack = member.build(EPS)
    with eval_mode(snn):
        attack(member_view(snn, member.estimator, attack), x, y)
    assert attack.last_winners == [None] * 4  # on all 4, broken within the race
    assert attack.last_rounds[0]["bptt-rel-pcw-0.25"] >= 1


CHEAP_RACE = Member(
    "race",
    "bptt-rel-pcw-1",
    {
        "estimators": ["bptt-rel-pcw-1", "bptt-rel-pcw-0.25", "assg-atan-0.425-dr", "ann-proxy"],
        "steps": 12,
        "checkpoints": [3, 6],
        "keep": [2, 1],
        "finisher_iter": 4,
        "finisher_targets": 2,
    },
    label="cheap-race",
)


class Killed(Exception):
    pass


def _run(state_dir: Path | None) -> dict:  # type: ignore[type-arg]
    x = images(12)
    return evaluate(
        tiny_snn(),
        x,
        labels_of(tiny_mlp(), x),
        EvaluationConfig(
            eps=0.06,
            ensemble=Ensemble("cheap", (CHEAP_RACE, Member("square", None, {"n_queries": 20}))),
            batch_size=4,
            seed=5,
            diagnostics="none",
        ),
        EvaluationContext(state_dir=state_dir, quiet=True),
    )


def test_killed_mid_race_a_rerun_gives_identical_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _run(None)
    assert 0 < sum(r["robust"] for r in reference["records"]) < 12  # a test that can tell
    calls = {"n": 0}
    advance = sapgd.SAPGDRun.advance

    def dying(self: sapgd.SAPGDRun, until: int) -> None:
        calls["n"] += 1
        if calls["n"] == 15:  # inside the second batch's race
            raise Killed
        advance(self, until)

    monkeypatch.setattr(sapgd.SAPGDRun, "advance", dying)
    with pytest.raises(Killed):
        _run(tmp_path)
    saved = json.loads((tmp_path / STATE_FILE).read_text())["batches"]
    assert 1 <= len(saved) < 3  # killed inside a later batch's race, after a finished one
    monkeypatch.setattr(sapgd.SAPGDRun, "advance", advance)
    resumed = _run(tmp_path)
    assert strip_seconds(resumed) == strip_seconds(reference)


def _gradient_checked(snn: object) -> list[str]:
    """The estimators the masking checks' gradient check covered on the cheap race."""
    from robustsnn.evaluation import DiagnosticsConfig

    x = images(8)
    result = evaluate(
        snn,
        x,
        labels_of(tiny_mlp(), x),
        EvaluationConfig(
            eps=0.06,
            ensemble=Ensemble("cheap", (CHEAP_RACE,)),
            diagnostics=DiagnosticsConfig(
                n=4, square_queries=10, base_steps=2, convergence_factor=2
            ),
        ),
        EvaluationContext(quiet=True),
    )
    return list(result["diagnostics"]["finite_gradients"]["estimators"])


def test_the_gradient_check_covers_every_race_candidate() -> None:
    checked = _gradient_checked(tiny_snn())
    assert set(CHEAP_RACE.params["estimators"]) <= set(checked)


def test_the_gradient_check_skips_candidates_the_model_cannot_run() -> None:
    snn = tiny_snn()
    # as a wrapped framework model says of HART
    snn.unsupported_estimator = (  # type: ignore[assignment]
        lambda e: "cannot" if e.name == "bptt-rel-pcw-0.25" else None
    )
    checked = _gradient_checked(snn)
    assert "bptt-rel-pcw-0.25" not in checked and "assg-atan-0.425-dr" in checked
