"""The training entry points take config objects (issue 34): the defaults live once, in
robustsnn.config; the command line and the run build their configs from the named profiles;
the old keyword call style works for one release with a DeprecationWarning."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

import robustsnn.training.ann as ann_training
import robustsnn.training.snn as snn_training
from robustsnn.cli import build_parser
from robustsnn.config import (
    ANNConfig,
    FinetuneConfig,
    OptimizerConfig,
    RunConfig,
    RunContext,
    SNNTrainingConfig,
)
from robustsnn.io.checkpoint import load_tensors
from robustsnn.training import Trainer, build_objective, finetune_snn, train_ann, train_snn
from robustsnn.training.trainer import TrainerConfig

SMALL = {"width": 4, "fc": 16}


@pytest.fixture
def toy_data(monkeypatch, toy_dataset):
    """The toy dataset for every spec (the entry points load datasets by name)."""
    monkeypatch.setattr(snn_training, "load_dataset", lambda *a, **k: toy_dataset)
    monkeypatch.setattr(ann_training, "load_dataset", lambda *a, **k: toy_dataset)
    return toy_dataset


# ---------------------------------------------------------------------------- profiles
def test_the_command_line_defaults_are_the_named_profiles() -> None:
    parse = build_parser().parse_args
    ann, run_ann = ANNConfig.command_line(), RunConfig().ann
    a = parse(["train-ann"])
    for key in ("objective", "eps", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
                "cutout", "beta"):  # fmt: skip
        assert getattr(a, key) == getattr(ann, key), key
    # the run's ANN default and the command's differ in the radius and the epochs only
    differ = {
        f.name
        for f in dataclasses.fields(ANNConfig)
        if getattr(ann, f.name) != getattr(run_ann, f.name)
    }
    assert differ == {"eps", "epochs"}
    assert (ann.eps, ann.epochs, run_ann.eps, run_ann.epochs) == (2 / 255, 10, 0.1, 3)
    s, snn = parse(["train-snn"]), SNNTrainingConfig()
    for key in ("objective", "T", "epochs", "eps", "batch_size", "leak", "reset",
                "input_encoding", "threshold_noise"):  # fmt: skip
        assert getattr(s, key) == getattr(snn, key), key
    assert s.lr == snn.optimizer.lr and snn.optimizer == OptimizerConfig()
    # finetuning: one recipe, the run's and the command's (tests/test_finetune_defaults.py)
    assert RunConfig().finetune == FinetuneConfig()


def test_ann_config_gives_the_objective_its_parameters() -> None:
    assert ANNConfig().objective_params() == {"steps": 10}
    assert ANNConfig(objective="trades", beta=3.0).objective_params() == {"beta": 3.0, "steps": 10}
    assert ANNConfig(objective="natural").objective_params() == {}
    assert ANNConfig(optimizer="adam", lr=0.01).optimizer_config() == OptimizerConfig(
        "adam", 0.01, 0.9, 5e-4, "cosine"
    )


# ------------------------------------------------------------------ the old call style
def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_tensors(a)[0], load_tensors(b)[0]
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_trainer_old_keywords_warn_and_build_the_same_config(tmp_path, small_cnn) -> None:
    objective = build_objective("natural")
    with pytest.warns(
        DeprecationWarning, match=r"Trainer\(model, objective, TrainerConfig"
    ) as warned:
        old = Trainer(small_cnn(), objective, epochs=2, out_dir=tmp_path, lr=0.05,
                      optimizer="adam", batch_size=16, quiet=True)  # fmt: skip
    assert warned[0].filename == __file__
    assert old.config == TrainerConfig(
        epochs=2, out_dir=tmp_path, batch_size=16, quiet=True,
        optimizer=OptimizerConfig(name="adam", lr=0.05),
    )  # fmt: skip
    with pytest.raises(TypeError, match="lr"):
        Trainer(small_cnn(), objective, TrainerConfig(epochs=1, out_dir=tmp_path), lr=0.1)


def test_train_ann_old_keywords_warn_and_train_the_same(tmp_path, toy_data) -> None:
    run = RunContext(out_dir=tmp_path / "new", eval_n=0, quiet=True)
    config = ANNConfig(objective="pgd_at", eps=4 / 255, epochs=1, batch_size=16, lr=0.05)
    new = train_ann("toy", "cnn_small", config, run, model_kwargs=SMALL)
    with pytest.warns(DeprecationWarning, match="train_ann") as warned:
        old = train_ann("toy", "cnn_small", "pgd_at", eps=4 / 255, epochs=1, batch_size=16,
                        lr=0.05, out_dir=tmp_path / "old", model_kwargs=SMALL, eval_n=0,
                        quiet=True, steps=10)  # fmt: skip
    _same_tensors(new, old)
    assert warned[0].filename == __file__  # the warning names the caller's line


def test_train_snn_old_keywords_warn_and_train_the_same(tmp_path, toy_data) -> None:
    run = RunContext(out_dir=tmp_path / "new", eval_n=0, quiet=True)
    config = SNNTrainingConfig(
        objective="rfgsm_at", T=2, epochs=1, batch_size=16, init_threshold=0.5,
        optimizer=OptimizerConfig(lr=0.05), objective_options={"alpha": 0.01},
    )  # fmt: skip
    new = train_snn("toy", "cnn_small", config, run, model_kwargs=SMALL)
    with pytest.warns(DeprecationWarning, match="train_snn") as warned:
        old = train_snn("toy", "cnn_small", "rfgsm_at", T=2, epochs=1, batch_size=16, lr=0.05,
                        init_threshold=0.5, out_dir=tmp_path / "old", model_kwargs=SMALL,
                        eval_n=0, quiet=True, alpha=0.01)  # fmt: skip
    _same_tensors(new, old)
    assert warned[0].filename == __file__  # the warning names the caller's line


def test_finetune_snn_old_keywords_warn_and_finetune_the_same(tmp_path, toy_data) -> None:
    source = train_snn(
        "toy", "cnn_small", SNNTrainingConfig(T=2, epochs=0, init_threshold=0.5),
        RunContext(out_dir=tmp_path / "src", eval_n=0, quiet=True), model_kwargs=SMALL,
    )  # fmt: skip
    options: dict[str, Any] = dict(
        objective="robust_finetune", adversary=None, estimator="bptt-pcw-1", epochs=1,
        batch_size=16, lr=0.05,
    )  # fmt: skip
    run = RunContext(out_dir=tmp_path / "new", eval_n=0, quiet=True)
    new = finetune_snn(source, FinetuneConfig(**options), run)
    with pytest.warns(DeprecationWarning, match="finetune_snn") as warned:
        old = finetune_snn(source, out_dir=tmp_path / "old", eval_n=0, quiet=True, **options)
    _same_tensors(new, old)
    assert warned[0].filename == __file__  # the warning names the caller's line
    with pytest.raises(TypeError, match="beta"):
        finetune_snn(source, FinetuneConfig(), run, beta=1.0)


# ---------------------------------------------------------------------- the command line
def test_the_commands_build_their_configs_from_the_profiles(monkeypatch, tmp_path) -> None:
    """train-ann, train-snn and finetune hand the library a config built from their profile
    and the options given, and a RunContext with the common options (--data-dir included)."""
    from robustsnn.cli import main
    from robustsnn.errors import UserError

    calls: dict[str, tuple[Any, ...]] = {}

    def fake(name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            calls[name] = (*args, kwargs)
            raise UserError("stop here")

        return record

    monkeypatch.setattr(ann_training, "train_ann", fake("ann"))
    monkeypatch.setattr(snn_training, "train_snn", fake("snn"))
    monkeypatch.setattr(snn_training, "finetune_snn", fake("finetune"))
    common = ["--data-dir", str(tmp_path / "data"), "--seed", "4", "--quiet"]
    assert main(["train-ann", "--out", str(tmp_path / "a"), "--lr", "0.02", *common]) == 2
    assert main(["train-snn", "--out", str(tmp_path / "s"), "--objective", "snn_rat", "--lr",
                 "0.02", *common]) == 2  # fmt: skip
    assert main(["finetune", str(tmp_path / "snn.safetensors"), "--freeze-weights",
                 "--adversary", "none", *common]) == 2  # fmt: skip
    dataset, model, config, run, kwargs = calls["ann"]
    assert (dataset, model, kwargs) == ("mnist5k", "cnn_small", {"model_kwargs": None})
    assert config == dataclasses.replace(ANNConfig.command_line(), lr=0.02)
    assert run == RunContext(out_dir=str(tmp_path / "a"), seed=4, quiet=True,
                             data_dir=str(tmp_path / "data"))  # fmt: skip
    _, _, config, run, _ = calls["snn"]
    assert config == SNNTrainingConfig(
        objective="rfgsm_at", snn_rat=True, optimizer=OptimizerConfig(lr=0.02)
    )
    assert run.data_dir == str(tmp_path / "data") and run.seed == 4
    _, config, run, _ = calls["finetune"]
    assert config == dataclasses.replace(FinetuneConfig(), train_weights=False, adversary=None)
    assert run.out_dir == tmp_path / "finetuned" and run.eval_n == 1000
