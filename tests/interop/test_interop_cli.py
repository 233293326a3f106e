"""The CLI doors: export, import, verify, evaluate --dataset/--split, and moved run folders."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustsnn.cli import main
from robustsnn.data import load_dataset
from robustsnn.io.models import load_model, save_snn

pytest.importorskip("nir")

from .interop_fixtures import SIZE, dyadic_snn  # noqa: E402


def _dataset(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.npz"
    x = (rng.integers(0, 17, (24, SIZE, SIZE)) * 15).astype(np.uint8)
    y = np.arange(24) % 4
    np.savez(path, x_train=x, y_train=y, x_test=x[:12], y_test=y[:12])
    return path


def _checkpoint(folder: Path) -> Path:
    data = _dataset(folder)
    spec = f"npz:{data}"
    info = load_dataset(spec).info
    snn = dyadic_snn("cnn_small", width=2, fc=8)
    snn.arch = {"name": "cnn_small", "num_classes": 4, "in_channels": 1, "image_size": SIZE,
                "mean": [0.25], "std": [0.5], "width": 2, "fc": 8}  # fmt: skip
    snn.conversion = {"bn": "keep"}
    snn.transforms = []
    return save_snn(folder / "run" / "snn.safetensors", snn,
                    dataset={"spec": spec, **dataclasses.asdict(info)})  # fmt: skip


def _reference(model: torch.nn.Module, path: Path, scale: float = 1.0) -> Path:
    x = torch.rand(6, 1, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x) * scale
    np.savez(path, x=x.numpy(), logits=logits.numpy())
    return path


def test_export_import_verify_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(tmp_path / "a")
    nir_file = tmp_path / "model.nir"
    assert main(["export", str(ckpt), "--format", "nir", "--out", str(nir_file)]) == 0
    original, meta = load_model(ckpt)
    ref = _reference(original, tmp_path / "ref.npz")
    spec = meta["dataset"]["spec"]
    out = tmp_path / "imported"
    argv = ["import", str(nir_file), "--dataset", spec, "--out", str(out), "--reference", str(ref)]
    assert main(argv) == 0
    assert "verified against" in capsys.readouterr().out
    imported = out / "snn.safetensors"
    assert json.loads((out / "verification.json").read_text())["passed"] is True
    results = []
    for model in (ckpt, imported):
        argv = ["evaluate", str(model), "--attack", "none", "--n", "8", "--split", "train",
                "--dataset", spec, "--out", str(tmp_path / f"eval-{model.parent.name}"), "--quiet"]  # fmt: skip
        assert main(argv) == 0
        results.append(
            json.loads((tmp_path / f"eval-{model.parent.name}" / "evaluation.json").read_text())
        )
    assert results[0]["split"] == "train" and results[0]["n"] == 8
    assert results[0]["clean_accuracy"] == results[1]["clean_accuracy"]
    # a wrong reference: verify fails, and evaluate then refuses the checkpoint
    bad = _reference(original, tmp_path / "bad.npz", scale=2.0)
    assert main(["verify", str(imported), "--reference", str(bad)]) == 2
    assert main(["evaluate", str(imported), "--attack", "none", "--n", "4", "--quiet",
                 "--out", str(tmp_path / "e3")]) == 2  # fmt: skip
    assert "failed verification" in capsys.readouterr().err


def test_moved_run_folder_still_evaluates(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "a")
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["dataset"]["spec_from_checkpoint"] == "npz:../data.npz"
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    moved = tmp_path / "b" / "run" / "snn.safetensors"
    _, loaded = load_model(moved)
    assert Path(loaded["dataset"]["spec"].partition(":")[2]) == tmp_path / "b" / "data.npz"
    argv = ["evaluate", str(moved), "--attack", "none", "--n", "4", "--quiet",
            "--out", str(tmp_path / "ev")]  # fmt: skip
    assert main(argv) == 0


def test_import_refuses_wrong_dataset_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path / "a")
    nir_file = tmp_path / "model.nir"
    assert main(["export", str(ckpt), "--out", str(nir_file)]) == 0
    assert (
        main(["import", str(nir_file), "--dataset", "mnist5k", "--out", str(tmp_path / "x")]) == 2
    )
    assert "images of shape [1, 28, 28]" in capsys.readouterr().err
