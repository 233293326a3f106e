"""run_evaluation (the `robustsnn evaluate CKPT` command): checkpoints, data, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_test_utils import strip_seconds

from robustsnn.conversion import convert
from robustsnn.data import load_dataset, to_float
from robustsnn.errors import UserError
from robustsnn.evaluation import (
    EVALUATION_FILE,
    RECORDS_FILE,
    dataset_spec_from_meta,
    run_evaluation,
    stratified_indices,
)
from robustsnn.modelio import save_ann, save_snn
from robustsnn.models import build_model
from robustsnn.snn import estimator_names

CONTRACT = {
    "model": str,
    "dataset": str,
    "split": str,
    "n": int,
    "eps": float,
    "clean_accuracy": float,
    "attacks": dict,
    "ensembles": dict,
    "diagnostics": dict,
}


def test_stratified_indices() -> None:
    grouped = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)
    assert stratified_indices(grouped, 6).tolist() == [0, 1, 5, 6, 10, 11]
    assert stratified_indices(grouped, 7).tolist() == [0, 1, 2, 5, 6, 10, 11]
    assert stratified_indices(grouped, None).tolist() == list(range(15))
    interleaved = torch.arange(12) % 3
    assert stratified_indices(interleaved, 6).tolist() == [0, 1, 2, 3, 4, 5]
    short = torch.tensor([0] + [1] * 5 + [2] * 5)  # class 0 has one sample only
    chosen = stratified_indices(short, 9)
    assert torch.bincount(short[chosen], minlength=3).tolist() == [1, 4, 4]
    assert stratified_indices(grouped, 4, num_classes=4).tolist() == [0, 1, 5, 10]
    with pytest.raises(UserError, match="more than the 15 samples"):
        stratified_indices(grouped, 16)
    with pytest.raises(UserError, match="positive"):
        stratified_indices(grouped, 0)


def test_dataset_spec_from_meta() -> None:
    assert dataset_spec_from_meta({"dataset": {"spec": "cifar10", "name": "x"}}) == "cifar10"
    assert dataset_spec_from_meta({"dataset": "mnist5k"}) == "mnist5k"
    assert dataset_spec_from_meta({"dataset": {"name": "svhn"}}) == "svhn"
    assert dataset_spec_from_meta({}) is None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-class 8x8 npz dataset (test split grouped by class), an ANN and its SNN."""
    root = tmp_path_factory.mktemp("ckpt")
    g = np.random.default_rng(0)

    def split(n: int, grouped: bool) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(3), n // 3) if grouped else np.arange(n) % 3
        x = g.normal(60 + 60 * y[:, None, None], 20, size=(n, 8, 8))
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(48, grouped=False)
    x_test, y_test = split(30, grouped=True)
    npz = root / "toy.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    spec = f"npz:{npz}"
    info = load_dataset(spec).info
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small",
        num_classes=3,
        in_channels=1,
        image_size=8,
        mean=info.mean,
        std=info.std,
        width=4,
        fc=16,
    )
    ann.eval()
    ann_path = save_ann(root / "ann.safetensors", ann, dataset={"spec": spec, "name": "toy"})
    calib = to_float(torch.from_numpy(x_train[:, None]))
    snn = convert(ann, calib, T=4, calib_T=8, calib_batches=2, calib_batch_size=16)
    snn_path = save_snn(root / "snn.safetensors", snn, dataset=spec)
    bare = save_ann(root / "bare.safetensors", ann)
    return {"ann": ann_path, "snn": snn_path, "bare": bare, "root": root}


def _check_contract(result: dict) -> None:  # type: ignore[type-arg]
    for key, kind in CONTRACT.items():
        assert isinstance(result[key], kind), key
    assert result["T"] is None or isinstance(result["T"], int)


def test_attack_pgd_on_an_snn_runs_every_estimator(checkpoints: dict[str, Path]) -> None:
    out = checkpoints["root"] / "eval-snn"
    result = run_evaluation(
        checkpoints["snn"],
        attack="pgd",
        eps="8/255",
        n=3,
        out_dir=out,
        quiet=True,
        diagnostics="none",
        batch_size=2,
    )
    written = json.loads((out / EVALUATION_FILE).read_text())
    assert written == result
    _check_contract(written)
    assert written["model"] == str(checkpoints["snn"]) and written["T"] == 4
    assert written["dataset"].startswith("npz:") and written["split"] == "test"
    assert set(written["attacks"]) == {f"pgd/{e}" for e in estimator_names()}
    assert written["ensembles"]["pgd (all estimators)"]["members"] == 19
    records = [json.loads(line) for line in (out / RECORDS_FILE).read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 10, 20]  # stratified
    assert sorted({r["label"] for r in records}) == [0, 1, 2]
    # Re-running the same command resumes from the saved state: same numbers.
    again = run_evaluation(
        checkpoints["snn"],
        attack="pgd",
        eps=8 / 255,
        n=3,
        out_dir=out,
        quiet=True,
        diagnostics="none",
        batch_size=2,
    )
    assert strip_seconds(again) == strip_seconds(result)


def test_attack_none_ensemble_and_estimator(checkpoints: dict[str, Path]) -> None:
    root = checkpoints["root"]
    clean = run_evaluation(
        checkpoints["ann"], attack="none", eps=0.0, n=9, out_dir=root / "clean", quiet=True
    )
    _check_contract(clean)
    assert clean["T"] is None and clean["attacks"] == {} and clean["ensembles"] == {}
    assert clean["n"] == 9
    one = run_evaluation(
        checkpoints["snn"],
        attack="pgd",
        estimator="bptr",
        eps=0.03,
        n=3,
        out_dir=root / "one",
        quiet=True,
        diagnostics="none",
    )
    assert list(one["attacks"]) == ["pgd/bptr"] and one["ensembles"] == {}
    fast = run_evaluation(
        checkpoints["ann"],
        ensemble="pgd-fast",
        eps=0.03,
        n=3,
        out_dir=root / "fast",
        quiet=True,
        diagnostics="none",
    )
    assert fast["ensembles"]["pgd-fast"]["members"] == 1  # collapsed for an ANN
    restricted = run_evaluation(
        checkpoints["snn"],
        attack="pgd-fast",
        estimator="ann-proxy",
        eps=0.03,
        n=3,
        out_dir=root / "restricted",
        quiet=True,
        diagnostics="none",
    )
    assert restricted["ensembles"]["pgd-fast"]["member_names"] == ["pgd/ann-proxy"]


def test_run_evaluation_errors(checkpoints: dict[str, Path]) -> None:
    root = checkpoints["root"]
    with pytest.raises(UserError, match="not both"):
        run_evaluation(
            checkpoints["snn"], attack="pgd", ensemble="pgd-fast", eps=0.1, n=3, out_dir=root / "x"
        )
    with pytest.raises(UserError, match="more than the 30 samples"):
        run_evaluation(checkpoints["snn"], attack="none", eps=0.1, n=31, out_dir=root / "x")
    with pytest.raises(UserError, match="which dataset"):
        run_evaluation(checkpoints["bare"], attack="none", eps=0.1, n=3, out_dir=root / "x")
    with pytest.raises(UserError, match="unknown attack"):
        run_evaluation(checkpoints["snn"], attack="pgx", eps=0.1, n=3, out_dir=root / "x")
    with pytest.raises(UserError, match="8/255"):
        run_evaluation(checkpoints["snn"], attack="none", eps="8", n=3, out_dir=root / "x")
