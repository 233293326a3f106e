"""``robustsnn.adapters.from_spikingjelly`` / ``from_snntorch``: other frameworks' SNNs as
robustsnn SpikingNetworks (implementation and conventions: :mod:`robustsnn.interop.adapters`)."""

from robustsnn.interop.adapters import READOUTS, AdapterInfo, from_snntorch, from_spikingjelly

__all__ = ["READOUTS", "AdapterInfo", "from_snntorch", "from_spikingjelly"]
