"""Evaluation throughput: ``robustsnn evaluate`` in 1 process vs ``torchrun`` with N processes.

Builds a small SNN checkpoint (cnn_small converted, on a synthetic 3-class 16x16 npz dataset),
then runs the same ``evaluate`` command line three ways and records wall time, the attack phase's
own time (``seconds.attacks`` of evaluation.json: no interpreter start, no rendezvous) and
samples per second:

- ``1 process, T threads`` (``OMP_NUM_THREADS=T``; T = N: the whole machine to one process),
- ``1 process, 1 thread``,
- ``torchrun --nproc-per-node N``, one thread per process.

It also checks that the sharded evaluation.json equals the single-process one (timings aside).
On a CPU the processes share the cores (and here other jobs): the numbers say what sharding buys
against intra-op threads on the same cores, not GPU scaling.

    python benchmarks/bench_torchrun_eval.py --nproc 2 --n 64 --out benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_layers import write_result  # noqa: E402

from robustsnn.conversion import convert  # noqa: E402
from robustsnn.data import load_dataset, to_float  # noqa: E402
from robustsnn.io.models import save_snn  # noqa: E402
from robustsnn.models import build_model  # noqa: E402


def make_checkpoint(root: Path, n_test: int) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n_test) % 3
    x = rng.normal(60 + 60 * y[:, None, None], 30, size=(n_test, 16, 16))
    npz = root / "toy.npz"
    x8 = x.clip(0, 255).astype(np.uint8)
    np.savez(npz, x_train=x8, y_train=y, x_test=x8, y_test=y)
    spec = f"npz:{npz}"
    info = load_dataset(spec).info
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=1, image_size=16, mean=info.mean, std=info.std,
        width=8, fc=32,
    )  # fmt: skip
    ann.eval()
    calib = to_float(torch.from_numpy(x8[:64, None]))
    snn = convert(ann, calib, T=4, calib_T=8, calib_batches=2, calib_batch_size=32)
    return save_snn(root / "snn.safetensors", snn, dataset=spec)


def run(command: list[str], threads: int, out: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads((out / "evaluation.json").read_text())
    return {"wall_s": wall, "attack_s": result["seconds"]["attacks"], "result": result}


def strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--n", type=int, default=64, help="samples evaluated")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ensemble", default="pgd-fast")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_torchrun_"))
    ckpt = make_checkpoint(root, max(a.n, 64))
    options = ["--num-samples", str(a.n), "--batch-size", str(a.batch_size), "--ensemble",
               a.ensemble, "--eps", "8/255", "--diagnostics", "none", "--quiet"]  # fmt: skip
    one = [sys.executable, "-m", "robustsnn", "evaluate", str(ckpt), *options]
    many = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(a.nproc), "-m", "robustsnn", "evaluate", str(ckpt), *options]  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    for label, command, threads in (
        (f"1 process, {a.nproc} threads", one, a.nproc),
        ("1 process, 1 thread", one, 1),
        (f"torchrun {a.nproc} processes x 1 thread", many, 1),
    ):
        out = root / label.replace(" ", "_").replace(",", "")
        rows[label] = run([*command, "--out", str(out)], threads, out)
        r = rows[label]
        print(f"{label:<36} wall {r['wall_s']:6.1f} s  attacks {r['attack_s']:6.1f} s  "
              f"{a.n / r['attack_s']:6.1f} samples/s (attack phase)")  # fmt: skip
    results = [strip(r.pop("result")) for r in rows.values()]
    same = all(r == results[0] for r in results[1:])
    print(f"evaluation.json identical (timings aside): {same}")
    write_result(
        {
            "benchmark": "bench_torchrun_eval",
            "nproc": a.nproc,
            "n": a.n,
            "batch_size": a.batch_size,
            "ensemble": a.ensemble,
            "cpu_count": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
            "torch": torch.__version__,
            "rows": rows,
            "identical": same,
        },
        "bench_torchrun_eval",
        a.out,
    )


if __name__ == "__main__":
    main()
