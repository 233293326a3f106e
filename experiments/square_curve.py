"""Square attack (black-box) accuracy vs number of queries for several checkpoints (Figure 5).

Usage: python experiments/square_curve.py OUT_JSON LABEL=CKPT ... [--n 50] [--queries 1000] [--eps 8/255]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from robustsnn.attacks import build_attack
from robustsnn.config import parse_eps
from robustsnn.data import load_dataset
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model
from robustsnn.stages import dataset_spec_of, eval_subset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("rows", nargs="+")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--eps", default="8/255")
    a = p.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    result = (
        json.loads(out.read_text()) if out.exists() else {"eps": parse_eps(a.eps), "curves": {}}
    )
    for item in a.rows:
        label, ckpt = item.rsplit("=", 1)
        if label in result["curves"]:
            continue
        model, meta = load_model(ckpt)
        x, y = eval_subset(load_dataset(dataset_spec_of(meta)), a.n)
        attack = build_attack("square", eps=parse_eps(a.eps), n_queries=a.queries)
        with torch.no_grad():
            attack(model, x, y, generator=torch.Generator().manual_seed(0))
        result["curves"][label] = [list(map(float, pt)) for pt in attack.last_curve]
        result["n_queries"] = a.queries
        print(label, result["curves"][label][-1], flush=True)
        atomic_write_json(out, result)


if __name__ == "__main__":
    main()
