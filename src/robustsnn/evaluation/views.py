"""How the evaluation sees a model: attack views per gradient estimator, and the real forward.

An attack never sees the SNN directly: a member's attack runs on ``attack_view(model, estimator)``
(the SNN through one gradient estimator, DESIGN.md section 3). Whether an adversarial example
counts is always decided by :func:`real_predict`: the model's own forward pass with the default
estimator under ``torch.no_grad`` (the ANN proxy's logits, for one, differ from the SNN's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from robustsnn.attacks import Model
from robustsnn.snn import DEFAULT_ESTIMATOR, SpikingNetwork, parse_estimator

ViewFactory = Callable[[nn.Module, "str | None"], Model]
"""``(model, estimator name or None) -> callable x -> logits`` that an attack runs on."""


def is_snn(model: nn.Module) -> bool:
    """Whether ``model`` is a spiking network (so gradient estimators apply)."""
    return isinstance(model, SpikingNetwork)


def attack_view(model: nn.Module, estimator: str | None) -> Model:
    """The model as an attack sees it: an SNN through ``estimator`` (default when None).

    An ANN has one true gradient, so ``estimator`` is ignored for it.
    """
    if isinstance(model, SpikingNetwork):
        est = parse_estimator(estimator) if estimator else DEFAULT_ESTIMATOR
        return model.with_estimator(est)
    return model


@torch.no_grad()
def real_predict(model: nn.Module, x: Tensor, batch_size: int | None = None) -> Tensor:
    """Predicted labels of the model's real forward pass (default estimator, no graph)."""
    chunks = [x] if not batch_size or x.shape[0] <= batch_size else x.split(batch_size)
    preds = []
    for chunk in chunks:
        if isinstance(model, SpikingNetwork):
            with model.use_estimator(DEFAULT_ESTIMATOR):
                logits = model(chunk)
        else:
            logits = model(chunk)
        preds.append(logits.argmax(1))
    if not preds:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(preds)


@contextmanager
def eval_mode(*models: nn.Module | None) -> Iterator[None]:
    """Put ``models`` in eval mode, with no parameter requiring a gradient, inside the block;
    restore every submodule's mode and every parameter's ``requires_grad`` after.

    Attacks differentiate the input only. A spiking layer's backward computes its threshold's
    gradient whenever the threshold requires one (an autograd Function cannot know that the
    caller asked for the input's gradient alone), so leaving the parameters trainable costs
    every attack step that work for nothing; the input gradient is the same either way.
    """
    modules = [m for m in models if isinstance(m, nn.Module)]
    saved = [(module, module.training) for model in modules for module in model.modules()]
    trainable = [p for model in modules for p in model.parameters() if p.requires_grad]
    for model in modules:
        model.eval()
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for module, flag in saved:
            module.training = flag
        for parameter in trainable:
            parameter.requires_grad_(True)


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and labels (batch index, member name, check name, ...).

    Stable across processes and Python versions (no ``hash()``), so a resumed or re-batched-
    in-the-same-way evaluation draws the same random numbers.
    """
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seeded_generator(seed: int, device: torch.device | str, *parts: object) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *parts))
    return generator


def tensor_digest(*tensors: Tensor) -> str:
    """A short sha256 of tensors' values, dtypes and shapes (to recognise the same inputs)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def model_digest(model: nn.Module) -> str:
    """A short digest of a model's parameters and buffers (and T for an SNN)."""
    state = model.state_dict()
    h = hashlib.sha256(type(model).__name__.encode())
    if isinstance(model, SpikingNetwork):
        h.update(f"T={model.T}".encode())
    for key in sorted(state):
        h.update(key.encode())
        h.update(tensor_digest(state[key]).encode())
    return h.hexdigest()[:16]
