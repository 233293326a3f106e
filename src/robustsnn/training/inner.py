"""Inner maximization helpers shared by the adversarial objectives.

Every adversary here is generated with the model in eval mode (BatchNorm statistics frozen,
dropout off) and with parameter gradients switched off, and the previous per-module train/eval
flags and ``requires_grad`` flags are restored afterwards. Input gradients come from
``torch.autograd.grad``, so no ``.grad`` is ever left on a parameter.

KL convention (the one of the TRADES/MART reference code and of the paper's code):
``kl_batchmean(adv, clean) = KLDivLoss(log_softmax(adv), softmax(clean), "sum") / B``, which the
papers write ``KL(f(x_adv) || f(x))``; as a formula it is ``sum p_clean * log(p_clean / p_adv)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustsnn.snn.network import SpikingNetwork

Classifier = Callable[[Tensor], Tensor]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a (Distributed)DataParallel wrapper; attacks must run on it so that no
    gradient-synchronisation hook fires for the inner maximization."""
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module) and isinstance(
        model, (nn.parallel.DistributedDataParallel, nn.DataParallel)
    ):
        return inner
    return model


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; restores both exactly afterwards.
    A spiking network's membrane recording (a training loss on the membranes) pauses: the
    attack's forward passes are not part of the loss.

    Yields the unwrapped module, which is what the adversary should call.
    """
    inner = unwrap(model)
    modes = [(m, m.training) for m in inner.modules()]
    grads = [(p, p.requires_grad) for p in inner.parameters()]
    try:
        inner.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        if isinstance(inner, SpikingNetwork):
            with inner.recording_membranes(enabled=False):
                yield inner
        else:
            yield inner
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, flag in modes:
            m.training = flag


def kl_batchmean(logits_adv: Tensor, logits_clean: Tensor) -> Tensor:
    """``KL(f(x_adv) || f(x))`` in the TRADES sense: summed over the batch, divided by its size."""
    return (
        F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="sum")
        / logits_adv.shape[0]
    )


def _noise(x: Tensor, generator: torch.Generator | None, kind: str) -> Tensor:
    """Standard normal (``kind="normal"``) or uniform [0, 1) noise shaped like ``x``.

    Drawn on the generator's device (a CPU generator also serves a GPU model) and moved to ``x``.
    """
    device = generator.device if generator is not None else x.device
    draw = torch.randn if kind == "normal" else torch.rand
    return draw(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto the L-inf ball of radius ``eps`` around ``x`` and onto the image box [0, 1]."""
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


def _input_grad(loss: Tensor, x: Tensor) -> Tensor:
    (grad,) = torch.autograd.grad(loss, [x])
    return grad


def pgd_ce(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L-inf PGD on the cross-entropy (Madry et al. 2018), uniform random start in the eps-ball.

    Call it inside :func:`attack_mode`; it does not touch the model's mode.
    """
    x = x.detach()
    if random_start:
        x_adv = project(x + (2.0 * _noise(x, generator, "uniform") - 1.0) * eps, x, eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_adv), y, reduction="sum")
            grad = _input_grad(loss, x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def trades_kl_adversary(
    model: Classifier,
    x: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TRADES' inner maximization: PGD on ``KL(f(x') || f(x))`` from ``x + 0.001 * N(0, I)``."""
    x = x.detach()
    with torch.no_grad():
        clean = model(x)
    x_adv = x + 0.001 * _noise(x, generator, "normal")
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            grad = _input_grad(kl_batchmean(model(x_adv), clean), x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return project(x_adv.detach(), x, eps)


def finetune_kl_adversary(
    model: Classifier,
    x: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int = 1,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The paper's finetuning adversary: start ``x + alpha * sign(N(0, I))`` (clipped to [0, 1]),
    one step of size ``eps - alpha`` along ``sign(grad KL(f(x') || f(x)))``, then project to the
    eps-ball and [0, 1]. One forward for the clean target plus one forward/backward.

    ``steps > 1`` is the multi-step extension (an option beyond the paper): the same start, then
    ``steps`` signed-gradient steps of ``step_size`` (default ``2.5 * eps / steps``), each
    projected, i.e. TRADES' inner maximization from the paper's random-sign start.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if step_size is None:
        step_size = eps - alpha if steps == 1 else 2.5 * eps / steps
    x = x.detach()
    with torch.no_grad():
        clean = model(x)
    x_adv = torch.clamp(x + alpha * _noise(x, generator, "normal").sign(), 0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            grad = _input_grad(kl_batchmean(model(x_adv), clean), x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()
