"""robustsnn: adversarially robust spiking neural networks through conversion.

Train a robust ANN, convert it to a low-latency SNN, robust-finetune the SNN's thresholds and
weights, and evaluate it with adaptive attacks (attacks x gradient estimators).
"""

__version__ = "0.1.0"

# Modules that register checkpoint formats (robustsnn.io.formats) for robustsnn.io.models:
# imported here so that loading a checkpoint finds them, whatever was imported first.
import robustsnn.interop.graph  # noqa: E402, F401  (the imported-graph architecture)
import robustsnn.snn.bntt  # noqa: E402, F401  (the "bntt" body transform)
import robustsnn.snn.ta_lif  # noqa: E402, F401  (the "ta_lif" body transform, HoSNN)
