"""Kill and resume (issue 33): SIGKILL at several points of ``evaluate --escalate
--save-adversarial``, ``finetune``, ``latency`` and ``run`` (tiny models); rerunning the same
command gives the files of an uninterrupted run (timings aside), and the killed process's lock
is taken over as stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustsnn.io.folder_lock import LOCK_FILE

DRIVER = Path(__file__).with_name("kill_driver.py")
SAVE_BATCH = "robustsnn.evaluation.evaluate:_ResumeState.save_batch"
SAVE_EPOCH = "robustsnn.training.trainer:Trainer.save_state"

pytestmark = pytest.mark.slow  # each case runs robustsnn three times or more in subprocesses


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robustsnn", *argv], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _killed(target: str, k: int, argv: list[str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, str(DRIVER), target, str(k), *argv], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == -9, (done.returncode, done.stderr[-2000:])  # SIGKILL reached


def _strip(obj: Any) -> Any:
    """A JSON object without timings, wall-clock stamps and the folder it was written to."""
    if isinstance(obj, dict):
        return {
            k: _strip(v) for k, v in obj.items()
            # adversarial_bytes: the file's header names the model's path (another folder)
            if "seconds" not in k and k not in ("integrity", "finished", "started", "created",
                                                 "time", "timestamp", "wall", "out_dir",
                                                 "adversarial_bytes")
        }  # fmt: skip
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _same_json(a: Path, b: Path, ref: Path | None = None, out: Path | None = None) -> None:
    """Equal JSON, timings aside (and with ``out``'s path read as ``ref``'s)."""
    text = b.read_text()
    if ref is not None and out is not None:
        text = text.replace(str(out), str(ref))
    assert _strip(json.loads(a.read_text())) == _strip(json.loads(text)), a.name


def _same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), a.name


def _same_tensors(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta), a.name


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy 8x8 npz dataset, a trained ANN and its converted SNN (as in test_adversarial)."""
    from robustsnn.conversion import convert
    from robustsnn.data import load_dataset, to_float
    from robustsnn.io.models import save_ann, save_snn
    from robustsnn.models import build_model

    root = tmp_path_factory.mktemp("kill")
    g = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 3
        x = g.normal(90 + 40 * y[:, None, None], 30, size=(n, 8, 8))
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(48)
    x_test, y_test = split(30)
    np.savez(root / "toy.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    spec = f"npz:{root / 'toy.npz'}"
    info = load_dataset(spec).info
    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=3, in_channels=1, image_size=8, mean=info.mean,
                      std=info.std, width=4, fc=16)  # fmt: skip
    xt, yt = to_float(torch.from_numpy(x_train[:, None])), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(ann.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(ann(xt), yt).backward()
        optimizer.step()
    ann.eval()
    save_ann(root / "ann.safetensors", ann, dataset={"spec": spec, "name": "toy"})
    snn = convert(ann, xt, T=4, calib_T=8, calib_batches=2, calib_batch_size=16)
    save_snn(root / "snn.safetensors", snn, dataset=spec)
    return root


def _resume_matches(
    toy: Path, argv_for: Any, kills: list[tuple[str, int]], compare: Any, name: str
) -> None:
    """The uninterrupted run, then for each kill point: killed, rerun, compared."""
    reference = toy / f"{name}-ref"
    done = _cli(argv_for(reference), toy)
    assert done.returncode == 0, done.stderr[-2000:]
    for i, (target, k) in enumerate(kills):
        out = toy / f"{name}-kill{i}"
        _killed(target, k, argv_for(out), toy)
        assert (out / LOCK_FILE).is_file()  # the dead process's lock stays behind ...
        done = _cli(argv_for(out), toy)  # ... and the rerun takes it over as stale
        assert done.returncode == 0, done.stderr[-2000:]
        assert not (out / LOCK_FILE).exists()
        compare(reference, out)


def test_evaluate_escalate_save_adversarial(toy: Path) -> None:
    def argv(out: Path) -> list[str]:
        return ["evaluate", str(toy / "snn.safetensors"), "--ensemble", "pgd-fast", "--escalate-to",
                "reliable", "--save-adversarial", "--eps", "0.04", "--n", "12",
                "--batch-size", "3", "--diagnostics", "none", "--workers", "1", "--quiet",
                "--out", str(out)]  # fmt: skip

    def compare(ref: Path, out: Path) -> None:
        _same_bytes(ref / "records.jsonl", out / "records.jsonl")
        _same_bytes(ref / "adversarial.safetensors", out / "adversarial.safetensors")
        _same_json(ref / "evaluation.json", out / "evaluation.json")
        assert (json.loads((ref / "evaluation.json").read_text())["integrity"]["sha256"]
                == json.loads((out / "evaluation.json").read_text())["integrity"]["sha256"])  # fmt: skip

    # mid base ensemble (batch 2 of 4), inside the escalation step (its first batch)
    _resume_matches(toy, argv, [(SAVE_BATCH, 2), (SAVE_BATCH, 5)], compare, "evaluate")


def test_finetune(toy: Path) -> None:
    def argv(out: Path) -> list[str]:
        return ["finetune", str(toy / "snn.safetensors"), "--teacher", str(toy / "ann.safetensors"),
                "--epochs", "2", "--batch-size", "16", "--eps", "0.1", "--eval-n", "6",
                "--quiet", "--out", str(out)]  # fmt: skip

    def compare(ref: Path, out: Path) -> None:
        _same_tensors(ref / "snn.safetensors", out / "snn.safetensors")

    _resume_matches(toy, argv, [(SAVE_EPOCH, 1)], compare, "finetune")


def test_latency(toy: Path) -> None:
    def argv(out: Path) -> list[str]:
        return ["latency", str(toy / "snn.safetensors"), "--steps", "2,4", "--ensemble",
                "pgd-fast", "--eps", "0.12", "--n", "12", "--batch-size", "6", "--diagnostics",
                "none", "--quiet", "--out", str(out)]  # fmt: skip

    def compare(ref: Path, out: Path) -> None:
        _same_json(ref / "latency.json", out / "latency.json")

    _resume_matches(toy, argv, [(SAVE_BATCH, 1), (SAVE_BATCH, 3)], compare, "latency")


def test_run(toy: Path) -> None:
    sets = ["data.dataset=npz:" + str(toy / "toy.npz"), "model.width=2", "model.fc=8",
            "ann.epochs=2", "ann.objective=natural", "ann.batch_size=16", "finetune.epochs=1",
            "finetune.batch_size=16", "snn.T=4", "snn.calib_T=8", "snn.calib_batches=1",
            "snn.calib_batch_size=16", "eval.n=12", "eval.batch_size=6", "eval.escalate=false",
            "eval.diagnostics=none", "eval.workers=1", "eval.eps=0.1"]  # fmt: skip

    def argv(out: Path) -> list[str]:
        return ["run", *[x for s in sets for x in ("--set", s)], "--quiet", "--out", str(out)]

    def compare(ref: Path, out: Path) -> None:
        _same_tensors(ref / "ann.safetensors", out / "ann.safetensors")
        _same_tensors(ref / "snn.safetensors", out / "snn.safetensors")
        for model in ("ann", "snn_converted", "snn_finetuned"):
            _same_bytes(
                ref / "eval" / model / "records.jsonl", out / "eval" / model / "records.jsonl"
            )
            _same_json(ref / f"evaluation-{model}.json", out / f"evaluation-{model}.json", ref, out)
        _same_json(ref / "summary.json", out / "summary.json", ref, out)

    # mid ANN training (after epoch 1), mid evaluation of the converted SNN
    _resume_matches(toy, argv, [(SAVE_EPOCH, 1), (SAVE_BATCH, 3)], compare, "run")
