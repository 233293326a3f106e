"""``robustsnn transfer --seed`` is transfer_matrix's seed (default 0, the library's, as before)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robustsnn.cli import main
from robustsnn.evaluation import recheck


@pytest.mark.parametrize(("argv", "seed"), [([], 0), (["--seed", "7"], 7)])
def test_transfer_passes_its_seed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], seed: int
) -> None:
    got: dict[str, Any] = {}

    def fake_matrix(sources: Any, targets: Any = (), seed: int = -1) -> Any:
        got.update(sources=list(sources), targets=list(targets), seed=seed)
        return [], [], []

    monkeypatch.setattr(recheck, "transfer_matrix", fake_matrix)
    assert main(["transfer", str(tmp_path), "--on", "t.safetensors", *argv]) == 0
    assert got == {"sources": [str(tmp_path)], "targets": ["t.safetensors"], "seed": seed}
    assert recheck.TRANSFER_SEED == 0  # without --seed: the seed transfer_matrix defaults to
