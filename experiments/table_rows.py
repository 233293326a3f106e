"""One row of the paper-shaped results table per checkpoint: clean accuracy, PGD-20 robust
accuracy (BPTT with the PCW surrogate, gamma 1) at several eps, optional preset ensembles,
and spikes per image. Rows already in OUT_JSON are skipped, so the script can be rerun.

Usage:
  python experiments/table_rows.py OUT_JSON LABEL=CKPT [LABEL=CKPT ...]
         [--n 200] [--eps 4/255,8/255] [--ensembles pgd-ensemble] [--threads 1]
         [--device cuda] [--dataset npz:PATH]

``--dataset`` overrides the dataset recorded in the checkpoint (e.g. when the checkpoint was
written on another machine with the data at another path).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from robustsnn.analysis import spike_statistics
from robustsnn.config import parse_eps
from robustsnn.data import load_dataset
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, ensemble_from_spec, evaluate
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model
from robustsnn.snn import SpikingNetwork
from robustsnn.stages import dataset_spec_of, eval_subset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("rows", nargs="+")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--eps", default="4/255,8/255")
    p.add_argument("--ensembles", default="")
    p.add_argument("--ensemble-n", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default=None, help="override the checkpoint's dataset spec")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    table = json.loads(out.read_text()) if out.exists() else {}
    for item in a.rows:
        label, ckpt = item.rsplit("=", 1)
        row = table.get(label, {"checkpoint": ckpt})
        model, meta = load_model(ckpt)
        model = model.to(a.device)
        data = load_dataset(a.dataset or dataset_spec_of(meta))
        x, y = eval_subset(data, a.n)
        x, y = x.to(a.device), y.to(a.device)
        row["T"] = model.T if isinstance(model, SpikingNetwork) else None
        row["n"] = len(y)
        for eps_text in a.eps.split(","):
            key = f"pgd20_bptt-pcw-1@{eps_text}"
            if key in row:
                continue
            start = time.perf_counter()
            config = EvaluationConfig(
                eps=parse_eps(eps_text),
                ensemble=ensemble_from_spec(["pgd/bptt-pcw-1"]),
                seed=a.seed,
                diagnostics="none",
            )
            res = evaluate(model, x, y, config, EvaluationContext(quiet=True))
            row["clean_accuracy"] = res["clean_accuracy"]
            row[key] = res["robust_accuracy"]
            row[key + "_seconds"] = round(time.perf_counter() - start, 1)
            print(label, key, row[key], flush=True)
            table[label] = row
            atomic_write_json(out, table)
        if isinstance(model, SpikingNetwork) and "spikes_per_image" not in row:
            stats = spike_statistics(model, x)
            row["spikes_per_image"] = stats["totals"]["spikes_per_image"]
            row["synaptic_ops_per_image"] = stats["totals"]["synaptic_ops_per_image"]
            table[label] = row
            atomic_write_json(out, table)
        for name in filter(None, a.ensembles.split(",")):
            key = f"{name}@8/255"
            if key in row:
                continue
            n = a.ensemble_n or a.n
            xe, ye = eval_subset(data, n)
            xe, ye = xe.to(a.device), ye.to(a.device)
            start = time.perf_counter()
            config = EvaluationConfig(eps=8 / 255, ensemble=name, seed=a.seed, diagnostics="none")
            res = evaluate(model, xe, ye, config, EvaluationContext(quiet=True))
            row[key] = res["robust_accuracy"]
            row[key + "_n"] = n
            row[key + "_seconds"] = round(time.perf_counter() - start, 1)
            print(label, key, row[key], flush=True)
            table[label] = row
            atomic_write_json(out, table)


if __name__ == "__main__":
    main()
