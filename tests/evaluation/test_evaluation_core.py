"""evaluate(): the evaluation.json contract, ensemble semantics and the real-forward verdict."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from evaluation_test_utils import images, labels_of, tiny_linear, tiny_mlp, tiny_snn
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate, parse_eps
from robustsnn.snn import estimator_names

EPS = 0.08
# Deterministic members (no random start): early exit and independent runs must agree.
DETERMINISTIC = [
    {"attack": "fgsm", "estimator": ["bptt-pcw-1", "bptr", "ann-proxy"]},
    {"attack": "pgd", "estimator": "bptt-exp-1", "params": {"steps": 5, "random_start": False}},
]


def _setup(n: int = 20) -> tuple[nn.Module, Tensor, Tensor]:
    x = images(n)
    return tiny_snn(), x, labels_of(tiny_mlp(), x)


@pytest.mark.parametrize(
    ("text", "value"),
    [("8/255", 8 / 255), (" 2 / 255 ", 2 / 255), ("0.0314", 0.0314), (0.5, 0.5), (0, 0.0)],
)
def test_parse_eps(text: str | float, value: float) -> None:
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8", "did you mean 8/255"),
        ("abc", "cannot read eps"),
        ("1/0", "cannot read eps"),
        ("-0.1", ">= 0"),
        ("nan", "finite"),
        (True, "must be a number"),
    ],
)
def test_parse_eps_errors(text: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_eps(text)  # type: ignore[arg-type]


def test_json_contract_keys_and_types() -> None:
    snn, x, y = _setup(12)
    result = evaluate(
        snn,
        x,
        y,
        EvaluationConfig(
            eps="8/255", ensemble="pgd-fast", independent=True, batch_size=5, diagnostics="none"
        ),
        EvaluationContext(
            quiet=True,
            meta={"model": "tiny.safetensors", "dataset": "toy", "split": "test", "extra": 1},
        ),
    )
    json.dumps(result)  # JSON-serializable as it is
    assert result["model"] == "tiny.safetensors" and result["dataset"] == "toy"
    assert result["split"] == "test" and result["extra"] == 1
    assert result["n"] == 12 and isinstance(result["n"], int)
    assert result["eps"] == pytest.approx(8 / 255) and isinstance(result["eps"], float)
    assert result["T"] == 4
    assert 0.0 <= result["clean_accuracy"] <= 1.0
    assert set(result["attacks"]) == {
        "pgd/bptt-rel-pcw-1",
        "pgd/bptt-pcw-1",
        "pgd/bptr",
        "pgd/ann-proxy",
    }
    for row in result["attacks"].values():
        assert isinstance(row["robust_accuracy"], float) and isinstance(row["seconds"], float)
    entry = result["ensembles"]["pgd-fast"]
    assert entry["members"] == 4 and isinstance(entry["robust_accuracy"], float)
    assert isinstance(entry["seconds"], float)
    assert result["diagnostics"] == {}
    records = result["records"]
    assert [r["index"] for r in records] == list(range(12))
    for r in records:
        assert set(r) >= {"index", "label", "clean_correct", "robust", "broken_by", "prediction"}
        assert not r["robust"] or (r["clean_correct"] and r["prediction"] == r["label"])
        if r["broken_by"] is not None:
            assert r["clean_correct"] and not r["robust"] and r["prediction"] != r["label"]
    # An ANN has T = null.
    ann = tiny_linear()
    plain = evaluate(
        ann,
        x,
        labels_of(ann, x),
        EvaluationConfig(eps=0.01, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    assert plain["T"] is None and plain["clean_accuracy"] == 1.0
    assert plain["attacks"] == {} and plain["ensembles"] == {}


def test_ensemble_is_never_above_any_member_per_sample() -> None:
    snn, x, y = _setup(10)
    grid = [{"attack": "pgd", "estimator": "all", "params": {"steps": 4}}]
    result = evaluate(
        snn,
        x,
        y,
        EvaluationConfig(eps=EPS, attacks=grid, batch_size=6, diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    assert set(result["attacks"]) == {f"pgd[steps=4]/{e}" for e in estimator_names()}
    ensemble = result["ensembles"]["pgd (all estimators)"]
    assert ensemble["members"] == 19 and ensemble["mode"] == "independent"
    for row in result["attacks"].values():
        assert ensemble["robust_accuracy"] <= row["robust_accuracy"]
    for r in result["records"]:
        survived_all = r["clean_correct"] and not r["broken_by_all"]
        assert r["robust"] == survived_all
        if r["broken_by_all"]:
            assert r["broken_by"] == r["broken_by_all"][0]
    assert ensemble["robust_accuracy"] < result["clean_accuracy"]  # the attacks do something


def test_early_exit_and_independent_agree_on_deterministic_members() -> None:
    snn, x, y = _setup(20)
    config = EvaluationConfig(eps=EPS, ensemble=DETERMINISTIC, batch_size=7, diagnostics="none")
    quiet = EvaluationContext(quiet=True)
    early = evaluate(snn, x, y, config, quiet)
    both = evaluate(snn, x, y, replace(config, independent=True), quiet)
    assert early["attacks"] == {} and len(both["attacks"]) == 4
    assert early["ensembles"]["custom"]["mode"] == "early-exit"
    robust_early = [r["robust"] for r in early["records"]]
    robust_both = [r["robust"] for r in both["records"]]
    assert robust_early == robust_both
    assert [r["broken_by"] for r in early["records"]] == [r["broken_by"] for r in both["records"]]
    e, b = early["ensembles"]["custom"], both["ensembles"]["custom"]
    assert e["robust_accuracy"] == b["robust_accuracy"] < early["clean_accuracy"]
    assert e["broken_by"] == b["broken_by"]


def test_results_do_not_depend_on_later_batches() -> None:
    snn, x, y = _setup(15)
    config = EvaluationConfig(eps=EPS, ensemble="pgd-fast", batch_size=5, diagnostics="none")
    short = evaluate(snn, x[:10], y[:10], config, EvaluationContext(quiet=True))
    long = evaluate(snn, x, y, config, EvaluationContext(quiet=True))
    assert short["records"] == long["records"][:10]


class _Negated(nn.Module):
    """An attack view that lies: negated logits make every clean sample look misclassified."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return -self.model(x)


def test_attack_logits_are_never_trusted() -> None:
    snn, x, y = _setup(12)
    y = labels_of(snn, x)  # every sample clean-correct
    with torch.no_grad():
        assert bool((_Negated(snn)(x).argmax(1) != y).all())  # the view claims "all broken"
    lying = evaluate(
        snn,
        x,
        y,
        EvaluationConfig(
            eps=EPS,
            ensemble=[{"attack": "pgd", "estimator": "bptr", "params": {"steps": 3}}],
            diagnostics="none",
        ),
        EvaluationContext(view_factory=lambda model, estimator: _Negated(model), quiet=True),
    )
    assert lying["clean_accuracy"] == 1.0
    assert lying["ensembles"]["custom"]["robust_accuracy"] == 1.0
    assert all(r["broken_by"] is None for r in lying["records"])
    honest = evaluate(
        snn,
        x,
        y,
        EvaluationConfig(eps=EPS, ensemble="pgd-fast", diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    assert honest["ensembles"]["pgd-fast"]["robust_accuracy"] < 1.0


class _ModeSpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_linear()
        self.dropout = nn.Dropout(0.5)
        self.modes: set[bool] = set()
        self.trainable: set[bool] = set()

    def forward(self, x: Tensor) -> Tensor:
        self.modes.add(self.training)
        self.trainable.add(any(p.requires_grad for p in self.parameters()))
        return self.dropout(self.body(x))


def test_runs_in_eval_mode_and_restores_every_flag() -> None:
    model = _ModeSpy()
    model.train()
    model.body.eval()  # mixed flags must come back as they were
    frozen = next(model.parameters())
    frozen.requires_grad_(False)  # and a frozen parameter stays frozen
    x = images(6)
    evaluate(
        model,
        x,
        labels_of(model.body, x),
        EvaluationConfig(eps=0.05, ensemble="pgd-fast", diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    assert model.modes == {False}
    assert model.training and model.dropout.training and not model.body.training
    # attacks differentiate the input only: no parameter requires a gradient meanwhile
    assert model.trainable == {False}
    assert [p.requires_grad for p in model.parameters()] == [
        p is not frozen for p in model.parameters()
    ]


def test_clean_only_and_input_errors() -> None:
    snn, x, y = _setup(6)
    clean = evaluate(
        snn, x, y, EvaluationConfig(eps=0.0, diagnostics="fast"), EvaluationContext(quiet=True)
    )
    assert clean["attacks"] == {} and clean["ensembles"] == {} and clean["diagnostics"] == {}
    assert clean["robust_accuracy"] is None
    assert all(r["robust"] == r["clean_correct"] for r in clean["records"])
    uint8 = evaluate(
        snn,
        (x * 255).round().to(torch.uint8),
        y,
        EvaluationConfig(eps=0.0),
        EvaluationContext(quiet=True),
    )
    assert uint8["n"] == 6
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        evaluate(snn, x * 3, y, EvaluationConfig(eps=0.1), EvaluationContext(quiet=True))
    with pytest.raises(UserError, match="labels"):
        evaluate(snn, x, y[:3], EvaluationConfig(eps=0.1), EvaluationContext(quiet=True))
    with pytest.raises(UserError, match="not both"):
        evaluate(
            snn,
            x,
            y,
            EvaluationConfig(eps=0.1, ensemble="pgd-fast", attacks="pgd"),
            EvaluationContext(quiet=True),
        )
    with pytest.raises(UserError, match="batch_size"):
        evaluate(snn, x, y, EvaluationConfig(eps=0.1, batch_size=0), EvaluationContext(quiet=True))
    with pytest.raises(UserError, match="diagnostics"):
        evaluate(
            snn,
            x,
            y,
            EvaluationConfig(eps=0.1, diagnostics="fastest"),
            EvaluationContext(quiet=True),
        )
