"""Inner maximization helpers shared by the adversarial objectives.

Every adversary here is generated with the model in eval mode (BatchNorm statistics frozen,
dropout off) and with parameter gradients switched off, and the previous per-module train/eval
flags and ``requires_grad`` flags are restored afterwards. Input gradients come from
``torch.autograd.grad``, so no ``.grad`` is ever left on a parameter.

KL convention (the one of the TRADES/MART reference code and of the paper's code):
``kl_batchmean(adv, clean) = KLDivLoss(log_softmax(adv), softmax(clean), "sum") / B``, which the
papers write ``KL(f(x_adv) || f(x))``; as a formula it is ``sum p_clean * log(p_clean / p_adv)``.

The adversaries run on the attack core of :mod:`robustsnn.attacks`: its random starts, input
gradient, signed step, projection and default step size, through
:func:`~robustsnn.attacks.pgd.pgd_last_iterate`, PGD's last-iterate mode. Training keeps the
last iterate of every sample, where the evaluation's :class:`~robustsnn.attacks.PGD` freezes a
sample at its first success (docs/RESULTS.md section 11b): a deliberate difference of output,
not of primitives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustsnn.attacks.base import default_step_size, normal, predict_logits, project
from robustsnn.attacks.base import random_start as ball_start
from robustsnn.attacks.losses import ce_loss
from robustsnn.attacks.pgd import pgd_last_iterate
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
    """L-inf PGD on the cross-entropy (Madry et al. 2018), uniform random start in the eps-ball;
    the last iterate of every sample (:func:`~robustsnn.attacks.pgd.pgd_last_iterate`).

    Call it inside :func:`attack_mode`; it does not touch the model's mode.
    """
    x = x.detach()
    start = ball_start(x, eps, generator) if random_start else x.clone()
    return pgd_last_iterate(
        model, x, start, lambda z: ce_loss(z, y), eps=eps, steps=steps, step_size=step_size
    )


def _kl_to(clean: Tensor) -> Callable[[Tensor], Tensor]:
    """The loss ``logits -> KL(f(x') || f(x))`` against fixed clean logits."""
    return lambda logits: kl_batchmean(logits, clean)


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
    clean = predict_logits(model, x)
    start = x + 0.001 * normal(x.shape, generator, x)
    x_adv = pgd_last_iterate(
        model, x, start, _kl_to(clean), eps=eps, steps=steps, step_size=step_size
    )
    return project(x_adv, x, eps)


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
    ``steps`` signed-gradient steps of ``step_size`` (default ``2.5 * eps / steps``,
    :func:`~robustsnn.attacks.base.default_step_size`), each projected, i.e. TRADES' inner
    maximization from the paper's random-sign start.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if step_size is None:
        step_size = eps - alpha if steps == 1 else default_step_size(eps, steps)
    x = x.detach()
    clean = predict_logits(model, x)
    start = torch.clamp(x + alpha * normal(x.shape, generator, x).sign(), 0.0, 1.0)
    return pgd_last_iterate(
        model, x, start, _kl_to(clean), eps=eps, steps=steps, step_size=step_size
    )
