"""Micro-benchmark of the spiking dynamics alone (no conv): robustsnn.snn.dynamics vs another copy.

Runs the five spiking layers of the ``bench_layers`` workload (batch 32, T = 8: 64x32x32 static,
128x16x16, 256x8x8, 256x8x8, 512) through ``if_forward`` (no grad), ``bptt`` and
``bptr`` forward+backward (input and threshold gradients), interleaved round by round.
Times are process CPU seconds (robust to other processes on a shared machine when single-threaded)
and wall seconds.

    python benchmarks/bench_dynamics.py                          # current dynamics only
    python benchmarks/bench_dynamics.py --baseline /tmp/dynamics_old.py   # before/after ratios
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from baseline_dynamics import entry_points, load_dynamics

from robustsnn.snn import dynamics
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate

LAYERS = [
    ((64, 32, 32), True),
    ((128, 16, 16), False),
    ((256, 8, 8), False),
    ((256, 8, 8), False),
    ((512,), False),
]


def make_inputs(batch: int, steps: int, seed: int) -> list[tuple[torch.Tensor, bool, torch.Tensor]]:
    """Per layer: input currents, static flag, upstream gradient (made once, outside timing)."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for shape, static in LAYERS:
        full = (batch, *shape) if static else (steps, batch, *shape)
        upstream = torch.randn((steps, batch, *shape), generator=g) * 0.01
        data.append((torch.randn(full, generator=g) * 0.6 + 0.2, static, upstream))
    return data


def run(
    mod: ModuleType,
    kind: str,
    data: list[tuple[torch.Tensor, bool, torch.Tensor]],
    args: argparse.Namespace,
) -> None:
    sur = Surrogate(args.surrogate, args.gamma)
    soft = args.reset == "soft"
    points = entry_points(mod)
    for x, static, grad in data:
        theta = torch.tensor(0.5, requires_grad=True)
        if kind == "fwd":
            fixed = Dynamics(theta.detach(), args.T, args.leak, soft, static)
            points["if_forward"](x, fixed, False)
            continue
        xx = x.detach().requires_grad_(True)
        spec = Dynamics(theta, args.T, args.leak, soft, static)
        if kind == "bptt":
            out = points["bptt"](xx, spec, sur)
        else:
            out = points["bptr"](xx, spec)
        torch.autograd.backward(out, grad)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", help="path of another dynamics.py to compare against")
    p.add_argument("--kinds", nargs="+", default=["fwd", "bptt", "bptr"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--leak", type=float, default=1.0)
    p.add_argument("--reset", choices=("hard", "soft"), default="hard")
    p.add_argument("--surrogate", default="pcw")
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--blocks", nargs="+", type=int, help="compare dynamics.BLOCK values, interleaved"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mods: dict[str, ModuleType] = {"current": dynamics}
    blocks: dict[str, int] = {}
    if args.blocks:
        mods = {}
        for b in args.blocks:
            mods[f"block{b}"] = dynamics
            blocks[f"block{b}"] = b
    if args.baseline:
        mods["baseline"] = load_dynamics(args.baseline)
    data = make_inputs(args.batch, args.T, 0)
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    for kind in args.kinds:
        for name, mod in mods.items():
            if name in blocks:
                dynamics.BLOCK = blocks[name]
            run(mod, kind, data, args)  # warm-up
    for _ in range(args.rounds):
        for kind in args.kinds:
            for name, mod in mods.items():
                key = f"{kind}/{name}"
                if name in blocks:
                    dynamics.BLOCK = blocks[name]
                c0, w0 = time.process_time(), time.perf_counter()
                run(mod, kind, data, args)
                cpu.setdefault(key, []).append(time.process_time() - c0)
                wall.setdefault(key, []).append(time.perf_counter() - w0)
    result: dict[str, Any] = {
        "config": vars(args) | {"out": str(args.out)},
        "torch": torch.__version__,
        "kinds": {},
    }
    print(f"{'kind/impl':<20}{'cpu ms':>9}{'wall ms':>9}{'cur/base (cpu)':>16}")
    for key in cpu:
        kind, name = key.split("/")
        entry = {
            "cpu_median_s": statistics.median(cpu[key]),
            "wall_median_s": statistics.median(wall[key]),
        }
        line = f"{key:<20}{1e3 * entry['cpu_median_s']:>9.1f}{1e3 * entry['wall_median_s']:>9.1f}"
        if name == "current" and f"{kind}/baseline" in cpu:
            ratios = [a / b for a, b in zip(cpu[key], cpu[f"{kind}/baseline"], strict=True)]
            entry["ratio_to_baseline_cpu"] = statistics.median(ratios)
            line += f"{entry['ratio_to_baseline_cpu']:>16.2f}"
        print(line)
        result["kinds"][key] = entry
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
