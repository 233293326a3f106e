"""`reliable`'s mixed-width round (issue 30, seventh design): on an SNN whose break needs a wide
surrogate in its first spiking layer and a narrow one in its second, every uniform width and
every member of `reliable-v6` fails, and a draw of per-layer widths breaks it."""

from __future__ import annotations

import torch
from torch import nn

from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.evaluation.ensembles import ENSEMBLES, Ensemble, Member
from robustsnn.snn import SpikingNetwork
from robustsnn.snn.estimators import MixedWidthBPTT
from robustsnn.snn.neuron import SpikingNeuron

EPS = 0.1
PIXELS = 64


def layer_specific_snn(far_weight: float = 20.0) -> SpikingNetwork:
    """Two IF layers (threshold 1, soft reset, initial membrane -2, T 4: only the last step's
    membrane ``-2 + 4 c`` comes near the threshold) read the mean pixel m of an 8x8 image
    (clean m = 0.5); label 0 holds until A fires. Distances are ``|h - theta| / theta`` at
    the last step on the clean image.

    Layer 1 (spiking layer ``"2"``):
    - R: slope 1.3 per unit of m, distance 0.45; fires once m rises by 0.087 (87% of eps).
    - D (decoy): distance 0.05, slope -0.02; never fires in the eps-ball.
    - E: slope -2.19, distance 0.7; fires once m falls by 0.08 (the near miss below).
    Layer 2 (spiking layer ``"4"``):
    - A = R + D relay at distance 0.1: fires when R fires (the break: logit 1 gains 1/4).
    - B = -R at distance 0.4, readout weight ``far_weight`` to logit 1: never fires.
    - F = E relay at distance 0.1, readout 0.4: when E fires, the margin falls from 1/8 to
      1/40 (a close call, 0.2 of the clean margin) and nothing breaks.

    The input gradient's sign follows the widths: a layer-1 width below 0.45 sees D but not R
    (down); a layer-2 width above 0.4 sees B's large weight (down); only a wide first layer
    (> 0.45, < 0.7) with a narrow second (< 0.4) points up, to the break. No uniform width
    does both. Every attack that goes down ends at E's near miss, so the close-call rounds
    run; black-box search sees a flat margin upwards.
    """
    k_r, k_d, k_e = 1.3, -0.02, -2.19
    lin1, lin2, out = nn.Linear(PIXELS, 3), nn.Linear(3, 3), nn.Linear(3, 2)
    with torch.no_grad():
        lin1.weight.copy_(torch.stack([torch.full((PIXELS,), k / PIXELS) for k in (k_r, k_d, k_e)]))
        lin1.bias.copy_(torch.tensor([0.6375 - k_r / 2, 0.7375 - k_d / 2, 0.575 - k_e / 2]))
        lin2.weight.copy_(torch.tensor([[0.2, 0.2, 0.0], [-0.2, 0.0, 0.0], [0.0, 0.0, 0.2]]))
        lin2.bias.copy_(torch.tensor([0.725, 0.65, 0.725]))
        out.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, far_weight, 0.4]]))
        out.bias.copy_(torch.tensor([1 / 8, 0.0]))

    def neuron() -> SpikingNeuron:
        return SpikingNeuron(threshold=1.0, reset="soft", v_init=-2.0)

    body = nn.Sequential(nn.Flatten(), lin1, neuron(), lin2, neuron(), out)
    return SpikingNetwork(body, T=4).eval()


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.02 * (torch.rand(n, 1, 8, 8, generator=g) - 0.5)
    return x - x.mean((1, 2, 3), keepdim=True) + 0.5  # mean pixel exactly 0.5


def _run(snn: SpikingNetwork, x: torch.Tensor, ensemble: str | Ensemble) -> dict:  # type: ignore[type-arg]
    y = torch.zeros(x.shape[0], dtype=torch.long)
    config = EvaluationConfig(EPS, ensemble, diagnostics="none")
    return evaluate(snn, x, y, config, EvaluationContext(quiet=True))


def test_the_construction_breaks_only_upwards_and_comes_close_downwards() -> None:
    snn, x = layer_specific_snn(), _images(3)
    with torch.no_grad():
        assert snn(x).argmax(1).tolist() == [0, 0, 0]
        assert snn(x + 0.085).argmax(1).tolist() == [0, 0, 0]
        assert snn(x + 0.09).argmax(1).tolist() == [1, 1, 1]
        low = snn(x - EPS)
        torch.testing.assert_close(low[:, 0] - low[:, 1], torch.full((3,), 1 / 40))
    # the draw the round breaks it with: wide first layer, narrow second
    draw = MixedWidthBPTT(0.25, 1.0, 0)
    assert 0.45 < draw.width("2") < 0.7 and draw.width("4") < 0.4


def test_uniform_widths_fail_and_the_mixed_width_round_breaks_it() -> None:
    snn, x = layer_specific_snn(), _images(3)
    uniform = Ensemble(
        "uniform",
        tuple(
            Member("sapgd", f"bptt-rel-pcw-{w:g}", {"steps": 100})
            for w in (0.125, 0.25, 0.4, 0.5, 0.6, 1.0, 2.0)
        ),
    )
    assert all(r["robust"] for r in _run(snn, x, uniform)["records"])
    new = _run(snn, x, "reliable")["records"]
    # `reliable` runs v6 whole and first: what its v6 members leave standing is what v6 leaves
    round_names = {m.name for m in ENSEMBLES.get("reliable").members[-8:]}
    v6_broken = [r for r in new if not r["robust"] and r["broken_by"] not in round_names]
    by_round = [r for r in new if not r["robust"] and r["broken_by"] in round_names]
    assert all(not r["robust"] for r in new)  # every sample broken
    assert by_round and len(by_round) + len(v6_broken) == 3
    # v6's only breaks, if any, are black-box luck (a flat margin upwards), never a gradient
    assert all(r["broken_by"].startswith("square") for r in v6_broken)
    assert {r["broken_by"] for r in by_round} == {"sapgd[steps=300]/bptt-mix-0.25-1-0@close-0.5"}


def test_the_appended_round_does_not_move_the_late_line_of_escalation() -> None:
    """`--escalate` moves up when members in the second half of the ensemble still break
    samples. Appending 8 members would move that line by 4 and turn breaks of v6's members 15-18
    (close-call APGD-DLR-300, restarted SA-PGD-300) into early ones: a weaker trigger. `reliable`
    names v6's line (`late_from`), the result carries it, and `late_breaks` counts from it."""
    from robustsnn.evaluation.escalate import late_breaks

    v6 = ENSEMBLES.get("reliable-v6").members
    v7 = ENSEMBLES.get("reliable")
    names = v7.names()
    line = len(v6) // 2
    assert v7.late_from == names[line] and ENSEMBLES.get("reliable-v6").late_from is None
    assert (
        ENSEMBLES.get("reliable-plus").late_from
        == ENSEMBLES.get("reliable-plus-v4").names()[len(ENSEMBLES.get("reliable-plus-v4")) // 2]
    )
    summary = {"member_names": names, "broken_by": {names[line]: 2, names[-1]: 1}}
    assert late_breaks({"ensembles": {"reliable": summary}}) == 1  # the fraction alone: weaker
    with_line = {"ensembles": {"reliable": {**summary, "late_from": v7.late_from}}}
    assert late_breaks(with_line) == 3
    # the result of an evaluation carries the line; a preset without one keeps its output
    snn, x = layer_specific_snn(), _images(1)
    members = (Member("fgsm", "bptt-rel-pcw-1"), Member("pgd", "bptt-rel-pcw-0.5", {"steps": 2}))
    marked = Ensemble("marked", members, late_from=members[1].name)
    assert _run(snn, x, marked)["ensembles"]["marked"]["late_from"] == members[1].name
    assert "late_from" not in _run(snn, x, Ensemble("plain", members))["ensembles"]["plain"]
