"""Threshold Guarding Optimization (objective ``tgo``, issue 32): the per-layer membrane
constraint against its closed form, the loss it adds, the dynamic lambda the trainer drives, the
noisy neurons that make the model random, and training with it end to end (train-snn, finetune)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import robustsnn.training.snn as snn_training
from robustsnn.config import FinetuneConfig, OptimizerConfig, RunContext, SNNTrainingConfig
from robustsnn.conversion import convert
from robustsnn.data import to_float
from robustsnn.errors import UserError
from robustsnn.evaluation.stochastic import detect_randomness
from robustsnn.io.models import load_model, save_snn
from robustsnn.snn import SpikingNetwork, SpikingNeuron
from robustsnn.snn.membranes import MembraneTrace
from robustsnn.training import Trainer, TrainerConfig, finetune_snn, train_snn
from robustsnn.training.objectives import (
    FINETUNE_OBJECTIVES,
    Regularized,
    ThresholdGuarding,
    TimeStepDraw,
    build_objective,
)
from robustsnn.training.regularizers import threshold_guarding_penalty
from robustsnn.training.trainer import report_progress

SMALL = {"width": 4, "fc": 16}


def _closed_form(layers: list[tuple[list[float], float]], delta: float) -> tuple[float, ...]:
    """``sum_l mean_i relu(delta - |h_i - th_l| / th_l)`` and its derivatives in every ``h_i``
    and every ``th_l``, written out element by element."""
    value = 0.0
    grads_h: list[float] = []
    grads_th: list[float] = []
    for h, th in layers:
        n = len(h)
        grad_th = 0.0
        for v in h:
            distance = abs(v - th) / th
            if distance < delta:
                sign = math.copysign(1.0, v - th)
                value += (delta - distance) / n
                grads_h.append(-sign / th / n)
                # d/dth of -|v - th| / th = (sign * th + |v - th|) / th^2
                grad_th += (sign * th + abs(v - th)) / th**2 / n
            else:
                grads_h.append(0.0)
        grads_th.append(grad_th)
    return (value, *grads_h, *grads_th)


def test_penalty_value_and_gradient_match_the_closed_form_layer_by_layer():
    # layer a: 6 membranes (2 steps x 3 neurons) around theta 1.5; layer b: 2 around theta 0.5
    h_a = [1.40, 1.90, 1.62, 0.20, 1.50 - 1e-3, 2.5]
    h_b = [0.45, 0.70]
    delta = 0.3
    ha = torch.tensor(h_a, dtype=torch.float64).reshape(2, 1, 3).requires_grad_(True)
    hb = torch.tensor(h_b, dtype=torch.float64).reshape(2, 1, 1).requires_grad_(True)
    ta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    traces = [MembraneTrace("a", ha, ta), MembraneTrace("b", hb, tb)]
    penalty = threshold_guarding_penalty(traces, delta)
    grads = torch.autograd.grad(penalty, [ha, hb, ta, tb])
    want = _closed_form([(h_a, 1.5), (h_b, 0.5)], delta)
    assert float(penalty.detach()) == pytest.approx(want[0], abs=1e-12)
    got_h = [*grads[0].flatten().tolist(), *grads[1].flatten().tolist()]
    assert got_h == pytest.approx(list(want[1:9]), abs=1e-12)
    assert [float(grads[2]), float(grads[3])] == pytest.approx(list(want[9:]), abs=1e-12)
    # each layer counts once whatever its size: pooling all 8 membranes would differ
    pooled = sum(max(0.0, delta - abs(v - 1.5) / 1.5) for v in h_a)
    pooled += sum(max(0.0, delta - abs(v - 0.5) / 0.5) for v in h_b)
    assert abs(pooled / 8 - want[0]) > 1e-3
    # a layer recorded in two passes (clean, adversarial) is one mean over both
    twice = threshold_guarding_penalty([*traces, MembraneTrace("b", hb * 0 + 0.5, tb)], delta)
    assert float(twice.detach()) == pytest.approx(want[0] - _closed_form([(h_b, 0.5)], delta)[0] + (
        (sum(max(0.0, delta - abs(v - 0.5) / 0.5) for v in h_b) + 2 * delta) / 4
    ), abs=1e-12)  # fmt: skip


def test_penalty_and_its_gradient_are_zero_when_every_membrane_is_beyond_delta():
    h = torch.tensor([[[0.5, 1.31, 3.0]], [[-2.0, 1.0 + 0.35, 0.69]]], dtype=torch.float64)
    h.requires_grad_(True)
    theta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    penalty = threshold_guarding_penalty([MembraneTrace("a", h, theta)], 0.3)
    grad_h, grad_theta = torch.autograd.grad(penalty, [h, theta])
    assert float(penalty.detach()) == 0.0
    assert not grad_h.any() and float(grad_theta) == 0.0
    with pytest.raises(ValueError, match="no membranes"):
        threshold_guarding_penalty([], 0.3)


def _one_neuron(theta: float) -> SpikingNetwork:
    body = nn.Sequential(SpikingNeuron(threshold=theta, reset="soft"), nn.Linear(1, 2))
    torch.manual_seed(0)
    return SpikingNetwork(body, T=2).double()


def test_loss_is_plain_cross_entropy_when_the_membranes_are_far_from_the_threshold():
    net = _one_neuron(1.0)
    y = torch.tensor([1])
    far = torch.tensor([[0.3]], dtype=torch.float64)  # h = 0.3, 0.6: 0.7 and 0.4 from theta
    near = torch.tensor([[0.45]], dtype=torch.float64)  # h = 0.45, 0.9: 0.1 from theta at t1
    objective = build_objective("tgo", weight=5.0, delta=0.2, noise=0.0, schedule="constant")
    loss, logits = objective(net, far, y)
    assert torch.equal(loss, F.cross_entropy(logits, y))
    loss, logits = objective(net, near, y)
    # penalty: mean over the 2 steps of relu(0.2 - |h - 1|): (0 + 0.1) / 2
    assert float((loss - F.cross_entropy(logits, y)).detach()) == pytest.approx(
        5.0 * 0.05, abs=1e-12
    )


def _tiny_snn(toy_dataset: Any, small_cnn: Any) -> SpikingNetwork:
    images = to_float(toy_dataset.x_train)
    return convert(small_cnn(seed=1), images, T=3, calib_T=10, calib_batches=1, calib_batch_size=32)


def test_objective_adds_lambda_times_the_penalty_of_the_loss_pass(toy_dataset, small_cnn):
    snn = _tiny_snn(toy_dataset, small_cnn)
    x, y = to_float(toy_dataset.x_train[:8]), toy_dataset.y_train[:8]
    objective = build_objective("tgo", weight=0.8, delta=0.3, noise=0.0)
    assert isinstance(objective, ThresholdGuarding) and objective.schedule == "linear"
    with snn.recording_membranes() as traces:
        logits = snn(x)
    assert len(traces) == len(snn.neurons())
    penalty = threshold_guarding_penalty(traces, 0.3)
    assert float(penalty.detach()) > 0  # the case exercises the band
    ce = F.cross_entropy(logits, y)
    for progress in (0.0, 0.25, 1.0):
        objective.set_progress(progress)
        loss, _ = objective(snn, x, y)
        want = float((ce + 0.8 * progress * penalty).detach())
        assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    # the adversarial term records its pass too, not the attack's passes
    adversarial = build_objective("tgo", adversarial_weight=1.0, eps=0.05, noise=0.0)
    loss, _ = adversarial(snn, x, y, torch.Generator().manual_seed(0))
    assert loss.requires_grad and float(loss.detach()) > float(ce.detach())


def _band(snn: SpikingNetwork, x: Tensor) -> float:
    """The noise-free network's threshold-guarding penalty (delta 0.2) on ``x``."""
    noise = [n.threshold_noise for n in snn.neurons()]
    for n in snn.neurons():
        n.threshold_noise = 0.0
    with torch.no_grad(), snn.recording_membranes() as traces:
        snn(x)
    for n, sigma in zip(snn.neurons(), noise, strict=True):
        n.threshold_noise = sigma
    return float(threshold_guarding_penalty(traces, 0.2))


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_training_with_tgo_empties_the_threshold_band(noise, toy_dataset, small_cnn):
    x, y = to_float(toy_dataset.x_train[:32]), toy_dataset.y_train[:32]
    after = {}
    for name, options in (("natural", {}), ("tgo", {"weight": 5.0, "schedule": "constant"})):
        snn = _tiny_snn(toy_dataset, small_cnn)
        before = _band(snn, x)
        objective = build_objective(name, **({**options, "noise": noise} if options else {}))
        if name == "tgo":
            objective.prepare(snn)  # type: ignore[attr-defined]
        optimizer = torch.optim.SGD(snn.parameters(), lr=0.05, momentum=0.9)
        for step in range(12):
            optimizer.zero_grad()
            loss, _ = objective(snn, x, y, torch.Generator().manual_seed(step))
            loss.backward()
            optimizer.step()
            snn.clamp_thresholds()
        after[name] = _band(snn, x)
    # measured: 0.047 before; 0.039 after natural training, 0.0054 after tgo (either noise)
    assert after["tgo"] < 0.25 * before and after["tgo"] < 0.25 * after["natural"]


def test_options_are_checked_and_described():
    assert "tgo" in FINETUNE_OBJECTIVES
    described = build_objective("tgo").describe()
    assert described == {
        "name": "tgo",
        "params": {
            "weight": 1.0, "delta": 0.2, "schedule": "linear", "noise": 0.1,
            "adversarial_weight": 0.0, "eps": pytest.approx(2 / 255),
        },
    }  # fmt: skip
    for bad in ({"weight": -1.0}, {"delta": -0.1}, {"noise": float("nan")}, {"schedule": "x"}):
        with pytest.raises(UserError, match="objective 'tgo'"):
            build_objective("tgo", **bad)
    with pytest.raises(UserError, match="needs a spiking network"):
        build_objective("tgo").prepare(nn.Linear(2, 2))


class ProgressSpy:
    """An objective that records the progress the trainer reports before each step."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def set_progress(self, fraction: float) -> None:
        self.seen.append(fraction)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: Any) -> Any:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


def test_trainer_reports_the_fraction_of_steps_done_through_every_wrapper(
    tmp_path, toy_dataset, small_cnn
):
    spy = ProgressSpy()
    config = TrainerConfig(epochs=2, out_dir=tmp_path, batch_size=16, quiet=True)
    trainer = Trainer(small_cnn(), spy, config)
    trainer.fit(toy_dataset)  # 48 images: 3 steps per epoch, 6 in all
    assert spy.seen == [i / 6 for i in range(6)]
    tgo = build_objective("tgo")
    wrapped = TimeStepDraw(Regularized(tgo, lambda model: torch.zeros(())), [2, 3])
    report_progress(wrapped, 0.5)
    assert tgo.progress == 0.5 and tgo.current_weight() == 0.5
    report_progress(wrapped, 7.0)
    assert tgo.progress == 1.0


def test_noisy_neurons_make_the_model_random_and_the_evaluation_sees_it(toy_dataset, small_cnn):
    snn = _tiny_snn(toy_dataset, small_cnn)
    x = to_float(toy_dataset.x_test[:8])
    assert detect_randomness(snn, x, seed=0)[0] is False
    build_objective("tgo", noise=0.2).prepare(snn)
    assert all(n.threshold_noise == 0.2 for n in snn.neurons())
    random, difference = detect_randomness(snn, x, seed=0)
    assert random and difference > 0
    assert snn.describe()["threshold_noise"] == 0.2  # saved with the checkpoint


# ------------------------------------------------------------------ training end to end


@pytest.fixture
def toy_data(monkeypatch, toy_dataset):
    """The toy dataset served for every spec (finetune_snn/train_snn load it by name)."""
    monkeypatch.setattr(snn_training, "load_dataset", lambda spec, data_dir=None, **kw: toy_dataset)
    return toy_dataset


def test_train_snn_with_tgo_trains_a_noisy_snn_end_to_end(tmp_path, toy_data):
    config = SNNTrainingConfig(
        objective="tgo", objective_options={"weight": 0.5, "delta": 0.25}, T=3, epochs=1,
        batch_size=16, optimizer=OptimizerConfig(lr=0.05), init_threshold=0.2,
    )  # fmt: skip
    run = RunContext(out_dir=tmp_path, eval_n=8, quiet=True)
    path = train_snn("toy", "cnn_small", config, run, model_kwargs=SMALL)
    model, meta = load_model(path)
    assert meta["objective"]["name"] == "tgo"
    assert meta["objective"]["params"]["weight"] == 0.5
    assert meta["objective"]["params"]["delta"] == 0.25
    assert meta["threshold_noise"] == 0.1 and meta["training"]["baseline"] == "tgo"
    assert isinstance(model, SpikingNetwork)
    assert all(n.threshold_noise == 0.1 for n in model.neurons())
    assert detect_randomness(model, to_float(toy_data.x_test[:8]), seed=0)[0]
    # --threshold-noise is TGO's noise; two different values are refused
    with pytest.raises(UserError, match="disagree"):
        config = SNNTrainingConfig(
            objective="tgo", objective_options={"noise": 0.1}, T=2, epochs=0, threshold_noise=0.3
        )
        train_snn("toy", "cnn_small", config, RunContext(out_dir=tmp_path / "x", quiet=True),
                  model_kwargs=SMALL)  # fmt: skip


def test_train_snn_command_line_takes_objective_options(tmp_path, toy_data):
    from robustsnn.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "train-snn", "--dataset", "toy", "--model", "cnn_small", "--width", "4", "--fc",
            "16", "--T", "2", "--epochs", "1", "--batch-size", "16", "--objective", "tgo",
            "--objective-option", "noise=0.05", "--objective-option", "schedule=constant",
            "--eval-n", "8", "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    meta = json.loads((out / "snn.json").read_text())
    assert meta["threshold_noise"] == 0.05
    assert meta["objective"]["params"]["schedule"] == "constant"
    code = main(["train-snn", "--dataset", "toy", "--objective", "tgo", "--objective-option",
                 "lr=1", "--out", str(tmp_path / "bad"), "--quiet"])  # fmt: skip
    assert code == 2


def test_finetune_with_tgo_runs_no_attack_and_saves_the_noisy_snn(
    tmp_path, toy_data, small_cnn, monkeypatch
):
    snn = _tiny_snn(toy_data, small_cnn)
    source = tmp_path / "source" / "snn.safetensors"
    info = toy_data.info
    save_snn(source, snn, dataset={"spec": "toy", **dataclasses.asdict(info)},
             normalization={"mean": list(info.mean), "std": list(info.std)})  # fmt: skip

    def no_attack(*args: Any, **kw: Any) -> Any:
        raise AssertionError("tgo without adversarial_weight must not attack")

    monkeypatch.setattr(snn_training.FinetuneAdversary, "__call__", no_attack)
    config = FinetuneConfig(objective="tgo", epochs=1, batch_size=16, lr=0.01,
                            objective_options={"weight": 2.0, "noise": 0.15})  # fmt: skip
    path = finetune_snn(source, config, RunContext(out_dir=tmp_path / "ft", eval_n=8, quiet=True))
    model, meta = load_model(Path(path))
    assert meta["finetune"]["objective"]["name"] == "tgo"
    assert meta["finetune"]["adversary"] is None
    assert meta["threshold_noise"] == 0.15
    assert all(n.threshold_noise == 0.15 for n in model.neurons())


def test_config_takes_tgo_as_the_finetuning_objective():
    from robustsnn.config import load_config

    config = load_config(
        None, ["finetune.objective=tgo", "finetune.objective_options={weight: 0.5, noise: 0.2}"]
    )
    assert config.finetune.objective == "tgo"
    assert config.finetune.objective_options == {"weight": 0.5, "noise": 0.2}
    with pytest.raises(UserError, match="not a parameter"):
        load_config(None, ["finetune.objective=tgo", "finetune.objective_options={margin: 1}"])
