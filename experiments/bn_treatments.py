"""BatchNorm treatment at conversion: keep / fold / re-estimate / reset, accuracy vs T.

Trains a small natural CNN on MNIST-5k (3 epochs), converts it with each BN treatment and
each (reset, scale) pair, and prints clean test accuracy at T = 4, 8, 32, 256.
Usage: OMP_NUM_THREADS=1 python experiments/bn_treatments.py
"""

from __future__ import annotations

import time

import torch

from robustsnn.conversion import convert
from robustsnn.data import load_dataset, to_float
from robustsnn.models import build_model


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_dataset("mnist5k")
    perm = torch.randperm(len(data.x_train))
    xtr, ytr = to_float(data.x_train[perm]), data.y_train[perm]
    xte, yte = to_float(data.x_test), data.y_test
    info = data.info
    ann = build_model("cnn_small", num_classes=10, in_channels=1, image_size=28, mean=info.mean,
                      std=info.std, width=8, fc=64)  # fmt: skip
    opt = torch.optim.SGD(ann.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for i in range(0, len(xtr), 64):
            loss = torch.nn.functional.cross_entropy(ann(xtr[i : i + 64]), ytr[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    ann.eval()

    def acc(model: torch.nn.Module) -> float:
        with torch.no_grad():
            hits = sum(
                int((model(xte[i : i + 50]).argmax(1) == yte[i : i + 50]).sum())
                for i in range(0, len(yte), 50)
            )
        return round(hits / len(yte), 3)

    print("ANN", acc(ann))
    for bn in ("keep", "fold", "reestimate", "reset"):
        for reset, scale in (("soft", 1.0), ("hard", 1.0), ("hard", 0.3), ("soft", 0.3)):
            start = time.perf_counter()
            snn = convert(ann, xtr, T=8, reset=reset, scale=scale, bn=bn, calib_batches=4)
            row = []
            for steps in (4, 8, 32, 256):
                snn.T = steps
                row.append(acc(snn))
            print(bn, reset, scale, row, f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
