"""Registries of model structure that checkpoint I/O reads and other modules fill.

:mod:`robustsnn.io.models` rebuilds a checkpoint from its metadata. Two things it needs are
defined elsewhere: body transforms (``meta["transforms"]``, e.g. BNTT's per-step BatchNorm in
:mod:`robustsnn.snn.bntt`) and architectures that are not zoo models (``arch["name"]``, e.g. the
imported graphs of :mod:`robustsnn.interop.graph`). Those modules register themselves here when
they are imported; this module imports nothing of robustsnn, so registrations flow downward and
``io.models`` names neither ``interop`` nor the spiking core's extras. ``import robustsnn`` imports
the registering modules, so any use of ``io.models`` sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

BodyTransform = Callable[[nn.Module, Mapping[str, Any]], nn.Module]
"""``(spiking body, checkpoint metadata) -> body``: a structural change applied before loading."""
ArchBuilder = Callable[[Mapping[str, Any]], nn.Module]
"""``arch metadata -> ANN``: the ANN form of an architecture that is not a zoo model."""

BODY_TRANSFORMS: dict[str, BodyTransform] = {}
ARCH_BUILDERS: dict[str, ArchBuilder] = {}


def register_body_transform(name: str, transform: BodyTransform) -> None:
    """Register ``transform`` under ``name`` (a checkpoint lists it in ``meta["transforms"]``)."""
    BODY_TRANSFORMS.setdefault(name, transform)


def register_arch_builder(name: str, builder: ArchBuilder) -> None:
    """Register ``builder`` for checkpoints whose ``arch["name"]`` is ``name``."""
    ARCH_BUILDERS.setdefault(name, builder)
