"""The attack registry: names -> attack classes, and :func:`build_attack`."""

from __future__ import annotations

import inspect
from typing import Any

from robustsnn.attacks.base import Attack
from robustsnn.errors import UserError
from robustsnn.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")


def attack_parameters(cls: type[Attack]) -> list[str]:
    """Keyword parameters an attack class accepts besides ``eps``."""
    signature = inspect.signature(cls.__init__)
    return [
        name
        for name, p in signature.parameters.items()
        if name not in ("self", "eps")
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def build_attack(name: str, eps: float, **params: Any) -> Attack:
    """Build the registered attack ``name`` with radius ``eps`` and paper-default parameters.

    Unknown names and unknown parameters fail with a :class:`UserError` listing valid ones.
    """
    cls = ATTACKS.get(name)
    valid = attack_parameters(cls)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listed = ", ".join(valid) if valid else "none besides eps"
        raise UserError(
            f"attack {name!r} has no parameter {', '.join(map(repr, unknown))}; valid: {listed}"
        )
    return cls(eps, **params)
