"""Gradient estimators: what the backward pass of a spiking layer computes.

An SNN's forward pass is fixed; adaptive attacks differ in the gradient they follow. An estimator
is a value (DESIGN.md section 3): ``BPTT(Surrogate("pcw", 1.0))``, ``BPTR()``, ``ANNProxy()``,
and the SNN-specific estimators of the attack literature (``../shared/research/attacks.md``):

- ``bptt-<surrogate>``: BPTT with a fixed-width surrogate in absolute membrane units (the paper);
- ``bptt-rel-<surrogate>``: the same family with its width in units of each layer's threshold,
  so a layer whose threshold and incoming weights are rescaled together gets the same gradient;
- ``assg-<family>-<a>``: adaptive-sharpness surrogate (ASSG, arXiv 2512.22522), width from
  running moments of ``|h - theta|`` per layer, step and element over one attack run;
- ``pdsg`` / ``pdsg-pooled``: Gaussian surrogate centred at sigma/2, sigma the running membrane
  std per channel (PDSG, CVPR 2025);
- ``rga``: rate gradient approximation (Bu et al., CVPR 2023);
- ``hart-<gamma>``: temporal path cut and time-averaged input gradient (Hao et al., ICLR 2024);
- a ``-dr`` suffix on any BPTT-type estimator detaches the reset path (snnTorch's default and the
  ASSG authors' code): ``bptt-pcw-1-dr``, ``assg-atan-0.425-dr``.

Estimator names are parsed by the families registered in :data:`ESTIMATOR_FAMILIES` (prefix ->
parser), so a new estimator is one value class and one registry entry.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from robustsnn.errors import UserError
from robustsnn.registry import Registry
from robustsnn.snn.surrogates import Surrogate, paper_surrogates, parse_surrogate

DETACH_SUFFIX = "-dr"


class Estimator:
    """Base class; ``name`` identifies the estimator in ensembles and reports.

    ``stateful`` estimators keep state across the iterations of one attack run (ASSG); the
    attack view creates that state per run (see :class:`robustsnn.snn.run_state.RunState`).
    ``fused`` estimators run through the fused BPTT/BPTR kernels of ``snn/dynamics.py``; the
    others through the per-element backward of ``snn/estimator_backward.py``.
    """

    name: str = "estimator"
    stateful: bool = False

    def __str__(self) -> str:
        return self.name


def _suffix(detach_reset: bool) -> str:
    return DETACH_SUFFIX if detach_reset else ""


@dataclass(frozen=True)
class BPTT(Estimator):
    """Backpropagation through time with a surrogate derivative for the spike function.

    ``detach_reset``: no gradient through the reset (``u = h (1 - stopgrad(s))``), as snnTorch
    and the ASSG reference code do; the membrane carry-over keeps its gradient.
    """

    surrogate: Surrogate = field(default_factory=lambda: Surrogate("pcw", 1.0))
    detach_reset: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"bptt-{self.surrogate.name}{_suffix(self.detach_reset)}"


@dataclass(frozen=True)
class RelativeBPTT(Estimator):
    """BPTT with the surrogate evaluated in units of the layer's threshold.

    The multiplier is ``surrogate.grad((h - theta) / theta) / theta``: for ``pcw-g`` this is the
    triangle of half-width ``g * theta``, still integrating to 1. Rescaling a layer's threshold
    and incoming weights by ``c`` (and the next layer's weights by ``1/c``) leaves the input
    gradient unchanged, which a fixed absolute width does not (the false robustness that
    per-layer calibration of converted SNNs can produce).
    """

    surrogate: Surrogate = field(default_factory=lambda: Surrogate("pcw", 0.5))
    detach_reset: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"bptt-rel-{self.surrogate.name}{_suffix(self.detach_reset)}"


def layer_draw(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (SHA-256: the same on every machine and run, and
    unrelated for keys that differ in one character, which CRC-32 values are not)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class MixedWidthBPTT(Estimator):
    """BPTT through a triangle (PCW) surrogate whose threshold-relative width differs per layer.

    Layer ``l`` gets the width ``low * (high / low) ** u`` in units of its threshold, ``u`` in
    [0, 1) fixed by ``draw`` and the layer's name (:func:`layer_draw`): log-uniform between
    ``low`` and ``high``, one independent value per layer, the same in every pass, run and
    process. Each ``draw`` is another configuration of widths.

    Why (issue 30, docs/RESULTS.md 12k): on a converted MNIST SNN a sample that every uniform
    relative width (0.125-2), every ASSG setting and PDSG left at the same margin was broken by
    the *absolute* width 2, i.e. relative widths 0.55 / 0.63 / 0.26 in its three layers (wide in
    the convolutions, narrow in the classifier): a configuration no uniform width gives. A fixed
    absolute width is not a fix (it is not invariant to rescaling a layer); draws of per-layer
    relative widths are (each layer's width stays in threshold units) and reach such mixes.
    """

    low: float = 0.25
    high: float = 1.0
    draw: int = 0
    detach_reset: bool = False

    def __post_init__(self) -> None:
        if not (0 < self.low <= self.high and math.isfinite(self.high)) or self.draw < 0:
            raise UserError(
                f"bptt-mix: need 0 < low <= high and a draw >= 0, got low {self.low:g}, "
                f"high {self.high:g}, draw {self.draw} (e.g. bptt-mix-0.25-1-3)"
            )

    def width(self, layer: str) -> float:
        """The relative PCW width of ``layer`` under this draw."""
        return self.low * (self.high / self.low) ** layer_draw(f"{self.draw}/{layer}")

    def surrogate(self, layer: str) -> Surrogate:
        """The threshold-relative surrogate ``layer`` runs through."""
        return Surrogate("pcw", self.width(layer))

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"bptt-mix-{self.low:g}-{self.high:g}-{self.draw}{_suffix(self.detach_reset)}"


ASSG_FAMILIES = ("atan", "pcw", "rect")


@dataclass(frozen=True)
class ASSG(Estimator):
    """Adaptive-sharpness surrogate gradient (Wang et al., arXiv 2512.22522).

    Per spiking layer, time step and element, running moments over the iterations of one
    attack run (forward passes with gradient only; never across batches, restarts or samples)::

        M <- b1 M + (1 - b1) |x|,   D <- b2 D + (1 - b2) ||x| - M|,   d = M + relax D + 1e-4

    with ``x = h - theta``; ``d`` sets the surrogate's width so that a fixed share of its mass
    lies within ``+-d``. ``family`` ``atan`` (the paper's): ``a`` in (0, 0.5) and a mass of
    ``2a`` within ``+-d`` (sharpness ``alpha = 2 tan(pi a) / (pi d)``); ``pcw`` and ``rect``:
    ``a`` is that mass itself, in (0, 1).

    Use it with the reset detached (``assg-...-dr``, as the reference code does): through the
    reset path the sharp per-element surrogate multiplies over the T steps and the layers, and
    input gradients reach 1e16-1e29 on the CIFAR VGG (float32 overflows during attacks; the
    attacks then keep only the direction of the infinite entries). The presets use ``-dr``.

    Deviation from the reference code (deliberate): M starts at ``|x|`` of the run's first pass
    and D at 0, not M = 1. With converted SNNs' small per-layer thresholds the reference's
    start biases early widths towards ``|x| ~ 1`` (still 35% of the weight after 10
    iterations) and breaks the invariance to a layer's scale.
    """

    family: str = "atan"
    a: float = 0.425
    relax: float = 1.5
    beta1: float = 0.9
    beta2: float = 0.9
    detach_reset: bool = False
    stateful = True

    def __post_init__(self) -> None:
        if self.family not in ASSG_FAMILIES:
            raise UserError(
                f"ASSG family must be one of {', '.join(ASSG_FAMILIES)}, not {self.family!r}"
            )
        high = 0.5 if self.family == "atan" else 1.0
        if not (0.0 < self.a < high):
            raise UserError(
                f"assg-{self.family}: the mass parameter must be in (0, {high:g}), got {self.a!r}"
            )

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"assg-{self.family}-{self.a:g}{_suffix(self.detach_reset)}"


@dataclass(frozen=True)
class PDSG(Estimator):
    """Potential-dependent surrogate gradient (Lun et al., CVPR 2025).

    Multiplier ``N(x; sigma/2, sigma^2)`` (Gaussian density centred just above threshold), with
    sigma the unbiased std of the pre-reset membranes ``h_tau, tau <= t`` per channel (conv) or
    per layer (linear), 0 -> 1. ``pooled=False`` (default; a deviation from the reference) takes
    the statistics per sample, so a sample's gradient does not depend on its batch;
    ``pooled=True`` pools over the batch as the reference code does.
    """

    pooled: bool = False
    detach_reset: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return ("pdsg-pooled" if self.pooled else "pdsg") + _suffix(self.detach_reset)


@dataclass(frozen=True)
class RGA(Estimator):
    """Rate gradient approximation (Bu et al., CVPR 2023).

    No temporal recursion: ``dL/dI_t = dL/dy_t * f(Ibar)`` for every t, with ``Ibar`` the
    neuron's mean input over T and, in units of the emitted value ``y = theta * s``,
    ``f = c1`` on ``[(1 - leak) theta, (1 + ext) theta]``, ``gs`` on ``[0, (1 - leak) theta)``,
    0 elsewhere, ``c1 = (1 - gs (1 - leak)) / (leak + ext)``. For IF neurons: 1/2 on
    ``[0, 2 theta]``. Unlike BPTR it passes gradient to silent neurons with positive drive.
    """

    gs: float = 0.2
    ext: float = 1.0

    @property
    def name(self) -> str:  # type: ignore[override]
        return "rga"


@dataclass(frozen=True)
class HART(Estimator):
    """Rate-and-temporal hybrid (Hao et al., ICLR 2024).

    The temporal path is cut (``h_t = leak * stopgrad(u_{t-1}) + I_t``), each step's local
    gradient uses the triangle surrogate of half-width ``gamma * theta`` (``gamma`` in units of
    the layer's threshold; the reference's theta is 1), and the input gradient is averaged over
    time: ``dL/dI_t = mean_tau dL/ds_tau * sg_tau`` for every t.
    """

    gamma: float = 1.0

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"hart-{self.gamma:g}"


@dataclass(frozen=True)
class BPTR(Estimator):
    """Backpropagation through rate: pass the upstream gradient where the neuron fired at all."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "bptr"


@dataclass(frozen=True)
class ANNProxy(Estimator):
    """The same network with every spiking layer replaced by ReLU (T = 0): forward and backward."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "ann-proxy"


DEFAULT_ESTIMATOR = BPTT(Surrogate("pcw", 1.0))


def uses_fused_kernels(estimator: Estimator) -> bool:
    """Whether ``estimator`` runs through the fused BPTT/BPTR kernels of ``snn/dynamics.py``."""
    return isinstance(estimator, BPTR) or (type(estimator) is BPTT and not estimator.detach_reset)


def gives_threshold_gradient(estimator: Estimator) -> bool:
    """Whether ``estimator``'s backward differentiates the thresholds (so they can train
    through it): BPTT with a fixed, threshold-relative or adaptive (ASSG, PDSG) surrogate,
    with or without the reset path, and BPTR. HART (temporal cut), RGA (rate factor) and the
    ANN proxy (ReLU, no threshold in the forward) do not."""
    return uses_fused_kernels(estimator) or isinstance(
        estimator, (BPTT, RelativeBPTT, MixedWidthBPTT, ASSG, PDSG)
    )


def paper_estimators() -> list[Estimator]:
    """The 19 estimators of the paper's ensembles: 17 BPTT surrogates, BPTR and the ANN proxy."""
    return [*(BPTT(s) for s in paper_surrogates()), BPTR(), ANNProxy()]


ASSG_GRID = (0.40, 0.425, 0.45)
"""The three atan ASSG widths of the `reliable` preset (a fixed grid instead of the reference's
ternary search of ``a`` on the test set)."""


def sota_estimators() -> list[Estimator]:
    """The estimators of the SNN attack literature since the paper (one value per family)."""
    return [
        *(ASSG("atan", a) for a in ASSG_GRID),
        ASSG("pcw", 0.85),
        ASSG("rect", 0.85),
        PDSG(),
        RGA(),
        HART(1.0),
        RelativeBPTT(Surrogate("pcw", 0.5)),
    ]


# --------------------------------------------------------------------------- parsing


def _number(text: str, what: str, example: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{what}: expected a positive number as in {example!r}, got {text!r}")
    return value


def _parse_mix(rest: str, detach: bool) -> Estimator:
    parts = rest.split("-")
    if len(parts) != 3 or not parts[2].isdigit():
        raise UserError(
            f"bptt-mix-{rest}: expected bptt-mix-LOW-HIGH-DRAW with relative widths LOW <= HIGH "
            "and an integer draw, e.g. bptt-mix-0.25-1-3"
        )
    example = "bptt-mix-0.25-1-3"
    low, high = (_number(p, "bptt-mix", example) for p in parts[:2])
    return MixedWidthBPTT(low, high, int(parts[2]), detach)


def _parse_bptt(rest: str, detach: bool) -> Estimator:
    if rest == "mix" or rest.startswith("mix-"):
        return _parse_mix(rest[len("mix-") :], detach)
    if rest.startswith("rel-"):
        return RelativeBPTT(parse_surrogate(rest[len("rel-") :]), detach)
    return BPTT(parse_surrogate(rest), detach)


def _parse_assg(rest: str, detach: bool) -> Estimator:
    if not rest:
        return ASSG(detach_reset=detach)
    family, _, a_text = rest.partition("-")
    if family not in ASSG_FAMILIES:
        raise UserError(
            f"unknown ASSG family {family!r}; valid: {', '.join(ASSG_FAMILIES)} "
            "(e.g. assg-atan-0.425, assg-pcw-0.85)"
        )
    if not a_text:
        return ASSG(family, 0.425 if family == "atan" else 0.85, detach_reset=detach)
    return ASSG(family, _number(a_text, "assg", "assg-atan-0.425"), detach_reset=detach)


def _parse_pdsg(rest: str, detach: bool) -> Estimator:
    if rest not in ("", "pooled"):
        raise UserError(f"unknown PDSG variant {rest!r}; valid: pdsg, pdsg-pooled")
    return PDSG(pooled=rest == "pooled", detach_reset=detach)


def _parse_rga(rest: str, detach: bool) -> Estimator:
    if rest or detach:
        raise UserError("rga takes no parameters (it has no reset path to detach)")
    return RGA()


def _parse_hart(rest: str, detach: bool) -> Estimator:
    if detach:
        raise UserError("hart cuts the whole temporal path already; drop the -dr suffix")
    return HART(_number(rest, "hart", "hart-1") if rest else 1.0)


def _parse_plain(estimator: Estimator) -> Callable[[str, bool], Estimator]:
    def parse(rest: str, detach: bool) -> Estimator:
        if rest or detach:
            raise UserError(f"{estimator.name} takes no parameters")
        return estimator

    return parse


ESTIMATOR_FAMILIES: Registry[Callable[[str, bool], Estimator]] = Registry("estimator family")
ESTIMATOR_FAMILIES.add("bptt", _parse_bptt)
ESTIMATOR_FAMILIES.add("assg", _parse_assg)
ESTIMATOR_FAMILIES.add("pdsg", _parse_pdsg)
ESTIMATOR_FAMILIES.add("rga", _parse_rga)
ESTIMATOR_FAMILIES.add("hart", _parse_hart)
ESTIMATOR_FAMILIES.add("bptr", _parse_plain(BPTR()))
ESTIMATOR_FAMILIES.add("ann-proxy", _parse_plain(ANNProxy()))

_ALIASES = {"ann": "ann-proxy", "act": "ann-proxy"}


def parse_estimator(name: str) -> Estimator:
    """``bptt-pcw-1`` / ``bptt-rel-pcw-0.5`` / ``assg-atan-0.425-dr`` / ``rga`` / ... -> Estimator."""
    text = _ALIASES.get(name.strip(), name.strip())
    detach = text.endswith(DETACH_SUFFIX) and text != DETACH_SUFFIX
    if detach:
        text = text[: -len(DETACH_SUFFIX)]
    for family in sorted(ESTIMATOR_FAMILIES.names(), key=len, reverse=True):
        if text == family or text.startswith(family + "-"):
            rest = text[len(family) + 1 :]
            if family == "bptt" and not rest:
                break
            return ESTIMATOR_FAMILIES.get(family)(rest, detach)
    examples = ", ".join(e.name for e in (*paper_estimators()[:2], *sota_estimators()[::3]))
    raise UserError(
        f"unknown gradient estimator {name!r}; families: "
        f"{', '.join(ESTIMATOR_FAMILIES.names())} (e.g. {examples}, bptr, ann-proxy)"
    )


def estimator_names() -> list[str]:
    """Names of every estimator in the paper's grid (the registry tests iterate over)."""
    return [e.name for e in paper_estimators()]
