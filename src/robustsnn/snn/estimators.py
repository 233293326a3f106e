"""Gradient estimators: what the backward pass of a spiking layer computes.

An SNN's forward pass is fixed; adaptive attacks differ in the gradient they follow. An estimator
is a value (DESIGN.md section 3): ``BPTT(Surrogate("pcw", 1.0))``, ``BPTR()``, ``ANNProxy()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from robustsnn.errors import UserError
from robustsnn.snn.surrogates import Surrogate, paper_surrogates, parse_surrogate


class Estimator:
    """Base class; ``name`` identifies the estimator in ensembles and reports."""

    name: str = "estimator"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class BPTT(Estimator):
    """Backpropagation through time with a surrogate derivative for the spike function."""

    surrogate: Surrogate = field(default_factory=lambda: Surrogate("pcw", 1.0))

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"bptt-{self.surrogate.name}"


@dataclass(frozen=True)
class BPTR(Estimator):
    """Backpropagation through rate: pass the upstream gradient where the neuron fired at all."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "bptr"


@dataclass(frozen=True)
class ANNProxy(Estimator):
    """The same network with every spiking layer replaced by ReLU (T = 0): forward and backward."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "ann-proxy"


DEFAULT_ESTIMATOR = BPTT(Surrogate("pcw", 1.0))


def paper_estimators() -> list[Estimator]:
    """The 19 estimators of the paper's ensembles: 17 BPTT surrogates, BPTR and the ANN proxy."""
    return [*(BPTT(s) for s in paper_surrogates()), BPTR(), ANNProxy()]


def parse_estimator(name: str) -> Estimator:
    """``bptt-pcw-1`` / ``bptt-ste`` / ``bptr`` / ``ann-proxy`` -> Estimator."""
    if name == "bptr":
        return BPTR()
    if name in ("ann-proxy", "ann", "act"):
        return ANNProxy()
    if name.startswith("bptt-"):
        return BPTT(parse_surrogate(name[len("bptt-") :]))
    valid = ", ".join(e.name for e in paper_estimators())
    raise UserError(f"unknown gradient estimator {name!r}; valid: {valid}")


def estimator_names() -> list[str]:
    """Names of every estimator in the paper's grid (the registry tests iterate over)."""
    return [e.name for e in paper_estimators()]
