"""The numpy NIR reference simulator, now part of the package (:mod:`robustsnn.snn.reference`)."""

from __future__ import annotations

from robustsnn.snn.reference import simulate_nir as simulate

__all__ = ["simulate"]
