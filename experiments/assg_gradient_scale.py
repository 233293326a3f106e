"""Input-gradient magnitudes of ASSG with and without the reset path (RESULTS.md section 9).

Three gradient passes per estimator (one ASSG run) on 40 test images of the shared robust-
finetuned CIFAR SNN: how many samples have non-finite gradients and the largest finite entry.

Usage: python experiments/assg_gradient_scale.py [CKPT] [DATASET_SPEC]
"""

from __future__ import annotations

import sys

import torch

from robustsnn.data import load_dataset
from robustsnn.io.models import load_model
from robustsnn.snn import parse_estimator
from robustsnn.stages import eval_subset

ESTIMATORS = ("assg-atan-0.425", "assg-atan-0.425-dr", "assg-pcw-0.85", "assg-pcw-0.85-dr")


def main() -> None:
    torch.set_num_threads(1)
    ckpt = (
        sys.argv[1]
        if len(sys.argv) > 1
        else "../shared/checkpoints/cifar10-strong-ft/snn.safetensors"
    )
    spec = sys.argv[2] if len(sys.argv) > 2 else "npz:../shared/data/cifar10-subset.npz"
    model, _ = load_model(ckpt)
    model.eval()
    x, y = eval_subset(load_dataset(spec), 500)
    x, y = x[:40], y[:40]
    generator = torch.Generator().manual_seed(0)
    noise = [0.01 * torch.randn(x.shape, generator=generator) for _ in range(3)]
    for name in ESTIMATORS:
        view = model.with_estimator(parse_estimator(name))
        view.begin_attack_run(x.shape[0])
        passes = []
        for k in range(3):
            xx = (x + noise[k]).clamp(0, 1).requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(view(xx), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xx)
            bad = (~torch.isfinite(grad)).flatten(1).any(1)
            largest = float(grad[~bad].abs().max()) if bool((~bad).any()) else float("nan")
            passes.append(f"non-finite {int(bad.sum())}/40, max |grad| {largest:.3g}")
        print(f"{name:<22} " + " | ".join(passes))


if __name__ == "__main__":
    main()
