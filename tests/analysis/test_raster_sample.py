"""The spike-raster figure shows an image the attack changed (issue 17): a flipped image when
there is one, else the strongest perturbation of a correctly classified image."""

from __future__ import annotations

import torch
from analysis_fixtures import tiny_image, tiny_snn
from torch import Tensor

from robustsnn.analysis.statistics import adversarial_statistics, choose_raster_sample
from robustsnn.snn import SpikingNetwork


def _snn() -> SpikingNetwork:
    """tiny_snn with a readout that says class 1 when the pooled spikes sum above 0.5."""
    snn = tiny_snn(T=4)
    readout = snn.body[-1]
    with torch.no_grad():
        readout.weight.zero_()
        readout.bias.zero_()
        readout.weight[1] = 1.0
        readout.bias[0] = 0.5
    return snn


class _Scripted:
    """An 'attack' returning fixed adversarial images (image 0 untouched, like an attack that
    skips an image it considers done)."""

    name = "scripted"
    eps = 8 / 255

    def __init__(self, adversarial: Tensor) -> None:
        self.adversarial = adversarial

    def __call__(self, model: object, x: Tensor, y: Tensor, generator: object = None) -> Tensor:
        return self.adversarial.clone()


def test_raster_shows_the_image_the_attack_flipped() -> None:
    snn = _snn()
    x = torch.cat([tiny_image(), torch.zeros(1, 1, 4, 4)])
    with torch.no_grad():
        y = snn(x).argmax(1)
    assert y[1] == 0
    x_adv = torch.cat([x[:1], torch.ones(1, 1, 4, 4)])  # image 1 now fires: class 1
    result = adversarial_statistics(snn, x, y, _Scripted(x_adv), batch_size=2)
    raster = result["raster"]
    assert raster["sample"] == 1 and "flipped" in raster["sample_note"]
    assert raster["clean_image"] != raster["adversarial_image"]
    assert sum(map(sum, raster["adversarial_spikes"])) > sum(map(sum, raster["clean_spikes"]))


def test_without_a_flip_the_strongest_perturbation_of_a_correct_image_is_shown() -> None:
    snn = _snn()
    x = torch.cat([tiny_image(), torch.zeros(1, 1, 4, 4), tiny_image()])
    with torch.no_grad():
        y = snn(x).argmax(1)
    x_adv = x.clone()
    x_adv[1] += 0.02  # no image changes class; image 1 moves most
    x_adv[2] += 0.01
    index, note = choose_raster_sample(snn, x, x_adv, y)
    assert index == 1 and "strongest perturbation" in note
    # a misclassified image is never the choice when a correct one was perturbed
    wrong = y.clone()
    wrong[1] = 1 - y[1]
    index, _ = choose_raster_sample(snn, x, x_adv, wrong)
    assert index == 2
