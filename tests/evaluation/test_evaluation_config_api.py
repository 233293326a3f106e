"""The evaluation entry points take config objects (issue 34): ``evaluate(model, x, y,
EvaluationConfig(...), EvaluationContext(...))`` and ``evaluate_escalating(..., policy)``; the
defaults live once, in robustsnn.evaluation.config; the old keyword call style gives the same
result for one release, with a DeprecationWarning at the caller's line."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from pathlib import Path

import pytest
import torch
from evaluation_test_utils import images, labels_of, tiny_mlp, tiny_snn, toy_npz_cnn

from robustsnn.conversion import convert
from robustsnn.data import to_float
from robustsnn.evaluation import (
    RECORDS_FILE,
    DiagnosticsRun,
    EvaluationConfig,
    EvaluationContext,
    EvaluationRun,
    evaluate,
    run_evaluation,
)
from robustsnn.evaluation.config import DEFAULT_BATCH_SIZE
from robustsnn.evaluation.diagnostics import resolve_config, run_diagnostics
from robustsnn.evaluation.ensembles import Member
from robustsnn.evaluation.escalate import EscalationPolicy, evaluate_escalating
from robustsnn.evaluation.evaluate import DEFAULT_BATCH_SIZE as OLD_DEFAULT_BATCH_SIZE
from robustsnn.evaluation.latency import latency_curve
from robustsnn.io.models import save_ann, save_snn

MEMBERS = [{"attack": "pgd", "estimator": "bptt-exp-1", "params": {"steps": 3}}]


def _data(n: int = 10) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x = images(n)
    return tiny_snn(), x, labels_of(tiny_mlp(), x)


def _same(a: dict, b: dict) -> None:
    for key in ("seconds",):
        a.pop(key, None)
        b.pop(key, None)
    assert [r["robust"] for r in a["records"]] == [r["robust"] for r in b["records"]]
    assert a["records"] == b["records"]
    assert a["robust_accuracy"] == b["robust_accuracy"]
    assert a["ensemble"] == b["ensemble"]


def test_the_defaults_live_in_the_config() -> None:
    config = EvaluationConfig(eps=0.1)
    assert (config.ensemble, config.attacks, config.independent) == (None, None, False)
    assert config.batch_size == DEFAULT_BATCH_SIZE == OLD_DEFAULT_BATCH_SIZE == 128
    assert (config.seed, config.diagnostics, config.diagnostics_n) == (0, "fast", None)
    assert (config.save_adversarial, config.randomness) == (False, None)
    assert EvaluationContext() == EvaluationContext(state_dir=None, quiet=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    # the entry points repeat no option of the configs
    assert EvaluationRun().n is None and EvaluationRun().escalate is None
    for fn in (evaluate, evaluate_escalating, run_evaluation, latency_curve):
        params = set(inspect.signature(fn).parameters)
        fields = {f.name for f in dataclasses.fields(EvaluationConfig)}
        fields |= {f.name for f in dataclasses.fields(EvaluationContext)}
        fields |= {f.name for f in dataclasses.fields(EvaluationRun)}
        assert not params & fields, fn.__name__


def test_config_call_equals_the_old_keyword_call_which_warns_at_the_callers_line(
    tmp_path: Path,
) -> None:
    snn, x, y = _data()
    new = evaluate(
        snn,
        x,
        y,
        EvaluationConfig(eps=0.1, ensemble=MEMBERS, batch_size=4, seed=3, diagnostics="none"),
        EvaluationContext(quiet=True, indices=list(range(10, 20)), meta={"model": "m"}),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        old = evaluate(snn, x, y, eps=0.1, ensemble=MEMBERS, batch_size=4, seed=3, diagnostics="none", quiet=True, indices=list(range(10, 20)), meta={"model": "m"})  # fmt: skip
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    assert deprecations[0].filename == __file__ and deprecations[0].lineno == line
    assert "EvaluationConfig" in str(deprecations[0].message)
    assert "next release" in str(deprecations[0].message)
    _same(new, old)
    assert [r["index"] for r in new["records"]] == list(range(10, 20))
    assert new["model"] == "m"


def test_the_new_call_does_not_warn() -> None:
    snn, x, y = _data(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        result = evaluate(snn, x, y, EvaluationConfig(eps=0.1, diagnostics="none"))
    assert len(result["records"]) == 4


def test_wrong_calls_are_refused() -> None:
    snn, x, y = _data(4)
    with pytest.raises(TypeError, match="missing its config"):
        evaluate(snn, x, y)
    with pytest.raises(TypeError, match="not both"):
        evaluate(snn, x, y, EvaluationConfig(eps=0.1), eps=0.1)
    with pytest.raises(TypeError, match="unexpected keyword"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        evaluate(snn, x, y, eps=0.1, epochs=3)
    with pytest.raises(TypeError, match="eps"):
        evaluate(snn, x, y, ensemble="pgd-fast")


def test_escalating_with_a_policy_equals_the_old_keywords(tmp_path: Path) -> None:
    snn, x, y = _data(8)
    config = EvaluationConfig(eps=0.1, ensemble="pgd-fast", batch_size=4, diagnostics="none")
    new = evaluate_escalating(
        snn,
        x,
        y,
        config,
        EvaluationContext(quiet=True, state_dir=tmp_path / "new"),
        EscalationPolicy(levels=1, at_least="reliable"),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        old = evaluate_escalating(snn, x, y, eps=0.1, ensemble="pgd-fast", batch_size=4, diagnostics="none", quiet=True, state_dir=tmp_path / "old", max_levels=1, at_least="reliable")  # fmt: skip
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    assert deprecations[0].filename == __file__ and deprecations[0].lineno == line
    _same(new, old)
    assert new["escalation"]["at_least"] == "reliable"
    assert [s["preset"] for s in new["escalation"]["steps"]] == ["reliable"]
    assert (tmp_path / "new" / "escalation-1-reliable").is_dir()
    # the old call's ensemble default stays reliable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        plain = evaluate_escalating(snn, x, y, eps=0.1, diagnostics="none", quiet=True, max_levels=0)  # fmt: skip
    assert plain["escalation"]["start"] == "reliable"
    with pytest.raises(TypeError, match="unexpected keyword"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        evaluate_escalating(snn, x, y, eps=0.1, levels=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class 8x8 npz dataset and a small ANN checkpoint on it."""
    root = tmp_path_factory.mktemp("config-api")
    spec, x, _, ann = toy_npz_cnn(root, n=30, seed=0, base=60, step=60, spread=20)
    path = save_ann(root / "ann.safetensors", ann.eval(), dataset={"spec": spec, "name": "toy"})
    calib = to_float(torch.from_numpy(x[:, None]))
    snn = convert(ann, calib, T=4, calib_T=8, calib_batches=1, calib_batch_size=16)
    save_snn(root / "snn.safetensors", snn, dataset=spec)
    return path


def test_run_evaluation_with_configs_equals_the_old_keywords(checkpoint: Path) -> None:
    root = checkpoint.parent
    config = EvaluationConfig(eps=0.1, ensemble="pgd-fast", batch_size=4, diagnostics="none")
    policy = EscalationPolicy(levels=1)
    new = run_evaluation(
        checkpoint, config, EvaluationRun(n=9, out_dir=root / "new", quiet=True, escalate=policy)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        old = run_evaluation(checkpoint, ensemble="pgd-fast", eps=0.1, n=9, out_dir=root / "old", quiet=True, diagnostics="none", batch_size=4, escalate=True, escalate_levels=1)  # fmt: skip
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    assert deprecations[0].filename == __file__ and deprecations[0].lineno == line
    assert "EvaluationRun" in str(deprecations[0].message)
    records = [(root / f / RECORDS_FILE).read_text() for f in ("new", "old")]
    assert records[0] == records[1]
    assert new["robust_accuracy"] == old["robust_accuracy"]
    assert new["escalation"]["max_levels"] == old["escalation"]["max_levels"] == 1
    # the old attack keyword is the config's attacks: "none" is clean accuracy only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        clean = run_evaluation(checkpoint, attack="none", eps=0.1, n=6, out_dir=root / "c", quiet=True)  # fmt: skip
    again = run_evaluation(
        checkpoint,
        EvaluationConfig(eps=0.1, attacks="none"),
        EvaluationRun(n=6, out_dir=root / "c2", quiet=True),
    )
    assert clean["attacks"] == again["attacks"] == {}
    assert clean["clean_accuracy"] == again["clean_accuracy"]
    with pytest.raises(TypeError, match="missing its config"):
        run_evaluation(checkpoint)
    with pytest.raises(TypeError, match="unexpected keyword"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_evaluation(checkpoint, eps=0.1, epochs=1)


def test_latency_curve_with_configs_equals_the_old_keywords(checkpoint: Path) -> None:
    root, snn = checkpoint.parent, checkpoint.parent / "snn.safetensors"
    config = EvaluationConfig(eps=0.05, ensemble="pgd-fast", batch_size=100, diagnostics="none")
    new = latency_curve(snn, [1, 4], config, EvaluationRun(n=6, out_dir=root / "lat-new"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        old = latency_curve(snn, [1, 4], out_dir=root / "lat-old", ensemble="pgd-fast", eps=0.05, n=6, diagnostics="none")  # fmt: skip
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    assert deprecations[0].filename == __file__ and deprecations[0].lineno == line
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in new["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in old["rows"]]
    assert new["curves"] == old["curves"]
    with pytest.raises(TypeError, match="out_dir"):
        latency_curve(snn, [1], config, EvaluationRun(n=6))


def test_run_diagnostics_with_a_run_equals_the_old_keywords() -> None:
    snn, x, y = _data(6)
    clean, robust = torch.ones(6, dtype=torch.bool), torch.zeros(6, dtype=torch.bool)
    members = [Member("pgd", "bptt-exp-1", {"steps": 2})]
    config = resolve_config("fast", 4)
    kwargs = {"eps": 0.1, "members": members, "config": config}
    new = run_diagnostics(snn, x, y, clean, robust, **kwargs, run=DiagnosticsRun(seed=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        old = run_diagnostics(snn, x, y, clean, robust, **kwargs, seed=2)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    assert deprecations[0].filename == __file__ and deprecations[0].lineno == line
    for results in (new, old):
        for check in results.values():
            check.pop("seconds", None)
    assert new == old
