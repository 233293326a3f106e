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


# --------------------------------------------------------------------------- evaluate inputs (issue 24)


def _mnist_ann(tmp_path: Path) -> Path:
    import torch

    from robustsnn.io.models import save_ann
    from robustsnn.models import build_model

    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=10, in_channels=1, image_size=28, mean=[0.13],
                      std=[0.31], width=4)  # fmt: skip
    return save_ann(tmp_path / "ann.safetensors", ann, dataset="mnist5k")


def _rgb_npz(tmp_path: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(20) % 10)  # fmt: skip
    return path


def test_evaluate_rgb_dataset_on_a_grey_model_says_the_shape(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ckpt, data = _mnist_ann(tmp_path), _rgb_npz(tmp_path)
    _one_line_error(
        capsys,
        [
            "evaluate",
            str(ckpt),
            "--dataset",
            f"npz:{data}",
            "--attack",
            "none",
            "--n",
            "10",
            "--out",
            str(tmp_path / "eval"),
        ],  # fmt: skip
        "the model reads 1-channel 28x28 images; dataset npz:",
    )


def test_evaluate_out_naming_an_existing_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ckpt = _mnist_ann(tmp_path)
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    _one_line_error(
        capsys, ["evaluate", str(ckpt), "--attack", "none", "--out", str(taken)],
        "is an existing file",
    )  # fmt: skip
    assert taken.read_text() == "keep me"


def test_evaluate_ann_with_an_estimator(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ckpt = _mnist_ann(tmp_path)
    _one_line_error(
        capsys,
        [
            "evaluate",
            str(ckpt),
            "--attack",
            "pgd",
            "--estimator",
            "bptr",
            "--n",
            "10",
            "--out",
            str(tmp_path / "eval"),
        ],  # fmt: skip
        "gradient estimators are for SNNs",
    )


FACTORY_MODULE = """
import torch
from torch import nn
from spikingjelly.activation_based import neuron, functional


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.sn = neuron.IFNode()

    def forward(self, x):
        out = sum(self.sn(self.fc(x.flatten(1) * 4)) for _ in range(4)) / 4
        functional.reset_net(self)
        return out


def make():
    return Net()
"""


@pytest.fixture
def factory_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("spikingjelly.activation_based.neuron")
    (tmp_path / "user_nets_24.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_evaluate_module_factory_with_weights(
    capsys: pytest.CaptureFixture[str], factory_dir: Path
) -> None:
    import json

    import torch
    from user_nets_24 import make  # type: ignore[import-not-found]

    torch.manual_seed(0)
    weights = factory_dir / "net.pt"
    torch.save(make().state_dict(), weights)
    out = factory_dir / "eval"
    argv = ["evaluate", "user_nets_24:make", "--weights", str(weights), "--T", "4",
            "--dataset", "mnist5k", "--attack", "none", "--n", "10", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["n"] == 10 and result["kind"] == "snn" and result["T"] == 4


def test_evaluate_module_factory_refusals(
    capsys: pytest.CaptureFixture[str], factory_dir: Path
) -> None:
    import pickle

    base = ["evaluate", "user_nets_24:make", "--dataset", "mnist5k", "--attack", "none"]
    _one_line_error(capsys, base, "pass --T")
    _one_line_error(capsys, [*base, "--T", "6"], "ran 4 steps in one forward, not T=6")
    _one_line_error(capsys, [*base, "--T", "4", "--input-shape", "3", "32", "32"],
                    "the model expects inputs of shape [3, 32, 32]")  # fmt: skip
    # a pickle renamed .safetensors / a code-running .pt are refused without being run
    evil = factory_dir / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"a": 1}))
    _one_line_error(
        capsys, [*base, "--T", "4", "--weights", str(evil)], "not a readable safetensors"
    )
    evil_pt = factory_dir / "evil.pt"
    evil_pt.write_bytes(pickle.dumps(print))
    _one_line_error(capsys, [*base, "--T", "4", "--weights", str(evil_pt)], "weights_only=True")
