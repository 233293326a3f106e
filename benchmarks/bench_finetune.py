"""Robust-finetuning throughput: seconds per training step and per epoch, variants interleaved.

One step = the paper's finetuning loss on a batch (the single-step KL adversary through BPTT
with the PCW surrogate, then CE + beta * KL forward and backward, SGD update), exactly what
``robustsnn finetune`` runs per batch (``robust_finetune`` objective, train mode). Every variant
starts each round from the same weights (state dict restored), runs ``--warmup`` untimed and
``--steps`` timed steps on the same fixed batches; the variant order rotates every round.
Seconds per epoch = median seconds per step x ceil(train images / batch size): an
extrapolation, labelled as such in the output.

Variants (as in bench_ensemble.py): ``fused`` (the package now), ``fused-nchw`` (channels-last
layout off), ``base-nchw`` (pre-issue-#7 dynamics and layout: the code before the issue).

    python benchmarks/bench_finetune.py --checkpoint .gpu/runs/pgdat/conv/snn.safetensors \\
        --data npz:../shared/data/cifar10-subset.npz \\
        --baseline-dynamics benchmarks/results/dynamics_before.py.txt
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DEFAULT_VARIANTS = ("fused", "fused-nchw", "base-nchw")


def training_batches(spec: str | None, count: int, batch: int) -> tuple[list, int]:
    """``count`` fixed training batches (x, y) and the training set size (noise without data)."""
    if spec is None:
        gen = torch.Generator().manual_seed(3)
        xs = [torch.rand(batch, 3, 32, 32, generator=gen) for _ in range(count)]
        return [(x, torch.randint(0, 10, (batch,), generator=gen)) for x in xs], 10_000
    from robustsnn.data import load_dataset, shuffled_indices, to_float

    data = load_dataset(spec)
    idx = shuffled_indices(len(data.x_train), count * batch, 0)
    x, y = to_float(data.x_train[idx]), torch.as_tensor(data.y_train[idx]).long()
    return list(zip(x.split(batch), y.split(batch), strict=True)), len(data.x_train)


def run_steps(
    model: nn.Module,
    start: dict[str, torch.Tensor],
    channels_last: bool,
    batches: list,
    warmup: int,
    args: argparse.Namespace,
) -> list[float]:
    """Restore ``start``, then time one robust-finetuning step per timed batch (wall seconds)."""
    from robustsnn.snn import network
    from robustsnn.training import build_objective

    network.CHANNELS_LAST_ON_CPU = channels_last
    model.load_state_dict(start)
    model.train()
    objective = build_objective(
        "robust_finetune", eps=args.eps, beta=args.beta, alpha=1 / 255, steps=args.adversary_steps
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i, (x, y) in enumerate(batches):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(model, x, y, gen)
        loss.backward()
        opt.step()
        for m in model.modules():
            clamp = getattr(m, "clamp_threshold", None)
            if clamp is not None:
                clamp()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", help="an SNN checkpoint (default: a random-init vgg_small)")
    p.add_argument("--data", help="dataset spec, e.g. npz:PATH (default: noise images)")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    p.add_argument("--baseline-dynamics", help="another dynamics.py for the base variants")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--eps", type=float, default=2 / 255)
    p.add_argument("--beta", type=float, default=2.0)
    p.add_argument("--adversary-steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from bench_ensemble import build_model, make_variants
    from bench_layers import machine, write_result

    args.n, args.T, args.calib, args.seed, args.labels = 8, 8, 64, 0, "data"
    model, _, _, source = build_model(args)
    variants = make_variants(model, args.variants, args.baseline_dynamics)
    batches, train_size = training_batches(args.data, args.warmup + args.steps, args.batch_size)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            net, _independent, channels_last = variants[name]
            times = run_steps(net, start, channels_last, batches, args.warmup, args)
            runs[name].extend(times)
            print(f"round {r} {name:<12} {statistics.median(times):.2f} s/step", flush=True)
    steps_per_epoch = math.ceil(train_size / args.batch_size)
    ref = statistics.median(runs[names[0]])
    summary = {}
    print(f"\n{'variant':<12}{'s/step':>8}{'min-max':>14}{'x ' + names[0]:>10}{'s/epoch*':>10}")
    for name, times in runs.items():
        med = statistics.median(times)
        summary[name] = {
            "median_s_per_step": med,
            "min_s": min(times),
            "max_s": max(times),
            "samples_s": times,
            "ratio_to_first": med / ref,
            "extrapolated_s_per_epoch": med * steps_per_epoch,
        }
        print(
            f"{name:<12}{med:>8.2f}{f'{min(times):.2f}-{max(times):.2f}':>14}"
            f"{med / ref:>10.2f}{med * steps_per_epoch:>10.0f}"
        )
    print(f"* extrapolated: median s/step x {steps_per_epoch} steps ({train_size} images)")
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "config": {**{k: str(v) for k, v in vars(args).items()}, "source": source},
        "steps_per_epoch": steps_per_epoch,
        "summary": summary,
    }
    write_result(result, "bench_finetune", args.out)


if __name__ == "__main__":
    main()
