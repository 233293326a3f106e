"""The random-SNN options end to end (issue 32): convert/train-snn/evaluate flags, config keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustsnn.cli import main
from robustsnn.config import load_config
from robustsnn.errors import UserError
from robustsnn.io.models import load_model, save_ann
from robustsnn.models import build_model


def _grey_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "grey.npz"
    np.savez(path, x_train=rng.integers(0, 255, (48, 8, 8, 1), dtype=np.uint8),
             y_train=np.arange(48) % 3, x_test=rng.integers(0, 255, (24, 8, 8, 1), dtype=np.uint8),
             y_test=np.arange(24) % 3)  # fmt: skip
    return path


def _ann(tmp_path: Path, data: Path) -> Path:
    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=3, in_channels=1, image_size=8, mean=[0.5],
                      std=[0.25], width=4, fc=16)  # fmt: skip
    return save_ann(tmp_path / "ann.safetensors", ann, dataset=f"npz:{data}")


def test_convert_with_poisson_input_then_evaluate_with_eot(tmp_path: Path) -> None:
    data = _grey_npz(tmp_path)
    ann = _ann(tmp_path, data)
    out = tmp_path / "snn"
    code = main(["convert", str(ann), "--T", "4", "--calib-T", "8", "--calib-batches", "1",
                 "--calib-batch-size", "16", "--eval-n", "12", "--input-encoding", "poisson",
                 "--threshold-noise", "0.05", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    model, meta = load_model(out / "snn.safetensors")
    assert meta["input_encoding"] == "poisson" and meta["threshold_noise"] == 0.05
    assert getattr(model, "input_encoding", None) == "poisson"
    evaluation = tmp_path / "eval"
    args = ["evaluate", str(out / "snn.safetensors"), "--attack", "fgsm", "--estimator",
            "bptt-pcw-1", "--num-samples", "6", "--diagnostics", "none", "--workers", "1",
            "--prediction-draws", "5", "--eot-draws", "3", "--out", str(evaluation), "--quiet"]  # fmt: skip
    assert main(args) == 0
    result = json.loads((evaluation / "evaluation.json").read_text())
    info = result["randomness"]
    assert info["detected"] and info["handled"]
    assert (info["eot_draws"], info["prediction_draws"]) == (3, 5)
    records = [json.loads(line) for line in (evaluation / "records.jsonl").read_text().splitlines()]
    assert all(r["draws"] == 5 for r in records)
    # the same command again (a fresh folder) repeats every record
    again = tmp_path / "again"
    assert main([*args[:-3], "--out", str(again), "--quiet"]) == 0
    assert (again / "records.jsonl").read_text() == (evaluation / "records.jsonl").read_text()


def test_train_snn_with_poisson_input_keeps_it_in_the_checkpoint(tmp_path: Path) -> None:
    data = _grey_npz(tmp_path)
    code = main(["train-snn", "--dataset", f"npz:{data}", "--model", "cnn_small", "--epochs",
                 "1", "--T", "2", "--width", "2", "--fc", "8", "--eval-n", "3",
                 "--input-encoding", "poisson", "--out", str(tmp_path / "snn"), "--quiet"])  # fmt: skip
    assert code == 0
    meta = json.loads((tmp_path / "snn" / "snn.json").read_text())
    assert meta["input_encoding"] == "poisson" and "threshold_noise" not in meta


def test_config_keys_and_their_errors() -> None:
    cfg = load_config(
        overrides=["snn.input_encoding=poisson", "snn.threshold_noise=0.1", "eval.randomness=off"]
    )
    assert (cfg.snn.input_encoding, cfg.snn.threshold_noise) == ("poisson", 0.1)
    assert cfg.eval.randomness == "off" and cfg.eval.prediction_draws == 15
    for override, message in [
        ("snn.input_encoding=rate", "snn.input_encoding"),
        ("snn.threshold_noise=-1", "snn.threshold_noise"),
        ("eval.randomness=maybe", "randomness mode"),
        ("eval.prediction_draws=4", "odd"),
    ]:
        with pytest.raises(UserError, match=message):
            load_config(overrides=[override])


def test_evaluate_flags_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _grey_npz(tmp_path)
    ann = _ann(tmp_path, data)
    code = main(["evaluate", str(ann), "--attack", "none", "--prediction-draws", "4",
                 "--out", str(tmp_path / "e"), "--quiet"])  # fmt: skip
    assert code == 2 and "odd" in capsys.readouterr().err


@pytest.mark.slow  # 11 s on the shared 2-core CPU
def test_quickstart_pipeline_with_poisson_input_runs_end_to_end(tmp_path: Path) -> None:
    """`robustsnn run --set snn.input_encoding=poisson` (the quickstart's cnn_small, shrunken):
    every stage runs, the SNNs keep the encoding and their evaluation handles the randomness."""
    from test_pipeline import _overrides, _tiny_npz

    overrides = [*_overrides(_tiny_npz(tmp_path / "tiny.npz")), "snn.input_encoding=poisson",
                 "eval.prediction_draws=5", "eval.escalate=false", "eval.workers=1"]  # fmt: skip
    run = tmp_path / "run"
    args = ["run", "--quiet", "--out", str(run), *sum((["--set", o] for o in overrides), [])]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"ann", "snn_converted", "snn_finetuned"}
    for name in ("snn_converted", "snn"):
        assert json.loads((run / f"{name}.json").read_text())["input_encoding"] == "poisson"
    evaluations = sorted(run.rglob("evaluation.json"))
    infos = [json.loads(p.read_text()).get("randomness", {}) for p in evaluations]
    handled = [i for i in infos if i.get("detected")]
    assert len(handled) >= 2  # the converted and the finetuned SNN; the ANN is deterministic
    assert all(i["handled"] and i["prediction_draws"] == 5 for i in handled)
