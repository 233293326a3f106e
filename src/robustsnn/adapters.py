"""Deprecated alias of :mod:`robustsnn.interop.adapters` and :mod:`robustsnn.interop.stepwise`.

``from_spikingjelly`` / ``from_snntorch`` (:mod:`robustsnn.interop.adapters`) read an
``nn.Sequential`` into robustsnn's own layers; ``wrap`` (:mod:`robustsnn.interop.stepwise`) runs
a class-style model through its own forward with its neurons swapped. This module only
re-exports those names and will be removed in the next release.
"""

import warnings

from robustsnn.interop.adapters import READOUTS, AdapterInfo, from_snntorch, from_spikingjelly
from robustsnn.interop.stepwise import SourceSurrogate, WrappedNetwork, wrap

__all__ = [
    "READOUTS",
    "AdapterInfo",
    "SourceSurrogate",
    "WrappedNetwork",
    "from_snntorch",
    "from_spikingjelly",
    "wrap",
]

warnings.warn(
    "robustsnn.adapters is deprecated: import from robustsnn.interop.adapters "
    "(from_spikingjelly, from_snntorch, AdapterInfo, READOUTS) and robustsnn.interop.stepwise "
    "(wrap, WrappedNetwork, SourceSurrogate) instead; robustsnn.adapters will be removed in the "
    "next release",
    DeprecationWarning,
    stacklevel=2,
)
