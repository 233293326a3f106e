"""``oracle_gap.py report``'s member table: CPU seconds and first breaks per preset member,
summed over the suite's models (read from each run's ``member_seconds`` and records)."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation_test_utils import load_oracle_gap


def _run(folder: Path, seconds: dict[str, float], verdicts: list[tuple[bool, bool, str]]) -> None:
    """A finished run: ``verdicts`` = (clean_correct, robust, broken_by) per sample."""
    folder.mkdir(parents=True)
    evaluation = {"n": len(verdicts), "ensembles": {"p": {"member_seconds": seconds}}}
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    lines = [
        json.dumps({"index": i, "clean_correct": c, "robust": r, "broken_by": b})
        for i, (c, r, b) in enumerate(verdicts)
    ]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")


def test_member_credit_sums_seconds_and_first_breaks_over_models(tmp_path: Path) -> None:
    gap = load_oracle_gap()
    _run(
        tmp_path / "m1" / "p",
        {"a": 1.0, "b": 3.0},
        [(True, False, "a"), (True, False, "b"), (True, True, ""), (False, False, "")],
    )
    _run(tmp_path / "m2" / "p", {"a": 2.0, "b": 2.0}, [(True, False, "a"), (True, False, "a")])
    (tmp_path / "m3").mkdir()  # a model without this preset's run is skipped
    rows, text = gap.member_credit(tmp_path, "p")
    by = {r["member"]: r for r in rows}
    assert by["a"]["cpu_seconds"] == 3.0 and by["b"]["cpu_seconds"] == 5.0
    assert by["a"]["share"] == 3.0 / 8.0
    assert by["a"]["first_breaks"] == 3 and by["a"]["models"] == {"m1": 1, "m2": 2}
    # a clean miss is not a break; a robust sample credits nobody
    assert by["b"]["first_breaks"] == 1 and by["b"]["models"] == {"m1": 1}
    assert "| a | 3 | 37.5% | 3 | m1 1, m2 2 |" in text


def test_a_member_that_never_breaks_shows_zero(tmp_path: Path) -> None:
    gap = load_oracle_gap()
    _run(tmp_path / "m1" / "p", {"a": 1.0, "idle": 9.0}, [(True, False, "a")])
    rows, text = gap.member_credit(tmp_path, "p")
    idle = next(r for r in rows if r["member"] == "idle")
    assert idle["first_breaks"] == 0 and idle["share"] == 0.9
    assert "| idle | 9 | 90.0% | 0 | - |" in text


def test_pool_batch_size_applies_to_the_pool_only_and_is_kept_for_a_resume(
    tmp_path: Path,
) -> None:
    import argparse

    gap = load_oracle_gap()
    args = argparse.Namespace(pool_batch_size=8)
    assert gap.pool_batch(args, "reliable", tmp_path / "reliable") == {}
    pool = tmp_path / gap.POOL
    assert gap.pool_batch(args, gap.POOL, pool) == {"batch_size": 8}
    # a resume without the option (or with another) keeps the batch size the run began with
    assert gap.pool_batch(argparse.Namespace(pool_batch_size=None), gap.POOL, pool) == {
        "batch_size": 8
    }
    assert gap.pool_batch(argparse.Namespace(pool_batch_size=32), gap.POOL, pool) == {
        "batch_size": 8
    }
    assert gap.pool_batch(argparse.Namespace(pool_batch_size=None), gap.POOL, tmp_path / "x") == {}
