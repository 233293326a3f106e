"""Conversion grid (issue 14): reset x initial membrane x threshold rule x BN x calibration.

Converts one ANN checkpoint with every combination and measures clean accuracy of each SNN at
each T on a class-balanced test subset (Wilson 95% intervals). Thresholds are computed once
per combination they depend on (percentile: the reset, at calib_T = 100 with v_init 0, shared
by both v_init values because the start is 0.5% of the charge of 100 steps and the calibration
costs ~10 CPU-minutes each; mse: v_init and T, from the ANN), then every variant is finished
exactly as ``convert`` does (scale, clamp, BN, corrections); one mse variant is checked against
``convert`` itself. ``--reuse OLD_JSON`` keeps the rows (and percentile thresholds) of
an earlier run of the same grid.

Stage 1 runs the full grid without corrections; stage 2 adds bias / potential correction to the
``--top`` best stage-1 settings per T and to the paper's recipe.

Usage (one thread, background; ``--table OUT_JSON`` prints the markdown table):
  OMP_NUM_THREADS=1 nohup python experiments/conversion_grid.py ANN_CKPT OUT_JSON \
      --dataset npz:/work/shared/data/cifar10-subset.npz --n 1000 --T 4,8 &
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from robustsnn.conversion import (
    ConversionConfig,
    calibrate_corrections,
    calibrate_thresholds,
    calibrate_thresholds_mse,
    convert,
    reestimate_batchnorm,
    spiking_body,
)
from robustsnn.data import load_dataset
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model
from robustsnn.snn.network import SpikingNetwork
from robustsnn.stages import accuracy, calibration_images, dataset_spec_of, eval_subset


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def raw_thresholds(ann: torch.nn.Module, data: torch.Tensor, cfg: ConversionConfig) -> dict:
    """Unscaled thresholds of ``cfg``'s rule (what ``convert`` computes before ``scale``)."""
    snn = SpikingNetwork(spiking_body(ann, replace(cfg, calibration="none")), T=cfg.T)
    snn.eval()
    if cfg.threshold == "mse":
        return calibrate_thresholds_mse(snn, data, cfg)
    return calibrate_thresholds(snn, data, cfg)


def finish(
    ann: torch.nn.Module, data: torch.Tensor, cfg: ConversionConfig, raw: dict
) -> SpikingNetwork:
    """``convert``'s steps after the threshold search, from precomputed thresholds."""
    snn = SpikingNetwork(spiking_body(ann, cfg, example=data[:1]), T=cfg.T)
    snn.eval()
    with torch.no_grad():
        for neuron in snn.neurons():
            scale = cfg.scale if cfg.threshold == "percentile" else 1.0
            neuron.threshold.fill_(raw[neuron.name] * scale)
    snn.clamp_thresholds()
    if cfg.bn == "reestimate":
        reestimate_batchnorm(snn, data, cfg)
    calibrate_corrections(snn, data, cfg)
    return snn


def label(cfg: ConversionConfig) -> str:
    rule = f"p{cfg.percentile}x{cfg.scale}" if cfg.threshold == "percentile" else cfg.threshold
    return f"{cfg.reset}/v0={cfg.v_init}/{rule}/bn={cfg.bn}/cal={cfg.calibration}"


def table(path: str) -> str:
    """Markdown table of a grid JSON: one line per setting, T columns, accuracy and 95% CI."""
    result = json.loads(Path(path).read_text())
    by_label: dict[str, dict[int, dict[str, Any]]] = {}
    for row in result["rows"]:
        by_label.setdefault(row["label"], {})[row["config"]["T"]] = row
    steps = result["T"]
    ann = result["ann"]
    lines = [
        "| reset | v_init | threshold | BN | calibration | "
        + " | ".join(f"T={t} (gap)" for t in steps)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(steps),
    ]
    for name, rows in by_label.items():
        reset, v0, rule, bn, cal = name.split("/")
        cells = []
        for t in steps:
            r = rows.get(t)
            cells.append(
                "" if r is None else
                f"{r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] ({r['gap']:+.3f})"
            )  # fmt: skip
        lines.append(
            f"| {reset} | {v0[3:]} | {rule} | {bn[3:]} | {cal[4:]} | " + " | ".join(cells) + " |"
        )
    head = f"ANN {ann['accuracy']:.3f} [{ann['ci'][0]:.3f}, {ann['ci'][1]:.3f}], n = {result['n']}"
    return head + "\n\n" + "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print(table(sys.argv[2]))
        return
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--dataset", default=None, help="dataset spec (default: the checkpoint's)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--T", default="4,8")
    p.add_argument("--top", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", default=None, help="JSON of an earlier run: keep its rows")
    p.add_argument("--skip-check", action="store_true", help="do not re-run convert() itself")
    p.add_argument(
        "--quick", action="store_true",
        help="stage 1 only for the paper's recipe and soft reset + v_init 1/2 (mse, p99.7 x 1)",
    )  # fmt: skip
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ann, meta = load_model(a.checkpoint)
    data = load_dataset(a.dataset or dataset_spec_of(meta))
    x, y = eval_subset(data, a.n)
    base = ConversionConfig()
    paper_recipe = replace(
        base, reset="hard", v_init=0.0, threshold="percentile", scale=0.3, bn="reestimate"
    )
    calib = calibration_images(data, replace(base, calib_batches=16), a.seed)  # 1024 images
    steps_list = [int(t) for t in a.T.split(",")]
    ann_acc = accuracy(ann, x, y)
    result: dict[str, Any] = {
        "checkpoint": a.checkpoint,
        "n": len(y),
        "T": steps_list,
        "calibration_images": len(calib),
        "ann": {"accuracy": ann_acc, "ci": wilson(round(ann_acc * len(y)), len(y))},
        "rows": [],
    }
    print("ANN", ann_acc, flush=True)
    cache: dict[tuple, dict] = {}
    done: dict[str, dict[str, Any]] = {}
    if a.reuse:
        for row in json.loads(Path(a.reuse).read_text())["rows"]:
            done[json.dumps(row["config"], sort_keys=True)] = row
            c = row["config"]
            if c["threshold"] == "percentile" and c["v_init"] == 0.0:
                raw = {k: v / c["scale"] for k, v in row["thresholds"].items()}
                cache.setdefault(("percentile", c["reset"]), raw)

    def thresholds(cfg: ConversionConfig) -> dict:
        if cfg.threshold == "percentile":
            key: tuple = ("percentile", cfg.reset)
            cfg = replace(cfg, v_init=0.0)
        else:
            key = ("mse", cfg.v_init, cfg.T)
        if key not in cache:
            start = time.perf_counter()
            cache[key] = raw_thresholds(ann, calib, cfg)
            print("thresholds", key, f"{time.perf_counter() - start:.0f} s", flush=True)
        return cache[key]

    def run(cfg: ConversionConfig, stage: int) -> dict[str, Any]:
        previous = done.get(json.dumps(asdict(cfg), sort_keys=True))
        if previous is not None and previous["stage"] == stage:
            result["rows"].append(previous)
            return previous
        start = time.perf_counter()
        snn = finish(ann, calib, cfg, thresholds(cfg))
        acc = accuracy(snn, x, y)
        row = {
            "label": label(cfg),
            "stage": stage,
            "config": asdict(cfg),
            "accuracy": acc,
            "ci": wilson(round(acc * len(y)), len(y)),
            "gap": acc - ann_acc,
            "thresholds": snn.thresholds(),
            "seconds": round(time.perf_counter() - start, 1),
        }
        result["rows"].append(row)
        atomic_write_json(a.out, result)
        print(f"T={cfg.T} {row['label']}: {acc:.3f} ({row['seconds']} s)", flush=True)
        return row

    rules = [("percentile", 0.3), ("percentile", 1.0), ("mse", 1.0)]
    stage1: list[dict[str, Any]] = []
    for steps in steps_list:
        for reset in ("hard", "soft"):
            for v_init in (0.0, 0.5):
                for rule, scale in rules:
                    for bn in ("keep", "reestimate"):
                        paper_like = (reset, v_init, rule, scale, bn) == (
                            "hard",
                            0.0,
                            "percentile",
                            0.3,
                            "reestimate",
                        )
                        if a.quick and not (paper_like or (reset, v_init) == ("soft", 0.5)):
                            continue
                        cfg = replace(
                            base, T=steps, reset=reset, v_init=v_init, threshold=rule,
                            scale=scale, bn=bn, correction_images=len(calib),
                        )  # fmt: skip
                        stage1.append(run(cfg, 1))
    # the shortcut equals convert() itself (on an mse variant: a percentile one costs minutes)
    check = replace(
        base, T=steps_list[-1], reset="soft", v_init=0.5, threshold="mse", scale=1.0, bn="keep",
        correction_images=len(calib),
    )  # fmt: skip
    if not a.skip_check:
        direct = accuracy(convert(ann, calib, check), x, y)
        shortcut = next(r for r in stage1 if r["config"] == asdict(check))["accuracy"]
        result["check_convert_equal"] = {"convert": direct, "grid": shortcut}
        print("check: convert", direct, "grid", shortcut, flush=True)
    for steps in steps_list:
        rows = sorted(
            (r for r in stage1 if r["config"]["T"] == steps), key=lambda r: -r["accuracy"]
        )
        paper_row = asdict(replace(paper_recipe, T=steps, correction_images=len(calib)))
        picks = [r["config"] for r in rows[: a.top]] + [paper_row]
        for picked in picks:
            for calibration in ("bias", "potential"):
                cfg = replace(ConversionConfig(**picked), calibration=calibration)
                run(cfg, 2)
    atomic_write_json(a.out, result)


if __name__ == "__main__":
    main()
