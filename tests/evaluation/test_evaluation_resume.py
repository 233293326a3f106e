"""Resume: a killed evaluation restarts from its last finished batch with identical results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evaluation_test_utils import images, labels_of, strip_seconds, tiny_mlp, tiny_snn

from robustsnn.evaluation import (
    STATE_FILE,
    DiagnosticsConfig,
    EvaluationConfig,
    EvaluationContext,
    evaluate,
)

# Cheap diagnostics, so that the resumed result includes (identical) diagnostics too.
DIAGNOSTICS = DiagnosticsConfig(n=4, square_queries=10, base_steps=2, convergence_factor=2)


class Killed(Exception):
    pass


def _run(state_dir: Path | None, callback=None, eps: float = 0.08) -> dict:  # type: ignore[no-untyped-def]
    x = images(14)
    return evaluate(
        tiny_snn(),
        x,
        labels_of(tiny_mlp(), x),
        EvaluationConfig(
            eps=eps, ensemble="pgd-fast", batch_size=5, seed=3, diagnostics=DIAGNOSTICS
        ),
        EvaluationContext(state_dir=state_dir, quiet=True, callback=callback),
    )


def test_resume_after_a_kill_gives_identical_results(tmp_path: Path) -> None:
    reference = _run(None)
    ran: list[int] = []

    def kill_after_first(batch: int) -> None:
        ran.append(batch)
        raise Killed

    with pytest.raises(Killed):
        _run(tmp_path, kill_after_first)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert list(state["batches"]) == ["0"]  # the first batch was saved before the kill

    resumed = _run(tmp_path, ran.append)
    assert ran == [0, 1, 2]  # batch 0 was not run again
    assert strip_seconds(resumed) == strip_seconds(reference)
    assert resumed["diagnostics"] and "seconds" in resumed["ensembles"]["pgd-fast"]

    again: list[int] = []  # a finished evaluation is only read back
    assert strip_seconds(_run(tmp_path, again.append)) == strip_seconds(reference)
    assert again == []


def test_other_settings_start_over(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        _run(tmp_path, lambda b: (_ for _ in ()).throw(Killed()))
    ran: list[int] = []
    other = _run(tmp_path, ran.append, eps=0.05)
    assert ran == [0, 1, 2]
    assert strip_seconds(other) == strip_seconds(_run(None, eps=0.05))


def test_unreadable_state_starts_over(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    ran: list[int] = []
    _run(tmp_path, ran.append)
    assert ran == [0, 1, 2]
    json.loads((tmp_path / STATE_FILE).read_text())
