"""Random models evaluated honestly: detection, expectation over randomness, majority votes.

A model whose forward pass is random (Poisson/Bernoulli input coding, noisy thresholds,
stochastic firing, a wrapped model calling ``torch.bernoulli``) fools an evaluation that treats
one forward pass as the model: a single draw's gradient can point anywhere (Athalye, Carlini &
Wagner 2018, "Obfuscated gradients"), a single draw's prediction is a coin flip, and the masking
checks compare noise with noise. :func:`resolve_randomness` (called by
:func:`robustsnn.evaluation.evaluate.evaluate`) does what the literature asks instead:

- **detection**: two real forward passes on the same few inputs, under two different seeds of
  torch's global generator; if they differ, the model is random;
- **attacks see the expectation** (EOT): the view an attack runs on returns the mean of the
  logits of K forward passes, so its gradient is the mean of K draws' gradients. K is chosen by
  a variance check on a few samples: doubled until the cosine between two independent K-draw
  mean gradients reaches ``cosine`` (capped at ``max_draws``), not a constant;
- **predictions by majority**: a sample counts as correctly classified when a strict majority
  of M draws give its label; an adversarial example is a break only when it is misclassified
  on more than half of M draws (records carry the counts, a break the Wilson interval of its
  misclassification probability). Clean accuracy is the same majority;
- **verdicts on draws no search saw**: the majority that decides which examples a member broke
  (the *screen*, :func:`~robustsnn.evaluation.views.real_predict`) is part of the search: the
  ensemble keeps the first example it calls wrong. Each example the screen calls broken is
  then confirmed by the *verdict*: M draws of a seed stream of its own that no attack, check
  or screen draws from (:func:`~robustsnn.evaluation.views.real_verdict`); only a confirmed
  example is a break, and its record's counts are the verdict's. The clean prediction is the
  verdict stream's too. (Seeds reused by the search would count examples that merely won
  their own draws);
- **the checks learn the same**: inside the evaluation, every check's attack sees the EOT view
  and every verdict is the majority vote; a random model evaluated without this handling
  (``mode="off"``) fails the ``randomness`` check;
- **repeatable**: torch's global generator (CPU, and the model's CUDA device) is seeded from the
  evaluation seed, the seed stream (attack views, screen, verdict: :data:`SCREEN`,
  :data:`VERDICT`) and a digest of the input around every forward pass, and the caller's
  generator state is restored after, so two runs with one seed give identical records even for
  a model that draws from the global generator. A model with a private generator is detected
  and handled, but its draws are its own.

A model found deterministic is evaluated exactly as before: the views and predictions are the
plain ones, and the detection's forward passes leave no trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from robustsnn.attacks import Model, margin
from robustsnn.errors import UserError
from robustsnn.evaluation.intervals import wilson_interval
from robustsnn.evaluation.views import (
    ViewFactory,
    attack_view,
    derive_seed,
    eval_mode,
    randomness_scope,
    real_predict,
    seeded_generator,
    tensor_digest,
)
from robustsnn.snn import DEFAULT_ESTIMATOR, SpikingNetwork

RANDOMNESS_MODES = ("auto", "off", "force")
CHECK_NAME = "randomness"

# The seed streams of a random model's forward passes. Every stream seeds torch's global
# generator from (evaluation seed, stream labels, digest of the input batch), so two streams
# never share draws and each repeats for one evaluation seed:
#   "eot"      the attack views (EOTView): what every attack, and every check's attack, sees;
#   SCREEN     real_predict's majority votes: the ensemble's success test (which samples a
#              member broke, early exit, the example kept), the checks' verdicts; searches
#              may select on these draws;
#   VERDICT    the final verdicts of the records only (real_verdict): the clean prediction and
#              the confirmation of every example the screen calls broken. Nothing else draws
#              from it, so a break's verdict is independent of every draw that selected it.
SCREEN = "predict"
VERDICT = "verdict"


@dataclass(frozen=True)
class StochasticConfig:
    """How an evaluation treats a random model.

    Args:
        mode: "auto" (detect; handle a random model with EOT and majority votes), "off"
            (detect only: a random model is attacked and judged by single draws, and the
            ``randomness`` check fails) or "force" (handle as random even if the detection
            saw no difference).
        prediction_draws: M, draws per prediction (odd, so a majority is never a tie).
        eot_draws: K, draws per gradient; None: chosen by the variance check.
        min_draws, max_draws: range of the variance check's K (doubled from ``min_draws``).
        cosine: the check stops at the first K whose two independent K-draw mean gradients
            have a mean cosine of at least this.
        check_samples: samples the variance check and the detection run on.
    """

    mode: str = "auto"
    prediction_draws: int = 15
    eot_draws: int | None = None
    min_draws: int = 1
    max_draws: int = 32
    cosine: float = 0.9
    check_samples: int = 8

    def __post_init__(self) -> None:
        # YAML reads an unquoted `off` as False (and `on` as True): take them as meant
        aliases = {"false": "off", "no": "off", "true": "auto", "on": "auto"}
        text = str(self.mode).strip().lower()
        object.__setattr__(self, "mode", aliases.get(text, text))
        if self.mode not in RANDOMNESS_MODES:
            raise UserError(
                f"randomness mode must be one of {', '.join(RANDOMNESS_MODES)}, got {self.mode!r}"
            )
        for name in ("prediction_draws", "min_draws", "max_draws", "check_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"randomness {name} must be a positive integer, got {value!r}")
        if self.prediction_draws % 2 == 0:
            raise UserError(
                f"randomness prediction_draws must be odd (a majority without ties), got "
                f"{self.prediction_draws}"
            )
        if self.eot_draws is not None and (
            isinstance(self.eot_draws, bool)
            or not isinstance(self.eot_draws, int)
            or self.eot_draws < 1
        ):
            raise UserError(
                f"randomness eot_draws must be a positive integer, got {self.eot_draws!r}"
            )
        if self.min_draws > self.max_draws:
            raise UserError("randomness min_draws must not exceed max_draws")
        if not 0.0 < self.cosine < 1.0:
            raise UserError(f"randomness cosine must be in (0, 1), got {self.cosine!r}")

    @classmethod
    def resolve(cls, value: StochasticConfig | str | Mapping[str, Any] | None) -> StochasticConfig:
        """A config from itself, a mode name, a dict of fields or None (the default)."""
        if value is None:
            return cls()
        if isinstance(value, StochasticConfig):
            return value
        if isinstance(value, str):
            return cls(mode=value)
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise UserError(
                    f"unknown randomness option(s) {', '.join(unknown)}; valid: "
                    f"{', '.join(cls.__dataclass_fields__)}"
                )
            return cls(**dict(value))
        raise UserError(f"randomness must be a mode name or a StochasticConfig, got {value!r}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- seeding


@contextmanager
def seeded_global_rng(seed: int, device: torch.device | str) -> Iterator[None]:
    """Seed torch's global generator (CPU, and ``device``'s if it is a CUDA device) inside the
    block and restore the caller's state after, so a model drawing from it repeats."""
    device = torch.device(device)
    cpu_state = torch.get_rng_state()
    cuda_index: int | None = None
    cuda_state: Tensor | None = None
    if device.type == "cuda":
        cuda_index = device.index if device.index is not None else torch.cuda.current_device()
        cuda_state = torch.cuda.get_rng_state(cuda_index)
        with torch.cuda.device(cuda_index):
            torch.cuda.manual_seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None and cuda_index is not None:
            torch.cuda.set_rng_state(cuda_state, cuda_index)


def _input_seed(seed: int, x: Tensor, *parts: object) -> int:
    """A seed from the evaluation seed, labels and the input's values: the same input draws
    the same numbers in any batch order, process or resumed run."""
    return derive_seed(seed, *parts, tensor_digest(x))


def _real_logits(model: nn.Module, x: Tensor) -> Tensor:
    """The model's real forward pass (default estimator for an SNN)."""
    if isinstance(model, SpikingNetwork):
        with model.use_estimator(DEFAULT_ESTIMATOR):
            return model(x)
    return model(x)


# --------------------------------------------------------------------------- EOT view


class EOTView:
    """``x -> mean logits over K draws`` of an attack view: gradients averaged over K draws.

    Every call seeds the global generator from (seed, estimator, salt, digest of ``x``), so an
    attack on it repeats; the caller's generator state is restored after. An SNN estimator's
    attack-run hooks (``begin_attack_run``, ``select_attack_rows``) reach the wrapped view.
    """

    def __init__(
        self, base: Model, draws: int, seed: int, estimator: str | None, salt: object = "attack"
    ) -> None:
        self.base = base
        self.draws = int(draws)
        self.seed = int(seed)
        self.estimator = estimator
        self.salt = salt

    def __call__(self, x: Tensor) -> Tensor:
        seed = _input_seed(self.seed, x, "eot", self.estimator, self.salt)
        with seeded_global_rng(seed, x.device):
            total = self.base(x)
            for _ in range(self.draws - 1):
                total = total + self.base(x)
        return total / self.draws

    def begin_attack_run(self, n: int | None = None) -> None:
        hook = getattr(self.base, "begin_attack_run", None)
        if hook is not None:
            hook(n)

    def select_attack_rows(self, rows: Tensor | None) -> None:
        hook = getattr(self.base, "select_attack_rows", None)
        if hook is not None:
            hook(rows)


# --------------------------------------------------------------------------- detection, K


@torch.no_grad()
def detect_randomness(model: nn.Module, x: Tensor, seed: int) -> tuple[bool, float]:
    """Whether two real forward passes on ``x`` under two seeds differ; the largest difference.

    Differences below ``1e-5`` relative (float rounding of nondeterministic kernels) are not
    randomness."""
    outputs = []
    for draw in range(2):
        with seeded_global_rng(derive_seed(seed, "randomness", "detect", draw), x.device):
            outputs.append(_real_logits(model, x).float())
    difference = float((outputs[0] - outputs[1]).abs().max()) if outputs[0].numel() else 0.0
    differs = not torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    return differs, difference


def _mean_gradient(view: Model, x: Tensor, y: Tensor) -> Tensor:
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        loss = margin(view(leaf), y).sum()
        if not loss.requires_grad:
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(loss, [leaf], allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


def gradient_agreement(
    base: Model, x: Tensor, y: Tensor, draws: int, seed: int, estimator: str | None
) -> float:
    """Mean cosine, over samples, between two independent ``draws``-draw mean input gradients
    of the margin loss (1 where both are zero: nothing to average)."""
    views = [EOTView(base, draws, seed, estimator, ("check", draws, rep)) for rep in range(2)]
    grads = [_mean_gradient(view, x, y).flatten(1) for view in views]
    norms = grads[0].norm(dim=1) * grads[1].norm(dim=1)
    dot = (grads[0] * grads[1]).sum(1)
    cosine = torch.where(norms > 0, dot / norms.clamp(min=1e-30), torch.ones_like(dot))
    return float(cosine.mean())


def choose_eot_draws(
    base: Model,
    x: Tensor,
    y: Tensor,
    config: StochasticConfig,
    seed: int,
    estimator: str | None,
) -> tuple[int, dict[str, float]]:
    """K: doubled from ``min_draws`` until two independent K-draw mean gradients agree
    (cosine >= ``config.cosine``), at most ``max_draws``; also the cosine seen at each K."""
    cosines: dict[str, float] = {}
    draws = config.min_draws
    while True:
        cosines[str(draws)] = gradient_agreement(base, x, y, draws, seed, estimator)
        if cosines[str(draws)] >= config.cosine or draws >= config.max_draws:
            return draws, cosines
        draws = min(config.max_draws, draws * 2)


# --------------------------------------------------------------------------- the handler


@dataclass
class Randomness:
    """How one evaluation treats its model: found random or not, K and M, and the views.

    ``active`` means attacks see :class:`EOTView` and verdicts are majority votes (inside
    :meth:`scope`); an inactive instance changes nothing.
    """

    model: nn.Module
    config: StochasticConfig
    seed: int
    detected: bool
    active: bool
    eot_draws: int = 1
    prediction_draws: int = 1
    base_factory: ViewFactory = attack_view
    difference: float = 0.0
    primary: str | None = None
    draws: dict[str, int] = field(default_factory=dict)
    cosines: dict[str, dict[str, float]] = field(default_factory=dict)
    check_x: Tensor | None = field(default=None, repr=False)
    check_y: Tensor | None = field(default=None, repr=False)
    fallback_draws: int = 1
    _votes: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def draws_for(self, estimator: str | None) -> int:
        """K for ``estimator``'s gradients: the configured K, else the variance check on the
        check samples (run once per estimator: a wide surrogate averages the draws' noise out
        where a narrow one does not), else (no samples to check on) ``fallback_draws``."""
        label = _label(estimator)
        if label not in self.draws:
            if estimator is None and self.primary is not None:
                # an SNN's plain view serves gradient-free attacks (Square): the K of the
                # ensemble's lead estimator, not a check of a gradient nobody follows
                self.draws[label] = self.draws_for(self.primary)
            elif self.config.eot_draws is not None:
                self.draws[label] = self.config.eot_draws
            elif self.check_x is None or self.check_y is None:
                self.draws[label] = self.fallback_draws
            else:
                with eval_mode(self.model), randomness_scope(None):
                    base = self.base_factory(self.model, estimator)
                    draws, cosines = choose_eot_draws(
                        base, self.check_x, self.check_y, self.config, self.seed, estimator
                    )
                self.draws[label], self.cosines[label] = draws, cosines
        return self.draws[label]

    # -- RandomnessHandler protocol (views.py)

    def handles(self, model: nn.Module) -> bool:
        return self.active and model is self.model

    def view_factory(self, model: nn.Module, estimator: str | None) -> Model:
        """The base view of ``model`` through ``estimator``, wrapped in EOT when active."""
        with randomness_scope(None):
            base = self.base_factory(model, estimator)
        if not self.handles(model):
            return base
        return EOTView(base, self.draws_for(estimator), self.seed, estimator)

    @torch.no_grad()
    def votes(self, x: Tensor, stream: str = SCREEN) -> Tensor:
        """Labels of M draws ``[N, M]`` of one seed stream (:data:`SCREEN` or :data:`VERDICT`),
        seeded by the stream and the input; the last few cached."""
        if stream not in (SCREEN, VERDICT):
            raise ValueError(f"unknown seed stream {stream!r}")
        digest = tensor_digest(x)
        key = f"{stream}:{digest}"
        cached = self._votes.get(key)
        if cached is not None:
            return cached
        seed = derive_seed(self.seed, "randomness", stream, digest)
        with randomness_scope(None), seeded_global_rng(seed, x.device):
            draws = [real_predict(self.model, x) for _ in range(self.prediction_draws)]
        result = (
            torch.stack(draws, 1)
            if draws and x.shape[0]
            else torch.zeros(x.shape[0], self.prediction_draws, dtype=torch.long, device=x.device)
        )
        if len(self._votes) >= 8:
            self._votes.pop(next(iter(self._votes)))
        self._votes[key] = result
        return result

    def predict(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """The label of a strict majority of M screen draws, -1 where no label has one."""
        chunks = [x] if not batch_size or x.shape[0] <= batch_size else list(x.split(batch_size))
        labels = [_majority(self.votes(chunk)) for chunk in chunks]
        return torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=x.device)

    def verdict(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]:
        """The final verdict on ``x`` from M draws of the verdict stream (which nothing else
        draws from): per sample the majority label (-1: none), the number of draws that
        misclassify ``x``, and M."""
        votes = self.votes(x, VERDICT)
        wrong = (votes != y.to(votes.device).unsqueeze(1)).sum(1)
        return _majority(votes), wrong, self.prediction_draws

    # -- the evaluation's use

    def scope(self) -> AbstractContextManager[None]:
        """The block in which :func:`~robustsnn.evaluation.views.attack_view` and
        :func:`~robustsnn.evaluation.views.real_predict` handle the model's randomness."""
        return randomness_scope(self) if self.active else nullcontext()

    def fingerprint(self) -> dict[str, Any] | None:
        """Part of the resume key when active (None: a deterministic evaluation, key unchanged)."""
        if not self.active:
            return None
        cfg = self.config
        return {
            "prediction_draws": self.prediction_draws,
            "eot_draws": cfg.eot_draws if cfg.eot_draws is not None else "variance check",
            "check": [cfg.min_draws, cfg.max_draws, cfg.cosine, cfg.check_samples],
            # batches saved before verdicts had their own seed stream are not resumed
            "streams": [SCREEN, VERDICT],
        }

    def describe(self, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The ``randomness`` entry of evaluation.json."""
        if self.active:
            per = ", ".join(f"{k}: {v}" for k, v in self.draws.items())
            how = (
                f"expectation over randomness: attacks average logits (so gradients) over "
                f"K draws per step ({per}), predictions are the strict majority of "
                f"M = {self.prediction_draws} draws, a break needs a misclassification on "
                "more than half of them: first on the screen's draws (the ensemble's success "
                "test), then on the verdict's, a seed stream no attack, check or screen draws "
                "from"
            )
        elif self.detected:
            how = (
                "random model evaluated by single draws (randomness mode 'off'): attacks and "
                "verdicts see one draw each; robust accuracy is not trustworthy"
            )
        else:
            how = "deterministic: two forward passes under different seeds gave the same logits"
        result: dict[str, Any] = {
            "detected": self.detected,
            "handled": self.active,
            "mode": self.config.mode,
            "eot_draws": self.eot_draws if self.active else 1,
            "prediction_draws": self.prediction_draws if self.active else 1,
            "detection_difference": self.difference,
            "how": how,
            "seeded": "torch's global generator is seeded from the evaluation seed and the "
            "input around every forward pass, and restored after",
        }
        if self.active:
            result["seed_streams"] = {
                "attack": "eot",
                "screen": SCREEN,
                "verdict": VERDICT,
            }
            result["eot_draws_by_estimator"] = dict(self.draws)
        if self.cosines:
            result["eot_draws_check"] = {
                "cosine_at_draws": dict(self.cosines.get(_label(self.primary), {})),
                "by_estimator": {k: dict(v) for k, v in self.cosines.items()},
                "target_cosine": self.config.cosine,
                "max_draws": self.config.max_draws,
                "samples": self.config.check_samples,
            }
        if self.active and records:
            m = self.prediction_draws
            correct = sum(m - int(r.get("clean_wrong_draws", 0)) for r in records)
            total = m * len(records)
            result["clean_accuracy_per_draw"] = correct / total
            result["clean_accuracy_per_draw_ci95"] = list(wilson_interval(correct, total))
        return result

    def check(self) -> dict[str, Any] | None:
        """The ``randomness`` diagnostic for a random model (None for a deterministic one)."""
        if not self.detected and not self.active:
            return None
        if self.active:
            return {
                "passed": True,
                "detail": f"random model attacked with EOT over K draws per gradient (K by "
                f"estimator: {', '.join(f'{k} {v}' for k, v in self.draws.items())}) and "
                f"judged by the majority of {self.prediction_draws} draws",
                "eot_draws": dict(self.draws),
                "prediction_draws": self.prediction_draws,
            }
        return {
            "passed": False,
            "detail": "the model's forward pass is random (two passes on the same input differ "
            f"by up to {self.difference:.3g}) but it was evaluated by single draws: attacks and "
            "checks see noise, and robust accuracy may be inflated; evaluate with expectation "
            "over randomness (randomness mode 'auto')",
            "difference": self.difference,
        }

    def with_check(self, diagnostics: dict[str, Any]) -> dict[str, Any]:
        """``diagnostics`` plus the ``randomness`` check where the model is random."""
        entry = self.check()
        if entry is None:
            return diagnostics
        return {**diagnostics, CHECK_NAME: entry}


def resolve_randomness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    seed: int,
    config: StochasticConfig | str | Mapping[str, Any] | None = None,
    view_factory: ViewFactory = attack_view,
    estimator: str | None = None,
    device: torch.device | str = "cpu",
    eps: float = 0.0,
    attacked: bool = True,
) -> Randomness:
    """Detect whether ``model`` is random (on the first ``check_samples`` of ``x``) and, if it
    is to be handled, choose K by the variance check of ``estimator``'s gradients: on those
    samples and on random corners of their eps-balls (where an attack spends its steps; the
    gradients of a random model are often noisier there than at the clean images).
    ``attacked`` False (clean accuracy only): no attack takes a gradient, so K stays 1 and the
    check is skipped.

    The model is in eval mode during the check; the global generator is left as it was."""
    cfg = StochasticConfig.resolve(config)
    xs = x[: cfg.check_samples].to(device)
    ys = y[: cfg.check_samples].to(device)
    with eval_mode(model):
        detected, difference = detect_randomness(model, xs, seed)
        active = cfg.mode == "force" or (detected and cfg.mode == "auto")
        handler = Randomness(
            model, cfg, int(seed), detected, active, base_factory=view_factory,
            difference=difference,
        )  # fmt: skip
        if not active:
            return handler
        handler.prediction_draws = cfg.prediction_draws
        handler.primary = estimator
        if attacked:
            if eps > 0:
                generator = seeded_generator(seed, "cpu", "randomness", "corners")
                signs = torch.randint(0, 2, xs.shape, generator=generator).to(xs) * 2 - 1
                xs = torch.cat([xs, (xs + eps * signs).clamp(0.0, 1.0)])
                ys = torch.cat([ys, ys])
            handler.check_x, handler.check_y = xs, ys
            handler.eot_draws = handler.draws_for(estimator)
    return handler


def restore_randomness(
    model: nn.Module, described: Mapping[str, Any] | None, seed: int
) -> Randomness:
    """The handler an evaluation used, from its ``randomness`` entry (no detection, no K check):
    for the checks an escalation runs after it."""
    if not described or not described.get("handled"):
        return Randomness(
            model, StochasticConfig(mode="off"), int(seed),
            bool(described and described.get("detected")), False,
            difference=float((described or {}).get("detection_difference", 0.0)),
        )  # fmt: skip
    known = {str(k): int(v) for k, v in (described.get("eot_draws_by_estimator") or {}).items()}
    return Randomness(
        model,
        StochasticConfig(
            mode=str(described.get("mode", "auto")),
            prediction_draws=int(described["prediction_draws"]),
        ),
        int(seed),
        bool(described.get("detected")),
        True,
        eot_draws=int(described["eot_draws"]),
        prediction_draws=int(described["prediction_draws"]),
        draws=known,
        # an estimator the evaluation did not use: the largest K it needed
        fallback_draws=max([int(described["eot_draws"]), *known.values()]),
    )


def step_config(described: Mapping[str, Any] | None, given: Any) -> Any:
    """The randomness option of an escalation step: the model is handled as random with the
    first evaluation's M (its K per estimator comes from the same variance check, on the
    samples the step attacks)."""
    if not described or not described.get("handled"):
        return given
    cfg = StochasticConfig.resolve(given)
    return replace(cfg, mode="force", prediction_draws=int(described["prediction_draws"]))


def _majority(votes: Tensor) -> Tensor:
    """Per row of ``[N, M]`` labels: the label of a strict majority, -1 where none has one."""
    if votes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=votes.device)
    mode = votes.mode(dim=1).values
    count = (votes == mode.unsqueeze(1)).sum(1)
    return torch.where(2 * count > votes.shape[1], mode, torch.full_like(mode, -1))


def _label(estimator: str | None) -> str:
    """The key of an estimator in the K table (``default`` for a model's plain view)."""
    return estimator or "default"


def misclassification_interval(wrong: int, draws: int) -> list[float]:
    """Wilson 95% interval of a misclassification probability from ``wrong`` of ``draws``."""
    return list(wilson_interval(int(wrong), int(draws)))


__all__ = [
    "CHECK_NAME",
    "RANDOMNESS_MODES",
    "EOTView",
    "Randomness",
    "StochasticConfig",
    "choose_eot_draws",
    "detect_randomness",
    "gradient_agreement",
    "misclassification_interval",
    "resolve_randomness",
    "restore_randomness",
    "seeded_global_rng",
    "step_config",
]
