"""End-to-end: `robustsnn run` on a shrunken config (tiny net, tiny data, one epoch per stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robustsnn.cli import main
from robustsnn.pipeline import run_pipeline


def _tiny_npz(path: Path) -> Path:
    """Two easy classes of 8x8 grayscale images (bright top half vs bright bottom half)."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        x = rng.integers(0, 60, size=(n, 8, 8)).astype(np.uint8)
        for i, label in enumerate(y):
            rows = slice(0, 4) if label == 0 else slice(4, 8)
            x[i, rows] += 150
        return x, y.astype(np.int64)

    x_train, y_train = make(128)
    x_test, y_test = make(32)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _overrides(npz: Path) -> list[str]:
    return [
        f"data.dataset=npz:{npz}",
        "model.width=2",
        "model.fc=8",
        "ann.epochs=1",
        "ann.steps=2",
        "ann.eps=0.05",
        "snn.T=2",
        "snn.calib_T=4",
        "snn.calib_batches=1",
        "snn.calib_batch_size=32",
        "finetune.epochs=1",
        "finetune.eps=0.05",
        "eval.n=16",
        "eval.eps=0.05",
        "eval.ensemble=pgd-fast",
        "eval.diagnostics=none",
    ]


@pytest.fixture()
def tiny(tmp_path: Path) -> list[str]:
    return _overrides(_tiny_npz(tmp_path / "tiny.npz"))


def _read(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


def test_run_writes_the_run_folder_contract(tmp_path: Path, tiny: list[str]) -> None:
    run = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run), *sum((["--set", o] for o in tiny), [])]) == 0
    for name in (
        "config.yaml", "ann.safetensors", "ann.json", "snn_converted.safetensors", "snn.safetensors",
        "snn.json", "log.jsonl", "evaluation.json", "summary.json", "report.md", "report.html",
    ):  # fmt: skip
        assert (run / name).is_file(), name
    summary = _read(run, "summary.json")
    assert set(summary) == {"ann", "snn_converted", "snn_finetuned"}
    for row in summary.values():
        assert 0.0 <= row["clean_accuracy"] <= 1.0
        assert 0.0 <= row["robust_accuracy"] <= row["clean_accuracy"]
    assert summary["ann"]["spikes_per_image"] is None
    assert summary["snn_finetuned"]["spikes_per_image"] > 0
    ev = _read(run, "evaluation.json")
    for key in (
        "model",
        "dataset",
        "split",
        "n",
        "eps",
        "T",
        "clean_accuracy",
        "attacks",
        "ensembles",
        "diagnostics",
    ):
        assert key in ev
    assert ev["T"] == 2 and ev["n"] == 16


def test_killed_run_resumes_without_redoing_stages(
    tmp_path: Path, tiny: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference"
    run_pipeline(None, overrides=tiny, out=reference, quiet=True)

    import robustsnn.training.snn as snn_training

    original = snn_training.finetune_snn

    def killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(snn_training, "finetune_snn", killed)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(None, overrides=tiny, out=run, quiet=True)
    assert (run / "ann.safetensors").exists() and not (run / "snn.safetensors").exists()
    ann_mtime = (run / "ann.safetensors").stat().st_mtime_ns
    conv_mtime = (run / "snn_converted.safetensors").stat().st_mtime_ns

    monkeypatch.setattr(snn_training, "finetune_snn", original)
    run_pipeline(None, overrides=tiny, out=run, quiet=True)
    assert (run / "ann.safetensors").stat().st_mtime_ns == ann_mtime
    assert (run / "snn_converted.safetensors").stat().st_mtime_ns == conv_mtime
    strip = ("source",)
    a = {
        m: {k: v for k, v in r.items() if k not in strip}
        for m, r in _read(reference, "summary.json").items()
    }
    b = {
        m: {k: v for k, v in r.items() if k not in strip}
        for m, r in _read(run, "summary.json").items()
    }
    assert a == b


def test_run_with_a_different_config_in_the_same_folder_is_refused(
    tmp_path: Path, tiny: list[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("something: else\n")
    code = main(["run", "--quiet", "--out", str(run), *sum((["--set", o] for o in tiny), [])])
    assert code == 2


def test_bad_config_key_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--set", "finetune.betta=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finetune.betta" in err[0]


def test_ann_and_snn_rows_share_ensemble_escalation_images_and_eps(
    tmp_path: Path, tiny: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SNNs escalate (forced here: late members 'broke' samples of every SNN evaluation)
    while the ANN's checks pass; `run` then escalates the ANN up to the same preset, so every
    row is measured with the same attacks on the same images, and the summary carries each
    SNN's paired ratio to the ANN."""
    import robustsnn.evaluation.escalate as escalate_module
    from robustsnn.evaluation.ensembles import ENSEMBLES, Ensemble, Member

    def late_for_snns(result: dict) -> int:
        return 1 if result.get("T") and result.get("ensemble") == "pgd-fast" else 0

    monkeypatch.setattr(escalate_module, "late_breaks", late_for_snns)
    cheap = Ensemble("reliable", (Member("pgd", "bptt-rel-pcw-1", {"steps": 3}),), "test")
    monkeypatch.setitem(ENSEMBLES._items, "reliable", cheap)
    run = tmp_path / "run"
    sets = [*tiny, "eval.escalate=true", "eval.escalate_levels=1"]
    assert main(["run", "--quiet", "--out", str(run), *sum((["--set", o] for o in sets), [])]) == 0
    summary = _read(run, "summary.json")
    assert {row["ensemble"] for row in summary.values()} == {"pgd-fast + escalation"}
    assert {tuple(row["escalation"]) for row in summary.values()} == {("reliable",)}
    assert {row["eps"] for row in summary.values()} == {0.05}
    ann_steps = _read(run, "evaluation-ann.json")["escalation"]["steps"]
    assert "matching the protocol" in ann_steps[0]["reasons"][-1]
    indices = {
        model: [
            json.loads(line)["index"] for line in (run / "eval" / model / "records.jsonl").open()
        ]
        for model in summary
    }
    assert indices["ann"] == indices["snn_converted"] == indices["snn_finetuned"]
    for model in ("snn_converted", "snn_finetuned"):
        row = summary[model]
        assert "robust_ratio_to_ann" in row
        if row["robust_ratio_to_ann"] is not None:
            assert row["robust_ratio_to_ann"]["n"] == 16
    report = (run / "report.md").read_text()
    assert "> Verdict. Measured on n = 16" in report
