"""robustsnn: adversarially robust spiking neural networks through conversion.

Train a robust ANN, convert it to a low-latency SNN, robust-finetune the SNN's thresholds and
weights, and evaluate it with adaptive attacks (attacks x gradient estimators).
"""

__version__ = "0.1.0"
