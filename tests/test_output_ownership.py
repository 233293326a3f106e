"""Output folders are owned (issue 33): a lock per folder, stale locks taken over, a finished
result of other settings refused unless --overwrite, the same settings resume; two evaluations
started together on one --out never both write."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustsnn.cli import main
from robustsnn.errors import UserError
from robustsnn.io.folder_lock import LOCK_FILE, SETTINGS_FILE, FolderLock


@pytest.fixture(scope="module")
def ann(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from robustsnn.io.models import save_ann
    from robustsnn.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn_small", num_classes=10, in_channels=1, image_size=28, mean=[0.13],
                        std=[0.31], width=2, fc=8)  # fmt: skip
    return save_ann(tmp_path_factory.mktemp("own") / "ann.safetensors", model, dataset="mnist5k")


def _evaluate(ann: Path, out: Path, attack: str, *extra: str) -> list[str]:
    return ["evaluate", str(ann), "--attack", attack, "--n", "20", "--eps", "0.1",
            "--diagnostics", "none", "--workers", "1", "--quiet", "--out", str(out), *extra]  # fmt: skip


def _write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = {"pid": pid, "host": host or socket.gethostname(), "command": "robustsnn evaluate"}
    (folder / LOCK_FILE).write_text(json.dumps(body))


def test_a_live_holder_is_refused_in_one_line(
    ann: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "eval"
        _write_lock(out, holder.pid)
        assert main(_evaluate(ann, out, "fgsm")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another robustsnn process" in err[0]
        assert f"pid {holder.pid}" in err[0]
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(
    ann: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "eval"
    _write_lock(out, dead.pid)
    assert main(_evaluate(ann, out, "fgsm")) == 0
    assert (out / "evaluation.json").is_file()
    assert not (out / LOCK_FILE).exists()  # released on exit


def test_other_settings_are_refused_unless_overwrite_and_the_same_settings_resume(
    ann: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    assert main(_evaluate(ann, out, "fgsm")) == 0
    first = (out / "evaluation.json").read_text()
    assert json.loads((out / SETTINGS_FILE).read_text())["attack"] == "fgsm"
    capsys.readouterr()
    # other settings: one line, exit 2, the finished result untouched
    assert main(_evaluate(ann, out, "pgd")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "--overwrite" in err[0]
    assert (out / "evaluation.json").read_text() == first
    # the same settings: resumes (the same result)
    assert main(_evaluate(ann, out, "fgsm")) == 0
    again = json.loads((out / "evaluation.json").read_text())
    assert again["integrity"]["sha256"] == json.loads(first)["integrity"]["sha256"]
    # --overwrite: replaced
    assert main(_evaluate(ann, out, "pgd", "--overwrite")) == 0
    assert json.loads((out / SETTINGS_FILE).read_text())["attack"] == "pgd"


def _wait_for_exec(pid: int, program: bytes) -> None:
    """Wait (at most 5 s) until a just-started child runs ``program``: between fork and exec
    its command line is still the parent's (python), which the lock rightly counts as alive."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if program in Path(f"/proc/{pid}/cmdline").read_bytes():
                return
        time.sleep(0.01)


def test_lock_is_reentrant_and_refuses_a_live_holder_in_python() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "x"
        with FolderLock(folder), FolderLock(folder):  # the same process: re-entrant
            assert (folder / LOCK_FILE).is_file()
        assert not folder.exists()  # created by the lock, left empty: removed
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        other = subprocess.Popen(["sleep", "60"])  # not python: a reused pid, not an owner
        _wait_for_exec(other.pid, b"sleep")  # until then the child is a fork of this python
        try:
            _write_lock(folder, holder.pid)  # a live python process
            with pytest.raises(UserError, match="in use"):
                FolderLock(folder).acquire()
            _write_lock(folder, other.pid)
            with FolderLock(folder):
                assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
        finally:
            for p in (holder, other):
                p.kill()
                p.wait()


def test_two_evaluations_on_one_out_never_both_write(ann: Path, tmp_path: Path) -> None:
    """Issue 33's data loss: two `evaluate --save-adversarial --out SAME` started together
    (different attacks). One writes; the other is refused in one line (exit 2), whether it
    arrives while the first holds the folder or after it finished."""
    out = tmp_path / "same"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "robustsnn", *_evaluate(ann, out, attack, "--save-adversarial")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for attack in ("fgsm", "pgd")
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = next(i for i, r in enumerate(results) if r[0] == 0)
    loser_err = results[1 - winner][2].strip().splitlines()
    assert len(loser_err) == 1, loser_err
    assert (
        "in use by another robustsnn process" in loser_err[0] or "other settings" in (loser_err[0])
    )
    attack = ("fgsm", "pgd")[winner]
    assert json.loads((out / SETTINGS_FILE).read_text())["attack"] == attack
    result = json.loads((out / "evaluation.json").read_text())
    assert any(attack in name.lower() for name in result["attacks"]), result["attacks"]
    assert main(["recheck", str(out), "--quiet", "--no-reference"]) in (0, None)


def test_the_same_checkpoint_by_another_path_is_the_same_settings(
    ann: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "eval"
    assert main(_evaluate(ann, out, "fgsm")) == 0
    monkeypatch.chdir(ann.parent)
    assert main(_evaluate(Path(ann.name), out, "fgsm")) == 0  # resumes, not refused


def test_run_refuses_another_config_unless_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import robustsnn.pipeline as pipeline

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 1\n")  # a finished run of another config
    (out / "ann.safetensors").write_bytes(b"old")
    assert main(["run", "--set", "eval.n=10", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different config" in err[0]
    assert (out / "ann.safetensors").read_bytes() == b"old"
    calls: list[Path] = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: calls.append(k["out"]))
    assert main(["run", "--set", "eval.n=10", "--out", str(out), "--overwrite"]) == 0
    assert calls == [out] and not (out / "ann.safetensors").exists()
