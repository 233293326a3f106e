"""Run robustsnn networks with another copy of ``dynamics.py`` (before/after in one process).

Shared by the benchmark scripts (imported as a sibling module: ``python benchmarks/<script>.py``
puts this folder on ``sys.path``)::

    base = load_dynamics("benchmarks/results/dynamics_before.py.txt")   # any file name
    use_dynamics(snn, base)      # this network's neurons now run the baseline dynamics

The package's ``SpikingNeuron`` backends look up ``if_forward``, ``bptt`` and ``bptr`` in
``robustsnn.snn.neuron`` when they run; the swapped neuron class replaces those names for the
duration of each forward call (the backward uses the Function class chosen then), so other
networks in the same process keep the package's dynamics. A copy from before the dynamics
became one value (``if_forward``, ``BPTTFunction``, ``BPTRFunction`` with loose arguments) is
called through adapters (:func:`entry_points`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

SWAPPED_NAMES = ("if_forward", "bptt", "bptr")
LOOSE_NAMES = ("if_forward", "BPTTFunction", "BPTRFunction")  # a copy from before Dynamics
_CLASSES: dict[int, type] = {}


def load_dynamics(path: str | Path, name: str = "baseline_dynamics") -> ModuleType:
    """Import a copy of ``dynamics.py`` from any path (``.py.txt`` included)."""
    path = str(Path(path).resolve())
    loader = SourceFileLoader(name, path)  # explicit loader: the suffix need not be .py
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load dynamics from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = SWAPPED_NAMES if hasattr(module, "Dynamics") else LOOSE_NAMES
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise SystemExit(f"{path} defines no {', '.join(missing)}: not a copy of dynamics.py")
    return module


def entry_points(dynamics: ModuleType) -> dict[str, Callable[..., Any]]:
    """``if_forward(inputs, dynamics, keep)``, ``bptt(inputs, dynamics, surrogate)`` and
    ``bptr(inputs, dynamics)`` of a copy of dynamics.py; a copy with loose arguments is adapted
    (an initial membrane is passed only when there is one, so copies that predate it run)."""
    if hasattr(dynamics, "Dynamics"):
        return {n: getattr(dynamics, n) for n in SWAPPED_NAMES}

    def loose(d: Any) -> tuple[Any, ...]:
        return d.theta, d.steps, d.leak, d.soft_reset, d.static

    def if_forward(inputs: Any, d: Any, keep_membranes: bool = True) -> Any:
        extra = {"init": d.init} if d.init is not None else {}
        return dynamics.if_forward(inputs, *loose(d), keep_membranes, **extra)

    def bptt(inputs: Any, d: Any, surrogate: Any) -> Any:
        extra = (d.init,) if d.init is not None else ()
        return dynamics.BPTTFunction.apply(inputs, *loose(d), surrogate, *extra)

    def bptr(inputs: Any, d: Any) -> Any:
        extra = (d.init,) if d.init is not None else ()
        return dynamics.BPTRFunction.apply(inputs, *loose(d), *extra)

    return {"if_forward": if_forward, "bptt": bptt, "bptr": bptr}


def neuron_class(dynamics: ModuleType) -> type:
    """A ``SpikingNeuron`` subclass whose forward runs ``dynamics`` (one class per module)."""
    cached = _CLASSES.get(id(dynamics))
    if cached is not None:
        return cached
    import robustsnn.snn.neuron as neuron_module
    from robustsnn.snn import SpikingNeuron

    points = entry_points(dynamics)

    class BaselineNeuron(SpikingNeuron):
        def forward(self, x):  # type: ignore[no-untyped-def]
            saved = {n: getattr(neuron_module, n) for n in SWAPPED_NAMES}
            for n in SWAPPED_NAMES:
                setattr(neuron_module, n, points[n])
            try:
                return super().forward(x)
            finally:
                for n, value in saved.items():
                    setattr(neuron_module, n, value)

    _CLASSES[id(dynamics)] = BaselineNeuron
    return BaselineNeuron


def use_dynamics(model: nn.Module, dynamics: ModuleType) -> int:
    """Switch every plain ``SpikingNeuron`` of ``model`` to ``dynamics`` in place; return how many."""
    from robustsnn.snn import SpikingNeuron

    cls = neuron_class(dynamics)
    count = 0
    for m in model.modules():
        if type(m) is SpikingNeuron:
            m.__class__ = cls
            count += 1
    return count
