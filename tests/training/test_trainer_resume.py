"""A run killed after an epoch and restarted ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustsnn.errors import UserError
from robustsnn.io.checkpoint import load_tensors
from robustsnn.training import Trainer, build_objective
from robustsnn.training.trainer import TrainerConfig


class Killed(Exception):
    pass


def kill_after(epoch: int):
    def callback(trainer: Trainer, record: dict[str, Any]) -> None:
        if record["epoch"] == epoch:
            raise Killed

    return callback


def make_trainer(model: nn.Module, out: Path, epochs: int = 2, **kw: Any) -> Trainer:
    # pgd_at draws attack random starts from the trainer's generator: resume must restore it.
    objective = build_objective("pgd_at", eps=8 / 255, steps=2)
    config = TrainerConfig(epochs=epochs, out_dir=out, name="ann", batch_size=16, quiet=True)
    return Trainer(model, objective, config, **kw)


def read_log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_resume_after_kill_is_bit_identical(tmp_path, toy_dataset, small_cnn):
    full = small_cnn(seed=3)
    make_trainer(full, tmp_path / "full").fit(toy_dataset)

    killed = small_cnn(seed=3)
    with pytest.raises(Killed):
        make_trainer(killed, tmp_path / "resumed", callbacks=[kill_after(1)]).fit(toy_dataset)
    state, meta = load_tensors(tmp_path / "resumed" / "ann.state.safetensors")
    assert meta["kind"] == "training_state" and meta["epoch"] == 1
    assert state["generator"].dtype == torch.uint8
    assert any(k.startswith("optimizer.") for k in state)

    # A kill between writing the log line and the state leaves a line for an epoch that reruns.
    with (tmp_path / "resumed" / "log.jsonl").open("a") as f:
        f.write(json.dumps({"phase": "ann", "epoch": 2, "loss": -1.0}) + "\n")

    resumed = small_cnn(seed=99)  # the weights must come from the state file, not the init
    history = make_trainer(resumed, tmp_path / "resumed").fit(toy_dataset)

    expected, got = full.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert [r["epoch"] for r in history] == [1, 2]
    log = read_log(tmp_path / "resumed")
    assert [(r["phase"], r["epoch"]) for r in log] == [("ann", 1), ("ann", 2)]
    assert all(r["loss"] > 0 for r in log)
    full_log = read_log(tmp_path / "full")
    assert [r["loss"] for r in log] == [r["loss"] for r in full_log]


def test_finished_run_is_not_retrained_and_other_phases_are_kept(tmp_path, toy_dataset, small_cnn):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text(json.dumps({"phase": "other", "epoch": 5}) + "\n")
    model = small_cnn()
    make_trainer(model, out, epochs=1).fit(toy_dataset)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = small_cnn(seed=7)
    history = make_trainer(again, out, epochs=1).fit(toy_dataset)
    assert len(history) == 1
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())
    assert [(r["phase"], r["epoch"]) for r in read_log(out)] == [("other", 5), ("ann", 1)]


def test_resume_with_another_setup_fails_clearly(tmp_path, toy_dataset, small_cnn):
    make_trainer(small_cnn(), tmp_path, epochs=1).fit(toy_dataset)
    with pytest.raises(UserError, match="epochs 1 -> 2"):
        make_trainer(small_cnn(), tmp_path, epochs=2).fit(toy_dataset)
