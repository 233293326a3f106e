"""The finetuning levers of issue 31: named adversaries (strength, drawn widths), the
membrane-margin objective option and latency-aware finetuning (a T drawn per batch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import robustsnn.training.objectives as objectives_module
from robustsnn.config import ROBUST_ADVERSARY
from robustsnn.conversion import convert
from robustsnn.data import Dataset, to_float
from robustsnn.errors import UserError
from robustsnn.snn import SpikingNetwork, parse_estimator
from robustsnn.training import build_objective
from robustsnn.training.adversaries import (
    ADVERSARIES,
    DRAWN_ESTIMATORS,
    WIDTH_ESTIMATORS,
    FinetuneAdversary,
    parse_adversary,
)
from robustsnn.training.objectives import TimeStepDraw
from robustsnn.training.regularizers import membrane_margin_penalty


def _tiny_snn(toy_dataset: Dataset, small_cnn: Callable[..., nn.Module]) -> SpikingNetwork:
    images = to_float(toy_dataset.x_train)
    return convert(small_cnn(seed=1), images, T=3, calib_T=10, calib_batches=1, calib_batch_size=32)


# ------------------------------------------------------------------- named adversaries
def test_named_adversaries_are_specs_of_the_member_language():
    assert ADVERSARIES.names() == sorted(
        f"{a}-{e}" for a in ("pgd3", "pgd7", "sapgd10") for e in ("drawn", "widths")
    )
    assert parse_adversary("pgd3-drawn") == parse_adversary(ROBUST_ADVERSARY)  # the default
    for name in ADVERSARIES:
        spec = parse_adversary(name)
        assert parse_adversary(spec.name) == spec  # it is a plain spec
        attack, steps = {"pgd3": ("pgd", 3), "pgd7": ("pgd", 7), "sapgd10": ("sapgd", 10)}[
            name.split("-")[0]
        ]
        assert (spec.attack, spec.params["steps"]) == (attack, steps)
        want = DRAWN_ESTIMATORS if name.endswith("-drawn") else WIDTH_ESTIMATORS
        assert spec.estimators == want
    widths = parse_adversary("pgd7-widths").estimators
    # narrow threshold-relative and absolute widths are drawn too
    assert {"bptt-rel-pcw-0.25", "bptt-rel-pcw-0.5", "bptt-pcw-1", "bptt-pcw-2"} <= set(widths)
    assert parse_estimator("bptt-rel-pcw-0.25").name == "bptt-rel-pcw-0.25"
    with pytest.raises(UserError, match="named adversaries: pgd3-drawn"):
        parse_adversary("pgd9-drawn")


@pytest.mark.parametrize("name", ["pgd7-widths", "sapgd10-widths"])
def test_named_adversaries_run_through_every_drawn_width(name, toy_dataset, small_cnn):
    """Every estimator of the widths preset attacks the SNN within the eps-ball, in attack
    mode (modes and parameter flags restored), drawn from the seeded generator."""
    snn = _tiny_snn(toy_dataset, small_cnn)
    snn.train()
    x, y = to_float(toy_dataset.x_train[:8]), toy_dataset.y_train[:8]
    adversary = FinetuneAdversary(parse_adversary(name), eps=0.1, alpha=0.01)
    generator = torch.Generator().manual_seed(0)
    moved = 0
    for estimator in adversary.estimators:
        adversary.estimators = [estimator]  # one at a time, so each is exercised
        x_adv = adversary(snn, x, y, generator)
        assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
        moved += int(not torch.equal(x_adv, x))
    assert moved >= len(WIDTH_ESTIMATORS) - 1  # (SA-PGD may stop on a clean miss)
    assert set(adversary.draws) == set(WIDTH_ESTIMATORS)
    assert snn.training and all(p.requires_grad for p in snn.parameters())


# ----------------------------------------------------------------- membrane margin option
class FixedShift:
    def __init__(self, delta: torch.Tensor) -> None:
        self.delta = delta

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, generator: Any) -> Any:
        return x + self.delta

    def describe(self) -> dict[str, Any]:
        return {"name": "fixed-shift"}


@pytest.mark.parametrize("name", ["distill", "robust_finetune", "adversarial_ce"])
def test_margin_option_adds_the_penalty_of_the_clean_and_adversarial_passes(
    name, toy_dataset, small_cnn
):
    snn = _tiny_snn(toy_dataset, small_cnn).eval()
    x, y = to_float(toy_dataset.x_train[:8]), toy_dataset.y_train[:8]
    delta = 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    options: dict[str, Any] = {"eps": 0.1}
    if name == "adversarial_ce":
        options["clean_weight"] = 1.0

    def build(**extra: Any) -> Any:
        objective = build_objective(name, **options, **extra)
        objective.adversary = FixedShift(delta)
        if name == "distill":
            objective.teacher = _tiny_snn(toy_dataset, small_cnn).with_estimator(
                parse_estimator("ann-proxy")
            )
        return objective

    plain = build()
    assert "margin_weight" not in plain.params  # off: described as before the option
    base, logits = plain(snn, x, y)
    regular = build(margin_weight=0.5, margin=0.2)
    assert regular.params["margin_weight"] == 0.5 and regular.params["margin"] == 0.2
    loss, logits_m = regular(snn, x, y)
    with snn.recording_membranes() as traces:
        snn(x)
        snn(x + delta)
    penalty = membrane_margin_penalty(traces, 0.2)
    assert float(penalty.detach()) > 0
    assert float(loss.detach()) == pytest.approx(float((base + 0.5 * penalty).detach()), rel=1e-6)
    assert torch.equal(logits, logits_m)
    assert snn.context.membranes is None


def test_margin_records_the_loss_passes_not_the_attack(toy_dataset, small_cnn, monkeypatch):
    """With a real adversary (PGD-2: three forward passes of its own), the penalty sees the
    membranes of the clean and the adversarial pass of the loss only; the loss backpropagates
    into the weights and thresholds."""
    snn = _tiny_snn(toy_dataset, small_cnn).train()
    x, y = to_float(toy_dataset.x_train[:8]), toy_dataset.y_train[:8]
    seen: list[int] = []

    def counting(traces: Any, margin: float) -> torch.Tensor:
        seen.append(len(traces))
        return membrane_margin_penalty(traces, margin)

    monkeypatch.setattr(objectives_module, "membrane_margin_penalty", counting)
    objective = build_objective("robust_finetune", eps=0.1, beta=1.0, margin_weight=1.0)
    objective.adversary = FinetuneAdversary(parse_adversary("pgd[steps=2]/bptr"), eps=0.1, alpha=0)
    loss, _ = objective(snn, x, y, torch.Generator().manual_seed(0))
    assert seen == [2 * len(snn.neurons())]
    loss.backward()
    assert all(n.threshold.grad is not None for n in snn.neurons())


def test_margin_options_are_checked():
    with pytest.raises(UserError, match="margin_weight and margin must be >= 0"):
        build_objective("distill", margin_weight=-1.0)
    with pytest.raises(UserError, match="margin_weight and margin must be >= 0"):
        build_objective("adversarial_ce", margin=-0.1)
    objective = build_objective("adversarial_ce", margin_weight=0.1)
    objective.adversary = FixedShift(torch.zeros(2, 2))
    with pytest.raises(UserError, match="needs a spiking network"):
        objective(nn.Linear(2, 2), torch.rand(2, 2), torch.tensor([0, 1]))


# ------------------------------------------------------------------ latency-aware (T draws)
class SeesT:
    """A stand-in objective that records the T of the network it is called with."""

    name = "sees-t"
    params: dict[str, Any] = {}

    def __init__(self, fail_at: int | None = None) -> None:
        self.seen: list[int] = []
        self.fail_at = fail_at

    def __call__(self, model: Any, x: Any, y: Any, generator: Any) -> Any:
        self.seen.append(model.T)
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise RuntimeError("boom")
        logits = model(x)
        return logits.sum(), logits


def test_t_is_drawn_per_batch_from_the_seeded_generator_and_restored(toy_dataset, small_cnn):
    snn = _tiny_snn(toy_dataset, small_cnn)
    x, y = to_float(toy_dataset.x_train[:4]), toy_dataset.y_train[:4]
    choices = (1, 2, 4)

    def run(seed: int) -> list[int]:
        base = SeesT()
        draw = TimeStepDraw(base, choices)  # type: ignore[arg-type]
        generator = torch.Generator().manual_seed(seed)
        for _ in range(12):
            draw(snn, x, y, generator)
            assert snn.T == 3  # the network's own T after every batch
        assert sum(draw.draws.values()) == 12
        return base.seen

    first = run(0)
    expected_generator = torch.Generator().manual_seed(0)
    expected = [choices[int(torch.randint(3, (1,), generator=expected_generator))] for _ in first]
    assert first == expected  # exactly the seeded draws
    assert first == run(0) and first != run(1)
    assert set(first) == set(choices)
    # restored on failure too
    failing = TimeStepDraw(SeesT(fail_at=1), [1])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        failing(snn, x, y, torch.Generator().manual_seed(0))
    assert snn.T == 3
    # one choice draws nothing
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    TimeStepDraw(SeesT(), [2])(snn, x, y, generator)  # type: ignore[arg-type]
    assert torch.equal(state, generator.get_state())


@pytest.mark.parametrize("choices", [[], [0, 4], [4.0], "48", [True]])
def test_bad_t_choices_are_one_line_errors(choices):
    with pytest.raises(UserError, match="T_choices must be"):
        TimeStepDraw(SeesT(), choices)  # type: ignore[arg-type]


# -------------------------------------------------------------------- command line, config
def test_levers_reach_finetune_snn_from_the_command_line_and_the_config(monkeypatch, tmp_path):
    import robustsnn.training.snn as snn_training
    from robustsnn.cli import main
    from robustsnn.config import load_config

    calls: list[dict[str, Any]] = []

    def fake_finetune(checkpoint: Any, config: Any, run: Any) -> Any:
        calls.append(dataclasses.asdict(config))
        raise UserError("stop here")

    monkeypatch.setattr(snn_training, "finetune_snn", fake_finetune)
    code = main(
        [
            "finetune", str(tmp_path / "snn.safetensors"), "--adversary", "sapgd10-widths",
            "--objective", "distill", "--objective-option", "margin_weight=0.1",
            "--objective-option", "margin=0.1", "--T", "4", "--T-choices", "4,8", "--quiet",
        ]
    )  # fmt: skip
    assert code == 2 and len(calls) == 1
    kw = calls[0]
    assert kw["adversary"] == "sapgd10-widths" and kw["T"] == 4 and kw["T_choices"] == [4, 8]
    assert kw["objective_options"] == {"margin_weight": 0.1, "margin": 0.1}

    config = load_config(
        None,
        [
            "finetune.T_choices=[4, 8]",
            "finetune.adversary=pgd7-drawn",
            "finetune.objective_options={margin_weight: 0.1, margin: 0.1}",
        ],
    )
    assert config.finetune.T_choices == [4, 8] and config.finetune.T is None
    with pytest.raises(UserError, match="finetune.T_choices must be"):
        load_config(None, ["finetune.T_choices=[0, 4]"])
    with pytest.raises(UserError, match="named adversaries"):
        load_config(None, ["finetune.adversary=pgd9-drawn"])
