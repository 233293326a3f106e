"""Forked evaluation workers: how many, and what happens when one fails."""

from __future__ import annotations

import os

import pytest
import torch
from evaluation_test_utils import images, labels_of, strip_seconds, tiny_mlp, tiny_snn

from robustsnn.errors import UserError
from robustsnn.evaluation.config import EvaluationConfig, EvaluationContext
from robustsnn.evaluation.escalate import EscalationPolicy, evaluate_escalating
from robustsnn.evaluation.sharding import BatchShard
from robustsnn.evaluation.workers import (
    MAX_AUTO_WORKERS,
    available_cores,
    resolve_workers,
    run_in_workers,
)


def test_resolve_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_workers(3, "cpu") == 3
    assert resolve_workers(0, "cpu") == max(1, min(available_cores(), MAX_AUTO_WORKERS))
    assert resolve_workers(4, "cuda") == 1  # one process per accelerator: use torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_workers(4, "cpu") == 1  # torchrun ranks already share the batches
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(UserError, match="workers must be an integer"):
            resolve_workers(bad, "cpu")  # type: ignore[arg-type]


def _gathering_job(fail_rank: int | None, how: str):  # type: ignore[no-untyped-def]
    def job(shard: BatchShard | None, is_main: bool) -> list[int]:
        assert shard is not None
        if shard.rank == fail_rank:
            if how == "user":
                raise UserError("rank says no")
            if how == "crash":
                raise ValueError("boom")
            os._exit(3)  # killed
        result = []
        for call in range(2):  # two evaluate calls in a row (a screen, an escalation step)
            done = {b: {"rank": shard.rank, "call": call} for b in shard.batches(7)}
            merged = shard.gather(done)
            total = shard.on_main(lambda merged=merged: len(merged))
            result.append(([merged[b]["rank"] for b in range(7)], total))
        return result

    return job


def test_workers_take_every_batch_once_and_return_the_parents_result() -> None:
    """Each process takes the next batch when it is free: every batch is attacked exactly
    once per call (the merge would raise otherwise), by some process."""
    result = run_in_workers(3, _gathering_job(None, ""))
    assert len(result) == 2
    for ranks, total in result:
        assert total == 7 and set(ranks) <= {0, 1, 2}


@pytest.mark.parametrize(
    "how,error,match",
    [
        ("user", UserError, "rank says no"),
        ("crash", RuntimeError, "ValueError: boom"),
        ("exit", RuntimeError, "exited during the evaluation"),
    ],
)
def test_a_failing_worker_fails_the_evaluation_instead_of_hanging(
    how: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        run_in_workers(2, _gathering_job(1, how))


def test_a_failing_parent_stops_its_workers() -> None:
    with pytest.raises(UserError, match="rank says no"):
        run_in_workers(2, _gathering_job(0, "user"))


def test_one_worker_runs_here_unsharded() -> None:
    assert run_in_workers(1, lambda shard, is_main: (shard, is_main)) == (None, True)


def test_workers_bring_back_records_and_adversarial_examples_bit_for_bit() -> None:
    """A breakable tiny SNN, escalated, with its adversarial examples kept: tensors travel
    back from the workers and the result equals one process's."""
    x = images(10)
    snn, y = tiny_snn(), labels_of(tiny_mlp(), images(10))

    def job(shard: BatchShard | None, is_main: bool) -> dict:  # type: ignore[type-arg]
        config = EvaluationConfig(0.15, "pgd-fast", batch_size=3, save_adversarial=True)
        context = EvaluationContext(quiet=True, shard=shard)
        policy = EscalationPolicy(levels=1, at_least="reliable")
        return evaluate_escalating(snn, x, y, config, context, policy)

    one = run_in_workers(1, job)
    three = run_in_workers(3, job)
    examples_one, examples_three = one.pop("adversarial"), three.pop("adversarial")
    assert len(examples_one) > 0
    assert strip_seconds(three) == strip_seconds(one)
    assert one["escalation"]["steps"], "the test should exercise an escalation step"
    assert torch.equal(examples_three.index, examples_one.index)
    assert examples_three.member == examples_one.member
    assert torch.equal(examples_three.adversarial, examples_one.adversarial)


def test_block_size_of_the_spiking_layers_changes_no_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`reliable` on a tiny SNN with the per-element estimators' rows cut into blocks of 8
    neurons or left whole: the same per-sample records (the speed-ups of issue 22 are the same
    arithmetic)."""
    from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
    from robustsnn.snn import dynamics

    x = images(8)
    snn, y = tiny_snn(), labels_of(tiny_mlp(), images(8))
    results = []
    for block in (8, 1 << 20):
        monkeypatch.setattr(dynamics, "BLOCK", block)
        result = evaluate(
            snn,
            x,
            y,
            EvaluationConfig(eps=0.05, ensemble="reliable", diagnostics="none", batch_size=4),
            EvaluationContext(quiet=True),
        )
        results.append(result["records"])
    assert results[0] == results[1]
    # some samples break (some during the first member's run: its later passes cover fewer
    # rows), and one stands, so every member runs
    assert sum(not r["robust"] and r["clean_correct"] for r in results[0]) >= 4
    assert any(r["robust"] for r in results[0])


def test_workers_give_the_single_process_records_for_the_adaptive_members() -> None:
    """The pieces `reliable` is built from (a first member on every sample, a race whose
    candidates are several starts and losses, members gated by the closest call) give one
    process's records with workers too: nothing in them depends on which process ran a batch
    (torchrun ranks take batches the same way)."""
    from robustsnn.evaluation import evaluate
    from robustsnn.evaluation.ensembles import Ensemble, Member, race_member

    members = (
        Member("sapgd", "bptt-rel-pcw-1", {"steps": 2}),
        race_member(
            ("bptt-rel-pcw-1", "bptt-rel-pcw-0.5"),
            steps=6,
            checkpoints=(2,),
            keep=(1,),
            finisher_iter=2,
            starts=2,
            losses=("ce", "dlr"),
            close_call=0.9,
        ),
        Member("apgd-dlr", "bptt-rel-pcw-0.5", {"n_iter": 3}, close_call=0.9),
    )
    x = images(12)
    snn, y = tiny_snn(), labels_of(tiny_mlp(), images(12))

    def job(shard: BatchShard | None, is_main: bool) -> dict:  # type: ignore[type-arg]
        ensemble = Ensemble("tiny-adaptive", members)
        config = EvaluationConfig(0.08, ensemble, batch_size=3, diagnostics="none")
        return evaluate(snn, x, y, config, EvaluationContext(quiet=True, shard=shard))

    one = run_in_workers(1, job)
    three = run_in_workers(3, job)
    assert strip_seconds(three) == strip_seconds(one)
    broken_by = [r["broken_by"] for r in one["records"] if r["clean_correct"]]
    assert None in broken_by  # some samples stand ...
    assert {b for b in broken_by if b} - {members[0].name}  # ... and the gated ones break some
