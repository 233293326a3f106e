"""CLI: user errors are one line on stderr with exit status 2; help works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robustsnn.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert needle in err[0]


def test_missing_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _one_line_error(
        capsys, ["evaluate", str(tmp_path / "nope.safetensors"), "--attack", "none"], "not found"
    )


def test_corrupt_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    _one_line_error(capsys, ["convert", str(bad)], "bad.safetensors")


def test_unknown_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _one_line_error(
        capsys, ["train-ann", "--dataset", "imagenet22k", "--out", str(tmp_path)], "imagenet22k"
    )


def test_unknown_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _one_line_error(
        capsys, ["train-ann", "--model", "vgg99", "--epochs", "1", "--out", str(tmp_path)], "vgg99"
    )


def test_bad_eps_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "x.safetensors", "--eps", "eight"])
    assert exc.value.code == 2
    assert "eight" in capsys.readouterr().err


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _one_line_error(capsys, ["run", str(tmp_path / "none.yaml")], "config file not found")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "robustsnn" in capsys.readouterr().out


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "robustsnn", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "evaluate" in done.stdout
