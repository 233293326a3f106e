"""``robustsnn.adapters``: other frameworks' SNNs as robustsnn SpikingNetworks.

``from_spikingjelly`` / ``from_snntorch`` read an ``nn.Sequential`` into robustsnn's own layers
(:mod:`robustsnn.interop.adapters`); a class-style model with its own forward and time loop is
run through that forward with its neurons swapped (``wrap``, :mod:`robustsnn.interop.stepwise`).
"""

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
