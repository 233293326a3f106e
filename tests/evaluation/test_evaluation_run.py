"""run_evaluation (the `robustsnn evaluate CKPT` command): checkpoints, data, files."""

from __future__ import annotations

import json
from dataclasses import replace
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
    EvaluationConfig,
    EvaluationRun,
    dataset_spec_from_meta,
    run_evaluation,
    stratified_indices,
)
from robustsnn.evaluation.config import EscalationPolicy
from robustsnn.io.models import save_ann, save_snn
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
        EvaluationConfig(attacks="pgd", eps="8/255", diagnostics="none", batch_size=2),
        EvaluationRun(n=3, out_dir=out, quiet=True),
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
        EvaluationConfig(attacks="pgd", eps=8 / 255, diagnostics="none", batch_size=2),
        EvaluationRun(n=3, out_dir=out, quiet=True),
    )
    assert strip_seconds(again) == strip_seconds(result)


def test_attack_none_ensemble_and_estimator(checkpoints: dict[str, Path]) -> None:
    root = checkpoints["root"]
    clean = run_evaluation(
        checkpoints["ann"],
        EvaluationConfig(attacks="none", eps=0.0),
        EvaluationRun(n=9, out_dir=root / "clean", quiet=True),
    )
    _check_contract(clean)
    assert clean["T"] is None and clean["attacks"] == {} and clean["ensembles"] == {}
    assert clean["n"] == 9
    one = run_evaluation(
        checkpoints["snn"],
        EvaluationConfig(attacks="pgd", eps=0.03, diagnostics="none"),
        EvaluationRun(estimator="bptr", n=3, out_dir=root / "one", quiet=True),
    )
    assert list(one["attacks"]) == ["pgd/bptr"] and one["ensembles"] == {}
    fast = run_evaluation(
        checkpoints["ann"],
        EvaluationConfig(ensemble="pgd-fast", eps=0.03, diagnostics="none"),
        EvaluationRun(n=3, out_dir=root / "fast", quiet=True),
    )
    assert fast["ensembles"]["pgd-fast"]["members"] == 1  # collapsed for an ANN
    restricted = run_evaluation(
        checkpoints["snn"],
        EvaluationConfig(attacks="pgd-fast", eps=0.03, diagnostics="none"),
        EvaluationRun(estimator="ann-proxy", n=3, out_dir=root / "restricted", quiet=True),
    )
    assert restricted["ensembles"]["pgd-fast"]["member_names"] == ["pgd/ann-proxy"]


def test_run_evaluation_errors(checkpoints: dict[str, Path]) -> None:
    root = checkpoints["root"]
    with pytest.raises(UserError, match="not both"):
        run_evaluation(
            checkpoints["snn"],
            EvaluationConfig(attacks="pgd", ensemble="pgd-fast", eps=0.1),
            EvaluationRun(n=3, out_dir=root / "x"),
        )
    with pytest.raises(UserError, match="more than the 30 samples"):
        run_evaluation(
            checkpoints["snn"],
            EvaluationConfig(attacks="none", eps=0.1),
            EvaluationRun(n=31, out_dir=root / "x"),
        )
    with pytest.raises(UserError, match="which dataset"):
        run_evaluation(
            checkpoints["bare"],
            EvaluationConfig(attacks="none", eps=0.1),
            EvaluationRun(n=3, out_dir=root / "x"),
        )
    with pytest.raises(UserError, match="unknown attack"):
        run_evaluation(
            checkpoints["snn"],
            EvaluationConfig(attacks="pgx", eps=0.1),
            EvaluationRun(n=3, out_dir=root / "x"),
        )
    with pytest.raises(UserError, match="8/255"):
        run_evaluation(
            checkpoints["snn"],
            EvaluationConfig(attacks="none", eps="8"),
            EvaluationRun(n=3, out_dir=root / "x"),
        )


# ------------------------------------------------------------------ robustness vs latency
def test_latency_curve_evaluates_each_T_on_the_same_images_and_resumes(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import robustsnn.evaluation.latency as latency_module
    from robustsnn.analysis.report import make_run_figures
    from robustsnn.evaluation.latency import latency_curve
    from robustsnn.io.models import load_model

    out = tmp_path / "run" / "latency" / "snn_converted"
    data = latency_curve(
        checkpoints["snn"],
        [1, 4],
        EvaluationConfig(ensemble="pgd-fast", eps=0.05, diagnostics="none", batch_size=100),
        EvaluationRun(out_dir=out, n=9, quiet=True),
        label="snn_converted",
    )
    assert data["T"] == [1, 4] and data["n"] == 9
    assert [r["T"] for r in data["rows"]] == [1, 4]
    assert set(data["curves"]) == {"snn_converted clean", "snn_converted robust"}
    # each row is what the evaluation at that T gives, on the stratified images
    for row in data["rows"]:
        direct = (
            run_evaluation(
                checkpoints["snn"],
                EvaluationConfig(ensemble="pgd-fast", eps=0.05, diagnostics="none"),
                EvaluationRun(n=9, out_dir=tmp_path / f"direct{row['T']}", quiet=True),
            )
            if row["T"] == 4
            else None
        )
        if direct is not None:  # the checkpoint's own T
            assert row["clean_accuracy"] == direct["clean_accuracy"]
            assert row["robust_accuracy"] == direct["robust_accuracy"]
        low, high = row["robust_accuracy_ci95"]
        assert low <= row["robust_accuracy"] <= high
    assert load_model(checkpoints["snn"])[0].T == 4  # the checkpoint is untouched

    def no_more(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished T must not be evaluated again")

    monkeypatch.setattr(latency_module, "evaluate", no_more)
    again = latency_curve(
        checkpoints["snn"],
        [1, 4],
        EvaluationConfig(ensemble="pgd-fast", eps=0.05, diagnostics="none", batch_size=100),
        EvaluationRun(out_dir=out, n=9, quiet=True),
        label="snn_converted",
    )
    assert again["rows"] == data["rows"]
    made = make_run_figures(tmp_path / "run")
    assert (tmp_path / "run" / "figures" / "robust_accuracy_vs_T.png") in made
    with pytest.raises(UserError, match="SNN checkpoint"):
        latency_curve(
            checkpoints["ann"],
            [1],
            EvaluationConfig(eps=0.05, batch_size=100),
            EvaluationRun(out_dir=tmp_path / "x", n=3, quiet=True),
        )


def test_workers_give_the_single_process_result(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked workers share the batches as torchrun ranks do: the same evaluation.json (but
    for timings) and records, per-rank resume files, and a rerun with another number of
    workers resumes them to the same result (escalation and adversarial examples coming back
    from workers: tests/evaluation/test_workers.py)."""
    escalate = False
    root = checkpoints["root"]
    config = EvaluationConfig(eps="16/255", ensemble="pgd-fast", batch_size=2, diagnostics="fast")
    common = EvaluationRun(n=9, quiet=True, escalate=EscalationPolicy(1) if escalate else None)

    def run(folder: str, workers: int) -> dict:  # type: ignore[type-arg]
        here = replace(common, out_dir=root / folder, workers=workers)
        return run_evaluation(checkpoints["snn"], config, here)

    one = run(f"w1-{escalate}", 1)
    three = run(f"w3-{escalate}", 3)
    assert strip_seconds(three) == strip_seconds(one)
    assert (root / f"w3-{escalate}" / RECORDS_FILE).read_text() == (
        root / f"w1-{escalate}" / RECORDS_FILE
    ).read_text()
    # one resume file per worker that took a batch (workers pull the next free batch, so a
    # worker that starts late may find none left: which ranks write depends on timing)
    ranks = {p.name for p in (root / f"w3-{escalate}").glob("evaluation-state.rank*.json")}
    assert ranks and ranks <= {f"evaluation-state.rank{r}.json" for r in range(3)}
    again = run(f"w3-{escalate}", 2)
    assert strip_seconds(again) == strip_seconds(one)
