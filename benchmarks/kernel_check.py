"""The Triton kernels against the reference dynamics on one device, plus one layer's timing.

What ``tests/snn/test_triton_kernels.py`` verifies on CPU through Triton's interpreter, re-run
on the device where the kernels are compiled (on a GPU: the compiled code, with FMA contraction
off): for every surrogate x reset x input coding (LIF leak and a per-neuron initial membrane on
half the cases), float32, T = 8, an odd neuron count: forward bit-identical, gradients of the
input, threshold and initial membrane within 1e-5 relative; and the spiking layer under the
estimators whose backward is fused from a precomputed multiplier. Then the time of one spiking
layer (VGG11's first: ``[T=8, B=128, 64, 32, 32]``), reference path vs kernels, forward and
forward+backward, medians of ``--reps`` passes in one process (interleaved).

    python benchmarks/kernel_check.py --device cuda --out benchmarks/results/kernel_check.json
    python benchmarks/kernel_check.py --device cpu --quick        # the interpreter, tiny sizes

Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robustsnn.snn import SpikingNeuron, parse_estimator, triton_kernels
from robustsnn.snn.dynamics import Dynamics, bptt
from robustsnn.snn.neuron import RUN_STATE_KEY
from robustsnn.snn.run_state import RunState
from robustsnn.snn.surrogates import Surrogate

KINDS = {"pcw": 1.0, "exp": 2.0, "expd": 1.0, "rect": 0.5, "ste": 1.0}
ESTIMATORS = ("bptt-pcw-1-dr", "bptt-rel-pcw-1", "hart-1", "assg-atan-0.425-dr", "pdsg")
RTOL = 1e-5


def _rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    scale = max(1.0, float(ref.abs().max()))
    return float((got - ref).abs().max()) / scale


def _bptt(
    kind: str,
    soft: bool,
    static: bool,
    lif: bool,
    shape: tuple[int, ...],
    device: str,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    steps = 8
    full = (steps, *shape)

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype).requires_grad_()

    x = leaf(torch.rand(shape if static else full, generator=gen) * 0.9)
    theta = leaf(torch.tensor(0.45))
    init = leaf(torch.rand(shape, generator=gen) * 0.3) if lif else None
    upstream = torch.randn(full, generator=gen).to(device=device, dtype=dtype)
    leak = 0.9 if lif else 1.0
    surrogate = Surrogate(kind, KINDS[kind])
    out = bptt(x, Dynamics(theta, steps, leak, soft, static, init), surrogate)
    leaves = [x, theta] + ([init] if init is not None else [])
    grads = torch.autograd.grad(out, leaves, upstream)
    names = ["input", "theta", "init"][: len(grads)]
    return {"out": out.detach(), **dict(zip(names, grads, strict=True))}


def _layer(name: str, static: bool, shape: tuple[int, ...], device: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    steps, batch = 6, shape[0]
    neuron = SpikingNeuron(threshold=0.45, reset="hard", v_init=0.5).to(device)
    neuron.name = "layer"
    neuron.context.steps, neuron.context.batch = steps, batch
    neuron.context.estimator = parse_estimator(name)
    neuron.context.extra = {RUN_STATE_KEY: RunState()}
    merged = (batch if static else steps * batch, *shape[1:])
    x = (torch.rand(merged, generator=gen) * 0.8).to(device).requires_grad_()
    upstream = torch.randn((steps * batch, *shape[1:]), generator=gen).to(device)
    results = []
    for step in range(2):  # ASSG: the second pass sees updated moments
        out = neuron(x + 0.05 * step)
        results += [out.detach(), torch.autograd.grad(out, x, upstream)[0]]
    return results


def checks(device: str, shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every check's name, pass flag and max relative gradient error.

    A gradient passes within ``RTOL`` relative to its largest entry, or within twice the
    reference path's own float32 error (both against the reference in float64): the threshold
    gradient is one sum over all neurons and steps, whose float32 rounding grows with the size.
    """
    rows: list[dict[str, Any]] = []
    for kind, soft, static in itertools.product(KINDS, (False, True), (False, True)):
        lif = soft != static  # half the cases LIF with a per-neuron initial membrane
        results = []
        for mode in ("reference", "triton"):
            with triton_kernels.kernel_override(mode):
                results.append(_bptt(kind, soft, static, lif, shape, device))
        ref, got = results
        with triton_kernels.kernel_override("reference"):
            exact = _bptt(kind, soft, static, lif, shape, device, torch.float64)
        errors = {k: _rel_error(got[k], ref[k]) for k in ref if k != "out"}
        ok = {
            k: errors[k] <= RTOL
            or _rel_error(got[k].double(), exact[k]) <= 2 * _rel_error(ref[k].double(), exact[k])
            for k in errors
        }
        same = bool(torch.equal(ref["out"], got["out"]))
        rows.append(
            {
                "check": f"bptt-{kind} soft={soft} static={static} lif={lif}",
                "spikes_identical": same,
                "max_rel_error": errors,
                "passed": same and all(ok.values()),
            }
        )
    for name, static in itertools.product(ESTIMATORS, (False, True)):
        results = []
        for mode in ("reference", "triton"):
            with triton_kernels.kernel_override(mode):
                results.append(_layer(name, static, shape, device))
        ref_runs, got_runs = results
        same = all(torch.equal(a, b) for a, b in zip(ref_runs[::2], got_runs[::2], strict=True))
        error = max(_rel_error(b, a) for a, b in zip(ref_runs[1::2], got_runs[1::2], strict=True))
        rows.append(
            {
                "check": f"layer {name} static={static}",
                "spikes_identical": same,
                "max_rel_error": {"input": error},
                "passed": same and error <= RTOL,
            }
        )
    return rows


def timing(device: str, shape: tuple[int, ...], reps: int) -> dict[str, Any]:
    """One spiking layer (pcw-1, hard reset, time-varying input): reference vs kernels."""
    steps = 8
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand((steps, *shape), generator=gen) * 0.9).to(device)
    upstream = torch.randn((steps, *shape), generator=gen).to(device)
    theta = torch.tensor(0.45, device=device, requires_grad=True)
    surrogate = Surrogate("pcw", 1.0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def fwd() -> None:
        with torch.no_grad():
            bptt(x, Dynamics(theta, steps), surrogate)

    def fwdbwd() -> None:
        xx = x.detach().requires_grad_()
        out = bptt(xx, Dynamics(theta, steps), surrogate)
        torch.autograd.grad(out, (xx, theta), upstream)

    samples: dict[str, list[float]] = {}
    for _ in range(reps + 1):  # the first round warms up (compilation) and is dropped
        for mode in ("reference", "triton"):
            for what, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
                with triton_kernels.kernel_override(mode):
                    sync()
                    start = time.perf_counter()
                    fn()
                    sync()
                samples.setdefault(f"{what} {mode}", []).append(time.perf_counter() - start)
    result: dict[str, Any] = {"shape": [steps, *shape]}
    for key, values in samples.items():
        result[key] = {"median_s": statistics.median(values[1:]), "samples_s": values[1:]}
    for what in ("fwd", "fwdbwd"):
        result[f"{what} speedup (reference / triton)"] = (
            result[f"{what} reference"]["median_s"] / result[f"{what} triton"]["median_s"]
        )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU interpreter)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not triton_kernels.available():
        raise SystemExit("triton is not importable: pip install --no-deps triton")
    check_shape = (3, 5, 7) if args.quick else (32, 33, 7)
    layer_shape = (2, 4, 8, 8) if args.quick else (128, 64, 32, 32)
    reps = 2 if args.quick else args.reps
    rows = checks(args.device, check_shape)
    for row in rows:
        errors = ", ".join(f"{k} {v:.1e}" for k, v in row["max_rel_error"].items())
        flag = "ok  " if row["passed"] else "FAIL"
        print(f"{flag} {row['check']}: spikes identical {row['spikes_identical']}; {errors}")
    timed = timing(args.device, layer_shape, reps)
    for what in ("fwd", "fwdbwd"):
        ref, fused = timed[f"{what} reference"]["median_s"], timed[f"{what} triton"]["median_s"]
        print(
            f"one layer {timed['shape']} {what}: reference {1e3 * ref:.3f} ms, triton "
            f"{1e3 * fused:.3f} ms, {ref / fused:.2f}x"
        )
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "versions": {"torch": torch.__version__, "triton": triton_kernels.triton.__version__},
        "checks": rows,
        "all_passed": all(r["passed"] for r in rows),
        "layer_timing": timed,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    print("all checks passed" if result["all_passed"] else "SOME CHECKS FAILED")
    sys.exit(0 if result["all_passed"] else 1)


if __name__ == "__main__":
    main()
