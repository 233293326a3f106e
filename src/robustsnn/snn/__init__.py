"""Spiking core: neurons, surrogate gradients, gradient estimators, the spiking network."""

from robustsnn.snn.estimators import (
    BPTR,
    BPTT,
    DEFAULT_ESTIMATOR,
    ANNProxy,
    Estimator,
    estimator_names,
    paper_estimators,
    parse_estimator,
)
from robustsnn.snn.network import EstimatorView, SpikingNetwork
from robustsnn.snn.neuron import THRESHOLD_MIN, SpikingNeuron
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate, paper_surrogates, parse_surrogate

__all__ = [
    "ANNProxy",
    "BPTR",
    "BPTT",
    "DEFAULT_ESTIMATOR",
    "Dynamics",
    "Estimator",
    "EstimatorView",
    "SpikingNetwork",
    "SpikingNeuron",
    "Surrogate",
    "THRESHOLD_MIN",
    "estimator_names",
    "paper_estimators",
    "paper_surrogates",
    "parse_estimator",
    "parse_surrogate",
]
