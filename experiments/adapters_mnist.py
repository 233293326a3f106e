"""Cross-framework: small SNNs trained in SpikingJelly and snnTorch on MNIST-5k, adapted with
``robustsnn.interop.adapters`` and attacked with robustsnn's pgd-ensemble (docs/RESULTS.md).

    OMP_NUM_THREADS=1 python experiments/adapters_mnist.py --out /tmp/adapters --n 50

Each model: a conv -> pool -> LIF -> linear -> LIF MLP trained for one epoch with the source
framework's own BPTT (its default surrogate), adapted with ``T = 8``, compared with the source on
the n test images (predictions must agree), then evaluated clean and against ``pgd-ensemble``
(PGD-20 x 19 estimators) at eps 0.1. Writes ``<out>/adapters.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from robustsnn.data import load_dataset
from robustsnn.evaluation import evaluate
from robustsnn.evaluation.intervals import format_accuracy
from robustsnn.interop.adapters import from_snntorch, from_spikingjelly
from robustsnn.io.atomic import atomic_write_json

T = 8


def spikingjelly_model() -> tuple[nn.Module, object]:
    from spikingjelly.activation_based import functional, layer, neuron

    net = nn.Sequential(
        layer.Conv2d(1, 8, 5, stride=2, padding=2), layer.BatchNorm2d(8), neuron.LIFNode(),
        layer.AvgPool2d(2), layer.Flatten(), layer.Linear(8 * 7 * 7, 64), neuron.LIFNode(),
        layer.Linear(64, 10),
    )  # fmt: skip
    functional.set_step_mode(net, "m")

    def logits(x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(net)
        out = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)
        functional.reset_net(net)
        return out

    return net, logits


def snntorch_model() -> tuple[nn.Module, object]:
    import snntorch as snn

    kw = {"beta": 0.9, "init_hidden": True, "reset_mechanism": "zero"}
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.MaxPool2d(2), snn.Leaky(**kw),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 64), snn.Leaky(**kw), nn.Linear(64, 10),
        snn.Leaky(**kw, output=True),
    )  # fmt: skip

    def logits(x: torch.Tensor) -> torch.Tensor:
        for m in net.modules():
            if isinstance(m, snn.SpikingNeuron):
                m.reset_mem()
        return torch.stack([net(x)[0] for _ in range(T)]).sum(0)  # spike counts

    return net, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--eps", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist5k")
    x_train = torch.as_tensor(data.x_train).float()
    x_train = x_train / 255 if x_train.max() > 1 else x_train
    y_train = torch.as_tensor(data.y_train).long()
    x_test = torch.as_tensor(data.x_test[: args.n]).float()
    x_test = x_test / 255 if x_test.max() > 1 else x_test
    y_test = torch.as_tensor(data.y_test[: args.n]).long()
    if x_train.dim() == 4 and x_train.shape[-1] == 1:  # NHWC -> NCHW
        x_train, x_test = x_train.permute(0, 3, 1, 2), x_test.permute(0, 3, 1, 2)
    rows = {}
    for name, build, adapt, readout in (
        ("SpikingJelly 2.0.0", spikingjelly_model, from_spikingjelly, "mean"),
        ("snnTorch 1.0.0", snntorch_model, from_snntorch, "sum"),
    ):
        torch.manual_seed(0)
        net, logits = build()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        start = time.time()
        net.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(logits(x_train[idx]), y_train[idx])  # type: ignore[operator]
            loss.backward()
            opt.step()
        net.eval()
        train_s = time.time() - start
        snn = adapt(net, T=T, example=x_test, readout=readout)
        with torch.no_grad():
            theirs = logits(x_test)  # type: ignore[operator]
            ours = snn(x_test)
        agree = float((theirs.argmax(1) == ours.argmax(1)).float().mean())
        start = time.time()
        result = evaluate(snn, x_test, y_test, eps=args.eps, ensemble="pgd-ensemble", quiet=True)
        seconds = time.time() - start
        rows[name] = {
            "train_seconds": round(train_s, 1),
            "source_accuracy": float((theirs.argmax(1) == y_test).float().mean()),
            "prediction_agreement": agree,
            "max_abs_logit_diff": float((theirs - ours).abs().max()),
            "verification": snn.adapter.verification.detail,
            "reset_gradient": snn.adapter.reset_gradient,
            "clean_accuracy": result["clean_accuracy"],
            "robust_accuracy": result["robust_accuracy"],
            "n": result["n"],
            "eval_seconds": round(seconds, 1),
            "checks": {
                k: bool(v.get("passed")) for k, v in (result.get("diagnostics") or {}).items()
            },
        }
        checks = rows[name]["checks"]
        print(
            f"{name}: source {format_accuracy(rows[name]['source_accuracy'], args.n)}, "
            f"agreement {agree:.1%}, max|diff| {rows[name]['max_abs_logit_diff']:.2g}, "
            f"clean {format_accuracy(result['clean_accuracy'], result['n'])}, pgd-ensemble "
            f"eps {args.eps}: {format_accuracy(result['robust_accuracy'], result['n'])}, "
            f"{seconds:.0f} s, checks {sum(checks.values())}/{len(checks)} PASS; "
            f"{snn.adapter.reset_gradient}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "adapters.json", {"T": T, "eps": args.eps, "rows": rows})


if __name__ == "__main__":
    main()
