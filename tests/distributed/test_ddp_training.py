"""DistributedDataParallel through the Trainer on 2 gloo ranks: one process's steps, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dist_workers import TRAIN_BATCH, TRAIN_N, launch, train, train_body, train_kill_body

from robustsnn.training.trainer import shard_rows


def _read(out: Path, rank: int) -> dict:  # type: ignore[type-arg]
    return json.loads((out / f"train.rank{rank}.json").read_text())  # type: ignore[no-any-return]


def _tensors(result: dict) -> dict[str, torch.Tensor]:  # type: ignore[type-arg]
    return {k: torch.tensor(v) for k, v in result["params"].items()}


def test_shard_rows_split_a_global_batch_contiguously() -> None:
    assert [shard_rows(8, r, 2) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    assert [shard_rows(3, r, 2) for r in range(2)] == [slice(0, 2), slice(2, 3)]
    assert [shard_rows(1, r, 2) for r in range(2)] == [slice(0, 1), slice(1, 1)]  # rank 1 empty
    rows = [list(range(7))[shard_rows(7, r, 3)] for r in range(3)]
    assert rows == [[0, 1, 2], [3, 4], [5, 6]]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    return train(tmp_path_factory.mktemp("one"), epochs=2)


def test_ddp_steps_equal_one_process_with_the_same_global_batch(
    tmp_path: Path,
    one_process: dict,  # type: ignore[type-arg]
) -> None:
    """2 epochs of 3 steps (global batches 8, 8, 3: the last splits 2 + 1, weighted), with
    augmentation: the same global batches, the same gradients up to the all-reduce's rounding."""
    assert -(-TRAIN_N // TRAIN_BATCH) == 3
    assert launch(train_body, 2, tmp_path, out=str(tmp_path), epochs=2) == [0, 0]
    rank0, rank1 = _read(tmp_path, 0), _read(tmp_path, 1)
    assert rank0["params"] == rank1["params"]  # bit-identical across ranks
    ddp, single = _tensors(rank0), _tensors(one_process)
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any((ddp[k] != v).any() for k, v in _tensors(train(tmp_path / "x", 0)).items())
    for h_ddp, h_one in zip(rank0["history"], one_process["history"], strict=True):
        assert h_ddp["train_accuracy"] == h_one["train_accuracy"]  # counts over all 19 images
        assert h_ddp["loss"] == pytest.approx(h_one["loss"], rel=1e-5)
        assert h_ddp["lr"] == h_one["lr"]  # the same schedule
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(log) == 2  # rank 0 alone writes


def test_adversarial_training_attacks_on_the_unwrapped_module(tmp_path: Path) -> None:
    """PGD-AT under DDP: the inner PGD runs on the plain module (no collective in the attack
    loop, whose per-rank random starts differ); the ranks still end with the same weights."""
    codes = launch(train_body, 2, tmp_path, out=str(tmp_path), epochs=1, objective="pgd_at")
    assert codes == [0, 0]
    assert _read(tmp_path, 0)["params"] == _read(tmp_path, 1)["params"]


def test_batchnorm_running_statistics_are_rank_0s_on_every_rank(tmp_path: Path) -> None:
    """Each rank normalizes its own rows; after training every rank holds rank 0's buffers
    (its last forward updated its own), so every rank goes on with the model rank 0 saved."""
    codes = launch(train_body, 2, tmp_path, out=str(tmp_path), epochs=1, batchnorm=True)
    assert codes == [0, 0]
    rank0, rank1 = _read(tmp_path, 0)["params"], _read(tmp_path, 1)["params"]
    assert "1.running_mean" in rank0 and rank0 == rank1


def test_training_resumes_after_a_rank_is_killed(tmp_path: Path) -> None:
    uninterrupted = tmp_path / "straight"
    assert launch(train_body, 2, uninterrupted, out=str(uninterrupted), epochs=2) == [0, 0]
    killed = tmp_path / "killed"
    codes = launch(train_kill_body, 2, killed, out=str(killed), epochs=2, die_rank=1,
                   die_after_epoch=1)  # fmt: skip
    assert codes[1] not in (0, None)
    assert not (killed / "train.rank0.json").exists() or codes[0] != 0
    assert len((killed / "log.jsonl").read_text().splitlines()) == 1  # epoch 1 was saved
    assert launch(train_body, 2, killed, out=str(killed), epochs=2) == [0, 0]
    assert _read(killed, 0)["params"] == _read(uninterrupted, 0)["params"]
    assert _read(killed, 1)["params"] == _read(uninterrupted, 1)["params"]
    assert [h["epoch"] for h in _read(killed, 0)["history"]] == [1, 2]
    assert len((killed / "log.jsonl").read_text().splitlines()) == 2  # no epoch twice
