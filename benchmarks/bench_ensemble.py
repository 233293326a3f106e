"""End-to-end throughput of an adaptive ensemble evaluation (default ``pgd-ensemble``), interleaved.

Workload: the CIFAR-10 subset's small VGG SNN (``vgg_small`` width 32, fc 256, converted, T = 8),
``robustsnn.evaluation.evaluate(model, x, y, eps=8/255, ensemble="pgd-ensemble",
diagnostics="none")`` on the first ``--n`` images of the class-balanced test subset, all in one
batch, as ``experiments/table_rows.py`` runs it. Variants (same model weights, same images, same
seed; every variant once per round, the order rotating every round, all in one process):

    fused               the package as it is: fused dynamics, early exit (members run only on
                        the samples still standing; one clean forward per batch)
    base                the same with another copy of dynamics.py (--baseline-dynamics, e.g.
                        benchmarks/results/dynamics_before.py.txt = before the performance work)
    fused-independent   fused dynamics, ``independent=True``: every member attacks every
                        clean-correct sample (the early exit switched off; the same verdicts)
    base-independent    both switched off
    reference           the package with ``ROBUSTSNN_KERNELS=reference`` (today's dynamics on
                        every device)
    triton              the package with the fused Triton kernels forced (issue 23; on CPU they
                        run through Triton's interpreter: correct, very slow)

On a GPU (``--device cuda``; ``fused`` is then the kernels too, as dispatch is automatic there),
``reliable`` per sample before/after the kernels:

    python benchmarks/bench_ensemble.py --device cuda --ensemble reliable --n 8 --rounds 2 \
        --variants triton reference --checkpoint CKPT --data npz:PATH

Reported: samples per second (n / wall seconds of the ``evaluate`` call), wall and CPU medians
with min-max, per-round ratios to ``fused``, and each variant's clean and robust accuracy (they
must agree; the JSON keeps the per-sample verdicts).

    OMP_NUM_THREADS=1 python benchmarks/bench_ensemble.py \\
        --checkpoint runs/pgdat/conv/snn.safetensors --data npz:/path/cifar10-subset.npz \\
        --baseline-dynamics benchmarks/results/dynamics_before.py.txt --n 24 --rounds 3

Without ``--checkpoint`` the SNN is built here: a randomly initialised ``vgg_small`` (width 32,
fc 256) converted with a quick calibration on ``--calib`` images (data images, or uniform noise
without ``--data``), and the labels are the SNN's own clean predictions, so every sample is
attacked. Those timings show the relative speed of the variants, not the checkpoint's.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
VARIANTS = (
    "fused", "base", "fused-independent", "base-independent", "fused-nchw", "base-nchw",
    "reference", "triton",
)  # fmt: skip
KERNEL_VARIANTS = {"reference": "reference", "triton": "triton"}
DEFAULT_VARIANTS = ("fused", "base", "fused-independent")


# ----------------------------------------------------------------------------- workload


def load_images(spec: str | None, n: int, calib: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(x, y) of the class-balanced test subset and training images for calibration.

    Without a dataset: uniform noise images, labels -1 (to be replaced by the model's own).
    """
    if spec is None:
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(n, 3, 32, 32, generator=gen)
        return (
            x,
            torch.full((n,), -1, dtype=torch.long),
            torch.rand(calib, 3, 32, 32, generator=gen),
        )
    from robustsnn.data import load_dataset, shuffled_indices, to_float
    from robustsnn.stages import eval_subset

    data = load_dataset(spec)
    x, y = eval_subset(data, n)
    calib_x = to_float(data.x_train[shuffled_indices(len(data.x_train), calib, 0)])
    return x, y, calib_x


def build_snn(calib_x: torch.Tensor, seed: int) -> nn.Module:
    """A randomly initialised vgg_small (width 32, fc 256) converted with a quick calibration."""
    from robustsnn.conversion import ConversionConfig, convert
    from robustsnn.models import build_model

    torch.manual_seed(seed)
    ann = build_model(
        "vgg_small",
        num_classes=10,
        in_channels=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        width=32,
        fc=256,
    ).eval()
    cfg = ConversionConfig(
        T=8, calib_T=8, calib_batches=1, calib_batch_size=len(calib_x), bn="keep",
        reset="hard", v_init=0.0, threshold="percentile",
    )  # fmt: skip
    return convert(ann, calib_x, cfg).eval()


def build_model(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """The SNN, images, labels and a description of where they came from."""
    from robustsnn.snn import SpikingNetwork

    data_spec = args.data
    if args.checkpoint:
        from robustsnn.io.models import load_model

        model, _meta = load_model(args.checkpoint)
        if not isinstance(model, SpikingNetwork):
            raise SystemExit(f"{args.checkpoint} is not an SNN checkpoint")
        x, y, _ = load_images(data_spec, args.n, 1)
        source = f"checkpoint {args.checkpoint}"
    else:
        x, y, calib_x = load_images(data_spec, args.n, args.calib)
        model = build_snn(calib_x, args.seed)
        source = f"random-init vgg_small w32 fc256, quick calibration on {len(calib_x)} images"
    model.T = args.T
    if args.labels == "model" or (y < 0).any():
        from robustsnn.evaluation.views import real_predict

        y = real_predict(model, x)
        source += "; labels = the SNN's own clean predictions"
    return model.eval(), x, y, source


def make_variants(model: nn.Module, names: list[str], baseline: str | None) -> dict[str, Any]:
    """name -> (model, independent flag, channels-last flag, kernel mode); base variants get the
    other dynamics.py; ``-nchw`` variants run with ``network.CHANNELS_LAST_ON_CPU`` off."""
    variants: dict[str, Any] = {}
    base_model = None
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        independent = name.endswith("-independent")
        channels_last = not name.endswith("-nchw")
        if name.startswith("base"):
            if not baseline:
                raise SystemExit(f"variant {name} needs --baseline-dynamics PATH")
            if base_model is None:
                from baseline_dynamics import load_dynamics, use_dynamics

                base_model = copy.deepcopy(model)
                if use_dynamics(base_model, load_dynamics(baseline)) == 0:
                    raise SystemExit("the model has no SpikingNeuron to switch")
            variants[name] = (base_model, independent, channels_last, None)
        else:
            variants[name] = (model, independent, channels_last, KERNEL_VARIANTS.get(name))
    return variants


# ----------------------------------------------------------------------------- one pass


def sync() -> None:
    """Waits for queued device work (replaced by ``torch.cuda.synchronize`` on CUDA)."""


def run_once(
    model: nn.Module,
    independent: bool,
    channels_last: bool,
    x: torch.Tensor,
    y: torch.Tensor,
    args: argparse.Namespace,
    ensemble: Any,
    kernel_mode: str | None = None,
) -> dict[str, Any]:
    from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
    from robustsnn.snn import network, triton_kernels

    network.CHANNELS_LAST_ON_CPU = channels_last
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    with triton_kernels.kernel_override(kernel_mode):
        config = EvaluationConfig(
            eps=args.eps,
            ensemble=ensemble,
            independent=independent,
            batch_size=len(y),
            seed=args.seed,
            diagnostics="none",
        )
        res = evaluate(model, x, y, config, EvaluationContext(quiet=True))
        sync()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    name = res["ensemble"]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "clean_accuracy": res["clean_accuracy"],
        "robust_accuracy": res["ensembles"][name]["robust_accuracy"],
        "robust": [bool(r["robust"]) for r in res["records"]],
        "clean_correct": [bool(r["clean_correct"]) for r in res["records"]],
        "broken_by": res["ensembles"][name]["broken_by"],
        "attack_seconds": res["seconds"]["attacks"],
        "clean_seconds": res["seconds"]["clean"],
    }


def warm_up(variants: dict[str, Any], x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace):
    """One tiny evaluation per variant (allocator, oneDNN primitive caches), untimed."""
    from robustsnn.evaluation import ensemble_from_spec

    tiny = ensemble_from_spec(
        [
            {"attack": "pgd", "estimator": "bptt-pcw-1", "params": {"steps": 2}},
            {"attack": "pgd", "estimator": "bptr", "params": {"steps": 2}},
        ]
    )
    for model, independent, channels_last, kernel_mode in variants.values():
        run_once(model, independent, channels_last, x, y, args, tiny, kernel_mode)


# ----------------------------------------------------------------------------- report


def summarize(runs: dict[str, list[dict[str, Any]]], n: int) -> dict[str, Any]:
    """Per variant: samples/s and per-round time ratios to ``fused`` (else the first variant)."""
    ref = runs.get("fused") or next(iter(runs.values()), None)
    out: dict[str, Any] = {}
    for name, items in runs.items():
        wall = [r["wall_s"] for r in items]
        cpu = [r["cpu_s"] for r in items]
        entry: dict[str, Any] = {
            "samples_per_s": n / statistics.median(wall),
            "samples_per_s_per_round": [n / w for w in wall],
            "median_s": statistics.median(wall),
            "min_s": min(wall),
            "max_s": max(wall),
            "cpu_median_s": statistics.median(cpu),
            "samples_s": wall,
            "cpu_samples_s": cpu,
            "clean_accuracy": sorted({r["clean_accuracy"] for r in items}),
            "robust_accuracy": sorted({r["robust_accuracy"] for r in items}),
            "broken_by": items[0]["broken_by"],
            "same_verdicts_every_round": all(r["robust"] == items[0]["robust"] for r in items),
        }
        if ref:
            ratios = [r["wall_s"] / f["wall_s"] for r, f in zip(items, ref, strict=True)]
            cpu_ratios = [r["cpu_s"] / f["cpu_s"] for r, f in zip(items, ref, strict=True)]
            entry["time_ratio_to_fused"] = statistics.median(ratios)
            entry["time_ratio_min"] = min(ratios)
            entry["time_ratio_max"] = max(ratios)
            entry["cpu_ratio_to_fused"] = statistics.median(cpu_ratios)
            disagree = [
                i
                for i, (a, b) in enumerate(zip(items[0]["robust"], ref[0]["robust"], strict=True))
                if a != b
            ]
            entry["verdicts_differing_from_fused"] = disagree
        out[name] = entry
    return out


def print_table(result: dict[str, Any]) -> None:
    cfg = result["config"]
    ref = cfg.get("ratio_reference", "fused")
    print(
        f"\n== {cfg['ensemble']} eps {cfg['eps']:.4f}, n = {cfg['n']}, T = {cfg['T']}, "
        f"{cfg['threads']} thread(s), {cfg['rounds']} rounds; {result['model']}"
    )
    print(
        f"{'variant':<19}{'samples/s':>10}{'median s':>10}{'min-max s':>14}"
        f"{'x ' + ref[:6]:>9}{'(min-max)':>12}{'cpu x':>7}{'clean':>7}{'robust':>8}{'same':>6}"
    )
    nan = float("nan")
    for name, e in result["summary"].items():
        rng = f"{e['min_s']:.1f}-{e['max_s']:.1f}"
        rr = f"{e.get('time_ratio_min', nan):.2f}-{e.get('time_ratio_max', nan):.2f}"
        robust = "/".join(f"{v:.3f}" for v in e["robust_accuracy"])
        clean = "/".join(f"{v:.3f}" for v in e["clean_accuracy"])
        same = "yes" if not e.get("verdicts_differing_from_fused") else "NO"
        print(
            f"{name:<19}{e['samples_per_s']:>10.3f}{e['median_s']:>10.1f}{rng:>14}"
            f"{e.get('time_ratio_to_fused', nan):>9.2f}{rr:>12}"
            f"{e.get('cpu_ratio_to_fused', nan):>7.2f}{clean:>7}{robust:>8}{same:>6}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", help="an SNN checkpoint (default: build a random-init one)")
    p.add_argument("--data", help="dataset spec, e.g. npz:PATH (default: noise images)")
    p.add_argument("--labels", choices=("data", "model"), default="data")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    p.add_argument("--baseline-dynamics", help="another dynamics.py for the base variants")
    p.add_argument("--ensemble", default="pgd-ensemble")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--calib", type=int, default=64, help="calibration images (built SNN)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/<time>.json)")
    p.add_argument("--label", default="", help="free text stored in the JSON")
    p.add_argument("--device", default="cpu", help="torch device of the model and images")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    global sync
    if args.device.startswith("cuda"):
        sync = torch.cuda.synchronize
    from bench_layers import machine, write_result

    from robustsnn.evaluation import parse_eps

    args.eps = parse_eps(args.eps)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
        },
        "label": args.label,
        "machine": machine(args.device),
        "config": {
            "ensemble": args.ensemble,
            "eps": args.eps,
            "n": args.n,
            "T": args.T,
            "rounds": args.rounds,
            "threads": args.threads,
            "seed": args.seed,
            "variants": args.variants,
            "baseline_dynamics": args.baseline_dynamics,
            "checkpoint": args.checkpoint,
            "data": args.data,
            "device": args.device,
            "ratio_reference": "fused" if "fused" in args.variants else args.variants[0],
        },
    }
    model, x, y, source = build_model(args)
    model, x, y = model.to(args.device), x.to(args.device), y.to(args.device)
    result["model"] = source
    variants = make_variants(model, args.variants, args.baseline_dynamics)
    warm_up(variants, x[:4], y[:4], args)
    names = list(variants)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            model_v, independent, channels_last, kernel_mode = variants[name]
            runs[name].append(
                run_once(
                    model_v, independent, channels_last, x, y, args, args.ensemble, kernel_mode
                )
            )
            last = runs[name][-1]
            print(
                f"round {r + 1} {name:<19} {last['wall_s']:7.1f} s  robust "
                f"{last['robust_accuracy']:.3f}",
                flush=True,
            )
    result["runs"] = runs
    result["summary"] = summarize(runs, len(y))
    result["machine"]["load_after"] = os.getloadavg()
    print_table(result)
    write_result(result, "bench_ensemble", args.out)


if __name__ == "__main__":
    main()
