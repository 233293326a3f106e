"""Base class and shared helpers of every L-inf attack.

Threat model: L-inf ball of radius ``eps`` around ``x``, intersected with the pixel box [0, 1].
``model`` is any callable ``x [N, ...] -> logits [N, K]``; spiking specifics reach an attack only
as a gradient estimator wrapped around the model (DESIGN.md section 3). Attacks never change the
model's train/eval mode and never touch parameter ``.grad``: gradients are taken with
``torch.autograd.grad`` with respect to the input only. All randomness goes through a
``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from robustsnn.errors import UserError

Model = Callable[[Tensor], Tensor]
"""Any callable mapping a batch of images in [0, 1] to logits ``[N, K]``."""

DEFAULT_SEED = 0
_RANGE_TOLERANCE = 1e-5


class Attack:
    """An L-inf attack in pixel space; ``attack(model, x, y)`` returns ``x_adv``.

    Subclasses implement :meth:`perturb`; :meth:`__call__` validates the inputs, creates a
    default seeded generator when none is given and projects the result onto the eps-ball
    intersected with [0, 1], so every attack's output is valid whatever ``perturb`` does.

    Args:
        eps: radius of the L-inf ball, in pixel units (``8/255`` for the paper's headline).
    """

    name: str = "attack"
    #: Whether ``__call__`` accepts explicit ``target`` labels (targeted attacks).
    supports_target: bool = False
    #: Whether ``__call__`` accepts a ``start`` point (attacks that can begin from a given
    #: point in the eps-ball, e.g. the closest call other attacks found).
    supports_start: bool = False
    #: The validated start point of the current call (None: the attack's own start).
    given_start: Tensor | None = None

    @property
    def wants_start(self) -> bool:
        """Whether this attack, as configured, needs a start point on every call (the
        evaluation then hands it each sample's closest call)."""
        return False

    #: Attributes that :meth:`params` reports, in order (the constructor parameters).
    param_names: tuple[str, ...] = ("eps",)

    def __init__(self, eps: float) -> None:
        self.eps = check_eps(eps)

    def __call__(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        target: Tensor | None = None,
        start: Tensor | None = None,
    ) -> Tensor:
        """Attack ``model`` at ``(x, y)``.

        Args:
            model: callable ``x -> logits [N, K]``; its mode and parameters are left as they are.
            x: clean images ``[N, C, H, W]`` (or ``[N, D]``), float in [0, 1].
            y: true labels ``[N]``, int64.
            generator: source of all randomness; a generator seeded with 0 when None.
            target: optional target labels ``[N]`` for attacks with ``supports_target``.
            start: optional start points (shape of ``x``) for attacks with ``supports_start``;
                projected onto the eps-ball around ``x`` and [0, 1] first.

        Returns:
            ``x_adv`` with the shape of ``x``, within ``eps`` of ``x`` (L-inf) and in [0, 1].
        """
        x, y = check_inputs(x, y)
        if target is not None:
            if not self.supports_target:
                raise UserError(
                    f"attack {self.name!r} does not take target labels; use a targeted attack "
                    "(e.g. 'pgd' or 'fgsm') or leave target out"
                )
            target = check_labels(target, x.shape[0], "target").to(x.device)
        if start is not None:
            if not self.supports_start:
                raise UserError(
                    f"attack {self.name!r} does not take a start point; use 'sapgd' with "
                    "init='given' or leave start out"
                )
            if start.shape != x.shape:
                raise UserError(
                    f"start points have shape {tuple(start.shape)}, the images "
                    f"{tuple(x.shape)}: give one start point per image"
                )
            start = project(start.detach().to(x.device, x.dtype), x, self.eps)
        if generator is None:
            generator = default_generator(x.device)
        if x.shape[0] == 0:
            return x.clone()
        begin_run(model, x.shape[0])
        self.given_start = start
        try:
            x_adv = self.perturb(model, x, y, generator, target).detach()
        finally:
            self.given_start = None
        # a non-finite point is never an adversarial example (a NaN image is "misclassified"
        # by any argmax): fall back to the clean image there
        x_adv = torch.where(torch.isfinite(x_adv), x_adv, x)
        return project(x_adv, x, self.eps)

    def perturb(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        target: Tensor | None,
    ) -> Tensor:
        """Return adversarial examples; inputs are already validated and detached."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Constructor parameters (for logs and ``repr``)."""
        return {name: getattr(self, name) for name in self.param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------- validation


def check_eps(eps: float) -> float:
    """Validate an L-inf radius in pixel units."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise UserError(f"eps must be a number in pixel units (e.g. 8/255), got {eps!r}") from None
    if not math.isfinite(value) or value < 0 or value > 1:
        raise UserError(f"eps must be in [0, 1] pixel units (e.g. 8/255 = 0.0314), got {eps!r}")
    return value


def check_positive_int(value: int, what: str, minimum: int = 1) -> int:
    """Validate an integer parameter such as a number of steps."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fraction(value: float, what: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """Validate a float parameter within ``[low, high]``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number in [{low}, {high}], got {value!r}") from None
    if not (low <= v <= high):
        raise UserError(f"{what} must be in [{low}, {high}], got {value!r}")
    return v


def check_choice(value: Any, what: str, choices: tuple[Any, ...]) -> Any:
    """Validate that ``value`` is one of ``choices``."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise UserError(f"{what} must be one of {valid}, got {value!r}")
    return value


def check_labels(labels: Tensor, n: int, what: str = "y") -> Tensor:
    """Validate integer labels of shape ``[n]``."""
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != n:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise UserError(f"attack {what} must be a 1-d label tensor of length {n}, got {shape}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UserError(f"attack {what} must hold integer class labels, got dtype {labels.dtype}")
    return labels.detach().long()


def check_inputs(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate images in [0, 1] and labels; return detached copies of both."""
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        raise UserError("attack input x must be a float tensor [N, ...] of images in [0, 1]")
    y = check_labels(y, x.shape[0]).to(x.device)
    x = x.detach()
    if x.numel() and (x.min() < -_RANGE_TOLERANCE or x.max() > 1 + _RANGE_TOLERANCE):
        raise UserError(
            "attack input x must be images in [0, 1] pixel space; normalization belongs inside "
            "the model (its first layer), not in the data"
        )
    return x.clamp(0.0, 1.0), y


# --------------------------------------------------------------------------- geometry


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto the L-inf ball of radius ``eps`` around ``x`` intersected with [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def signed_step(
    x_adv: Tensor, grad: Tensor, step_size: float | Tensor, x: Tensor, eps: float
) -> Tensor:
    """One L-inf ascent step: ``x_adv + step_size * sign(grad)``, projected onto the eps-ball
    around ``x`` intersected with [0, 1] (the update of FGSM and of every PGD; ``step_size``
    may be per sample, shaped to broadcast against ``x_adv``)."""
    return project(x_adv + step_size * grad.sign(), x, eps)


def default_step_size(eps: float, steps: int) -> float:
    """The default PGD step in pixels: ``2.5 * eps / steps``.

    The rule of thumb of Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks" (ICLR 2018): ``steps`` signed steps then travel ``2.5 eps`` in all, more than the
    ball's diameter, so an iterate can reach the boundary of the eps-ball from any start in it
    and still move along it. The one place the rule is written: the evaluation's PGD, the
    training adversaries and the training objectives all take their default from here.
    """
    return 2.5 * eps / steps


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample ``values [N]`` to broadcast against ``like [N, ...]``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def linf_norm(delta: Tensor) -> Tensor:
    """Per-sample L-inf norm ``[N]`` of ``delta [N, ...]``."""
    return delta.flatten(1).abs().amax(1)


# --------------------------------------------------------------------------- randomness


def default_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with :data:`DEFAULT_SEED` (used when the caller gives none)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(DEFAULT_SEED)
    return generator


def _draw_device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    """Where a draw happens: on the generator's device (a CPU generator also serves a GPU
    model), or on ``like``'s device for the global generator (``generator=None``)."""
    return generator.device if generator is not None else like.device


def uniform(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """Uniform noise in [-1, 1) on ``like``'s device and dtype, drawn from ``generator``
    (None: the global generator of ``like``'s device)."""
    noise = torch.rand(shape, generator=generator, device=_draw_device(generator, like))
    return (2 * noise - 1).to(device=like.device, dtype=like.dtype)


def normal(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """Standard normal noise on ``like``'s device and dtype, drawn from ``generator``
    (None: the global generator of ``like``'s device)."""
    noise = torch.randn(shape, generator=generator, device=_draw_device(generator, like))
    return noise.to(device=like.device, dtype=like.dtype)


def random_sign(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator, like: Tensor
) -> Tensor:
    """Random signs in {-1, +1} on ``like``'s device and dtype, drawn from ``generator``."""
    bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
    return (2 * bits - 1).to(device=like.device, dtype=like.dtype)


def unit_linf_noise(x: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform noise shaped like ``x``, each sample scaled to L-inf norm 1."""
    noise = uniform(x.shape, generator, x)
    return noise / per_sample(linf_norm(noise).clamp_min(1e-12), noise)


def random_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """A uniformly random point of the eps-ball around ``x`` (clipped to [0, 1]); ``generator``
    None draws from the global generator."""
    return project(x + eps * uniform(x.shape, generator, x), x, eps)


def random_int(high: Tensor | int, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """``n`` integers uniform in ``[0, high)`` (``high`` >= 1, scalar or per-sample)."""
    u = torch.rand(n, generator=generator, device=generator.device).to(like.device)
    high_t = torch.as_tensor(high, device=like.device)
    return torch.minimum((u * high_t).long(), high_t - 1)


# --------------------------------------------------------------------------- model access


def begin_run(model: Model, n: int) -> None:
    """Tell a stateful model that a new attack run on ``n`` samples starts.

    Some gradient estimators keep state over the iterations of one attack run (ASSG's running
    moments of the membranes). A model exposing ``begin_attack_run(n)`` gets this call at the
    start of every attack call and of every restart, so that state never crosses batches or
    restarts; any other callable is left alone (the hook is duck-typed: attacks know nothing
    of spikes).
    """
    hook = getattr(model, "begin_attack_run", None)
    if callable(hook):
        hook(int(n))


def select_rows(model: Model, rows: Tensor | None) -> None:
    """Tell a stateful model which rows of the current run the next forward pass covers.

    Attacks that stop querying fooled samples pass the surviving rows (positions in the batch
    given to :func:`begin_run`), so per-sample state follows its sample; None = all rows.
    """
    hook = getattr(model, "select_attack_rows", None)
    if callable(hook):
        hook(rows)


def logits_of(model: Model, x: Tensor) -> Tensor:
    """Call the model and check that it returns logits ``[N, K]``."""
    logits = model(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise UserError(
            f"attacks need a model returning logits [N, K] for N inputs; got {got} for "
            f"N = {x.shape[0]}"
        )
    return logits


@torch.no_grad()
def predict_logits(model: Model, x: Tensor) -> Tensor:
    """Logits without building a graph."""
    return logits_of(model, x).detach()


LossOfLogits = Callable[[Tensor], Tensor]


def loss_and_grad(
    model: Model, x: Tensor, loss_fn: LossOfLogits, rows: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample loss, logits and the loss gradient with respect to the input only.

    Uses ``torch.autograd.grad`` so parameter ``.grad`` fields are never written. An input the
    logits do not depend on gets a zero gradient. ``rows``: which rows of the current attack
    run ``x`` holds (see :func:`select_rows`; None = the whole run, in order).

    Returns:
        ``(logits [N, K], loss [N], grad [N, ...])``, all detached.
    """
    if torch.is_inference_mode_enabled():
        raise UserError(
            "gradient attacks cannot run inside torch.inference_mode(); call them outside"
        )
    select_rows(model, rows)
    with torch.enable_grad():
        x_leaf = x.detach().requires_grad_(True)
        logits = logits_of(model, x_leaf)
        loss = loss_fn(logits)
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), [x_leaf], allow_unused=True)
        else:
            grad = None
    if grad is None:
        grad = torch.zeros_like(x)
    grad = finite_gradient(grad.detach())
    return logits.detach(), loss.detach(), grad


def finite_gradient(grad: Tensor) -> Tensor:
    """``grad`` with every sample made finite.

    Sharp surrogates (ASSG at a near-threshold membrane, narrow fixed widths) multiply large
    factors across layers and can overflow float32 to inf, and inf - inf to NaN. A sample with
    a non-finite entry keeps the direction of its infinite entries (their sign, the limit of
    the overflowing gradient) and loses its NaN and finite entries; other samples are
    untouched. Without this a NaN step produces a NaN image, which any argmax misclassifies.
    """
    finite = torch.isfinite(grad)
    if bool(finite.all()):
        return grad
    bad = ~finite.flatten(1).all(1)
    limit = torch.where(torch.isinf(grad), torch.sign(grad), torch.zeros_like(grad))
    return torch.where(per_sample(bad, grad), limit, grad)


def is_success(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Untargeted: prediction differs from ``y``; targeted: prediction equals ``target``."""
    pred = logits.argmax(1)
    return pred != y if target is None else pred == target


# --------------------------------------------------------------------------- bookkeeping


class WorstCase:
    """Per-sample worst case found so far: the first successful point, else the highest loss.

    ``done`` marks samples whose adversarial example succeeded; they are frozen and are not
    attacked again (early exit). Indices passed to :meth:`update` are global batch indices.
    """

    def __init__(self, x: Tensor, done: Tensor) -> None:
        self.x = x.clone()
        self.loss = torch.full((x.shape[0],), -math.inf, device=x.device)
        self.done = done.clone()

    def update(self, idx: Tensor, x_cand: Tensor, loss: Tensor, success: Tensor) -> None:
        """Record candidates ``x_cand`` (for samples ``idx``) that succeed or raise the loss."""
        open_ = ~self.done[idx]
        better = open_ & (success | (loss > self.loss[idx]))
        chosen = idx[better]
        self.x[chosen] = x_cand[better]
        self.loss[chosen] = loss[better].to(self.loss.dtype)
        self.done[idx[open_ & success]] = True

    def remaining(self) -> Tensor:
        """Global indices of samples not yet fooled."""
        return (~self.done).nonzero().squeeze(1)


TARGET_MODES = ("least-likely", "random")


def runner_up_classes(logits: Tensor, n: int) -> list[Tensor]:
    """Labels ``[N]`` of the classes with the 2nd, 3rd, ... highest logit (at most ``n``, K - 1)."""
    ranking = logits.argsort(1, descending=True)
    return [ranking[:, rank] for rank in range(1, min(n, logits.shape[1] - 1) + 1)]


def resolve_target(
    mode: str | None,
    model: Model,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    generator: torch.Generator,
) -> Tensor | None:
    """Explicit ``target`` labels if given, else labels chosen by ``mode`` from the clean
    logits (:func:`choose_target`), else None (untargeted)."""
    if target is None and mode is not None:
        with torch.no_grad():
            clean = model(x)
        target = choose_target(mode, clean, y, generator)
    return target


def choose_target(mode: str, logits: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
    """Target labels for a targeted attack.

    ``"least-likely"``: the class with the lowest clean logit (Kurakin et al. 2017);
    ``"random"``: a class other than ``y``, uniformly at random.
    """
    if mode == "least-likely":
        return logits.argmin(1)
    if mode == "random":
        k = logits.shape[1]
        if k < 2:
            raise UserError("a random target needs a model with at least 2 classes")
        offset = 1 + random_int(k - 1, y.shape[0], generator, y)
        return (y + offset) % k
    valid = ", ".join(TARGET_MODES)
    raise UserError(f"unknown target mode {mode!r}; valid: {valid} (or pass target labels)")
