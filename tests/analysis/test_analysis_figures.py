"""Every figure function writes a non-empty PNG from small data."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_fixtures import stats_record

from robustsnn.analysis import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_spike_raster(tmp_path: Path) -> None:
    data = stats_record((10.0, 2.0))["raster"]
    _check(figures.plot_spike_raster(data, tmp_path / "raster.png", max_neurons=20))
    rgb = dict(data, clean_image=[[[0.2] * 5] * 5] * 3, adversarial_image=[[[0.25] * 5] * 5] * 3)
    _check(figures.plot_spike_raster(rgb, tmp_path / "raster_rgb.png"))


def test_line_figures(tmp_path: Path) -> None:
    beta = {
        "eps 2/255": [(0, 0.1), (2, 0.3), (8, 0.35)],
        "eps 8/255": {"x": [0, 2], "y": [0.2, 0.4]},
    }
    _check(figures.plot_robustness_vs_beta(beta, tmp_path / "beta.png"))
    eps = {"ANN": {0.0: 0.9, 2 / 255: 0.6, 8 / 255: 0.3}, "SNN": [(0.0, 0.85), (8 / 255, 0.35)]}
    _check(figures.plot_robustness_vs_eps(eps, tmp_path / "sub" / "eps.png"))
    curve = {"T": [1, 2, 4, 8, 16], "curves": {"hard": [0.1, 0.3, 0.6, 0.8, 0.85]}, "ann": 0.9}
    _check(figures.plot_accuracy_vs_T(curve, tmp_path / "T.png"))


def test_bar_figures(tmp_path: Path) -> None:
    results = {"ANN": {"clean": 0.9, "robust": 0.3}, "SNN-RAT": {"clean": 0.8, "robust": 0.2}}
    _check(figures.plot_baselines(results, tmp_path / "baselines.png"))
    spikes = {
        "vanilla": {"conv1": 900.0, "fc": 20.0},
        "robust": stats_record((600.0, 30.0))["clean"],
    }
    _check(figures.plot_spikes_per_layer(spikes, tmp_path / "spikes.png"))


def test_square_curve(tmp_path: Path) -> None:
    assert figures.square_curve_from_queries([0, -1, 3, 3, 10], 20) == [
        (0, 0.8),
        (3, 0.4),
        (10, 0.2),
        (20, 0.2),
    ]
    curves = {"ANN": [(0, 0.9), (1, 0.7), (100, 0.2)], "SNN": [0, -1, 5, 50, -1]}
    _check(figures.plot_square_curve(curves, tmp_path / "square.png", n_queries=100, eps=8 / 255))


def test_empty_input_is_a_user_error(tmp_path: Path) -> None:
    from robustsnn.errors import UserError

    with pytest.raises(UserError):
        figures.plot_baselines({}, tmp_path / "x.png")
