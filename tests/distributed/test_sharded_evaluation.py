"""Sharded evaluation on 2 gloo ranks: the single-process result exactly; a killed rank resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dist_workers import (
    EVAL_BATCH,
    EVAL_N,
    escalate_body,
    eval_body,
    launch,
    run_escalation,
    run_eval,
)
from evaluation_test_utils import strip_seconds

from robustsnn.evaluation.sharding import (
    BatchShard,
    merge_shards,
    shard_batches,
    shard_state_name,
)

N_BATCHES = -(-EVAL_N // EVAL_BATCH)


def test_batches_are_dealt_round_robin_without_padding() -> None:
    assert shard_batches(5, 0, 2) == [0, 2, 4] and shard_batches(5, 1, 2) == [1, 3]
    assert shard_batches(2, 2, 3) == []  # more ranks than batches: an idle rank, no repeats
    dealt = sorted(b for r in range(3) for b in shard_batches(7, r, 3))
    assert dealt == list(range(7))
    assert shard_state_name(1) == "evaluation-state.rank1.json"
    with pytest.raises(ValueError):
        shard_batches(5, 2, 2)


def test_merge_refuses_lost_or_twice_evaluated_batches() -> None:
    a, b = {0: {"r": 0}, 2: {"r": 2}}, {1: {"r": 1}}
    assert sorted(merge_shards([a, b], 3)) == [0, 1, 2]
    with pytest.raises(RuntimeError, match="two ranks"):
        merge_shards([a, {1: {}, 2: {}}], 3)
    with pytest.raises(RuntimeError, match="lost"):
        merge_shards([a, {}], 3)


def test_a_shard_gathers_only_its_own_batches() -> None:
    """A rank's resume file may hold batches of other ranks (adopted from an earlier run with
    another world size); only the rank's own ones go into the merge."""
    sent: list[dict] = []  # type: ignore[type-arg]

    def gather(mine: dict) -> list[dict]:  # type: ignore[type-arg]
        sent.append(mine)
        return [mine, {1: "one", 3: "three"}]

    shard = BatchShard(0, 2, gather_fn=gather, on_main_fn=lambda fn: fn())
    assert shard.batches(5) == [0, 2, 4]
    merged = shard.gather({0: "zero", 1: "stale", 2: "two", 4: "four"})  # type: ignore[dict-item]
    assert sent == [{0: "zero", 2: "two", 4: "four"}]
    assert merged == {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """The single-process evaluation (no shard, no resume state)."""
    out = tmp_path_factory.mktemp("single")
    return run_eval(None, out, None)


def _ran(out: Path, rank: int) -> list[int]:
    return json.loads((out / f"ran.rank{rank}.json").read_text())  # type: ignore[no-any-return]


def test_two_ranks_give_the_single_process_result_exactly(
    tmp_path: Path,
    reference: dict,  # type: ignore[type-arg]
) -> None:
    codes = launch(eval_body, 2, tmp_path, state_dir=str(tmp_path / "state"), out=str(tmp_path))
    assert codes == [0, 0]
    sharded = json.loads((tmp_path / "result.json").read_text())
    assert _ran(tmp_path, 0) == [0, 2, 4] and _ran(tmp_path, 1) == [1, 3]
    assert sharded["n"] == EVAL_N == len(sharded["records"])
    assert sharded["records"] == reference["records"]  # per-sample, bit for bit
    assert strip_seconds(sharded) == strip_seconds(reference)  # the whole evaluation.json
    assert sharded["diagnostics"] and 0 < sharded["robust_accuracy"] < sharded["clean_accuracy"]
    # the saved adversarial examples: the single process's file, bit for bit (digest compared
    # above with the rest of the result), and not an empty one
    assert sharded["adversarial_count"] > 0
    assert sharded["adversarial_sha256"] == reference["adversarial_sha256"]


def test_a_killed_rank_resumes_its_shard(
    tmp_path: Path,
    reference: dict,  # type: ignore[type-arg]
) -> None:
    state = tmp_path / "state"
    # Rank 1 is killed (SIGKILL) right after its first batch (1) was saved; rank 0 fails in the
    # gather that rank 1 never reaches.
    codes = launch(
        eval_body, 2, tmp_path, state_dir=str(state), out=str(tmp_path), die_rank=1, die_after=1
    )
    assert codes[1] not in (0, None) and codes[0] != 0
    assert _ran(tmp_path, 1) == [1]
    saved = json.loads((state / "evaluation-state.rank1.json").read_text())
    assert sorted(saved["batches"]) == ["1"]
    assert not (tmp_path / "result.json").exists()

    codes = launch(eval_body, 2, tmp_path, state_dir=str(state), out=str(tmp_path))
    assert codes == [0, 0]
    assert _ran(tmp_path, 1) == [3]  # batch 1 is not attacked again
    assert set(_ran(tmp_path, 0)) <= {0, 2, 4}  # whatever rank 0 had not saved before failing
    resumed = json.loads((tmp_path / "result.json").read_text())
    indices = [r["index"] for r in resumed["records"]]
    assert indices == list(range(EVAL_N))  # nothing lost, nothing counted twice
    assert strip_seconds(resumed) == strip_seconds(reference)

    # One process in the same folder finds every batch in the shard files: nothing to attack.
    alone = tmp_path / "alone"
    alone.mkdir()
    again = run_eval(state, alone, None)
    assert _ran(alone, 0) == []
    assert strip_seconds(again) == strip_seconds(reference)
    assert N_BATCHES == 5


def test_sharded_escalation_gives_the_single_process_result(tmp_path: Path) -> None:
    """``evaluate --escalate`` under torchrun: every step sharded, the step's diagnostics and
    the time-budget decision taken on rank 0, the single-process result."""
    alone = tmp_path / "alone"
    alone.mkdir()
    single = run_escalation(None, alone, None)
    assert [s["preset"] for s in single["escalation"]["steps"]] == ["fgsm-ensemble"]
    codes = launch(escalate_body, 2, tmp_path, state_dir=str(tmp_path / "state"), out=str(tmp_path))
    assert codes == [0, 0]
    sharded = json.loads((tmp_path / "escalated.json").read_text())
    assert strip_seconds(sharded) == strip_seconds(single)
    step_state = tmp_path / "state" / "escalation-1-fgsm-ensemble"
    assert (step_state / "evaluation-state.rank0.json").is_file()  # the step ran sharded
