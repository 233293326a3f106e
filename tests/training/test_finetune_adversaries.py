"""Finetuning adversaries (spec parsing, seeded per-batch draws, fresh estimator state per run)
and the finetuning objectives against their closed forms on a toy network."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.conversion import convert
from robustsnn.data import to_float
from robustsnn.errors import UserError
from robustsnn.snn import SpikingNetwork
from robustsnn.training import build_objective
from robustsnn.training.adversaries import (
    AdversarySpec,
    FinetuneAdversary,
    parse_adversary,
)

MIX = "pgd[steps=2]/bptt-rel-pcw-1+ann-proxy+bptr+assg-atan-0.425-dr"


# ----------------------------------------------------------------------------- parsing
def test_compact_mapping_and_yaml_forms_parse_to_the_same_spec():
    compact = parse_adversary(MIX)
    mapping = parse_adversary(
        {
            "attack": "pgd",
            "params": {"steps": 2},
            "estimator": ["bptt-rel-pcw-1", "ann-proxy", "bptr", "assg-atan-0.425-dr"],
        }
    )
    text = parse_adversary(
        "{attack: pgd, params: {steps: 2}, "
        "estimator: [bptt-rel-pcw-1, ann-proxy, bptr, assg-atan-0.425-dr]}"
    )
    assert compact == mapping == text
    assert compact.estimators == ("bptt-rel-pcw-1", "ann-proxy", "bptr", "assg-atan-0.425-dr")
    assert parse_adversary(compact.name) == compact  # the name is the compact form
    # canonical estimator names, and defaults filled in
    assert parse_adversary("sapgd/ann").estimators == ("ann-proxy",)
    assert parse_adversary("sapgd/ann").params == {"steps": 5}
    assert parse_adversary(None) == AdversarySpec("kl", ("bptt-pcw-1",), {"steps": 1})
    assert parse_adversary("kl", default_estimator="bptt-rel-pcw-1").estimators == (
        "bptt-rel-pcw-1",
    )


@pytest.mark.parametrize(
    "spec,message",
    [
        ("fab/bptr", "finetuning adversary attack"),
        ("pgd[stepz=3]/bptr", "unknown parameter"),
        ("pgd[steps=0]/bptr", "steps must be an integer"),
        ("pgd/nonsense", "unknown gradient estimator"),
        ("pgd[steps]/bptr", "needs k=v"),
        ({"attack": "pgd", "estimators": ["bptr"]}, "unknown key"),
        ("{attack: pgd, params: {steps: 3", "not valid YAML"),
    ],
)
def test_bad_adversary_specs_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message):
        parse_adversary(spec)


# ------------------------------------------------------------------------------ draws
def _draws(seed: int, n: int = 40) -> list[str]:
    adversary = FinetuneAdversary(parse_adversary(MIX), eps=0.1, alpha=0.01)
    generator = torch.Generator().manual_seed(seed)
    return [adversary.draw(generator).name for _ in range(n)]


def test_estimators_are_drawn_per_batch_from_the_seeded_generator():
    first, again, other = _draws(0), _draws(0), _draws(1)
    assert first == again  # same seed, same draws
    assert first != other
    assert set(first) == {"bptt-rel-pcw-1", "ann-proxy", "bptr", "assg-atan-0.425-dr"}
    # the draw is one randint on that generator: reproducible by hand
    generator = torch.Generator().manual_seed(0)
    names = parse_adversary(MIX).estimators
    by_hand = [names[int(torch.randint(4, (1,), generator=generator))] for _ in range(40)]
    assert first == by_hand


def test_a_single_estimator_draws_nothing_from_the_generator():
    adversary = FinetuneAdversary(parse_adversary("kl/bptt-pcw-1"), eps=0.1, alpha=0.01)
    generator = torch.Generator().manual_seed(5)
    before = generator.get_state()
    assert adversary.draw(generator).name == "bptt-pcw-1"
    assert torch.equal(before, generator.get_state())


# --------------------------------------------------------------------- fresh ASSG state
def _tiny_snn(toy_dataset, small_cnn) -> SpikingNetwork:
    images = to_float(toy_dataset.x_train)
    return convert(small_cnn(seed=1), images, T=3, calib_T=10, calib_batches=1, calib_batch_size=32)


def test_assg_state_starts_fresh_for_every_adversary_run(toy_dataset, small_cnn, monkeypatch):
    """Two adversary runs on the same batch with the same seed give the same x_adv: the ASSG
    moments of the first run do not reach the second (they would change its widths)."""
    snn = _tiny_snn(toy_dataset, small_cnn)
    x, y = to_float(toy_dataset.x_train[:8]), toy_dataset.y_train[:8]
    adversary = FinetuneAdversary(
        parse_adversary("pgd[steps=3]/assg-atan-0.425-dr"), eps=0.2, alpha=0.01
    )
    first = adversary(snn, x, y, torch.Generator().manual_seed(0))
    second = adversary(snn, x, y, torch.Generator().manual_seed(0))
    assert torch.equal(first, second)
    assert (first - x).abs().max() <= 0.2 + 1e-6 and (first - x).abs().max() > 0

    # and the state is really used within a run: a view that kept its moments across runs
    # (the bug this guards against) attacks differently the second time
    from robustsnn.snn.network import EstimatorView

    views: list[Any] = []
    original = SpikingNetwork.with_estimator

    def shared_view(self: SpikingNetwork, estimator: Any) -> nn.Module:
        if not views:
            views.append(original(self, estimator))
        return views[0]

    monkeypatch.setattr(SpikingNetwork, "with_estimator", shared_view)
    monkeypatch.setattr(EstimatorView, "begin_attack_run", lambda self, n=None: None)
    leaky_first = adversary(snn, x, y, torch.Generator().manual_seed(0))
    leaky_second = adversary(snn, x, y, torch.Generator().manual_seed(0))
    assert torch.equal(leaky_first, first)
    assert not torch.equal(leaky_second, leaky_first)


def test_adversary_leaves_modes_and_parameter_flags(toy_dataset, small_cnn):
    snn = _tiny_snn(toy_dataset, small_cnn)
    snn.train()
    x, y = to_float(toy_dataset.x_train[:8]), toy_dataset.y_train[:8]
    adversary = FinetuneAdversary(parse_adversary(MIX), eps=0.1, alpha=0.01)
    for seed in range(4):
        adversary(snn, x, y, torch.Generator().manual_seed(seed))
    assert snn.training and all(p.requires_grad for p in snn.parameters())
    assert all(p.grad is None for p in snn.parameters())
    assert sum(adversary.draws.values()) == 4


# -------------------------------------------------------------------- closed forms
class FixedShift:
    """A stand-in adversary: x + delta, and records what it was called with."""

    def __init__(self, delta: torch.Tensor) -> None:
        self.delta = delta

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, generator: Any) -> Any:
        return x + self.delta

    def describe(self) -> dict[str, Any]:
        return {"name": "fixed-shift"}


def _toy() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    student, teacher = nn.Linear(5, 3), nn.Linear(5, 3)
    x = torch.rand(6, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    delta = 0.05 * torch.randn(6, 5)
    return student, teacher, x, y, delta


def _kl(target_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_target || p_student) summed over the batch / B, written out by hand."""
    p = torch.softmax(target_logits, 1)
    q = torch.softmax(student_logits, 1)
    return (p * (p.log() - q.log())).sum() / p.shape[0]


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits, 1)[torch.arange(len(y)), y].mean()


@pytest.mark.parametrize("teacher_input", ["clean", "adversarial"])
def test_distill_loss_equals_its_closed_form(teacher_input):
    student, teacher, x, y, delta = _toy()
    objective = build_objective(
        "distill", eps=0.1, beta=3.0, clean_weight=0.7, ce_weight=0.2, teacher_input=teacher_input
    )
    objective.adversary = FixedShift(delta)
    objective.teacher = teacher
    loss, logits = objective(student, x, y)
    x_adv = x + delta
    with torch.no_grad():
        t_clean = teacher(x)
        t_target = t_clean if teacher_input == "clean" else teacher(x_adv)
    s_clean, s_adv = student(x), student(x_adv)
    expected = 0.2 * _ce(s_clean, y) + 0.7 * _kl(t_clean, s_clean) + 3.0 * _kl(t_target, s_adv)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert torch.equal(logits, s_clean)
    assert objective.params["adversary"] == {"name": "fixed-shift"}
    # the teacher gets no gradient, the student does
    loss.backward()
    assert teacher.weight.grad is None and student.weight.grad is not None


def test_adversarial_ce_and_robust_finetune_equal_their_closed_forms():
    student, _, x, y, delta = _toy()
    x_adv = x + delta
    adv_ce = build_objective("adversarial_ce", eps=0.1, clean_weight=0.5)
    adv_ce.adversary = FixedShift(delta)
    loss, logits = adv_ce(student, x, y)
    expected = _ce(student(x_adv), y) + 0.5 * _ce(student(x), y)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert torch.allclose(logits, student(x_adv))

    trades = build_objective("robust_finetune", eps=0.1, beta=2.0, alpha=0.01)
    trades.adversary = FixedShift(delta)
    loss, _ = trades(student, x, y)
    clean = student(x)
    expected = _ce(clean, y) + 2.0 * _kl(clean, student(x_adv))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert F.cross_entropy(clean, y).item() == pytest.approx(_ce(clean, y).item(), rel=1e-6)


def test_distill_without_teacher_or_with_bad_options_says_how():
    with pytest.raises(UserError, match="teacher_input"):
        build_objective("distill", teacher_input="both")
    objective = build_objective("distill")
    with pytest.raises(UserError, match="needs a teacher"):
        objective(nn.Linear(2, 2), torch.rand(2, 2), torch.tensor([0, 1]))
    assert math.isclose(build_objective("distill").eps, 8 / 255)
