"""Shared fixtures of the analysis tests: a hand-set tiny SNN and a fake run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsnn.snn import SpikingNetwork, SpikingNeuron


def tiny_snn(T: int = 4) -> SpikingNetwork:
    """conv1 (1->2, 3x3, pad 1) -> IF -> conv2 (2->3, 3x3, pad 1) -> IF -> AvgPool 2 -> linear.

    conv1 copies the image into channel 0 and half of it into channel 1 (centre taps only);
    conv2 copies channel 0 of its input into its channel 0. Thresholds are 1, hard reset.
    """
    conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    conv2 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    readout = nn.Linear(3 * 2 * 2, 5)
    with torch.no_grad():
        conv1.weight.zero_()
        conv1.weight[0, 0, 1, 1] = 1.0
        conv1.weight[1, 0, 1, 1] = 0.5
        conv2.weight.zero_()
        conv2.weight[0, 0, 1, 1] = 1.0
    body = nn.Sequential(
        conv1,
        SpikingNeuron(1.0),
        conv2,
        SpikingNeuron(1.0),
        nn.AvgPool2d(2),
        nn.Flatten(),
        readout,
    )
    return SpikingNetwork(body, T=T).eval()


def tiny_image() -> torch.Tensor:
    """One 1x4x4 image: 1.0 in a corner (0,0), 0.5 inside (1,1), 0.3 on the top edge (0,2)."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0
    x[0, 0, 1, 1] = 0.5
    x[0, 0, 0, 2] = 0.3
    return x


def evaluation(model: str, clean: float, robust: float, eps: float = 8 / 255) -> dict[str, Any]:
    return {
        "model": model,
        "dataset": "toy",
        "split": "test",
        "n": 50,
        "eps": eps,
        "T": None if model == "ann" else 8,
        "clean_accuracy": clean,
        "attacks": {
            "pgd/bptt-pcw-1": {"robust_accuracy": robust + 0.04, "seconds": 1.5},
            "pgd/bptr": {"robust_accuracy": robust + 0.02, "seconds": 1.25},
        },
        "ensembles": {"pgd-ensemble": {"robust_accuracy": robust, "members": 2, "seconds": 2.75}},
        "diagnostics": {
            "nonzero_gradients": {"passed": True, "detail": "all estimators give gradients"},
            "black_box_weaker": {"passed": model != "snn_converted", "detail": "square 0.5 vs pgd"},
        },
    }


def stats_record(spikes: tuple[float, float]) -> dict[str, Any]:
    def part(scale: float) -> dict[str, Any]:
        a, b = spikes[0] * scale, spikes[1] * scale
        return {
            "kind": "spike_statistics",
            "n_images": 50,
            "T": 8,
            "accuracy": 0.7,
            "layers": {
                "features.2": {"neurons": 100, "spikes_per_image": a, "firing_rate": a / 800},
                "classifier.2": {"neurons": 10, "spikes_per_image": b, "firing_rate": b / 80},
            },
            "synapses": {},
            "totals": {
                "neurons": 110,
                "spikes_per_image": a + b,
                "firing_rate": (a + b) / 880,
                "synaptic_ops_per_image": 4321.5,
                "analog_macs_per_image": 2700.0,
                "ann_macs_per_image": 98765.0,
            },
            "energy": {
                "estimate": True,
                "mac_pj": 4.6,
                "ac_pj": 0.9,
                "source": "Horowitz, ISSCC 2014",
                "snn_uj_per_image": 0.0163,
                "ann_uj_per_image": 0.4543,
                "ann_over_snn": 27.87,
            },
        }

    return {
        "kind": "adversarial_statistics",
        "attack": {"name": "pgd", "eps": 8 / 255, "estimator": "bptt-pcw-1", "params": {}},
        "clean": part(1.0),
        "adversarial": part(1.25),
        "raster": {
            "layer": "features.2",
            "T": 4,
            "eps": 8 / 255,
            "clean_image": [[[0.1 * ((i + j) % 10) for j in range(8)] for i in range(8)]],
            "adversarial_image": [
                [[0.1 * ((i + j) % 10) + 0.03 for j in range(8)] for i in range(8)]
            ],
            "clean_spikes": [[(t + k) % 3 == 0 for k in range(30)] for t in range(4)],
            "adversarial_spikes": [[(t + k) % 2 == 0 for k in range(30)] for t in range(4)],
        },
    }


def write_run(
    root: Path, name: str = "run1", *, with_stats: bool = True, png: bytes | None = None
) -> Path:
    """A fake run folder with the files of docs/INTERFACES.md (small, hand-written values)."""
    run = root / name
    (run / "figures").mkdir(parents=True)
    (run / "config.yaml").write_text(
        "data:\n  dataset: toy\nsnn:\n  T: 8\nfinetune:\n  beta: 2.0\n"
    )
    values = {
        "ann": (0.9125, 0.3875),
        "snn_converted": (0.8450, 0.1225),
        "snn_finetuned": (0.8875, 0.4125),
    }
    for model, (clean, robust) in values.items():
        (run / f"evaluation-{model}.json").write_text(json.dumps(evaluation(model, clean, robust)))
    # the finetuned model at a second eps, for the eps curve
    (run / "evaluation-snn_finetuned-eps4.json").write_text(
        json.dumps(evaluation("snn_finetuned", 0.8875, 0.6375, eps=4 / 255))
    )
    (run / "evaluation.json").write_text(json.dumps(evaluation("snn_finetuned", 0.8875, 0.4125)))
    summary = {
        m: {"clean_accuracy": c, "robust_accuracy": r, "spikes_per_image": 1234.5}
        for m, (c, r) in values.items()
    }
    (run / "summary.json").write_text(json.dumps(summary))
    if with_stats:
        (run / "stats-snn_converted.json").write_text(json.dumps(stats_record((900.0, 40.0))))
        (run / "stats-snn_finetuned.json").write_text(json.dumps(stats_record((600.0, 30.0))))
    (run / "conversion_curve.json").write_text(
        json.dumps({"T": [1, 2, 4, 8], "curves": {"hard, 0.3": [0.2, 0.5, 0.8, 0.88]}})
    )
    if png is not None:
        (run / "figures" / "extra.png").write_bytes(png)
    return run
