"""SA-PGD: schedule, first step, scale invariance, zero-gradient guard, any-iterate counting,
and strength on models whose worst case is known."""

from __future__ import annotations

import pytest
import torch
from attack_test_utils import exact_robust_count, linear_problem, median_eps, robust_count
from torch import Tensor, nn

from robustsnn.attacks import SAPGD, build_attack
from robustsnn.attacks.base import begin_run, select_rows
from robustsnn.attacks.sapgd import halving_iterations
from robustsnn.errors import UserError


def test_halving_schedule_matches_the_reference() -> None:
    assert halving_iterations(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert halving_iterations(50) == [11, 21, 30, 38, 45]
    assert halving_iterations(1000) == [220, 410, 570, 700, 800, 870, 930, 990]


class Linear(nn.Module):
    """``logits = [10, s * 1e-4 * w.x]``: never fooled (for |w.x| < 100 / s), and the CE
    gradient of class 0 is a positive multiple of ``w`` at every point."""

    def __init__(self, w: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.w, self.scale = w, scale

    def forward(self, x: Tensor) -> Tensor:
        z = self.scale * (x.flatten(1) * self.w).sum(1, keepdim=True) * 1e-4
        return torch.cat([torch.zeros_like(z) + 10.0, z], 1)


def _trajectory(model: nn.Module, x: Tensor, steps: int = 30) -> list[Tensor]:
    attack = SAPGD(0.05, steps=steps)
    seen: list[Tensor] = []

    def spy(z: Tensor) -> Tensor:
        seen.append(z.detach().clone())
        return model(z)

    attack(spy, x, torch.zeros(x.shape[0], dtype=torch.long))
    return seen[1:]  # drop the clean prediction


def test_first_step_is_eps_sign_and_steps_respect_eta() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, generator=g)
    x = 0.3 + 0.4 * torch.rand(2, 3, 4, 4, generator=g)  # interior: no clipping by the box
    points = _trajectory(Linear(w), x)
    # the first step is eps * sign(g) from the random start, then projected onto the ball
    first = torch.minimum(
        torch.maximum(points[0] + 0.05 * torch.sign(w).view(3, 4, 4), x - 0.05), x + 0.05
    )
    torch.testing.assert_close(points[1], first)
    attack = SAPGD(0.05, steps=30)
    attack(Linear(w), x, torch.zeros(2, dtype=torch.long))
    etas = attack.last_etas
    assert etas[0] == 0.05 and etas[5] == 0.05 and etas[6] == 0.025  # floor(0.22 * 30) = 6
    for k in range(1, len(points) - 1):
        assert float((points[k + 1] - points[k]).abs().max()) <= etas[k] + 1e-7


@pytest.mark.parametrize("scale", [1e3, 1e-3])
def test_trajectory_does_not_depend_on_the_loss_scale(scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, generator=g)
    x = torch.rand(3, 3, 4, 4, generator=g)
    base = _trajectory(Linear(w), x)
    scaled = _trajectory(Linear(w, scale), x)
    for a, b in zip(base, scaled, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_zero_gradient_stays_finite() -> None:
    def flat(z: Tensor) -> Tensor:
        return torch.stack([z.flatten(1).sum(1) * 0 + 1, z.flatten(1).sum(1) * 0], 1)

    x = torch.rand(2, 3, 4, 4)
    for mode in ("random", "stay"):
        x_adv = SAPGD(0.1, steps=10, zero_grad=mode)(flat, x, torch.zeros(2, dtype=torch.long))
        assert torch.isfinite(x_adv).all()
        assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_a_sample_fooled_at_an_intermediate_iterate_counts() -> None:
    """Fooled only inside a narrow band of the first coordinate: the returned point must be the
    fooling iterate, not the last one."""
    calls = {"n": 0}

    def model(z: Tensor) -> Tensor:
        calls["n"] += 1
        first = z.flatten(1)[:, 0]
        fooled = (first - 0.5).abs() < 0.02  # crossed on the way up, not at the end
        wrong = torch.where(fooled, 5.0, -5.0) + 0 * first
        return torch.stack([first * 0, wrong + first * 10], 1)

    x = torch.full((1, 1, 2, 2), 0.45)
    x_adv = SAPGD(0.2, steps=20)(model, x, torch.zeros(1, dtype=torch.long))
    assert float((x_adv - x).abs().max()) <= 0.2 + 1e-6
    assert model(x_adv).argmax(1).item() == 1


@pytest.mark.parametrize("classes,loss,slack", [(2, "ce", 0), (5, "ce", 2), (5, "dlr", 1)])
def test_sapgd_reaches_the_exact_robust_accuracy_of_linear_models(
    classes: int, loss: str, slack: int
) -> None:
    """Linear models: the worst case is known exactly (CE ascent on several classes may end at
    a vertex that is not adversarial, hence the small slack, as for PGD and APGD-CE)."""
    model, x, y = linear_problem(classes, n=128, seed=1)
    eps = median_eps(model, x, y)
    exact = exact_robust_count(model, x, y, eps)
    x_adv = build_attack("sapgd", eps, steps=100, loss=loss)(model, x, y)
    assert exact <= robust_count(model, x_adv, y) <= exact + slack


def test_bad_parameters_fail_clearly() -> None:
    with pytest.raises(UserError, match="zero_grad"):
        SAPGD(0.1, zero_grad="nan")
    with pytest.raises(UserError, match="steps"):
        SAPGD(0.1, steps=0)


class RowSpy(nn.Module):
    """Records the run hooks an attack calls (the protocol stateful estimators rely on)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.events: list[tuple[str, object]] = []

    def begin_attack_run(self, n: int) -> None:
        self.events.append(("begin", n))

    def select_attack_rows(self, rows: Tensor | None) -> None:
        self.events.append(("rows", None if rows is None else rows.tolist()))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


@pytest.mark.parametrize("name", ["sapgd", "pgd", "apgd-ce"])
def test_attacks_report_runs_and_rows(name: str) -> None:
    model, x, y = linear_problem(3, n=16)
    spy = RowSpy(model)
    params = {"n_iter": 5} if name == "apgd-ce" else {"steps": 5}
    build_attack(name, median_eps(model, x, y), **params)(spy, x, y)
    begins = [e for e in spy.events if e[0] == "begin"]
    assert begins[0] == ("begin", 16) and len(begins) >= 2  # the call, then each run
    rows = [e[1] for e in spy.events if e[0] == "rows"]
    assert rows and all(r is None or len(set(r)) == len(r) for r in rows)
    # once samples are fooled, later passes cover fewer rows
    assert len(rows[-1]) < 16  # type: ignore[arg-type]


def test_hooks_are_optional() -> None:
    begin_run(lambda z: z, 3)
    select_rows(lambda z: z, None)


class Overflowing(torch.autograd.Function):
    """Identity forward; backward inf for sample 0 (a surrogate that overflowed), NaN for 1."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        g = g.clone()
        g[0] = g[0] * float("inf")
        g[1] = float("nan")
        return g


def test_non_finite_gradients_never_produce_nan_images() -> None:
    from robustsnn.attacks.base import finite_gradient

    grad = torch.tensor(
        [[1.0, float("inf"), -float("inf")], [float("nan"), 2.0, 3.0], [1.0, 2.0, 3.0]]
    )
    fixed = finite_gradient(grad)
    assert torch.equal(fixed[0], torch.tensor([0.0, 1.0, -1.0]))
    assert torch.equal(fixed[1], torch.zeros(3)) and torch.equal(fixed[2], grad[2])
    model, x, y = linear_problem(3, n=4)

    def overflowing(z: Tensor) -> Tensor:
        return model(Overflowing.apply(z))

    for name in ("sapgd", "pgd", "apgd-ce"):
        params = {"n_iter": 5} if name == "apgd-ce" else {"steps": 5}
        x_adv = build_attack(name, 0.1, **params)(overflowing, x, y)
        assert torch.isfinite(x_adv).all(), name


def test_an_attack_returning_nan_falls_back_to_the_clean_image() -> None:
    class Broken(SAPGD):
        def perturb(self, model, x, y, generator, target):  # type: ignore[no-untyped-def]
            return torch.full_like(x, float("nan"))

    model, x, y = linear_problem(3, n=4)
    assert torch.equal(Broken(0.1)(model, x, y), x)
