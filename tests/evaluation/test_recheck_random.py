"""Recheck and reference simulation of a random model's saved breaks (issue 32): the majority of
M fresh draws decides, by the float64 forward and by the reference simulator's own draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustsnn.conversion import convert
from robustsnn.evaluation import adversarial as adv
from robustsnn.evaluation.recheck import random_model_draws, recheck_folder
from robustsnn.evaluation.views import model_digest
from robustsnn.io.models import load_model, save_snn
from robustsnn.models import build_model
from robustsnn.snn import SpikingNetwork, SpikingNeuron
from robustsnn.snn.encoding import configure_stochastic
from robustsnn.snn.reference import is_random_network, simulate_network


def _one_neuron(reset: str, noise: float, encoding: str = "direct") -> SpikingNetwork:
    body = nn.Sequential(nn.Flatten(), SpikingNeuron(threshold=1.0, reset=reset, leak=0.9),
                         nn.Linear(1, 1, bias=False))  # fmt: skip
    with torch.no_grad():
        body[2].weight.fill_(1.0)
    net = SpikingNetwork(body, T=6, input_encoding=encoding).eval()
    configure_stochastic(net, encoding, noise)
    return net


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
def test_reference_draws_match_the_fast_path_in_distribution(reset: str, encoding: str) -> None:
    """Mean spike output over 4000 independent samples: the reference simulator's noisy
    neuron (threshold theta + e, hard reset to e) and Poisson input against the fast path."""
    net = _one_neuron(reset, 0.3, encoding)
    level = 0.7 if encoding == "poisson" else 0.45
    x = torch.full((4000, 1, 1, 1), level)
    torch.manual_seed(0)
    with torch.no_grad():
        fast = net(x).squeeze(1).double()
    ref = torch.from_numpy(simulate_network(net, x, rng=np.random.default_rng(0)).logits)[:, 0]
    standard_error = float(torch.sqrt(fast.var() / 4000 + ref.var() / 4000))
    assert 0 < standard_error < 0.01
    assert abs(float(fast.mean() - ref.mean())) < 4 * standard_error
    # the spread across draws agrees too (a noise-free neuron's output would not spread)
    assert float(ref.var()) > 0 and 0.85 < float(fast.var() / ref.var()) < 1.18


def test_reference_refuses_a_random_network_without_draws_and_keeps_a_deterministic_one() -> None:
    noisy = _one_neuron("soft", 0.2)
    assert is_random_network(noisy) and is_random_network(_one_neuron("soft", 0.0, "poisson"))
    with pytest.raises(Exception, match="the network is random"):
        simulate_network(noisy, torch.rand(2, 1, 1, 1))
    plain = _one_neuron("hard", 0.0)
    assert not is_random_network(plain)
    x = torch.rand(5, 1, 1, 1)
    a = simulate_network(plain, x).logits
    b = simulate_network(plain, x, rng=np.random.default_rng(3)).logits
    assert np.array_equal(a, b)


@pytest.fixture(scope="module")
def random_snn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A Poisson-coded SNN with noisy neurons that tells three bright-level classes apart."""
    root = tmp_path_factory.mktemp("random")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = (0.2 + 0.3 * y.view(-1, 1, 1, 1) + 0.05 * torch.randn(60, 1, 8, 8, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    ann = build_model("cnn_small", num_classes=3, in_channels=1, image_size=8, mean=[0.5],
                      std=[0.25], width=4, fc=16)  # fmt: skip
    optimizer = torch.optim.Adam(ann.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(ann(x), y).backward()
        optimizer.step()
    ann.eval()
    snn = convert(ann, x, T=8, calib_T=16, calib_batches=1, calib_batch_size=60)
    configure_stochastic(snn, "poisson", 0.05)
    path = save_snn(root / "snn.safetensors", snn, dataset={"spec": "toy-levels"})
    return path, x, y


def _saved_breaks(
    folder: Path, model_path: Path, clean: torch.Tensor, adversarial: torch.Tensor,
    labels: torch.Tensor, randomness: dict | None,  # type: ignore[type-arg]
) -> None:  # fmt: skip
    model, _ = load_model(model_path)
    model.eval()
    k = clean.shape[0]
    examples = adv.AdversarialSet(
        torch.arange(k), labels, ["m"] * k, clean, adversarial,
        adv.single_logits(model, clean), adv.single_logits(model, adversarial),
    )  # fmt: skip
    folder.mkdir(parents=True)
    meta = {"model": str(model_path), "model_digest": model_digest(model), "eps": 1.0,
            "dataset": "toy-levels", "split": "test"}  # fmt: skip
    adv.write(folder / adv.ADVERSARIAL_FILE, examples, meta)
    if randomness is not None:
        (folder / "evaluation.json").write_text(json.dumps({"randomness": randomness}))


def test_recheck_of_a_random_model_takes_the_majority_of_fresh_draws(
    tmp_path: Path, random_snn: tuple[Path, torch.Tensor, torch.Tensor]
) -> None:
    path, x, y = random_snn
    model, _ = load_model(path)
    # two real breaks (an image of another class: misclassified on every draw) and one
    # false one (the clean image itself: classified correctly on every draw)
    clean = torch.stack([x[0], x[1], x[2]])
    labels = torch.stack([y[0], y[1], y[2]])
    adversarial = torch.stack([x[1], x[2], x[2]])
    folder = tmp_path / "eval"
    _saved_breaks(folder, path, clean, adversarial, labels,
                  {"detected": True, "handled": True, "prediction_draws": 7})  # fmt: skip
    assert random_model_draws(folder, model, adversarial) == 7
    result = recheck_folder(folder)
    assert result.counts["draws"] == 7
    assert result.counts["misclassified_float64"] == 2
    assert result.counts["misclassified_reference"] == 2
    assert result.counts["logits_reproduced"] == 3  # one seeded draw, stored and recomputed
    assert result.random["wrong_draws_float64"] == [7, 7, 0]
    assert result.random["wrong_draws_reference"] == [7, 7, 0]
    low, high = result.random["misclassification_ci95_float64"][2]
    assert low == 0.0 and 0.3 < high < 0.4  # Wilson interval of 0 of 7
    assert len(result.failures) == 2 and all("sample 2 " in f for f in result.failures)
    assert "0 of 7 fresh draws" in result.failures[0]
    assert "0 of 7 draws of the reference simulator" in result.failures[1]
    again = recheck_folder(folder)  # fixed seeds: a recheck repeats
    assert (again.failures, again.random) == (result.failures, result.random)
    # without an evaluation.json the model is found random by two seeded passes (M = 15)
    alone = tmp_path / "alone"
    _saved_breaks(alone, path, clean[:2], adversarial[:2], labels[:2], None)
    result = recheck_folder(alone)
    assert result.passed and result.counts["draws"] == 15


def test_a_deterministic_models_recheck_is_unchanged(
    tmp_path: Path, random_snn: tuple[Path, torch.Tensor, torch.Tensor]
) -> None:
    path, x, y = random_snn
    model, _ = load_model(path)
    configure_stochastic(model, "direct", 0.0)
    plain = save_snn(tmp_path / "plain.safetensors", model, dataset={"spec": "toy-levels"})
    folder = tmp_path / "eval"
    _saved_breaks(folder, plain, x[:2], x[1:3], y[:2], {"detected": False, "handled": False})
    result = recheck_folder(folder)
    assert result.passed and "draws" not in result.counts and not result.random
