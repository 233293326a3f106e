"""Deprecated alias of :mod:`robustsnn.snn.reference` (the independent numpy reference
simulator).

Moved in issue 34; this module only re-exports the names and will be removed in the next
release.
"""

import warnings

from robustsnn.snn.reference import (
    Simulation,
    conv2d,
    is_random_network,
    pool2d,
    simulate_network,
    simulate_nir,
    trace_network,
)

__all__ = [
    "Simulation",
    "conv2d",
    "is_random_network",
    "pool2d",
    "simulate_network",
    "simulate_nir",
    "trace_network",
]

warnings.warn(
    "robustsnn.reference_sim is deprecated: import from robustsnn.snn.reference instead; "
    "robustsnn.reference_sim will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
