"""FAB-T: targeted Fast Adaptive Boundary attack, L-inf.

Croce & Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary
Attack", ICML 2020 (targeted version as in AutoAttack, Croce & Hein ICML 2020). FAB looks for
the adversarial example of *minimal* L-inf norm. For a target class ``t`` it linearizes
``g(x) = z_y(x) - z_t(x)`` at the iterate ``x_i`` and computes the minimal-norm steps onto the
hyperplane ``g(x_i) + <grad g(x_i), x - x_i> = 0`` within the box [0, 1], from the iterate
(``d_i``) and from the original point (``d_o``). With
``alpha = min(|d_i| / (|d_i| + |d_o|), alpha_max)`` the next iterate is

    ``x_{i+1} = clip((1 - alpha)(x_i + eta d_i) + alpha (x + eta d_o), 0, 1)``,

an extrapolated step biased towards the original point. When ``x_{i+1}`` is adversarial its
norm is recorded and it is pulled back, ``x_{i+1} = (1 - beta) x + beta x_{i+1}``, to look for
a closer one. The minimal-norm projection onto a hyperplane within a box is solved exactly.
After the iterations, a short bisection on the segment from ``x`` to the best point found
moves it closer to the boundary (an addition to the paper's algorithm that can only lower
the norm).

Target classes are the ``n_target_classes`` runner-up classes of the clean logits; each one
attacks the samples without an adversarial example within ``eps`` yet. Only adversarial
examples within ``eps`` are returned; other samples come back as ``x``. The minimal norms
found are kept in ``self.last_norms`` (``inf`` where none was found, 0 where ``x`` is already
misclassified).

Args:
    eps: L-inf radius in pixels (also the radius of random restarts).
    n_iter: iterations per target class and restart (100).
    n_target_classes: runner-up classes tried, capped at K - 1 (9).
    n_restarts: runs per target class; runs after the first start from a random point (1).
    alpha_max: maximal bias towards the original point (0.1).
    eta: extrapolation factor of the step (1.05).
    beta: pull-back factor after a success (0.9).

Shapes: ``x [N, ...]`` in [0, 1], ``y [N]`` -> ``x_adv`` like ``x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustsnn.attacks.base import (
    Attack,
    Model,
    begin_run,
    check_fraction,
    check_positive_int,
    is_success,
    linf_norm,
    loss_and_grad,
    per_sample,
    predict_logits,
    project,
    runner_up_classes,
    unit_linf_noise,
)
from robustsnn.attacks.registry import ATTACKS

_BISECTION_STEPS = 10


def linf_step_to_hyperplane(x: Tensor, w: Tensor, c: Tensor) -> Tensor:
    """Minimal L-inf step ``d`` with ``<w, d> = c`` and ``0 <= x + d <= 1``, per sample.

    ``x`` and ``w`` are ``[N, D]``, ``c`` is ``[N]``. For a level ``t`` the largest reachable
    ``<w, d>`` is ``S(t) = sum_i |w_i| min(t, cap_i)`` with ``cap_i`` the room in the box in
    the direction of ``sign(c w_i)``; ``S`` is piecewise linear and increasing, so the minimal
    ``t`` with ``S(t) = |c|`` is found after sorting the caps. When the hyperplane cannot be
    reached inside the box, the step goes to the farthest box corner in that direction.
    """
    direction = torch.sign(c)[:, None] * torch.sign(w)
    weight = w.abs()
    cap = torch.where(direction > 0, 1.0 - x, x).clamp_min(0.0)
    cap = torch.where(weight > 0, cap, torch.zeros_like(cap))
    cap_sorted, order = cap.sort(1)
    weight_sorted = weight.gather(1, order)
    # A_k = sum_{j<k} w_j cap_j ; B_k = sum_{j>=k} w_j ; S(cap_k) = A_k + cap_k B_k
    filled = torch.cumsum(weight_sorted * cap_sorted, 1) - weight_sorted * cap_sorted
    rest = weight_sorted.flip(1).cumsum(1).flip(1)
    reach = filled + cap_sorted * rest
    need = c.abs()[:, None]
    enough = reach >= need
    feasible = enough.any(1)
    first = enough.float().argmax(1, keepdim=True)
    level = (need - filled.gather(1, first)) / rest.gather(1, first).clamp_min(1e-30)
    level = level.squeeze(1).clamp_min(0.0)
    level = torch.where(feasible, level, cap_sorted[:, -1])
    level = torch.where(c == 0, torch.zeros_like(level), level)
    return direction * torch.minimum(level[:, None], cap)


@ATTACKS.register("fab-t")
class FABT(Attack):
    """Targeted L-inf FAB: minimal-norm adversarial examples, kept only within ``eps``."""

    param_names = ("eps", "n_iter", "n_target_classes", "n_restarts", "alpha_max", "eta", "beta")

    def __init__(
        self,
        eps: float,
        n_iter: int = 100,
        n_target_classes: int = 9,
        n_restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
    ) -> None:
        super().__init__(eps)
        self.n_iter = check_positive_int(n_iter, "fab-t n_iter")
        self.n_target_classes = check_positive_int(n_target_classes, "fab-t n_target_classes")
        self.n_restarts = check_positive_int(n_restarts, "fab-t n_restarts")
        self.alpha_max = check_fraction(alpha_max, "fab-t alpha_max")
        self.eta = check_fraction(eta, "fab-t eta", low=1.0, high=2.0)
        self.beta = check_fraction(beta, "fab-t beta")
        self.name = "fab-t"
        self.last_norms: Tensor | None = None

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        clean = predict_logits(model, x)
        fooled = is_success(clean, y)
        norms = torch.where(fooled, 0.0, math.inf).to(device=x.device)
        x_best = x.clone()
        for class_target in runner_up_classes(clean, self.n_target_classes):
            for restart in range(self.n_restarts):
                idx = (norms > self.eps).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                found_x, found_norm = self._run(
                    model, x[idx], y[idx], class_target[idx], norms[idx], restart, generator
                )
                better = found_norm < norms[idx]
                x_best[idx[better]] = found_x[better]
                norms[idx[better]] = found_norm[better]
        self.last_norms = norms.detach().cpu()
        within = per_sample(norms <= self.eps, x)
        return torch.where(within, project(x_best, x, self.eps), x)

    def _run(
        self,
        model: Model,
        x0: Tensor,
        y0: Tensor,
        t0: Tensor,
        best_norm: Tensor,
        restart: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        """One FAB run towards classes ``t0``; returns the closest adversarials and norms."""
        n = x0.shape[0]
        flat = x0.flatten(1)
        best_norm = best_norm.clone()
        x_best = x0.clone()
        if restart == 0:
            x_i = x0.clone()
        else:
            radius = 0.5 * torch.clamp(best_norm, max=self.eps)
            noise = unit_linf_noise(x0, generator)
            x_i = (x0 + per_sample(radius, x0) * noise).clamp(0.0, 1.0)
        rows = torch.arange(n, device=x0.device)
        begin_run(model, n)

        def gap(z: Tensor) -> Tensor:
            # g = z_y - z_t: positive while y beats the target class
            return z[rows, y0] - z[rows, t0]

        for _ in range(self.n_iter):
            _, g, grad = loss_and_grad(model, x_i, gap)
            w = grad.flatten(1)
            xi_flat = x_i.flatten(1)
            d_i = linf_step_to_hyperplane(xi_flat, w, -g)
            g_at_x0 = g + (w * (flat - xi_flat)).sum(1)
            d_o = linf_step_to_hyperplane(flat, w, -g_at_x0)
            size_i = d_i.abs().amax(1)
            size_o = d_o.abs().amax(1)
            total = size_i + size_o
            alpha = torch.where(total > 0, size_i / total.clamp_min(1e-30), torch.zeros_like(total))
            alpha = alpha.clamp(0.0, self.alpha_max)[:, None]
            x_next = (1 - alpha) * (xi_flat + self.eta * d_i) + alpha * (flat + self.eta * d_o)
            x_next = x_next.clamp(0.0, 1.0).view_as(x0)
            adversarial = is_success(predict_logits(model, x_next), y0)
            dist = linf_norm(x_next - x0)
            improved = adversarial & (dist < best_norm)
            x_best[improved] = x_next[improved]
            best_norm[improved] = dist[improved]
            pulled = (1 - self.beta) * x0 + self.beta * x_next
            x_i = torch.where(per_sample(adversarial, x0), pulled, x_next)
        return self._shrink(model, x0, y0, x_best, best_norm)

    @torch.no_grad()
    def _shrink(
        self, model: Model, x0: Tensor, y0: Tensor, x_best: Tensor, best_norm: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Bisect on the segment from ``x0`` to each adversarial found for a closer one."""
        found = torch.isfinite(best_norm).nonzero().squeeze(1)
        if found.numel() == 0:
            return x_best, best_norm
        start, delta, labels = x0[found], x_best[found] - x0[found], y0[found]
        low = torch.zeros(found.numel(), device=x0.device, dtype=x0.dtype)
        high = torch.ones_like(low)
        for _ in range(_BISECTION_STEPS):
            mid = (low + high) / 2
            adversarial = is_success(
                predict_logits(model, start + per_sample(mid, delta) * delta), labels
            )
            high = torch.where(adversarial, mid, high)
            low = torch.where(adversarial, low, mid)
        closer = high < 1
        rows = found[closer]
        x_best[rows] = start[closer] + per_sample(high[closer], delta) * delta[closer]
        best_norm[rows] = linf_norm(x_best[rows] - x0[rows])
        return x_best, best_norm
