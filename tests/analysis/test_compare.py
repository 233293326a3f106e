"""``robustsnn compare``: one table and a figure of evaluated models (issue 32)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from analysis_fixtures import write_run

from robustsnn.analysis.compare import collect_rows, randomness_text, write_comparison
from robustsnn.cli import main
from robustsnn.errors import UserError
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from evaluation_test_utils import images, labels_of, tiny_linear  # noqa: E402


class _Noisy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = tiny_linear(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out + 0.5 * torch.randn_like(out)


def _evaluation_folder(root: Path, name: str, model: torch.nn.Module) -> Path:
    x = images(12)
    y = labels_of(tiny_linear(0), x)
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=0.05, attacks="fgsm", diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    result.pop("records")
    folder = root / name
    folder.mkdir()
    (folder / "evaluation.json").write_text(json.dumps(result))
    # the resume state robustsnn evaluate leaves beside it is not an evaluation
    (folder / "evaluation-state.json").write_text(json.dumps({"version": 1, "batches": {}}))
    return folder


def test_compare_reads_run_and_evaluation_folders_and_writes_table_and_figure(
    tmp_path: Path,
) -> None:
    run = write_run(tmp_path)
    noisy = _evaluation_folder(tmp_path, "noisy", _Noisy())
    plain = _evaluation_folder(tmp_path, "plain", tiny_linear(0))
    rows = collect_rows([run, noisy, plain / "evaluation.json"])
    labels = [r.label for r in rows]
    assert labels[:2] == ["run1/ann", "run1/snn_converted"] and "run1/snn_finetuned" in labels
    assert "noisy" in labels and "plain" in labels and len(labels) == 6
    assert rows[labels.index("run1/snn_converted")].stats is not None
    md, html, figure = write_comparison([run, noisy, plain], tmp_path / "out")
    text = md.read_text()
    assert "random: EOT K=" in text and "majority of M=15" in text
    assert "deterministic" in text
    assert "different protocols" in text  # the run's ensemble vs the fgsm rows
    assert "[" in text and "n=12" in text  # intervals and n
    assert figure is not None and figure.stat().st_size > 1000
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," in html.read_text()


def test_randomness_column_says_when_a_random_model_was_not_handled() -> None:
    assert randomness_text({"randomness": {"detected": True, "handled": False}}).style == "fail"
    assert randomness_text({}).text == "not recorded"


def test_compare_command_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path)
    assert main(["compare", str(run), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "compare.md").is_file()
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "neither a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no evaluation"):
        collect_rows([tmp_path / "empty"])


def test_claims_column_shows_a_papers_number_beside_ours(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    claims = tmp_path / "claims.json"
    claims.write_text(
        json.dumps({"run1/snn_finetuned": {"robust_accuracy": 0.4333, "source": "paper, PGD7"}})
    )
    md, _, _ = write_comparison([run], tmp_path / "out", claims=claims)
    text = md.read_text()
    assert "paper's robust (claim)" in text and "43.33% (paper, PGD7)" in text
    claims.write_text(json.dumps({"nobody": {"robust_accuracy": 0.5}}))
    with pytest.raises(UserError, match="match no compared model"):
        write_comparison([run], tmp_path / "out", claims=claims)
    claims.write_text(json.dumps({"run1/ann": {"robust_accuracy": 43}}))
    with pytest.raises(UserError, match="robust_accuracy in"):
        write_comparison([run], tmp_path / "out", claims=claims)
