"""Analysis and reporting: spike statistics, synaptic operations, energy estimate, figures, report."""

from __future__ import annotations

from robustsnn.analysis.figures import (
    plot_accuracy_vs_T,
    plot_baselines,
    plot_robustness_vs_beta,
    plot_robustness_vs_eps,
    plot_spike_raster,
    plot_spikes_per_layer,
    plot_square_curve,
    square_curve_from_queries,
)
from robustsnn.analysis.report import make_run_figures, write_report
from robustsnn.analysis.statistics import (
    AC_ENERGY_PJ,
    ENERGY_SOURCE,
    MAC_ENERGY_PJ,
    adversarial_statistics,
    count_macs,
    energy_estimate,
    fan_out_map,
    raster_data,
    spike_statistics,
)

__all__ = [
    "AC_ENERGY_PJ",
    "ENERGY_SOURCE",
    "MAC_ENERGY_PJ",
    "adversarial_statistics",
    "count_macs",
    "energy_estimate",
    "fan_out_map",
    "make_run_figures",
    "plot_accuracy_vs_T",
    "plot_baselines",
    "plot_robustness_vs_beta",
    "plot_robustness_vs_eps",
    "plot_spike_raster",
    "plot_spikes_per_layer",
    "plot_square_curve",
    "raster_data",
    "spike_statistics",
    "square_curve_from_queries",
    "write_report",
]
