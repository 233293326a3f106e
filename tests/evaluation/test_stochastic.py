"""Random models: detection, EOT attacks, majority votes, checks and seeds (issue 32)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from evaluation_test_utils import images, labels_of, tiny_linear, tiny_mlp, tiny_snn
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.evaluation.stochastic import (
    EOTView,
    StochasticConfig,
    detect_randomness,
    resolve_randomness,
    restore_randomness,
    seeded_global_rng,
    step_config,
)
from robustsnn.evaluation.views import attack_view, real_predict

EPS = 0.1
PGD = [{"attack": "pgd", "params": {"steps": 20}}]


class NoisyGradient(nn.Module):
    """A linear classifier whose randomness hides its gradient (drawn from torch's global
    generator, as a wrapped model calling ``torch.randint`` in its forward would).

    The logits are the linear model's plus a tiny value noise (1e-3, enough to be detected,
    too small to change a prediction with a fair margin). The input gradient is multiplied
    per pixel by ``1 + 1.5 s`` with a random sign ``s``: 2.5 or -0.5 with probability 1/2
    each, so a single draw's gradient sign is a coin flip per pixel (sign PGD does a random
    walk), while the expectation is the true gradient.
    """

    def __init__(self, ratio: float = 1.5, value_noise: float = 1e-3) -> None:
        super().__init__()
        self.linear = tiny_linear(0)
        self.ratio = ratio
        self.value_noise = value_noise

    def forward(self, x: Tensor) -> Tensor:
        sign = torch.randint_like(x, 2) * 2 - 1
        x_in = x + (self.ratio * sign) * (x - x.detach())
        out = self.linear(x_in)
        return out + self.value_noise * torch.randn_like(out)


class NoisyLogits(nn.Module):
    """A linear classifier with large Gaussian noise on its logits (a coin-flip predictor on
    samples near the boundary)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.linear = tiny_linear(0)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        out = self.linear(x)
        return out + self.scale * torch.randn_like(out)


def _data(n: int = 40) -> tuple[Tensor, Tensor]:
    x = images(n)
    return x, labels_of(tiny_linear(0), x)


def _without_seconds(result: dict[str, Any]) -> Any:
    """The result with every timing removed (timings differ between runs)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "member_seconds")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(json.dumps({k: v for k, v in result.items() if k != "seconds"})))


def test_detection_is_repeatable_and_sees_global_generator_draws() -> None:
    x, _ = _data(8)
    noisy, difference = detect_randomness(NoisyGradient(), x, seed=0)
    assert noisy and difference > 0
    assert detect_randomness(NoisyGradient(), x, seed=0) == (noisy, difference)
    assert detect_randomness(tiny_linear(0), x, seed=0) == (False, 0.0)
    assert detect_randomness(tiny_snn(), x, seed=0)[0] is False


def test_single_draw_attacks_fail_and_eot_breaks_the_noisy_model() -> None:
    x, y = _data()
    truth = evaluate(
        tiny_linear(0),
        x,
        y,
        EvaluationConfig(eps=EPS, attacks=PGD, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    torch.manual_seed(0)
    single = evaluate(
        NoisyGradient(),
        x,
        y,
        EvaluationConfig(eps=EPS, attacks=PGD, diagnostics="none", randomness="off"),
        EvaluationContext(quiet=True),
    )
    eot = evaluate(
        NoisyGradient(),
        x,
        y,
        EvaluationConfig(eps=EPS, attacks=PGD, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    # the deterministic twin is breakable: about 70% of samples fall at this radius
    assert truth["robust_accuracy"] <= 0.4
    # one draw per step: sign PGD walks at random, most samples survive
    assert single["robust_accuracy"] >= truth["robust_accuracy"] + 0.4
    # EOT: as strong as the attack on the deterministic twin
    assert eot["robust_accuracy"] <= truth["robust_accuracy"] + 0.05
    info = eot["randomness"]
    assert info["detected"] and info["handled"]
    assert info["prediction_draws"] == 15
    # K chosen by the variance check, not a constant: the first K whose cosine passes
    cosines = info["eot_draws_check"]["cosine_at_draws"]
    assert info["eot_draws"] >= 8 and str(info["eot_draws"]) in cosines
    assert cosines[str(info["eot_draws"])] >= 0.9
    assert all(c < 0.9 for k, c in cosines.items() if int(k) < info["eot_draws"])
    assert cosines["1"] < 0.5
    # every break is a misclassification on more than half of M fresh draws, with an interval
    broken = [r for r in eot["records"] if r["clean_correct"] and not r["robust"]]
    assert broken
    for record in broken:
        assert record["draws"] == 15 and record["adversarial_wrong_draws"] > 7
        low, high = record["misclassification_ci95"]
        assert 0.0 <= low <= record["adversarial_wrong_draws"] / 15 <= high <= 1.0
    assert single["randomness"] == {**single["randomness"], "detected": True, "handled": False}


def test_checks_flag_a_noisy_model_evaluated_without_eot_and_pass_with_it() -> None:
    x, y = _data()
    torch.manual_seed(0)
    single = evaluate(
        NoisyGradient(),
        x,
        y,
        EvaluationConfig(eps=EPS, attacks=PGD, diagnostics_n=16, randomness="off"),
        EvaluationContext(quiet=True),
    )
    checks = single["diagnostics"]
    assert checks["randomness"]["passed"] is False
    assert "random" in checks["randomness"]["detail"]
    # the masking checks themselves see through the noise too (single draws fail them)
    assert not checks["black_box_vs_white_box"]["passed"]
    eot = evaluate(
        NoisyGradient(),
        x,
        y,
        EvaluationConfig(eps=EPS, attacks=PGD, diagnostics_n=16),
        EvaluationContext(quiet=True),
    )
    assert eot["diagnostics"]["randomness"]["passed"] is True
    failing = [name for name, c in eot["diagnostics"].items() if not c["passed"]]
    assert failing == []


def test_clean_accuracy_of_a_random_model_is_a_majority_over_m_draws() -> None:
    x, y = _data(60)
    config = StochasticConfig(prediction_draws=21)
    result = evaluate(
        NoisyLogits(),
        x,
        y,
        EvaluationConfig(eps=EPS, randomness=config),
        EvaluationContext(quiet=True),
    )
    info = result["randomness"]
    assert info["handled"] and info["prediction_draws"] == 21
    assert info["eot_draws"] == 1 and "eot_draws_check" not in info  # no attack, no gradient
    records = result["records"]
    for record in records:
        assert record["draws"] == 21
        assert record["clean_correct"] == (record["clean_wrong_draws"] < 21 / 2)
        if record["clean_correct"]:
            assert record["clean_prediction"] == record["label"]
    # the noise makes single draws wrong on part of the samples; the majority is the verdict
    per_draw = info["clean_accuracy_per_draw"]
    assert 0.5 < per_draw < 1.0
    low, high = info["clean_accuracy_per_draw_ci95"]
    assert low < per_draw < high
    majority = sum(r["clean_correct"] for r in records) / len(records)
    assert result["clean_accuracy"] == majority
    low, high = result["clean_accuracy_ci95"]
    assert low <= majority <= high
    # the draws disagree on some samples; a label without a strict majority is -1 (wrong)
    assert any(0 < r["clean_wrong_draws"] < 21 for r in records)
    assert all(not r["clean_correct"] for r in records if r["clean_prediction"] == -1)


def test_two_runs_with_one_seed_give_identical_records_with_the_global_generator() -> None:
    x, y = _data(24)
    results = []
    for state in (1, 2):
        model = NoisyGradient()
        torch.manual_seed(state)  # the caller's generator differs; the evaluation seed is one
        before = torch.get_rng_state()
        results.append(
            evaluate(
                model,
                x,
                y,
                EvaluationConfig(eps=EPS, attacks=PGD, diagnostics_n=8, batch_size=10, seed=5),
                EvaluationContext(quiet=True),
            )  # fmt: skip
        )
        assert torch.equal(torch.get_rng_state(), before)  # the caller's state is restored
    assert _without_seconds(results[0]) == _without_seconds(results[1])
    assert results[0]["randomness"]["handled"]


@pytest.mark.parametrize("model_name", ["snn", "mlp"])
def test_deterministic_results_are_unchanged_bit_for_bit(model_name: str) -> None:
    x = images(16)
    model: nn.Module = tiny_snn() if model_name == "snn" else tiny_mlp()
    y = labels_of(tiny_mlp(), x)
    members: list[dict[str, Any]] = [
        {"attack": "fgsm", "estimator": ["bptt-pcw-1", "bptr"]},
        {"attack": "pgd", "estimator": "bptt-pcw-1", "params": {"steps": 5}},
    ]
    runs = {
        mode: evaluate(
            model,
            x,
            y,
            EvaluationConfig(
                eps=0.08, ensemble=members, batch_size=7, diagnostics_n=6, randomness=mode
            ),
            EvaluationContext(quiet=True),
        )  # fmt: skip
        for mode in ("off", "auto")
    }
    assert runs["auto"]["randomness"]["detected"] is False
    assert runs["off"].pop("randomness")["mode"] == "off"
    assert runs["auto"].pop("randomness")["mode"] == "auto"
    assert _without_seconds(runs["off"]) == _without_seconds(runs["auto"])
    assert "randomness" not in runs["auto"]["diagnostics"]
    assert all("draws" not in r for r in runs["auto"]["records"])
    # handled as random with one draw each, the verdicts are the same
    forced = evaluate(
        model,
        x,
        y,
        EvaluationConfig(
            eps=0.08,
            ensemble=members,
            batch_size=7,
            diagnostics="none",
            randomness=StochasticConfig(mode="force", prediction_draws=1, eot_draws=1),
        ),
        EvaluationContext(quiet=True),
    )
    keys = ("index", "clean_correct", "clean_prediction", "robust", "broken_by", "prediction")
    assert [{k: r[k] for k in keys} for r in forced["records"]] == [
        {k: r[k] for k in keys} for r in runs["auto"]["records"]
    ]


def test_views_and_predictions_inside_the_scope_only() -> None:
    x, y = _data(10)
    model = NoisyLogits(scale=0.5)
    handling = resolve_randomness(model, x, y, seed=0, config=StochasticConfig(eot_draws=4))
    assert handling.active and handling.eot_draws == 4 and not handling.cosines
    assert attack_view(model, None) is model
    with handling.scope():
        view = attack_view(model, None)
        assert isinstance(view, EOTView) and view.draws == 4
        assert attack_view(tiny_linear(0), None) is not view  # other models: unchanged
        first = real_predict(model, x)
        assert torch.equal(first, real_predict(model, x))  # seeded by the input
        assert torch.equal(view(x), view(x))
    plain = resolve_randomness(tiny_linear(0), x, y, seed=0)
    assert not plain.active and plain.view_factory(tiny_linear(0), None) is not None


def test_eot_view_forwards_the_attack_run_hooks() -> None:
    calls: list[Any] = []

    class Hooked:
        def __call__(self, x: Tensor) -> Tensor:
            return x.flatten(1)[:, :3]

        def begin_attack_run(self, n: int | None = None) -> None:
            calls.append(("begin", n))

        def select_attack_rows(self, rows: Tensor | None) -> None:
            calls.append(("rows", rows))

    view = EOTView(Hooked(), 3, 0, None)
    view.begin_attack_run(5)
    view.select_attack_rows(None)
    assert calls == [("begin", 5), ("rows", None)]
    assert torch.allclose(view(images(2)), images(2).flatten(1)[:, :3])


def test_seeded_global_rng_restores_the_callers_state() -> None:
    torch.manual_seed(11)
    before = torch.get_rng_state()
    with seeded_global_rng(3, "cpu"):
        a = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded_global_rng(3, "cpu"):
        assert torch.equal(torch.rand(3), a)


def test_escalation_steps_keep_m_and_the_k_table() -> None:
    described = {
        "handled": True, "detected": True, "eot_draws": 8, "prediction_draws": 9,
        "eot_draws_by_estimator": {"default": 8, "bptr": 16},
    }  # fmt: skip
    config = step_config(described, None)
    assert config.mode == "force" and config.prediction_draws == 9 and config.eot_draws is None
    assert step_config({"handled": False}, "off") == "off"
    model = NoisyLogits()
    restored = restore_randomness(model, described, seed=0)
    assert restored.handles(model) and restored.draws_for(None) == 8
    assert restored.draws_for("bptr") == 16
    assert restored.draws_for("bptt-pcw-1") == 16  # not used before: the largest K
    off = restore_randomness(model, {"handled": False, "detected": True}, seed=0)
    assert not off.active and off.check() is not None and not off.check()["passed"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "message"),
    [("sometimes", "mode must be one of"), ({"prediction_draws": 4}, "odd"), ({"k": 1}, "unknown")],
)
def test_config_errors(value: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        StochasticConfig.resolve(value)


@pytest.mark.slow
def test_escalation_keeps_k_and_the_randomness_check() -> None:
    """evaluate --escalate on a random model: the steps run with the first K and M, and the
    final diagnostics (run after the last step) still carry the randomness check."""
    from robustsnn.evaluation.escalate import evaluate_escalating

    x, y = _data(24)
    result = evaluate_escalating(
        NoisyGradient(), x, y, eps=EPS, ensemble="pgd-fast", max_levels=1,
        at_least="reliable", quiet=True, diagnostics_n=8,
    )  # fmt: skip
    assert [s["preset"] for s in result["escalation"]["steps"]] == ["reliable"]
    assert result["randomness"]["handled"] and result["randomness"]["eot_draws"] > 1
    assert result["diagnostics"]["randomness"]["passed"] is True
    assert result["robust_accuracy"] <= 0.4


def test_a_racing_attack_on_a_random_ann_gets_the_eot_view() -> None:
    from types import SimpleNamespace

    from robustsnn.evaluation.views import member_view

    x, y = _data(8)
    model = NoisyLogits(scale=0.5)
    racing = SimpleNamespace(estimators=("bptt-pcw-1", "bptr"))
    handling = resolve_randomness(model, x, y, seed=0, config={"eot_draws": 3})
    assert isinstance(member_view(model, None, racing, handling.view_factory), EOTView)
    plain = tiny_linear(0)
    assert member_view(plain, None, racing) is plain  # a deterministic ANN: itself, as before
