"""How the evaluation sees a model: attack views per gradient estimator, and the real forward.

An attack never sees the SNN directly: a member's attack runs on ``attack_view(model, estimator)``
(the SNN through one gradient estimator, DESIGN.md section 3). Whether an adversarial example
counts is always decided by :func:`real_predict`: the model's own forward pass with the default
estimator under ``torch.no_grad`` (the ANN proxy's logits, for one, differ from the SNN's). A
random model's break must also hold on :func:`real_verdict`'s draws, a seed stream of their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import torch
from torch import Tensor, nn

from robustsnn.attacks import Model
from robustsnn.attacks.race import ViewSet
from robustsnn.snn import DEFAULT_ESTIMATOR, SpikingNetwork, parse_estimator

ViewFactory = Callable[[nn.Module, "str | None"], Model]
"""``(model, estimator name or None) -> callable x -> logits`` that an attack runs on."""


class RandomnessHandler(Protocol):
    """How a random model is attacked and judged (:mod:`robustsnn.evaluation.stochastic`)."""

    def handles(self, model: nn.Module) -> bool: ...

    def view_factory(self, model: nn.Module, estimator: str | None) -> Model: ...

    def predict(self, x: Tensor, batch_size: int | None = None) -> Tensor: ...

    def verdict(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]: ...


_RANDOMNESS: ContextVar[RandomnessHandler | None] = ContextVar("randomness", default=None)


@contextmanager
def randomness_scope(handler: RandomnessHandler | None) -> Iterator[None]:
    """Inside the block, :func:`attack_view` and :func:`real_predict` of the handled model use
    ``handler`` (EOT views, majority votes); None: nothing changes."""
    token = _RANDOMNESS.set(handler)
    try:
        yield
    finally:
        _RANDOMNESS.reset(token)


def _handler(model: nn.Module) -> RandomnessHandler | None:
    handler = _RANDOMNESS.get()
    return handler if handler is not None and handler.handles(model) else None


def real_verdict(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int] | None:
    """For a random model in a :func:`randomness_scope`: the evaluation's final verdict on
    ``x``, from M draws of the verdict seed stream, which no attack, check or
    :func:`real_predict` ever draws from: per sample the label of a strict majority of the
    draws (-1 where none has one), how many of them misclassify ``x``, and M. None for a model
    evaluated as deterministic (its verdict is :func:`real_logits`)."""
    handler = _handler(model)
    return handler.verdict(x, y) if handler is not None else None


def is_snn(model: nn.Module) -> bool:
    """Whether ``model`` is a spiking network (so gradient estimators apply)."""
    return isinstance(model, SpikingNetwork)


def attack_view(model: nn.Module, estimator: str | None) -> Model:
    """The model as an attack sees it: an SNN through ``estimator`` (default when None).

    An ANN has one true gradient, so ``estimator`` is ignored for it. A random model inside a
    :func:`randomness_scope` is seen through its expectation-over-randomness view.
    """
    handler = _handler(model)
    if handler is not None:
        return handler.view_factory(model, estimator)
    if isinstance(model, SpikingNetwork):
        est = parse_estimator(estimator) if estimator else DEFAULT_ESTIMATOR
        return model.with_estimator(est)
    return model


def member_view(
    model: nn.Module,
    estimator: str | None,
    attack: object,
    view_factory: ViewFactory = attack_view,
) -> Model:
    """What one member's attack runs on: one estimator's view, or, for an attack that races
    several estimators (``attack.estimators``, :mod:`robustsnn.attacks.race`), a
    :class:`~robustsnn.attacks.race.ViewSet` of one view per estimator the model supports
    (an ANN has one gradient: the model itself)."""
    candidates = tuple(getattr(attack, "estimators", ()) or ())
    if not candidates:
        return view_factory(model, estimator)
    if not is_snn(model):
        return view_factory(model, None)  # the model itself, or a random ANN's EOT view
    unsupported = getattr(model, "unsupported_estimator", None)
    views: dict[str, Model] = {}
    left_out: dict[str, str] = {}
    for name in candidates:
        reason = unsupported(parse_estimator(name)) if unsupported is not None else None
        if reason:
            left_out[name] = str(reason)
            continue
        views[name] = view_factory(model, name)
    return ViewSet(views, real=view_factory(model, None), left_out=left_out)


@torch.no_grad()
def real_logits(model: nn.Module, x: Tensor) -> Tensor | None:
    """Logits of the model's real forward pass (default estimator, no graph); None for a random
    model inside a :func:`randomness_scope` (its verdict is a vote of M draws, not one pass)."""
    if _handler(model) is not None:
        return None
    if isinstance(model, SpikingNetwork):
        with model.use_estimator(DEFAULT_ESTIMATOR):
            return model(x)
    out = model(x)
    return out if isinstance(out, Tensor) else None


@torch.no_grad()
def real_predict(model: nn.Module, x: Tensor, batch_size: int | None = None) -> Tensor:
    """Predicted labels of the model's real forward pass (default estimator, no graph).

    A random model inside a :func:`randomness_scope`: the label a strict majority of M draws
    gives, or -1 where no label has one (counted as a misclassification). These draws are the
    screen's, which searches may see (attacks, the checks, the ensemble's early exit); the
    evaluation's final verdict on a break is :func:`real_verdict`'s, on draws of its own."""
    handler = _handler(model)
    if handler is not None:
        return handler.predict(x, batch_size)
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
