"""Objectives: the registry, the adversaries' contracts and the losses' basic behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustsnn.conversion import convert
from robustsnn.data import to_float
from robustsnn.errors import UserError
from robustsnn.training import OBJECTIVES, build_objective, objective_params
from robustsnn.training.inner import finetune_kl_adversary, kl_batchmean

FAST = {"pgd_at": {"steps": 3}, "trades": {"steps": 3}, "mart": {"steps": 3}}
SNN_ONLY = {"tgo"}  # a loss on the membranes: needs a spiking network


def model_for(name: str, small_cnn, toy_dataset, seed: int = 0) -> torch.nn.Module:
    """The tiny CNN, or its converted SNN for an objective that needs spiking layers."""
    model = small_cnn(seed=seed)
    if name in SNN_ONLY:
        images = to_float(toy_dataset.x_train)
        model = convert(model, images, T=3, calib_T=10, calib_batches=1, calib_batch_size=32)
    return model


def make(name: str, eps: float, teacher=None):
    params = dict(FAST.get(name, {}))
    if "eps" in objective_params(name):
        params["eps"] = eps
    objective = build_objective(name, **params)
    if hasattr(objective, "teacher"):  # distillation: a fixed network to imitate
        objective.teacher = teacher.eval()
    return objective


def batch(dataset, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return to_float(dataset.x_train[:n]), dataset.y_train[:n]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_objective_restores_modes_and_leaves_no_grad(name, toy_dataset, small_cnn):
    model = model_for(name, small_cnn, toy_dataset)
    model.train()
    leaves = [m for m in model.modules() if not list(m.children())]
    leaves[1].eval()  # (the CNN's first BatchNorm) a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    objective = make(name, 8 / 255, small_cnn(seed=5))
    x, y = batch(toy_dataset)
    loss, logits = objective(model, x, y, gen())
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert logits.shape == (len(y), 2)

    model.eval()
    objective(model, x, y, gen())
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_loss_decreases_on_a_separable_problem(name, toy_dataset, small_cnn):
    model = small_cnn(seed=1)
    objective = make(name, 4 / 255, small_cnn(seed=5))
    if name in SNN_ONLY:  # the tiny SNN stays near chance for 12 steps under any objective
        pytest.skip("tests/training/test_tgo.py: training with tgo empties the threshold band")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = batch(toy_dataset, 32)
    losses = []
    for step in range(12):
        optimizer.zero_grad()
        loss, _ = objective(model, x, y, gen(step))
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_trades_robust_term_vanishes_at_eps_zero(toy_dataset, small_cnn):
    model = small_cnn()
    x, y = batch(toy_dataset)
    loss, logits = build_objective("trades", eps=0.0, steps=2)(model, x, y, gen())
    assert torch.allclose(loss, F.cross_entropy(logits, y), atol=1e-6)
    with_eps, _ = build_objective("trades", eps=16 / 255, beta=6.0, steps=2)(model, x, y, gen())
    assert with_eps.item() > loss.item()


def test_robust_finetune_adversary_stays_in_ball_and_increases_kl(toy_dataset, small_cnn):
    model = small_cnn(seed=2).eval()
    with torch.no_grad():
        model.classifier[-1].weight.mul_(100.0)  # sharpen the untrained model's outputs
    x, _ = batch(toy_dataset, 32)
    x[:4] = 0.0  # images at the box boundary must stay inside [0, 1]
    x[4:8] = 1.0
    eps, alpha = 2 / 255, 1 / 255
    x_adv = finetune_kl_adversary(model, x, eps=eps, alpha=alpha, generator=gen(5))
    assert (x_adv - x).abs().max() <= eps + 1e-7
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # the same random start, reproduced from the same generator state
    start = (x + alpha * torch.randn(x.shape, generator=gen(5)).sign()).clamp(0, 1)
    with torch.no_grad():
        clean = model(x)
        kl_start = kl_batchmean(model(start), clean)
        kl_adv = kl_batchmean(model(x_adv), clean)
    assert kl_adv > kl_start > 0


def test_multi_step_finetune_adversary_stays_in_ball_and_beats_one_step(toy_dataset, small_cnn):
    model = small_cnn(seed=2).eval()
    with torch.no_grad():
        model.classifier[-1].weight.mul_(100.0)
    x, _ = batch(toy_dataset, 32)
    eps, alpha = 8 / 255, 1 / 255
    one = finetune_kl_adversary(model, x, eps=eps, alpha=alpha, generator=gen(5))
    many = finetune_kl_adversary(model, x, eps=eps, alpha=alpha, steps=7, generator=gen(5))
    assert (many - x).abs().max() <= eps + 1e-7
    assert many.min() >= 0 and many.max() <= 1
    with torch.no_grad():
        clean = model(x)
        kl_one = kl_batchmean(model(one), clean)
        kl_many = kl_batchmean(model(many), clean)
    assert kl_many > kl_one
    objective = build_objective("robust_finetune", eps=eps, steps=7)
    assert objective.params["steps"] == 7
    with pytest.raises(UserError, match="steps"):
        build_objective("robust_finetune", steps=0)


def test_robust_finetune_beta_zero_is_plain_cross_entropy(toy_dataset, small_cnn):
    model = small_cnn()
    x, y = batch(toy_dataset)
    g = gen()
    state = g.get_state()
    loss, logits = build_objective("robust_finetune", beta=0.0)(model, x, y, g)
    assert torch.equal(g.get_state(), state)  # no attack ran
    assert torch.allclose(loss, F.cross_entropy(logits, y))


def test_regularizer_is_added(toy_dataset, small_cnn):
    model = small_cnn()
    x, y = batch(toy_dataset)

    def penalty(m: torch.nn.Module) -> torch.Tensor:
        return sum(p.square().sum() for p in m.parameters())  # type: ignore[return-value]

    plain, _ = build_objective("natural")(model, x, y, gen())
    objective = build_objective("natural", regularizer=penalty)
    regular, _ = objective(model, x, y, gen())
    assert torch.allclose(regular, plain + penalty(model))
    assert objective.describe() == {"name": "natural", "params": {"regularizer": "penalty"}}


def test_defaults_and_bad_names():
    pgd = build_objective("pgd_at")
    assert pgd.params["eps"] == pytest.approx(2 / 255)
    assert pgd.params["step_size"] == pytest.approx(2.5 * (2 / 255) / 10)
    assert build_objective("trades").params["beta"] == 6.0
    assert build_objective("mart").params["beta"] == 4.0
    assert build_objective("robust_finetune").params == pytest.approx(
        {"eps": 2 / 255, "beta": 2.0, "alpha": 1 / 255, "steps": 1}
    )
    with pytest.raises(UserError, match="valid: .*trades"):
        build_objective("tradez")
    with pytest.raises(UserError, match="unknown parameter"):
        build_objective("natural", eps=0.1)
