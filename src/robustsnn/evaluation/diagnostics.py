"""Gradient-masking diagnostics: cheap checks that a white-box robust accuracy can be trusted.

In the spirit of AutoAttack's ``checks.py`` and of Carlini et al. (2019), "On Evaluating
Adversarial Robustness": a model that *looks* robust because its gradients are useless (zero,
non-finite, pointing nowhere) betrays itself by symptoms that need no white-box attack to work.
Each check runs on a small subset (the first ``n`` clean-correct or still-robust samples) so it
is affordable on a CPU and returns ``{"passed": bool, "detail": one actionable line, ...}``:

- ``finite_gradients``: input gradients of the margin loss per estimator are finite and not
  zero (for the default estimator, and for at least one estimator per sample).
- ``black_box_vs_white_box``: Square (gradient-free) must not break samples that survived the
  white-box ensemble.
- ``eps_monotonic``: PGD at large radii (32/255, 64/255) must drive robust accuracy to ~0.
- ``trivial_radius``: at eps 0.5 (the grey image is inside every ball) PGD must break every
  sample that a gradient-free candidate (grey image, other-class images) breaks.
- ``convergence``: PGD with ``factor`` times the steps (and restarts) must not lower robust
  accuracy by more than ``threshold`` (else the reported attacks have not converged).
- ``transfer_vs_white_box`` (with a transfer source): adversarial examples crafted on another
  model must not beat the white-box ensemble on any sample.

Every verdict uses the model's real forward pass, never an attack's logits.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from robustsnn.attacks import PGD, Square, Transfer, margin
from robustsnn.attacks.base import default_step_size, project
from robustsnn.errors import UserError
from robustsnn.evaluation.ensembles import ADAPTIVE_ESTIMATORS, Member, canonical_estimator
from robustsnn.evaluation.stochastic import resolve_randomness
from robustsnn.evaluation.views import (
    ViewFactory,
    attack_view,
    is_snn,
    real_predict,
    seeded_generator,
)
from robustsnn.snn import DEFAULT_ESTIMATOR, estimator_names, parse_estimator

DIAGNOSTICS_MODES = ("fast", "full", "none")
CHECKS = (
    "finite_gradients",
    "black_box_vs_white_box",
    "eps_monotonic",
    "convergence",
    "trivial_radius",
    "transfer_vs_white_box",
)


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Budgets and thresholds of the checks (``preset("fast" | "full" | "none")``).

    Args:
        mode: "fast" (cheap versions, for CPU), "full" or "none" (skip every check).
        n: samples per check (first ``n`` clean-correct, or still-robust, samples).
        square_queries: query budget of the black-box check.
        eps_levels: large radii at which PGD must reach ~0 robust accuracy; each is raised to
            at least ``eps_factors[i] * eps`` (so a large evaluation eps is still exceeded).
        eps_factors: see ``eps_levels`` (4x and 8x the evaluation eps).
        eps_max_accuracy: highest robust accuracy tolerated at the largest level.
        base_steps: PGD steps of the reference attack of the convergence and eps checks.
        convergence_factor: the stronger PGD runs ``factor * base_steps`` steps.
        convergence_restarts: restarts of the stronger PGD.
        convergence_threshold: largest tolerated drop of robust accuracy (fraction).
        max_zero_fraction: largest tolerated fraction of samples with a zero input gradient.
        estimators: SNN estimators of the PGD-based checks; None = the mode's default
            (fast: BPTT(PCW, 1); full: BPTT(PCW, 1), BPTR, ANN proxy).
    """

    mode: str = "fast"
    n: int = 32
    square_queries: int = 500
    eps_levels: tuple[float, ...] = (32 / 255, 64 / 255)
    eps_factors: tuple[float, ...] = (4.0, 8.0)
    eps_max_accuracy: float = 0.1
    base_steps: int = 20
    convergence_factor: int = 5
    convergence_restarts: int = 1
    convergence_threshold: float = 0.05
    max_zero_fraction: float = 0.1
    estimators: tuple[str, ...] | None = None

    @classmethod
    def preset(cls, mode: str) -> DiagnosticsConfig:
        if mode not in DIAGNOSTICS_MODES:
            raise UserError(
                f"diagnostics must be one of {', '.join(DIAGNOSTICS_MODES)}, got {mode!r}"
            )
        if mode == "full":
            return cls(mode="full", n=64, square_queries=2000, convergence_restarts=3)
        return cls(mode=mode)

    def pgd_estimators(self, members: Sequence[Member] = ()) -> tuple[str, ...]:
        """Estimators of the PGD-based checks: the configured ones, else the ensemble's first
        white-box estimator (the one the evaluation trusts most; BPTT(PCW, 1) by default),
        joined in "full" mode by BPTT(PCW, 1), BPTR and the ANN proxy."""
        if self.estimators is not None:
            return tuple(canonical_estimator(e) for e in self.estimators)
        first = next(
            (m.estimator for m in members if m.estimator and not m.black_box),
            DEFAULT_ESTIMATOR.name,
        )
        if self.mode != "full":
            return (first,)
        return tuple(dict.fromkeys((first, *ADAPTIVE_ESTIMATORS)))

    def describe(self) -> dict[str, Any]:
        """The settings as JSON-ready values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def resolve_config(diagnostics: str | DiagnosticsConfig, n: int | None = None) -> DiagnosticsConfig:
    """``"fast"`` / ``"full"`` / ``"none"`` or a config -> config (``n`` overrides its size)."""
    config = (
        diagnostics
        if isinstance(diagnostics, DiagnosticsConfig)
        else DiagnosticsConfig.preset(str(diagnostics))
    )
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserError(f"diagnostics_n must be a positive integer, got {n!r}")
        config = replace(config, n=n)
    return config


# --------------------------------------------------------------------------- helpers


def _check(passed: bool, detail: str, **values: Any) -> dict[str, Any]:
    return {"passed": bool(passed), "detail": detail, **values}


def _skipped(detail: str) -> dict[str, Any]:
    return {"passed": True, "detail": f"skipped: {detail}", "skipped": True}


def _fmt_eps(eps: float) -> str:
    return f"{eps * 255:g}/255"


def input_gradients(view: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Gradient of the margin ``z_y - max_{k != y} z_k`` with respect to the input.

    The margin (not the cross-entropy) is used because a saturated softmax gives an exactly
    zero cross-entropy gradient on confident samples, which is not masking.
    """
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        logits = view(leaf)
        loss = margin(logits, y).sum()
        if not loss.requires_grad:
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(loss, [leaf], allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


def _large_radius_pgd(eps: float, steps: int) -> PGD:
    """PGD with the paper's step ``2.5 eps / steps``, capped at 1 (the whole pixel range) so
    that few steps at a huge radius stay a valid attack."""
    return PGD(eps, steps=steps, step_size=min(1.0, default_step_size(eps, steps)))


def _pgd_broken(
    model: nn.Module,
    views: Sequence[tuple[str | None, Callable[[Tensor], Tensor]]],
    attack: PGD,
    x: Tensor,
    y: Tensor,
    seed: int,
    tag: str,
) -> Tensor:
    """Samples broken (real forward) by ``attack`` under any of ``views``, in sequence."""
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for estimator, view in views:
        idx = (~broken).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        generator = seeded_generator(seed, x.device, "diagnostics", tag, estimator)
        x_adv = attack(view, x[idx], y[idx], generator=generator)
        broken[idx] = real_predict(model, x_adv) != y[idx]
    return broken


# --------------------------------------------------------------------------- checks


def check_finite_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    estimators: Sequence[str | None],
    config: DiagnosticsConfig,
    view_factory: ViewFactory,
) -> dict[str, Any]:
    """Fail on non-finite input gradients, or on zero ones for the default estimator or for
    every estimator at once (on more than ``max_zero_fraction`` of the samples)."""
    n = x.shape[0]
    zero_all = torch.ones(n, dtype=torch.bool, device=x.device)
    per_estimator: dict[str, dict[str, float]] = {}
    nonfinite_names: list[str] = []
    for estimator in estimators:
        grad = input_gradients(view_factory(model, estimator), x, y).flatten(1)
        finite = torch.isfinite(grad).all(1)
        zero = finite & (grad.abs().amax(1) == 0)
        zero_all &= zero | ~finite
        label = estimator or "true-gradient"
        per_estimator[label] = {
            "zero_fraction": int(zero.sum()) / n,
            "nonfinite_fraction": int((~finite).sum()) / n,
        }
        if not bool(finite.all()):
            nonfinite_names.append(label)
    default_label = estimators[0] or "true-gradient"
    default_zero = per_estimator[default_label]["zero_fraction"]
    all_zero = int(zero_all.sum()) / n
    partly_zero = sorted(k for k, v in per_estimator.items() if v["zero_fraction"] > 0)
    values = {"n": n, "estimators": per_estimator}
    if nonfinite_names:
        return _check(
            False,
            f"non-finite input gradients with {', '.join(nonfinite_names)}: the model or a "
            "surrogate overflows (check thresholds, T and the surrogate's gamma); attacks "
            "following these gradients are meaningless",
            **values,
        )
    if all_zero > config.max_zero_fraction or default_zero > config.max_zero_fraction:
        worst = max(all_zero, default_zero)
        which = "every estimator" if all_zero >= default_zero else default_label
        return _check(
            False,
            f"zero input gradient on {worst:.0%} of {n} samples with {which}: gradients are "
            "masked (e.g. a hard step, a saturated or dead layer); white-box robust accuracy "
            "is not trustworthy: compare with --attack square and an ANN-proxy/BPTR ensemble",
            **values,
        )
    note = f"; zero on some samples with {', '.join(partly_zero)}" if partly_zero else ""
    return _check(
        True,
        f"finite, non-zero input gradients with {len(per_estimator)} estimator(s) on {n} "
        f"samples{note}",
        **values,
    )


def check_black_box(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    config: DiagnosticsConfig,
    seed: int,
) -> dict[str, Any]:
    """Square must not break samples that survived the white-box ensemble."""
    n = x.shape[0]
    if n == 0:
        return _check(
            True,
            "no sample survived the white-box attacks, so a black-box attack cannot beat them",
            n=0,
            broken=0,
        )
    if x.dim() != 4:
        return _skipped(f"Square needs images [N, C, H, W], inputs have shape {tuple(x.shape)}")
    square = Square(eps, n_queries=config.square_queries)
    generator = seeded_generator(seed, x.device, "diagnostics", "square")
    x_adv = square(attack_view(model, None), x, y, generator=generator)
    broken = int((real_predict(model, x_adv) != y).sum())
    values = {"n": n, "broken": broken, "queries": config.square_queries}
    if broken:
        return _check(
            False,
            f"Square ({config.square_queries} queries, no gradients) broke {broken}/{n} samples "
            "the white-box ensemble could not: gradients are likely masked; report the worst "
            "case including black-box attacks (e.g. --ensemble autoattack)",
            **values,
        )
    return _check(
        True,
        f"Square ({config.square_queries} queries) broke none of {n} samples that survived "
        "the white-box ensemble",
        **values,
    )


def check_eps_monotonic(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    views: Sequence[tuple[str | None, Callable[[Tensor], Tensor]]],
    config: DiagnosticsConfig,
    seed: int,
) -> dict[str, Any]:
    """PGD robust accuracy must fall with eps and be near 0 at the largest radius."""
    n = x.shape[0]
    factors = list(config.eps_factors) + [1.0] * len(config.eps_levels)
    levels = sorted(
        {
            min(1.0, max(level, f * eps))
            for level, f in zip(config.eps_levels, factors, strict=False)
        }
    )
    accuracy: dict[str, float] = {}
    for level in levels:
        attack = _large_radius_pgd(level, config.base_steps)
        broken = _pgd_broken(model, views, attack, x, y, seed, f"eps-{level:.6f}")
        accuracy[_fmt_eps(level)] = (n - int(broken.sum())) / n
    values = list(accuracy.values())
    text = ", ".join(f"{a:.2f} at {k}" for k, a in accuracy.items())
    tolerance = 1.0 / n
    monotone = all(b <= a + tolerance for a, b in zip(values, values[1:], strict=False))
    result = {"n": n, "robust_accuracy": accuracy}
    if not monotone:
        return _check(
            False,
            f"PGD-{config.base_steps} robust accuracy {text} on {n} clean-correct samples rises "
            "with eps: the attack is unreliable (noisy or masked gradients); use more "
            "steps/restarts, other estimators (ann-proxy, bptr) and black-box attacks",
            **result,
        )
    if values[-1] > config.eps_max_accuracy:
        return _check(
            False,
            f"PGD-{config.base_steps} robust accuracy {text} on {n} clean-correct samples does "
            f"not fall to <= {config.eps_max_accuracy:.0%}: attacks fail even at huge radii, so "
            "gradients are likely masked or the attack is broken; try other estimators "
            "(ann-proxy, bptr) and black-box attacks (if the model was trained at such radii, "
            "raise DiagnosticsConfig.eps_levels)",
            **result,
        )
    return _check(True, f"PGD-{config.base_steps} robust accuracy {text} on {n} samples", **result)


TRIVIAL_EPS = 0.5
"""A radius at which no classifier is robust: the grey image (0.5 everywhere) lies in every
image's L-inf ball of radius 0.5, and so does the projection of any other image."""


@torch.no_grad()
def trivially_broken(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Samples for which a point found without gradients fools the model at radius ``eps``.

    Candidates: the grey image clipped into each ball, and every other sample of the subset
    with another label, projected into the ball (at ``eps = 0.5`` the grey image itself).
    """
    broken = real_predict(model, project(torch.full_like(x, 0.5), x, eps)) != y
    for j in range(x.shape[0]):
        other = y != y[j]
        if not bool(other.any()):
            continue
        candidate = project(x[j].expand_as(x), x, eps)
        broken |= other & (real_predict(model, candidate) != y)
    return broken


def check_trivial_radius(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    views: Sequence[tuple[str | None, Callable[[Tensor], Tensor]]],
    config: DiagnosticsConfig,
    seed: int,
) -> dict[str, Any]:
    """At eps = 0.5 the white-box attacks must break every sample a gradient-free search of
    trivial candidates (grey image, other-class images) breaks; robust accuracy must reach 0
    wherever such a point exists. Rescaling a layer so that a surrogate's width no longer fits
    its membranes fails here while the other checks may pass."""
    n = x.shape[0]
    attack = _large_radius_pgd(TRIVIAL_EPS, config.base_steps)
    white_box = _pgd_broken(model, views, attack, x, y, seed, "trivial")
    trivial = trivially_broken(model, x, y, TRIVIAL_EPS)
    missed = int((trivial & ~white_box).sum())
    standing = int((~(trivial | white_box)).sum())
    names = ", ".join(e or "true gradient" for e, _ in views)
    values = {
        "n": n,
        "eps": TRIVIAL_EPS,
        "white_box_robust_accuracy": (n - int(white_box.sum())) / n,
        "trivially_broken": int(trivial.sum()),
        "missed": missed,
        "robust_accuracy": standing / n,
    }
    if missed:
        return _check(
            False,
            f"at eps 0.5 (reaches the grey image) PGD-{config.base_steps} with {names} leaves "
            f"{missed}/{n} samples standing that a gradient-free candidate (grey image or an "
            "other-class image) fools: its gradients carry no signal here (a surrogate whose "
            "width does not fit the layer's membrane scale, or masking); escalate to "
            "adaptive estimators (--escalate, --ensemble reliable)",
            **values,
        )
    return _check(
        True,
        f"at eps 0.5 PGD-{config.base_steps} with {names} breaks every sample that trivial "
        f"candidates break ({int(trivial.sum())}/{n}); robust accuracy there "
        f"{standing / n:.2f}",
        **values,
    )


def check_convergence(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    views: Sequence[tuple[str | None, Callable[[Tensor], Tensor]]],
    config: DiagnosticsConfig,
    seed: int,
) -> dict[str, Any]:
    """A PGD with ``factor`` times the steps (and restarts) must not do much better."""
    n = x.shape[0]
    base = PGD(eps, steps=config.base_steps)
    steps = config.base_steps * config.convergence_factor
    strong = PGD(eps, steps=steps, restarts=config.convergence_restarts)
    base_acc = (n - int(_pgd_broken(model, views, base, x, y, seed, "base").sum())) / n
    strong_acc = (n - int(_pgd_broken(model, views, strong, x, y, seed, "strong").sum())) / n
    drop = base_acc - strong_acc
    # One sample of a small subset is noise: a failure needs more than the threshold and
    # at least two samples.
    limit = max(config.convergence_threshold, 1.5 / n)
    restarts = (
        f" x {config.convergence_restarts} restarts" if config.convergence_restarts > 1 else ""
    )
    text = (
        f"PGD-{config.base_steps} {base_acc:.2f} vs PGD-{steps}{restarts} {strong_acc:.2f} "
        f"on {n} samples"
    )
    values = {"n": n, "base_accuracy": base_acc, "strong_accuracy": strong_acc, "drop": drop}
    if drop > limit + 1e-12:
        return _check(
            False,
            f"{text}: more iterations still lower robust accuracy by {drop:.2f}; the attacks "
            "have not converged, so use more steps/restarts (e.g. apgd-ensemble)",
            **values,
        )
    return _check(True, f"{text}: converged (drop {max(drop, 0.0):.2f})", **values)


def check_transfer(
    model: nn.Module,
    source: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    config: DiagnosticsConfig,
    seed: int,
) -> dict[str, Any]:
    """Adversarial examples crafted on ``source`` must not beat the white-box ensemble.

    A random source (Poisson input coding, noisy thresholds, a wrapped model drawing from
    torch's generator) is crafted on with expectation over its randomness: its gradients
    averaged over K draws, K by the same variance check as the evaluation's
    (:func:`~robustsnn.evaluation.stochastic.resolve_randomness`); one draw per step would make
    the transfer attack a random walk and the check pass by noise."""
    n = x.shape[0]
    if n == 0:
        return _check(
            True,
            "no sample survived the white-box attacks, so a transfer attack cannot beat them",
            n=0,
            broken=0,
        )
    restarts = 3 if config.mode == "full" else 1
    source_randomness = resolve_randomness(source, x, y, seed=seed, eps=eps, device=x.device)
    attack = Transfer(
        source_randomness.view_factory(source, None),
        PGD(eps, steps=config.base_steps, restarts=restarts),
    )
    generator = seeded_generator(seed, x.device, "diagnostics", "transfer")
    x_adv = attack(attack_view(model, None), x, y, generator=generator)
    broken = int((real_predict(model, x_adv) != y).sum())
    values: dict[str, Any] = {"n": n, "broken": broken}
    if source_randomness.detected:  # absent otherwise: a deterministic source's entry is as before
        values["source_random"] = True
        values["source_eot_draws"] = source_randomness.eot_draws
    if broken:
        return _check(
            False,
            f"a transfer attack (PGD-{config.base_steps} on the source model) broke {broken}/{n} "
            "samples the white-box ensemble could not: the white-box gradients are weaker than "
            "a surrogate model's; add ann-proxy/bptr members or transfer attacks to the ensemble",
            **values,
        )
    return _check(
        True, f"transfer attack from the source model broke none of {n} robust samples", **values
    )


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class DiagnosticsRun:
    """How the checks run, beside what they check (:class:`DiagnosticsConfig`): the seed of
    their attacks' generators, a model to craft transfer attacks on, the view factory an attack
    runs on, the device the checked subsets move to, and a callback named with each check."""

    seed: int = 0
    transfer_source: nn.Module | None = None
    view_factory: ViewFactory = attack_view
    device: torch.device | str = "cpu"
    progress: Callable[[str], None] | None = None


def run_diagnostics(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    clean_correct: Tensor,
    robust: Tensor | None,
    *,
    eps: float,
    members: Sequence[Member],
    config: DiagnosticsConfig,
    run: DiagnosticsRun | None = None,
    **old: Any,
) -> dict[str, dict[str, Any]]:
    """Run every applicable check; ``robust`` is None when no attack ran (clean only).

    Args:
        x, y: the evaluated samples and labels (any device; subsets move to ``run.device``).
        clean_correct, robust: per-sample bool outcomes of the main evaluation.
        members: the members that ran (white-box ones decide which estimators are checked).
        run: the seed, transfer source, view factory, device and progress callback
            (:class:`DiagnosticsRun`; None: the defaults).
        old: those as keywords (``seed=..., device=...``), deprecated.
    """
    if old:
        if run is not None:
            raise TypeError(
                "run_diagnostics() takes a DiagnosticsRun or the old keywords, not both"
            )
        run = DiagnosticsRun(**old)
        warnings.warn(
            "run_diagnostics(..., seed=..., device=..., ...) is deprecated and goes in the next "
            "release; call run_diagnostics(..., run=DiagnosticsRun(seed=..., device=..., ...))",
            DeprecationWarning,
            stacklevel=2,
        )
    run = run if run is not None else DiagnosticsRun()
    seed, transfer_source, view_factory = run.seed, run.transfer_source, run.view_factory
    device, progress = run.device, run.progress
    if config.mode == "none":
        return {}
    snn = is_snn(model)

    def subset(mask: Tensor) -> tuple[Tensor, Tensor]:
        idx = mask.cpu().nonzero().squeeze(1)[: config.n]
        return x[idx.to(x.device)].to(device), y[idx.to(y.device)].to(device)

    xc, yc = subset(clean_correct)
    results: dict[str, dict[str, Any]] = {}

    def timed(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        results[name] = fn()
        results[name]["seconds"] = time.perf_counter() - start

    if xc.shape[0] == 0:
        for name in CHECKS[:5]:
            results[name] = _skipped("no clean-correct sample to check on")
        return results

    # Estimators whose gradients are checked: the ensemble's primary one first (the default
    # BPTT(PCW, 1) for the paper's ensembles), then those the ensemble uses.
    if snn:
        grad_estimators: list[str | None] = [config.pgd_estimators(members)[0]]
        wanted = estimator_names() if config.mode == "full" else []
        wanted += [m.estimator for m in members if m.estimator and not m.black_box]
        # a race's candidates (attacks/race.py) are estimators the ensemble uses too, as far
        # as the model can run them (a wrapped model cannot run HART)
        unsupported = getattr(model, "unsupported_estimator", None)
        wanted += [
            str(e)
            for m in members
            for e in m.params.get("estimators", ())
            if unsupported is None or not unsupported(parse_estimator(str(e)))
        ]
        for name in wanted:
            if name not in grad_estimators:
                grad_estimators.append(name)
        pgd_estimators: list[str | None] = list(config.pgd_estimators(members))
    else:
        grad_estimators = [None]
        pgd_estimators = [None]
    views = [(e, view_factory(model, e)) for e in pgd_estimators]

    timed(
        "finite_gradients",
        lambda: check_finite_gradients(model, xc, yc, grad_estimators, config, view_factory),
    )
    white_box = [m for m in members if not m.black_box]
    if robust is None or not white_box:
        why = "no white-box attack ran" if robust is not None else "no attack ran"
        results["black_box_vs_white_box"] = _skipped(why)
    else:
        xr, yr = subset(robust)
        timed("black_box_vs_white_box", lambda: check_black_box(model, xr, yr, eps, config, seed))
    timed("eps_monotonic", lambda: check_eps_monotonic(model, xc, yc, eps, views, config, seed))
    timed("trivial_radius", lambda: check_trivial_radius(model, xc, yc, views, config, seed))
    if eps <= 0:
        results["convergence"] = _skipped("eps is 0")
    else:
        timed("convergence", lambda: check_convergence(model, xc, yc, eps, views, config, seed))
    if transfer_source is not None:
        if robust is None or not white_box:
            results["transfer_vs_white_box"] = _skipped("no white-box attack ran")
        else:
            xr, yr = subset(robust)
            source = transfer_source
            timed(
                "transfer_vs_white_box",
                lambda: check_transfer(model, source, xr, yr, eps, config, seed),
            )
    return results
