"""Loose ends a new user hit (issue 17): each is one clear line (exit 2), never a traceback,
and the defaults do what the messages say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from robustsnn.cli import main
from robustsnn.config import OptimizerConfig, load_config
from robustsnn.data import datasets
from robustsnn.errors import UserError
from robustsnn.training.trainer import Trainer, TrainerConfig


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


# ------------------------------------------------------------------------------ --device
@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "", "meta", "xla"])
def test_device_strings_torch_rejects_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, device: str
) -> None:
    (tmp_path / "config.yaml").write_text("name: x\n")
    _one_line_error(capsys, ["report", str(tmp_path), "--device", device], "--device")


# ------------------------------------------------------------------------------ report
def test_report_on_a_folder_without_a_run_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a run")
    _one_line_error(capsys, ["report", str(tmp_path)], "no run found", str(tmp_path))
    assert not (tmp_path / "report.md").exists()


def test_report_on_a_run_folder_still_works(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").is_file()


# ------------------------------------------------------------------------------ optimiser
@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [("--lr", "0", "lr must be > 0"), ("--lr", "-0.1", "lr must be > 0"),
     ("--weight-decay", "-1e-4", "weight_decay must be >= 0")],
)  # fmt: skip
def test_train_ann_rejects_bad_optimiser_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str, needle: str
) -> None:
    argv = ["train-ann", "--epochs", "1", "--out", str(tmp_path), f"{flag}={value}"]
    _one_line_error(capsys, argv, needle)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [("ann.lr", "0", "ann.lr must be > 0"), ("finetune.lr", "-1e-3", "finetune.lr must be > 0"),
     ("ann.momentum", "1", "ann.momentum must be in [0, 1)"),
     ("finetune.momentum", "-0.5", "finetune.momentum must be in [0, 1)"),
     ("finetune.weight_decay", "-1", "finetune.weight_decay must be >= 0"),
     ("ann.lr", ".nan", "ann.lr must be > 0")],
)  # fmt: skip
def test_config_rejects_bad_optimiser_values(key: str, value: str, needle: str) -> None:
    with pytest.raises(UserError) as info:
        load_config(None, [f"{key}={value}"])
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "bad", [dict(lr=0.0), dict(momentum=1.0), dict(momentum=-0.1), dict(weight_decay=-1.0)]
)
def test_trainer_rejects_bad_optimiser_values(tmp_path: Path, bad: dict[str, float]) -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(UserError):
        config = TrainerConfig(epochs=1, out_dir=tmp_path, optimizer=OptimizerConfig(**bad))
        Trainer(model, lambda *a: (torch.zeros(()), None), config)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ download
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "tinyimagenet"])
def test_missing_dataset_message_names_the_download_switches(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError) as info:
        datasets.load_dataset(name, tmp_path, download=False)
    message = str(info.value)
    assert "--download" in message and "data.download" in message and "--data-dir" in message


def test_download_switch_reaches_the_loader(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--download makes a missing CIFAR-10 be fetched (the fetch is faked: no network)."""
    calls: list[str] = []

    def fake_download(url: str, path: Path, md5: str) -> Path:
        calls.append(url)
        raise UserError("offline in this test")

    monkeypatch.setattr(datasets, "download_file", fake_download)
    monkeypatch.delenv(datasets.DOWNLOAD_ENV, raising=False)
    argv = [
        "train-ann",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path),
    ]
    _one_line_error(capsys, argv, "--download")
    assert calls == []
    _one_line_error(capsys, [*argv, "--download"], "offline in this test")
    assert calls and "cifar-10" in calls[0]
    os.environ.pop(datasets.DOWNLOAD_ENV, None)


@pytest.mark.parametrize("key", ["ann.cutout", "finetune.cutout"])
def test_config_rejects_negative_cutout(key: str) -> None:
    with pytest.raises(UserError, match=f"{key} must be >= 0"):
        load_config(None, [f"{key}=-2"])


def test_config_download_key_exists() -> None:
    assert load_config(None, ["data.download=true"]).data.download is True
