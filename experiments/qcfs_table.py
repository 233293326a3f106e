"""ANNs side by side before any finetuning (issue 14): clean and PGD-20 accuracy of each ANN and
the clean accuracy of its converted SNN at each T, on one class-balanced test subset.

A QCFS ANN converts with its own recipe (threshold = lam, soft reset, v_init 1/2, BN kept); a
ReLU ANN with the project's default conversion (MSE thresholds for the target T, soft reset,
v_init 1/2, BN kept). PGD-20 on a QCFS ANN uses the straight-through gradient of the floor.
Wilson 95% intervals. Resumes: rows already in OUT are kept.

Usage:
  OMP_NUM_THREADS=1 python experiments/qcfs_table.py OUT.json relu=ANN.safetensors \
      qcfs4=runs/qcfs-L4/ann.safetensors --n 1000 --T 4,8
  python experiments/qcfs_table.py OUT.json --markdown
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from robustsnn.attacks import build_attack
from robustsnn.config import parse_eps
from robustsnn.conversion import ConversionConfig, convert
from robustsnn.data import load_dataset
from robustsnn.evaluation.intervals import accuracy_summary, format_accuracy
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model
from robustsnn.models.qcfs import QCFS
from robustsnn.stages import calibration_images, dataset_spec_of, eval_subset
from robustsnn.training.metrics import evaluate_accuracy


def _row(acc: float, n: int) -> dict[str, Any]:
    return accuracy_summary(round(acc * n), n)


def measure(path: str, n: int, steps: list[int], eps_list: list[str], seed: int) -> dict[str, Any]:
    """Clean / PGD-20 of the ANN at ``path`` and clean accuracy of its SNN at each T."""
    ann, meta = load_model(path)
    ann.eval()
    data = load_dataset(dataset_spec_of(meta))
    x, y = eval_subset(data, n)
    is_qcfs = any(isinstance(m, QCFS) for m in ann.modules())
    out: dict[str, Any] = {
        "path": path,
        "qcfs": is_qcfs,
        "clean": _row(evaluate_accuracy(ann, x, y, 200), len(y)),
    }
    for text in eps_list:
        attack = build_attack("pgd", eps=parse_eps(text), steps=20)
        g = torch.Generator().manual_seed(seed)
        out[f"pgd20@{text}"] = _row(evaluate_accuracy(ann, x, y, 100, attack, generator=g), len(y))
    for T in steps:
        if is_qcfs:
            cfg = ConversionConfig(T=T, threshold="qcfs", reset="soft", v_init=0.5, bn="keep")
        else:
            cfg = ConversionConfig(T=T)  # the project's default conversion
        snn = convert(ann, calibration_images(data, cfg, seed), cfg)
        out[f"snn_T{T}"] = _row(evaluate_accuracy(snn, x, y, 100), len(y))
        out[f"snn_T{T}"]["conversion"] = f"{cfg.threshold}/{cfg.reset}/v0={cfg.v_init}/bn={cfg.bn}"
    return out


def markdown(results: dict[str, Any]) -> str:
    rows = list(results.values())
    keys = [k for k in rows[0] if k.startswith("pgd20@") or k.startswith("snn_T")]
    lines = [
        "| ANN | clean | "
        + " | ".join(k.replace("pgd20@", "PGD-20 ").replace("snn_T", "SNN T=") for k in keys)
        + " |"
    ]
    lines.append("|---" * (len(keys) + 2) + "|")
    for label, r in results.items():
        cells = [format_accuracy(r["clean"]["accuracy"], r["clean"]["n"])]
        cells += [format_accuracy(r[k]["accuracy"], r[k]["n"]) if k in r else "" for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("models", nargs="*", help="label=checkpoint")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--T", default="4,8")
    p.add_argument("--eps", default="2/255,8/255")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if a.markdown:
        print(markdown(results))
        return
    torch.set_num_threads(1)
    for item in a.models:
        label, _, path = item.partition("=")
        if label in results:
            continue
        results[label] = measure(
            path, a.n, [int(t) for t in a.T.split(",")], a.eps.split(","), a.seed
        )
        atomic_write_json(out, results)
        print(label, json.dumps(results[label]), flush=True)
    print(markdown(results))


if __name__ == "__main__":
    main()
