"""Merge the per-row JSON files written by experiments/gpu_campaign.sh into one table and print it
as markdown (the shape of docs/RESULTS.md's CIFAR tables).

Usage: python experiments/merge_tables.py ROWS_DIR [OUT_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["ann_pgdat", "ann_trades", "ann_mart", "conv", "plain2", "ft2", "ft_long", "trades_ft2",
         "mart_ft2", "snn_vanilla", "snn_rfgsm"]  # fmt: skip


def pct(value: object) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def main() -> None:
    rows_dir = Path(sys.argv[1])
    table: dict[str, dict] = {}
    keys = sorted(rows_dir.glob("*.json"), key=lambda p: (ORDER + [p.stem]).index(p.stem))
    for path in keys:
        table.update(json.loads(path.read_text()))
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(table, indent=2))
    cols = ["clean", "PGD-20 2/255", "PGD-20 4/255", "PGD-20 8/255", "pgd-ensemble 8/255",
            "apgd-ensemble 8/255", "spikes/image", "n (ens.)"]  # fmt: skip
    print("| row | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for label, r in table.items():
        spikes = r.get("spikes_per_image")
        cells = [
            pct(r.get("clean_accuracy")),
            pct(r.get("pgd20_bptt-pcw-1@2/255")),
            pct(r.get("pgd20_bptt-pcw-1@4/255")),
            pct(r.get("pgd20_bptt-pcw-1@8/255")),
            pct(r.get("pgd-ensemble@8/255")),
            pct(r.get("apgd-ensemble@8/255")),
            f"{spikes:.0f}" if isinstance(spikes, (int, float)) else "-",
            f"{r.get('n')} ({r.get('pgd-ensemble@8/255_n', '-')})",
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
