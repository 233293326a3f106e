"""Accuracy vs T after conversion, for hard/soft reset and threshold scale 0.3/1.0.

Usage: python experiments/conversion_curve.py ANN_CKPT OUT_JSON [--n 500] [--T 4,8,...] [--bn keep]
Writes {"T": [...], "ann_accuracy": a, "curves": {"hard, scale 0.3": [...], ...}} which
`robustsnn.analysis` draws as the accuracy-vs-T figure.
"""

from __future__ import annotations

import argparse
import time

import torch

from robustsnn.conversion import ConversionConfig, convert
from robustsnn.data import load_dataset
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model
from robustsnn.stages import (
    accuracy,
    accuracy_vs_T,
    calibration_images,
    dataset_spec_of,
    eval_subset,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--T", default="4,8,16,32,64,128,256")
    p.add_argument("--bn", default="keep")
    p.add_argument("--calib-batch-size", type=int, default=64)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ann, meta = load_model(a.checkpoint)
    data = load_dataset(dataset_spec_of(meta), a.data_dir)
    x, y = eval_subset(data, a.n)
    steps = [int(t) for t in a.T.split(",")]
    result: dict = {
        "T": steps,
        "n": len(y),
        "bn": a.bn,
        "calib_batch_size": a.calib_batch_size,
        "ann_accuracy": accuracy(ann, x, y),
        "curves": {},
    }
    for reset in ("hard", "soft"):
        for scale in (0.3, 1.0):
            cfg = ConversionConfig(
                reset=reset, scale=scale, bn=a.bn, calib_batch_size=a.calib_batch_size,
                v_init=0.0, threshold="percentile",
            )  # fmt: skip
            start = time.perf_counter()
            snn = convert(ann, calibration_images(data, cfg, 0), cfg)
            label = f"{reset} reset, scale {scale}"
            result["curves"][label] = accuracy_vs_T(snn, x, y, steps)
            print(
                label, result["curves"][label], f"{time.perf_counter() - start:.0f} s", flush=True
            )
            atomic_write_json(a.out, result)


if __name__ == "__main__":
    main()
