"""The command lines under torchrun: options torchrun's parser leaves alone, the real launch."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_test_utils import strip_seconds
from torch.distributed.run import get_args_parser

from robustsnn.cli import TORCHRUN_COMMANDS, build_parser, main
from robustsnn.data import load_dataset
from robustsnn.io.models import save_ann
from robustsnn.models import build_model


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _options() -> list[tuple[str, str]]:
    return [
        (command, option)
        for command, sub in _subcommands().items()
        for action in sub._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    ]


def _torchrun_reads(command_line: list[str]) -> list[str]:
    """What torchrun hands to ``-m robustsnn`` (raises SystemExit where it misreads)."""
    launch = ["--nproc-per-node", "2", "-m", "robustsnn"]
    args = get_args_parser().parse_args([*launch, *command_line])
    assert args.module and args.training_script == "robustsnn"
    return list(args.training_script_args)


def test_every_option_passes_through_torchrun_untouched() -> None:
    """torchrun's parser takes any argument that abbreviates one of its own options, also
    after ``-m module``: every robustsnn option but the alias ``--n`` must not be one."""
    checked = 0
    for command, option in _options():
        if option == "--n":
            continue
        for line in ([command, option, "1"], [command, f"{option}=1"]):
            assert _torchrun_reads(line) == line, (command, option)
        checked += 1
    assert ("evaluate", "--num-samples") in _options() and checked > 100


def test_the_short_alias_is_what_torchrun_misreads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _torchrun_reads(["evaluate", "ckpt", "--n", "64"])
    assert "ambiguous option: --n" in capsys.readouterr().err
    parse = build_parser().parse_args
    assert (
        parse(["evaluate", "c", "--n", "7"]).n
        == parse(["evaluate", "c", "--num-samples", "7"]).n
        == 7
    )


def test_a_one_process_command_is_refused_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["report", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: robustsnn report runs in one process") and "\n" not in err
    assert "evaluate" in TORCHRUN_COMMANDS and "run" in TORCHRUN_COMMANDS


@pytest.fixture(scope="module")
def ann_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ANN on a 3-class 8x8 npz dataset."""
    root = tmp_path_factory.mktemp("torchrun")
    g = np.random.default_rng(0)
    y = np.arange(30) % 3
    x = g.normal(60 + 60 * y[:, None, None], 30, size=(30, 8, 8)).clip(0, 255).astype(np.uint8)
    npz = root / "toy.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=x, y_test=y)
    info = load_dataset(f"npz:{npz}").info
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=1, image_size=8, mean=info.mean, std=info.std,
        width=4, fc=16,
    )  # fmt: skip
    ann.eval()
    return save_ann(root / "ann.safetensors", ann, dataset={"spec": f"npz:{npz}", "name": "toy"})


def test_torchrun_evaluate_writes_the_one_process_evaluation(ann_checkpoint: Path) -> None:
    """``torchrun --standalone --nproc-per-node 2 -m robustsnn evaluate ...`` on gloo: the same
    evaluation.json and records.jsonl as ``robustsnn evaluate`` in one process."""
    root = ann_checkpoint.parent
    options = ["--num-samples", "9", "--batch-size", "2", "--ensemble", "pgd-fast", "--eps",
               "8/255", "--seed", "1", "--quiet"]  # fmt: skip
    single = root / "single"
    assert main(["evaluate", str(ann_checkpoint), *options, "--out", str(single)]) == 0
    sharded = root / "sharded"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "robustsnn", "evaluate", str(ann_checkpoint),
               *options, "--out", str(sharded)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1, done.stdout  # rank 0 alone prints
    assert sorted(p.name for p in sharded.glob("evaluation-state.rank*.json")) == [
        "evaluation-state.rank0.json",
        "evaluation-state.rank1.json",
    ]
    one = json.loads((single / "evaluation.json").read_text())
    two = json.loads((sharded / "evaluation.json").read_text())
    assert strip_seconds(two) == strip_seconds(one)
    assert (sharded / "records.jsonl").read_text() == (single / "records.jsonl").read_text()
    print(f"torchrun evaluate: {seconds:.1f} s")
    assert seconds < 120


def _pipeline_helpers() -> tuple[object, object]:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "test_pipeline.py"
    spec = importlib.util.spec_from_file_location("pipeline_test_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._tiny_npz, module._overrides


@pytest.mark.slow
def test_torchrun_run_writes_the_run_folder(tmp_path: Path) -> None:
    """The whole pipeline under ``torchrun --nproc-per-node 2 -m robustsnn run``: DDP training,
    rank-0 conversion and statistics, sharded evaluations, one summary."""
    tiny_npz, overrides = _pipeline_helpers()
    chosen = [*overrides(tiny_npz(tmp_path / "tiny.npz")), "eval.batch_size=4"]  # type: ignore[operator]
    sets = [a for o in chosen for a in ("--set", o)]
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "robustsnn", "run", "--quiet", "--out", str(run),
               *sets]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= {"ann", "snn_converted", "snn_finetuned"}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    stages = [r["phase"] for r in log if "stage_seconds" in r]
    assert len(stages) == len(set(stages))  # rank 0 alone logs, each stage once
    assert (run / "eval" / "snn_finetuned" / "evaluation-state.rank1.json").is_file()
