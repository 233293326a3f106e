"""The numpy NIR reference simulator, now part of the package (:mod:`robustsnn.reference_sim`)."""

from __future__ import annotations

from robustsnn.reference_sim import simulate_nir as simulate

__all__ = ["simulate"]
