"""Bad inputs, tried as a new user would (issue 33): every one is refused with one line on
stderr and exit status 2, before any work, and nothing is written or changed.

The table :data:`CASES` is also a measurement: ``python tests/test_bad_inputs.py`` runs every
case and prints how many got a one-line refusal, a traceback, were silently accepted (exit 0),
or ended otherwise (docs/RELIABILITY.md quotes the counts).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from robustsnn.cli import main


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # {W} stands for the world folder
    needle: str  # a piece of the one line expected on stderr (case-insensitive)


def _c(name: str, argv: str, needle: str) -> Case:
    return Case(name, tuple(argv.split()), needle)


CASES: list[Case] = [
    # ---- train-ann
    _c("train-ann width 0", "train-ann --width 0 --epochs 1 --out {W}/o", "--width 0"),
    _c("train-ann fc 0", "train-ann --fc 0 --epochs 1 --out {W}/o", "--fc 0"),
    _c("train-ann eval-n -5", "train-ann --eval-n -5 --epochs 1 --out {W}/o", "--eval-n -5"),
    _c("train-ann epochs -1", "train-ann --epochs -1 --out {W}/o", "--epochs -1"),
    _c("train-ann batch 0", "train-ann --batch-size 0 --epochs 1 --out {W}/o", "--batch-size"),
    _c("train-ann qcfs levels 0", "train-ann --qcfs-levels 0 --out {W}/o", "--qcfs-levels"),
    _c("train-ann cutout -1", "train-ann --cutout -1 --epochs 1 --out {W}/o", "--cutout"),
    _c("train-ann out is a file", "train-ann --epochs 1 --out {W}/afile.txt", "existing file"),
    _c("train-ann out under a file", "train-ann --epochs 1 --out {W}/afile.txt/sub", "is a file"),
    _c(
        "train-ann label 42",
        "train-ann --dataset npz:{W}/label42.npz --epochs 1 --out {W}/o",
        "no sample",
    ),  # fmt: skip
    _c(
        "train-ann truncated npz",
        "train-ann --dataset npz:{W}/truncated.npz --epochs 1 --out {W}/o",
        "truncated.npz",
    ),  # fmt: skip
    _c(
        "train-ann missing npz",
        "train-ann --dataset npz:{W}/none.npz --epochs 1 --out {W}/o",
        "none.npz",
    ),  # fmt: skip
    _c("train-ann unknown dataset", "train-ann --dataset imagenet22k --out {W}/o", "imagenet22k"),
    _c("train-ann unknown model", "train-ann --model vgg99 --epochs 1 --out {W}/o", "vgg99"),
    _c("train-ann unknown objective", "train-ann --objective nope --epochs 1 --out {W}/o", "nope"),
    _c("train-ann eps 2", "train-ann --eps 2 --out {W}/o", "eps"),
    _c("train-ann optimizer", "train-ann --optimizer lbfgs --out {W}/o", "lbfgs"),
    _c("train-ann unknown flag", "train-ann --foo 1", "--foo"),
    _c("train-ann width abc", "train-ann --width abc", "abc"),
    # ---- convert
    _c("convert missing", "convert {W}/none.safetensors", "not found"),
    _c("convert garbage", "convert {W}/garbage.safetensors", "garbage.safetensors"),
    _c("convert pickle", "convert {W}/evil.safetensors", "evil.safetensors"),
    _c("convert nan weight", "convert {W}/nan/ann.safetensors", "nan"),
    _c("convert T 0", "convert {W}/ann.safetensors --T 0 --out {W}/o", "--t 0"),
    _c("convert calib-T 0", "convert {W}/ann.safetensors --calib-T 0 --out {W}/o", "--calib-t"),
    _c(
        "convert percentile 0",
        "convert {W}/ann.safetensors --percentile 0 --out {W}/o",
        "--percentile",
    ),  # fmt: skip
    _c(
        "convert percentile 101",
        "convert {W}/ann.safetensors --percentile 101 --out {W}/o",
        "--percentile",
    ),  # fmt: skip
    _c("convert leak 0", "convert {W}/ann.safetensors --leak 0 --out {W}/o", "--leak"),
    _c("convert v-init 2", "convert {W}/ann.safetensors --v-init 2 --out {W}/o", "--v-init"),
    _c("convert scale 0", "convert {W}/ann.safetensors --scale 0 --out {W}/o", "--scale"),
    _c(
        "convert out under a file", "convert {W}/ann.safetensors --out {W}/afile.txt/x", "is a file"
    ),  # fmt: skip
    _c("convert bn choice", "convert {W}/ann.safetensors --bn nope", "nope"),
    # ---- finetune
    _c("finetune objective", "finetune {W}/ann.safetensors --objective nope --out {W}/o", "nope"),
    _c("finetune epochs -1", "finetune {W}/ann.safetensors --epochs -1 --out {W}/o", "--epochs"),
    _c(
        "finetune steps 0",
        "finetune {W}/ann.safetensors --adversary-steps 0 --out {W}/o",
        "--adversary-steps",
    ),  # fmt: skip
    _c("finetune missing", "finetune {W}/none.safetensors --out {W}/o", "not found"),
    _c(
        "finetune out is a file",
        "finetune {W}/ann.safetensors --out {W}/afile.txt",
        "existing file",
    ),  # fmt: skip
    # ---- evaluate
    _c(
        "evaluate estimator with attack none",
        "evaluate {W}/ann.safetensors --attack none --estimator bptr --out {W}/o",
        "--estimator",
    ),
    _c("evaluate attack nope", "evaluate {W}/ann.safetensors --attack nope --out {W}/o", "nope"),
    _c(
        "evaluate ensemble nope", "evaluate {W}/ann.safetensors --ensemble nope --out {W}/o", "nope"
    ),  # fmt: skip
    _c(
        "evaluate estimator nope",
        "evaluate {W}/ann.safetensors --attack pgd --estimator nope --out {W}/o",
        "nope",
    ),
    _c(
        "evaluate workers 100",
        "evaluate {W}/ann.safetensors --workers 100 --out {W}/o",
        "--workers 100",
    ),  # fmt: skip
    _c(
        "evaluate workers -1", "evaluate {W}/ann.safetensors --workers -1 --out {W}/o", "--workers"
    ),  # fmt: skip
    _c(
        "evaluate n 0",
        "evaluate {W}/ann.safetensors --attack none --n 0 --out {W}/o",
        "--num-samples",
    ),  # fmt: skip
    _c(
        "evaluate n -5",
        "evaluate {W}/ann.safetensors --attack none --n -5 --out {W}/o",
        "--num-samples",
    ),  # fmt: skip
    _c("evaluate eps 1.5", "evaluate {W}/ann.safetensors --eps 1.5 --out {W}/o", "1.5"),
    _c(
        "evaluate escalate with attack",
        "evaluate {W}/ann.safetensors --attack pgd --escalate --out {W}/o",
        "--escalate",
    ),
    _c(
        "evaluate save with attack none",
        "evaluate {W}/ann.safetensors --attack none --save-adversarial --out {W}/o",
        "--save-adversarial",
    ),  # fmt: skip
    _c(
        "evaluate escalate-to nope",
        "evaluate {W}/ann.safetensors --escalate-to nope --out {W}/o",
        "nope",
    ),
    _c(
        "evaluate out is a file",
        "evaluate {W}/ann.safetensors --attack none --out {W}/afile.txt",
        "existing file",
    ),  # fmt: skip
    _c(
        "evaluate out under a file",
        "evaluate {W}/ann.safetensors --attack none --out {W}/afile.txt/x",
        "is a file",
    ),  # fmt: skip
    _c(
        "evaluate nan weight",
        "evaluate {W}/nan/ann.safetensors --attack none --n 10 --out {W}/o",
        "nan",
    ),  # fmt: skip
    _c(
        "evaluate pickle checkpoint",
        "evaluate {W}/evil.safetensors --attack none --out {W}/o",
        "evil.safetensors",
    ),  # fmt: skip
    _c(
        "evaluate pickle transfer-from",
        "evaluate {W}/ann.safetensors --attack none --n 10 "
        "--transfer-from {W}/evil.safetensors --out {W}/o",
        "evil.safetensors",
    ),  # fmt: skip
    _c("evaluate split choice", "evaluate {W}/ann.safetensors --split val", "val"),
    _c(
        "evaluate factory raises",
        "evaluate bad_nets_33:raises --T 4 --dataset mnist5k --attack none --out {W}/o",
        "raised",
    ),  # fmt: skip
    _c(
        "evaluate factory needs argument",
        "evaluate bad_nets_33:needs_arg --T 4 --dataset mnist5k --attack none --out {W}/o",
        "without arguments",
    ),  # fmt: skip
    _c(
        "evaluate factory syntax error",
        "evaluate broken_nets_33:make --T 4 --dataset mnist5k --attack none --out {W}/o",
        "syntax error",
    ),  # fmt: skip
    _c(
        "evaluate factory weights shape",
        "evaluate bad_nets_33:make --T 4 --dataset mnist5k "
        "--weights {W}/other_shape.safetensors --attack none --out {W}/o",
        "shape",
    ),  # fmt: skip
    _c(
        "evaluate factory pickle weights",
        "evaluate bad_nets_33:make --T 4 --dataset mnist5k "
        "--weights {W}/evil.pt --attack none --out {W}/o",
        "weights_only",
    ),  # fmt: skip
    # ---- latency
    _c("latency steps abc", "latency {W}/ann.safetensors --steps 4,abc --out {W}/o", "--steps"),
    _c("latency steps 0", "latency {W}/ann.safetensors --steps 0,4 --out {W}/o", "--steps"),
    _c(
        "latency ensemble nope", "latency {W}/ann.safetensors --ensemble nope --out {W}/o", "nope"
    ),  # fmt: skip
    _c("latency n 0", "latency {W}/ann.safetensors --n 0 --out {W}/o", "--num-samples"),
    _c(
        "latency out under a file", "latency {W}/ann.safetensors --out {W}/afile.txt/x", "is a file"
    ),  # fmt: skip
    # ---- run
    _c("run ensemble nope", "run --set eval.ensemble=nope --out {W}/o", "nope"),
    _c("run width 0", "run --set model.width=0 --out {W}/o", "model.width"),
    _c("run eval n -5", "run --set eval.n=-5 --out {W}/o", "eval.n"),
    _c("run workers 100", "run --set eval.workers=100 --out {W}/o", "eval.workers"),
    _c("run T 0", "run --set snn.T=0 --out {W}/o", "snn.t"),
    _c("run unknown key", "run --set nope.key=1 --out {W}/o", "nope"),
    _c("run bool maybe", "run --set eval.escalate=maybe --out {W}/o", "eval.escalate"),
    _c("run estimator nope", "run --set finetune.estimator=nope --out {W}/o", "nope"),
    _c("run objective nope", "run --set ann.objective=nope --out {W}/o", "nope"),
    _c("run dataset nope", "run --set data.dataset=nope --out {W}/o", "nope"),
    _c("run split val", "run --set eval.split=val --out {W}/o", "eval.split"),
    _c("run reset nope", "run --set snn.reset=nope --out {W}/o", "snn.reset"),
    _c("run label 42", "run --set data.dataset=npz:{W}/label42.npz --out {W}/o", "no sample"),
    _c("run set without =", "run --set eval.n --out {W}/o", "key=value"),
    _c("run empty yaml", "run {W}/empty.yaml --out {W}/o", "empty"),
    _c("run yaml list", "run {W}/list.yaml --out {W}/o", "mapping"),
    _c("run yaml syntax", "run {W}/broken.yaml --out {W}/o", "not valid yaml"),
    _c("run missing yaml", "run {W}/none.yaml --out {W}/o", "not found"),
    _c("run out is a file", "run --out {W}/afile.txt", "existing file"),
    _c("run out under a file", "run --out {W}/afile.txt/x", "is a file"),
    # ---- sweep
    _c("sweep values abc", "sweep --param model.width --values 4,abc --out {W}/o", "abc"),
    _c("sweep values 0", "sweep --param model.width --values 4,0 --out {W}/o", "model.width"),
    _c("sweep empty value", "sweep --param model.width --values 4,,8 --out {W}/o", "empty"),
    _c("sweep unknown param", "sweep --param nope.x --values 1,2 --out {W}/o", "nope"),
    _c(
        "sweep out is a file",
        "sweep --param model.width --values 4 --out {W}/afile.txt",
        "existing file",
    ),  # fmt: skip
    # ---- report, recheck, transfer, export
    _c("report a file", "report {W}/afile.txt", "not a run folder"),
    _c("report missing", "report {W}/none", "does not exist"),
    _c("report out under a file", "report {W}/emptyrun --out {W}/afile.txt/x", "is a file"),
    _c("recheck missing", "recheck {W}/none", "does not exist"),
    _c("recheck empty folder", "recheck {W}/emptyrun", "no adversarial.safetensors"),
    _c("transfer missing", "transfer {W}/none", "does not exist"),
    _c("transfer pickle target", "transfer {W}/none --on {W}/evil.safetensors", "does not exist"),
    _c("export out is a folder", "export {W}/ann.safetensors --out {W}/emptyrun", "is a folder"),
    _c("export missing", "export {W}/none.safetensors --out {W}/x.nir", "not found"),
    # ---- anywhere
    _c("unknown command", "trian-ann", "trian-ann"),
    _c("device nonsense", "train-ann --device gpu7 --out {W}/o", "--device"),
    _c("seed abc", "train-ann --seed abc", "abc"),
]

FACTORY = """
import torch
from torch import nn


def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def raises():
    raise RuntimeError("the user's factory failed")


def needs_arg(width):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width))
"""


class Marker:
    """A pickle that would create a file when unpickled (it must never be)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def build_world(root: Path) -> Path:
    """Every bad input's material in ``root``: tiny checkpoints, broken datasets and configs."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from robustsnn.io.models import save_ann
    from robustsnn.models import build_model

    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=10, in_channels=1, image_size=28, mean=[0.13],
                      std=[0.31], width=2, fc=8)  # fmt: skip
    save_ann(root / "ann.safetensors", ann, dataset="mnist5k")
    with torch.no_grad():
        next(iter(ann.parameters())).view(-1)[0] = float("nan")
    (root / "nan").mkdir()
    save_ann(root / "nan" / "ann.safetensors", ann, dataset="mnist5k")
    (root / "garbage.safetensors").write_bytes(b"\x00garbage" * 10)
    marker = str(root / "MARKER")
    (root / "evil.safetensors").write_bytes(pickle.dumps(Marker(marker)))
    (root / "evil.pt").write_bytes(pickle.dumps(Marker(marker)))
    (root / "afile.txt").write_text("a file, not a folder\n")
    (root / "emptyrun").mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 8, 8), dtype=np.uint8)
    y = np.arange(20) % 10
    y42 = y.copy()
    y42[3] = 42
    np.savez(root / "label42.npz", x_train=x, y_train=y42, x_test=x, y_test=y)
    np.savez(root / "good.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    data = (root / "good.npz").read_bytes()
    (root / "truncated.npz").write_bytes(data[: len(data) // 2])
    (root / "empty.yaml").write_text("")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("eval: {n: [\n")
    (root / "bad_nets_33.py").write_text(FACTORY)
    (root / "broken_nets_33.py").write_text("def make(:\n    return None\n")
    save_file({"1.weight": torch.zeros(10, 100), "1.bias": torch.zeros(10)},
              str(root / "other_shape.safetensors"))  # fmt: skip
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


@dataclass
class Outcome:
    code: int | None
    err: str
    traceback: bool

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_case(case: Case, world: Path) -> Outcome:
    """Run one case in this process (stdout/stderr captured, cwd = world)."""
    argv = [a.replace("{W}", str(world)) for a in case.argv]
    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(world)
    sys.path.insert(0, str(world))
    traceback = False
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code: int | None = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - a traceback: counted, shown
                import traceback as tb

                tb.print_exc(file=err)
                code, traceback = None, True
    finally:
        os.chdir(cwd)
        sys.path.remove(str(world))
        for name in ("bad_nets_33", "broken_nets_33"):
            sys.modules.pop(name, None)
    return Outcome(code, err.getvalue(), traceback or "Traceback" in err.getvalue())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build_world(tmp_path_factory.mktemp("bad-inputs"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_one_line_and_nothing_written(case: Case, world: Path) -> None:
    before = snapshot(world)
    outcome = run_case(case, world)
    assert not outcome.traceback, outcome.err
    assert outcome.code == 2, (outcome.code, outcome.err)
    assert len(outcome.err_lines) == 1, outcome.err_lines
    assert case.needle.lower() in outcome.err_lines[0].lower(), outcome.err_lines[0]
    assert snapshot(world) == before, "something was written"
    assert not (world / "MARKER").exists(), "a pickle was unpickled"


class _Started(Exception):
    """Raised by the alarm: the command accepted the input and was still working."""


def measure(world: Path, limit_s: int = 0) -> dict[str, int]:
    """Counts over every case: refusals (exit 2, one line), tracebacks, silent (exit 0, or
    still working after ``limit_s`` seconds), other (several lines, another exit status, files
    written)."""
    import signal

    def alarm(*_: object) -> None:
        raise _Started

    counts = {"inputs": 0, "one_line_refusals": 0, "tracebacks": 0, "silent": 0, "other": 0}
    for case in CASES:
        before = snapshot(world)
        if limit_s:
            signal.signal(signal.SIGALRM, alarm)
            signal.alarm(limit_s)
        try:
            outcome = run_case(case, world)
        except _Started:
            outcome = Outcome(0, "(still working: input accepted)", False)
        finally:
            signal.alarm(0)
        counts["inputs"] += 1
        if outcome.traceback and "_Started" in outcome.err:
            outcome = Outcome(0, "(still working: input accepted)", False)
        if outcome.traceback:
            kind = "tracebacks"
        elif outcome.code == 0:
            kind = "silent"
        elif outcome.code == 2 and len(outcome.err_lines) == 1 and snapshot(world) == before:
            kind = "one_line_refusals"
        else:
            kind = "other"
        counts[kind] += 1
        if kind != "one_line_refusals":
            print(f"  {kind:<10} {case.name}: exit {outcome.code}, "
                  f"{(outcome.err_lines or [''])[-1][:100]}")  # fmt: skip
    return counts


if __name__ == "__main__":
    import tempfile

    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with tempfile.TemporaryDirectory() as tmp:
        print(measure(build_world(Path(tmp)), limit))
