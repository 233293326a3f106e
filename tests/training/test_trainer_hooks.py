"""Trainer options: clamp hook, parameter groups, freezing, schedule, optimizers, logging."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from robustsnn.config import OptimizerConfig
from robustsnn.errors import UserError
from robustsnn.io.checkpoint import load_tensors
from robustsnn.training import Trainer, TrainerConfig, build_objective
from robustsnn.training.trainer import (
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    schedule_factor,
)


class WithThreshold(nn.Module):
    """A tiny CNN plus a scalar 'threshold' parameter (a regularizer pushes it below zero)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.threshold = nn.Parameter(torch.tensor(0.05))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_clamp_param_groups_and_freeze(tmp_path, toy_dataset, small_cnn):
    model = WithThreshold(small_cnn())
    frozen_before = model.inner.features[0].weight.detach().clone()
    calls = []

    def clamp(m: nn.Module) -> None:
        calls.append(torch.is_grad_enabled())
        m.threshold.clamp_(min=0.03)  # type: ignore[operator]

    trainer = Trainer(
        model,
        build_objective("natural", regularizer=lambda m: 10.0 * m.threshold),
        TrainerConfig(
            epochs=2,
            out_dir=tmp_path,
            batch_size=16,
            quiet=True,
            optimizer=OptimizerConfig(lr=0.05),
        ),
        param_groups=[{"params": ["threshold"], "lr": 1.0, "weight_decay": 0.0}],
        freeze=["inner.features.0.*"],
        clamp=clamp,
    )
    groups = trainer.optimizer.param_groups
    assert [g["base_lr"] for g in groups] == [1.0, 0.05]
    assert groups[0]["params"] == [model.threshold] and groups[0]["weight_decay"] == 0.0
    assert all(p is not model.inner.features[0].weight for g in groups for p in g["params"])
    trainer.fit(toy_dataset)

    assert calls == [False] * 6  # 48 images / 16 per batch * 2 epochs, each without grad
    assert model.threshold.item() == pytest.approx(0.03)  # pulled down by the regularizer, clamped
    assert torch.equal(model.inner.features[0].weight, frozen_before)
    assert not model.inner.features[0].weight.requires_grad


def test_cosine_schedule_per_step_and_log_fields(tmp_path, toy_dataset, small_cnn):
    assert schedule_factor("cosine", 0, 10) == 1.0
    assert schedule_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert schedule_factor("constant", 7, 10) == 1.0
    trainer = Trainer(
        small_cnn(),
        build_objective("natural"),
        # quiet False: exercise the progress bar and the summary line
        TrainerConfig(epochs=2, out_dir=tmp_path, batch_size=16, quiet=False),
        epoch_eval=lambda m: {"clean_accuracy": 0.5},
    )
    trainer.fit(toy_dataset)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    for r in log:
        assert {
            "phase",
            "epoch",
            "loss",
            "train_accuracy",
            "lr",
            "seconds",
            "cpu_seconds",
        } <= r.keys()
        assert r["cpu_seconds"] > 0
        assert r["clean_accuracy"] == 0.5 and 0 <= r["train_accuracy"] <= 1
    assert log[0]["lr"] == pytest.approx(0.1)
    assert log[1]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    last = trainer.optimizer.param_groups[0]["lr"]
    assert last == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))


def test_adam_state_round_trips_through_safetensors(tmp_path, toy_dataset, small_cnn):
    trainer = Trainer(
        small_cnn(),
        build_objective("natural"),
        TrainerConfig(
            epochs=1, out_dir=tmp_path, batch_size=16, quiet=True,
            optimizer=OptimizerConfig(name="adam", lr=1e-3),
        ),
    )  # fmt: skip
    trainer.fit(toy_dataset)
    tensors, meta = optimizer_state_to_tensors(trainer.optimizer)
    assert any(k.endswith(".exp_avg") for k in tensors)
    json.dumps(meta)  # metadata must be plain JSON
    fresh = torch.optim.Adam(trainer.model.parameters(), lr=1.0)
    optimizer_state_from_tensors(fresh, tensors, json.loads(json.dumps(meta)))
    original = trainer.optimizer.state_dict()["state"]
    restored = fresh.state_dict()["state"]
    for index, entry in original.items():
        for key, value in entry.items():
            assert torch.equal(value, restored[index][key])
    state, meta = load_tensors(tmp_path / "train.state.safetensors")
    assert meta["epoch"] == 1 and meta["optimizer"]["param_groups"][0]["lr"] > 0


def test_bad_options_fail_clearly(tmp_path, small_cnn):
    objective = build_objective("natural")
    with pytest.raises(UserError, match="valid: sgd, adam"):
        Trainer(
            small_cnn(), objective, TrainerConfig(1, tmp_path, optimizer=OptimizerConfig("lbfgs"))
        )
    config = TrainerConfig(epochs=1, out_dir=tmp_path)
    with pytest.raises(UserError, match="matches no parameter"):
        Trainer(small_cnn(), objective, config, freeze=["nope.*"])
    with pytest.raises(UserError, match="matches no trainable parameter"):
        Trainer(small_cnn(), objective, config, param_groups=[{"params": ["x"]}])
