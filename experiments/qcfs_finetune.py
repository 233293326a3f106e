"""PGD-AT QCFS ANN from a PGD-AT ReLU ANN, then conversion with threshold = lam (issue 14).

Swaps every ReLU of the ANN for a QCFS activation with L levels whose clip level ``lam`` starts
at that layer's MSE-optimal L-level threshold on clean training images, continues PGD
adversarial training (the ANN's own eps/steps) for ``--epochs``, then reports, on the same
class-balanced test subset: clean and PGD-20 accuracy of the ReLU and QCFS ANNs (PGD through
the QCFS straight-through gradient), and the converted SNN (soft reset, v_init 1/2, bn keep,
threshold = lam) at each T. Wilson 95% intervals. Writes the QCFS ANN and the SNNs.

This is a finetune of an existing robust ANN, not a from-scratch QCFS training with the
config's ANN budget (6 epochs): the CPU budget of the session did not allow that.

Usage:
  OMP_NUM_THREADS=1 nohup python experiments/qcfs_finetune.py ANN_CKPT OUT_DIR --levels 4 \
      --dataset npz:/work/shared/data/cifar10-subset.npz --epochs 1 &
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from robustsnn.attacks import build_attack
from robustsnn.conversion import ConversionConfig, convert, mse_threshold
from robustsnn.data import iterate_batches, load_dataset, shuffled_indices, to_float
from robustsnn.io.atomic import atomic_write_json
from robustsnn.io.models import load_model, save_ann, save_snn
from robustsnn.models import rebuild_model
from robustsnn.models.qcfs import QCFS
from robustsnn.stages import dataset_spec_of, eval_subset
from robustsnn.training.metrics import evaluate_accuracy
from robustsnn.training.objectives import build_objective


def wilson(p: float, n: int, z: float = 1.96) -> list[float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


@torch.no_grad()
def init_clip_levels(relu_ann: torch.nn.Module, qcfs_ann: torch.nn.Module, x: torch.Tensor) -> dict:
    """Each QCFS ``lam`` := the MSE-optimal L-level threshold of the ReLU ANN's pre-activations."""
    relus = [m for m in relu_ann.modules() if isinstance(m, torch.nn.ReLU)]
    qcfs = [m for m in qcfs_ann.modules() if isinstance(m, QCFS)]
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(relus))}
    hooks = [
        r.register_forward_hook(
            lambda m, a, o, i=i: seen[i].append(
                a[0].reshape(-1)[:: max(1, a[0].numel() // 200_000)]
            )
        )
        for i, r in enumerate(relus)
    ]
    relu_ann(x)
    for h in hooks:
        h.remove()
    levels = {}
    for i, layer in enumerate(qcfs):
        lam = mse_threshold(torch.cat(seen[i]), layer.levels, 0.5)
        layer.lam.fill_(lam)
        levels[i] = lam
    return levels


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--dataset", default=None)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--pgd-n", type=int, default=500)
    p.add_argument("--eval-eps", default="2/255,8/255")
    p.add_argument("--T", default="4,8")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    out = Path(a.out)
    relu, meta = load_model(a.checkpoint)
    data = load_dataset(a.dataset or dataset_spec_of(meta))
    arch = {**meta["arch"], "activation": "qcfs", "qcfs_levels": a.levels}
    ann = rebuild_model(arch)
    missing, unexpected = ann.load_state_dict(relu.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(".lam") for k in missing), (missing, unexpected)
    calib = to_float(data.x_train[shuffled_indices(len(data.x_train), 1024, a.seed)])
    ann.eval()
    lams = init_clip_levels(relu, ann, calib)
    print("initial lam", lams, flush=True)
    obj_params = dict(meta["objective"]["params"])
    objective = build_objective(meta["objective"]["name"], **obj_params)
    opt = torch.optim.SGD(ann.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(a.seed)
    batches_per_epoch = math.ceil(len(data.x_train) / 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs * batches_per_epoch)
    log: dict[str, Any] = {"levels": a.levels, "epochs": a.epochs, "lr": a.lr, "init_lam": lams}
    start = time.perf_counter()
    for epoch in range(a.epochs):
        ann.train()
        total, correct, count = 0.0, 0, 0
        for xb, yb in iterate_batches(
            data.x_train, data.y_train, 64, generator=gen, augment_info=data.info
        ):
            loss, logits = objective(ann, xb, yb, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            count += len(yb)
        print(f"epoch {epoch}: loss {total / count:.3f} acc {correct / count:.3f} "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    ann.eval()
    log["train_seconds"] = round(time.perf_counter() - start, 1)
    log["lam"] = [float(m.lam) for m in ann.modules() if isinstance(m, QCFS)]
    save_ann(out / "ann.safetensors", ann, **{k: meta[k] for k in ("dataset", "normalization")},
             objective=meta["objective"], source=a.checkpoint, qcfs_finetune=log)  # fmt: skip
    x, y = eval_subset(data, a.n)
    n = len(y)
    rows: dict[str, Any] = {}
    for name, model in (("relu_ann", relu), ("qcfs_ann", ann)):
        acc = evaluate_accuracy(model, x, y, 200)
        rows[name] = {"clean": acc, "clean_ci": wilson(acc, n)}
        for eps_text in a.eval_eps.split(","):
            num, den = eps_text.split("/")
            eps = float(num) / float(den)
            pgd = build_attack("pgd", eps=eps, steps=20)
            g = torch.Generator().manual_seed(a.seed)
            racc = evaluate_accuracy(model, x[: a.pgd_n], y[: a.pgd_n], 100, pgd, generator=g)
            rows[name][f"pgd20@{eps_text}"] = racc
            rows[name][f"pgd20@{eps_text}_ci"] = wilson(racc, min(a.pgd_n, n))
        print(name, rows[name], flush=True)
        atomic_write_json(out / "results.json", {"log": log, "n": n, "rows": rows})
    for steps in [int(t) for t in a.T.split(",")]:
        cfg = ConversionConfig(T=steps, threshold="qcfs", reset="soft", v_init=0.5, bn="keep")
        snn = convert(ann, calib, cfg)
        acc = evaluate_accuracy(snn, x, y, 100)
        rows[f"snn_T{steps}"] = {
            "clean": acc,
            "clean_ci": wilson(acc, n),
            "config": "qcfs/soft/0.5/keep",
        }
        save_snn(out / f"snn_T{steps}.safetensors", snn, **{k: meta[k] for k in ("dataset", "normalization")},
                 stage="converted", clean_accuracy=acc)  # fmt: skip
        print(f"snn T={steps}", acc, flush=True)
        atomic_write_json(out / "results.json", {"log": log, "n": n, "rows": rows})


if __name__ == "__main__":
    main()
