"""Accuracy on a held-out set, clean or under an attack, used at the end of training."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from robustsnn.training.inner import attack_mode

Attack = Callable[..., Tensor]  # attack(model, x, y, *, generator=None) -> x_adv


def _device_of(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _as_float(x: Tensor) -> Tensor:
    """uint8 images -> float in [0, 1]; float images pass through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def evaluate_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int = 256,
    attack: Attack | None = None,
    *,
    generator: torch.Generator | None = None,
    quiet: bool = True,
    desc: str = "eval",
) -> float:
    """Fraction of ``(x, y)`` classified correctly, on clean inputs or on ``attack``'s outputs.

    ``x`` is uint8 or float in [0, 1] (NCHW); batches go to the model's device. The model runs
    in eval mode, attacks without parameter gradients; its previous modes are restored after.
    """
    if len(x) != len(y):
        raise ValueError(f"evaluate_accuracy: {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        return float("nan")
    device = _device_of(model)
    correct = 0
    with attack_mode(model) as net:
        for start in tqdm(
            range(0, len(x), batch_size), desc=desc, disable=quiet, leave=False, unit="batch"
        ):
            xb = _as_float(x[start : start + batch_size].to(device))
            yb = y[start : start + batch_size].to(device)
            if attack is not None:
                xb = attack(net, xb, yb, generator=generator)
            with torch.no_grad():
                correct += int((net(xb).argmax(dim=1) == yb).sum().item())
    return correct / len(x)
