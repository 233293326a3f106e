"""Time the paper configs (configs/paper/*.yaml) per training epoch and per evaluated image.

For planning GPU-hours: each stage's unit of work is timed on random data of the config's shape
(the computation of a dense network does not depend on the pixel values), a few times, and
extrapolated; the output says so. Units:

- ANN epoch: one optimiser step of the config's ANN objective (PGD-AT: 10 attack steps + the
  update) on a batch, x ceil(train images / batch size).
- finetuning epoch: one step of the robust-finetuning loss of the converted SNN at T (the KL
  adversary through BPTT, then CE + beta * KL, update), x ceil(train images / batch size).
- evaluated image: one forward+backward of the SNN through the default BPTT estimator per image
  (the cost unit of a gradient attack step) and one forward per image; an ensemble's cost per
  image is at most (gradient steps of all members) x the first + (queries) x the second, reached
  when an image survives every member (members stop early on images already broken).

    OMP_NUM_THREADS=1 python benchmarks/time_paper_configs.py --out benchmarks/results/paper_configs-cpu.json
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_layers import write_result  # noqa: E402

from robustsnn.config import load_config  # noqa: E402
from robustsnn.conversion import convert  # noqa: E402
from robustsnn.models import add_zero_biases, build_model  # noqa: E402
from robustsnn.training.objectives import build_objective  # noqa: E402

SHAPES = {  # dataset -> (channels, size, classes, train images)
    "cifar10": (3, 32, 10, 50_000),
    "cifar100": (3, 32, 100, 50_000),
    "svhn": (3, 32, 10, 73_257),
    "tinyimagenet": (3, 64, 200, 100_000),
}
# Gradient steps and forward-only queries per image that survives every member (upper bound).
ENSEMBLE_COST = {
    "pgd-ensemble": (19 * 20, 0),  # PGD-20 x 19 estimators
    "reliable": (9 * 100 + 3 * 100, 1000),  # SA-PGD-100 x 9, APGD-T 3 targets x 100, Square 1000
}


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
WALL_SECONDS: list[float] = []  # every timed wall interval, to report the machine's load


def _median_seconds(fn: Any, repeats: int, clock: str = "cpu") -> float:
    """Median seconds of ``fn`` by ``clock``: ``cpu`` = this process's CPU time, which on one
    thread approximates the wall time on an idle core (the CPU here is shared by other jobs)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start, wall = CLOCK[clock](), time.perf_counter()
        fn()
        times.append(CLOCK[clock]() - start)
        WALL_SECONDS.append(time.perf_counter() - wall)
    return statistics.median(times)


def time_config(path: Path, batch: int, repeats: int, device: str) -> dict[str, Any]:
    cfg = load_config(path)
    channels, size, classes, n_train = SHAPES[cfg.data.dataset]
    torch.manual_seed(0)
    ann = build_model(
        cfg.model.name, num_classes=classes, in_channels=channels, image_size=size,
        mean=[0.5] * channels, std=[0.25] * channels,
    ).to(device)  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, channels, size, size, device=device, generator=gen)
    y = torch.randint(0, classes, (batch,), device=device, generator=gen)
    params: dict[str, Any] = {"eps": cfg.ann.eps}
    if cfg.ann.objective in ("pgd_at", "trades", "mart"):
        params["steps"] = cfg.ann.steps
    objective = build_objective(cfg.ann.objective, **params)
    opt = torch.optim.SGD(ann.parameters(), lr=1e-3, momentum=0.9)

    def ann_step() -> None:
        ann.train()
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(ann, x, y, gen)
        loss.backward()
        opt.step()

    ann_step_s = _median_seconds(ann_step, repeats)
    ann.eval()
    snn = convert(ann, x.detach(), T=cfg.snn.T, calib_T=2, calib_batches=1, calib_batch_size=batch)
    if cfg.finetune.add_biases:
        add_zero_biases(snn.body)
    f = cfg.finetune
    finetune = build_objective(
        "robust_finetune", eps=f.eps, beta=f.beta, alpha=f.alpha, steps=f.adversary_steps
    )
    opt_snn = torch.optim.SGD(snn.parameters(), lr=1e-4, momentum=0.9)

    def finetune_step() -> None:
        snn.train()
        opt_snn.zero_grad(set_to_none=True)
        loss, _ = finetune(snn, x, y, gen)
        loss.backward()
        opt_snn.step()

    ft_step_s = _median_seconds(finetune_step, repeats)
    snn.eval()

    def grad_pass() -> None:
        xg = x.clone().requires_grad_(True)
        snn(xg).logsumexp(1).sum().backward()

    def forward_pass() -> None:
        with torch.no_grad():
            snn(x)

    grad_s = _median_seconds(grad_pass, repeats) / batch
    fwd_s = _median_seconds(forward_pass, repeats) / batch
    ann_steps = math.ceil(n_train / cfg.ann.batch_size)
    ft_steps = math.ceil(n_train / f.batch_size)
    scale_ann = cfg.ann.batch_size / batch
    scale_ft = f.batch_size / batch
    result: dict[str, Any] = {
        "config": str(path),
        "model": cfg.model.name,
        "dataset": cfg.data.dataset,
        "parameters": sum(p.numel() for p in ann.parameters()),
        "timed_batch": batch,
        "ann_step_seconds_at_timed_batch": ann_step_s,
        "ann_epoch_hours": ann_step_s * scale_ann * ann_steps / 3600,
        "ann_total_hours": ann_step_s * scale_ann * ann_steps * cfg.ann.epochs / 3600,
        "finetune_step_seconds_at_timed_batch": ft_step_s,
        "finetune_epoch_hours": ft_step_s * scale_ft * ft_steps / 3600,
        "finetune_total_hours": ft_step_s * scale_ft * ft_steps * f.epochs / 3600,
        "snn_grad_seconds_per_image": grad_s,
        "snn_forward_seconds_per_image": fwd_s,
        "eval_seconds_per_image_upper_bound": {
            name: steps * grad_s + queries * fwd_s
            for name, (steps, queries) in ENSEMBLE_COST.items()
        },
        "T": cfg.snn.T,
        "extrapolated": "process CPU seconds (one thread) of the timed batch, scaled linearly to "
        "the config's batch size and multiplied by steps per epoch; eval per image is an upper "
        "bound",
    }
    print(
        f"{path.name}: ANN epoch {result['ann_epoch_hours']:.2f} h, finetune epoch "
        f"{result['finetune_epoch_hours']:.2f} h, reliable <= "
        f"{result['eval_seconds_per_image_upper_bound']['reliable']:.0f} s/image",
        flush=True,
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("configs", nargs="*", type=Path)
    p.add_argument("--batch", type=int, default=8, help="images per timed step")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--label", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    configs = a.configs or sorted((HERE.parent / "configs" / "paper").glob("*.yaml"))
    if a.device != "cpu" or a.threads != 1:
        CLOCK["cpu"] = CLOCK["wall"]  # CPU time means nothing for a GPU or several threads
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    rows = [time_config(c, a.batch, a.repeats, a.device) for c in configs]
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    device = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    write_result(
        {"label": a.label, "device": device, "threads": a.threads, "torch": torch.__version__,
         "clock": "process CPU time" if CLOCK["cpu"] is time.process_time else "wall",
         "cpu_share_while_running": round(cpu / wall, 3), "rows": rows},
        "paper_configs", a.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
