"""Two class-style SNNs as their users write them, for ``robustsnn evaluate module:factory``.

``sj_csnn()``: SpikingJelly tutorial style (IFNode with ATan, a time loop in ``forward``,
``reset_net`` after); ``snntorch_csnn()``: snnTorch tutorial style (``Leaky`` with explicit
membranes, ``(spk_rec, mem_rec)`` returned). ``python experiments/own_models.py OUT`` trains
each for three epochs on MNIST-5k's training split (in its own framework, with its own surrogate)
and writes ``OUT/sj_csnn.safetensors`` and ``OUT/snntorch_csnn.safetensors`` (README, "Evaluate
your own SpikingJelly / snnTorch model").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

T = 4
EPOCHS = 3


class SJCSNN(nn.Module):
    """SpikingJelly: conv -> IF -> pool -> linear -> IF, T steps in forward, firing rate out."""

    def __init__(self) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        self.conv = nn.Conv2d(1, 8, 5, stride=2, padding=2)
        self.sn1 = neuron.IFNode(surrogate_function=surrogate.ATan())
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 7 * 7, 10)
        self.sn2 = neuron.IFNode(surrogate_function=surrogate.ATan())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        out = 0.0
        for _ in range(T):
            out = out + self.sn2(self.fc(self.pool(self.sn1(self.conv(x))).flatten(1)))
        functional.reset_net(self)
        return out / T


class SnnTorchCSNN(nn.Module):
    """snnTorch: conv -> Leaky -> pool -> linear -> Leaky, explicit membranes, spike record out."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        self.conv = nn.Conv2d(1, 8, 5, stride=2, padding=2)
        self.lif1 = snn.Leaky(beta=0.9)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 7 * 7, 10)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(T):
            spk1, mem1 = self.lif1(self.conv(x), mem1)
            spk2, mem2 = self.lif2(self.fc(self.pool(spk1).flatten(1)), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def sj_csnn() -> nn.Module:
    """Factory for ``robustsnn evaluate experiments.own_models:sj_csnn``."""
    return SJCSNN()


def snntorch_csnn() -> nn.Module:
    """Factory for ``robustsnn evaluate experiments.own_models:snntorch_csnn``."""
    return SnnTorchCSNN()


def _logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = net(x)
    return out[0].sum(0) if isinstance(out, tuple) else out * T


def main(out_dir: str) -> None:
    from safetensors.torch import save_file

    from robustsnn.data import load_dataset, to_float

    torch.manual_seed(0)
    data = load_dataset("mnist5k")
    x, y = to_float(data.x_train), data.y_train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, net in (("sj_csnn", sj_csnn()), ("snntorch_csnn", snntorch_csnn())):
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        start = time.perf_counter()
        net.train()
        for i in [j for _ in range(EPOCHS) for j in range(0, len(x), 50)]:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(_logits(net, x[i : i + 50]), y[i : i + 50])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            xt, yt = to_float(data.x_test), data.y_test
            acc = float((_logits(net, xt).argmax(1) == yt).float().mean())
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(out / f"{name}.safetensors"))  # fmt: skip
        print(f"{name}: {EPOCHS} epochs in {time.perf_counter() - start:.0f} s, clean test accuracy "
              f"{acc:.3f} (n={len(yt)})")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/own-models")
