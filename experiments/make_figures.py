"""Draw the docs/figures/ PNGs from the measured result files (one figure of each kind).

Usage: python experiments/make_figures.py EXP_DIR docs/figures
EXP_DIR holds cifar_run/ (a `robustsnn run` folder), table_main.json (experiments/table_rows.py),
sweep_beta/sweep.json (`robustsnn sweep`), mnist_curve.json / cifar_curve.json
(experiments/conversion_curve.py) and square.json (experiments/square_curve.py).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from robustsnn.analysis import (
    plot_accuracy_vs_T,
    plot_baselines,
    plot_robustness_vs_beta,
    plot_robustness_vs_eps,
    plot_square_curve,
)
from robustsnn.analysis.figures import wilson_band
from robustsnn.evaluation.intervals import wilson_interval

TABLE_N = 200  # images per row of table_main.json (experiments/table_rows.py)


def main() -> None:
    exp, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    run_figures = exp / "cifar_run" / "figures"
    for name in ("spike_raster-snn_finetuned.png", "spikes_per_layer.png", "accuracy_by_model.png"):
        if (run_figures / name).exists():
            shutil.copyfile(run_figures / name, out / f"cifar10-{name}")
    for name in ("mnist", "cifar"):
        curve = exp / f"{name}_curve.json"
        if curve.exists():
            data = json.loads(curve.read_text())
            data["ann"] = data.get("ann_accuracy")
            plot_accuracy_vs_T(data, out / f"{name}-accuracy_vs_T.png",
                               title=f"{name.upper()}: clean accuracy vs T after conversion (n={data['n']})")  # fmt: skip
    sweep = exp / "sweep_beta" / "sweep.json"
    if sweep.exists():
        rows = json.loads(sweep.read_text())["rows"]
        curve = [(float(r["value"]), r["robust_accuracy"]) for r in rows]
        label = "MNIST-5k, PGD-AT eps 0.1"
        n = int(rows[0].get("n") or 200)
        plot_robustness_vs_beta({label: curve}, out / "mnist-robustness_vs_beta.png",
                                attack=f"pgd-fast ensemble, eps 0.1, n={n}",
                                bands={label: wilson_band(curve, n)})  # fmt: skip
    table = exp / "table_main.json"
    if table.exists():
        rows = json.loads(table.read_text())
        curves = {}
        bars = {}
        for label, row in rows.items():
            pts = [(0.0, row["clean_accuracy"])]
            for key, value in row.items():
                if key.startswith("pgd20_bptt-pcw-1@") and not key.endswith("seconds"):
                    num, den = key.split("@")[1].split("/")
                    pts.append((float(num) / float(den), value))
            curves[label] = sorted(pts)
            bars[label] = {
                "clean": row["clean_accuracy"],
                "PGD-20 8/255": row.get("pgd20_bptt-pcw-1@8/255"),
            }
            if "pgd-ensemble@8/255" in row:
                bars[label]["pgd-ensemble 8/255"] = row["pgd-ensemble@8/255"]
        plot_robustness_vs_eps(
            curves, out / "cifar10-robustness_vs_eps.png", attack=f"PGD-20, BPTT PCW-1, n={TABLE_N}",
            bands={k: wilson_band(v, TABLE_N) for k, v in curves.items()},
        )  # fmt: skip
        bars = {k: {m: v for m, v in b.items() if v is not None} for k, b in bars.items()}
        plot_baselines(
            bars,
            out / "cifar10-baselines.png",
            title=f"CIFAR-10 subset, T = 8: clean and robust accuracy, n={TABLE_N}",
            intervals={
                k: {m: wilson_interval(round(v * TABLE_N), TABLE_N) for m, v in b.items()}
                for k, b in bars.items()
            },
        )
    square = exp / "square.json"
    if square.exists():
        data = json.loads(square.read_text())
        plot_square_curve(data["curves"], out / "cifar10-square_vs_queries.png", n_queries=data.get("n_queries"),
                          eps=data.get("eps"))  # fmt: skip


if __name__ == "__main__":
    main()
