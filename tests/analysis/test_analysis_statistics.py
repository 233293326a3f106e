"""Spike, synaptic-operation and MAC counts against hand-computed values."""

from __future__ import annotations

import json

import pytest
import torch
from analysis_fixtures import tiny_image, tiny_snn
from torch import nn

from robustsnn.analysis.statistics import (
    AC_ENERGY_PJ,
    MAC_ENERGY_PJ,
    adversarial_statistics,
    count_macs,
    fan_out_map,
    raster_data,
    spike_statistics,
)
from robustsnn.attacks import FGSM

# Hand count for tiny_image() through tiny_snn(T=4) (IF, threshold 1, hard reset):
# layer 1, channel 0 gets currents 1.0 (corner), 0.5 (interior), 0.3 (edge):
#   1.0 spikes at t = 1, 2, 3, 4; 0.5 at t = 2, 4; 0.3 at t = 4 (0.3 x 4 = 1.2)  -> 7 spikes
# channel 1 gets half: 0.5 -> t = 2, 4; 0.25 -> t = 4; 0.15 never (0.6 < 1)        -> 3 spikes
# layer 2, channel 0 copies layer 1 channel 0 (current 1 at every spike)            -> 7 spikes
SPIKES_1, SPIKES_2 = 10, 7
# conv2 (3x3, padding 1, 3 output channels) on a 4x4 map: fan-out of a corner input is 2 x 2
# output positions, of an edge input 2 x 3, of an interior input 3 x 3; times 3 channels.
#   channel 0: corner 4 spikes x 4 + interior 2 x 9 + edge 1 x 6 = 40
#   channel 1: corner 2 x 4 + interior 1 x 9 = 17                  -> (40 + 17) x 3 = 171
SOP_CONV2 = 171
# AvgPool 2x2 after layer 2, then Linear(12 -> 5): nonzero pooled inputs per step:
#   t1: window (0,0); t2: (0,0); t3: (0,0); t4: (0,0) and (0,1)  -> 5 x 5 outputs = 25
SOP_LINEAR = 25
MAC_CONV1 = 2 * 16 * 9  # analog first layer: 2 channels x 16 positions x 9 taps
MAC_ANN = MAC_CONV1 + 3 * 16 * 2 * 9 + 12 * 5


def test_spike_and_sop_counts_match_hand_values() -> None:
    snn = tiny_snn(T=4)
    stats = spike_statistics(snn, tiny_image())
    layers = list(stats["layers"].values())
    assert [layer["neurons"] for layer in layers] == [32, 48]
    assert layers[0]["spikes_per_image"] == SPIKES_1
    assert layers[1]["spikes_per_image"] == SPIKES_2
    assert layers[0]["firing_rate"] == pytest.approx(SPIKES_1 / (32 * 4))
    syn = stats["synapses"]
    assert syn["0"]["operation"] == "MAC" and syn["0"]["ops_per_image"] == MAC_CONV1
    assert syn["2"]["operation"] == "AC" and syn["2"]["ops_per_image"] == SOP_CONV2
    assert syn["6"]["operation"] == "AC" and syn["6"]["ops_per_image"] == SOP_LINEAR
    totals = stats["totals"]
    assert totals["spikes_per_image"] == SPIKES_1 + SPIKES_2
    assert totals["synaptic_ops_per_image"] == SOP_CONV2 + SOP_LINEAR
    assert totals["analog_macs_per_image"] == MAC_CONV1
    assert totals["ann_macs_per_image"] == MAC_ANN
    energy = stats["energy"]
    assert energy["estimate"] is True and "Horowitz" in energy["source"]
    snn_pj = MAC_CONV1 * MAC_ENERGY_PJ + (SOP_CONV2 + SOP_LINEAR) * AC_ENERGY_PJ
    assert energy["snn_uj_per_image"] == pytest.approx(snn_pj * 1e-6)
    assert energy["ann_uj_per_image"] == pytest.approx(MAC_ANN * MAC_ENERGY_PJ * 1e-6)
    json.dumps(stats)  # plain JSON
    assert all(not m._forward_hooks for m in snn.modules())  # hooks removed afterwards


def test_counts_average_over_images_and_batches() -> None:
    x = torch.cat([tiny_image(), torch.zeros(1, 1, 4, 4)])
    stats = spike_statistics(tiny_snn(T=4), x, torch.tensor([0, 1]), batch_size=1)
    assert stats["n_images"] == 2
    assert stats["totals"]["spikes_per_image"] == (SPIKES_1 + SPIKES_2) / 2
    assert stats["totals"]["synaptic_ops_per_image"] == (SOP_CONV2 + SOP_LINEAR) / 2
    assert stats["totals"]["analog_macs_per_image"] == MAC_CONV1  # dense, also for a blank image
    assert stats["accuracy"] is not None


def test_first_layer_per_step_counts_t_times() -> None:
    stats = spike_statistics(tiny_snn(T=4), tiny_image(), first_layer_per_step=True)
    assert stats["totals"]["analog_macs_per_image"] == 4 * MAC_CONV1


def test_fan_out_stride_groups_hand_values() -> None:
    # 3x3, stride 2, padding 1 on 4x4 -> 2x2 outputs centred on rows/cols 0 and 2: input row r is
    # read by [1, 2, 1, 1] output rows; groups = 2 with 4 outputs: 2 output channels per input.
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, bias=False)
    reads = torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    expected = 2 * torch.outer(reads, reads)
    fan = fan_out_map(conv, (2, 4, 4))
    assert torch.equal(fan[0], expected) and torch.equal(fan[1], expected)
    assert torch.equal(
        fan_out_map(nn.Linear(6, 7), (6,)), torch.full((6,), 7.0, dtype=torch.float64)
    )


def test_count_macs_of_tiny_ann() -> None:
    ann = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),  # 2 x 4 x 4 outputs x 9 = 288
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),  # 4 x 1 x 1 outputs x (1 x 9) = 36
        nn.Flatten(),
        nn.Linear(4, 3),  # 12
    )
    macs = count_macs(ann, torch.zeros(2, 1, 4, 4))
    assert [v["macs_per_image"] for v in macs["layers"].values()] == [288, 36, 12]
    assert macs["total_macs_per_image"] == 336
    assert count_macs(tiny_snn(), tiny_image())["total_macs_per_image"] == MAC_ANN


def test_adversarial_statistics_and_raster() -> None:
    snn = tiny_snn(T=4)
    x = torch.cat([tiny_image(), tiny_image().flip(-1)])
    result = adversarial_statistics(snn, x, torch.tensor([0, 1]), FGSM(eps=8 / 255), batch_size=2)
    assert result["attack"]["name"] == "fgsm"
    assert result["clean"]["totals"]["spikes_per_image"] == SPIKES_1 + SPIKES_2
    assert result["adversarial"]["n_images"] == 2
    raster = result["raster"]
    assert len(raster["clean_spikes"]) == 4 and len(raster["clean_spikes"][0]) == 32
    assert sum(map(sum, raster["clean_spikes"])) == SPIKES_1
    json.dumps(result)
    small = raster_data(snn, tiny_image()[0], tiny_image()[0], n_neurons=5)
    assert len(small["neuron_indices"]) == 5 and len(small["adversarial_spikes"][0]) == 5
