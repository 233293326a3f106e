"""Ensembles as data: a member is (attack spec, gradient estimator); presets are named lists.

The paper's adaptive evaluation (PAPER.md section 5) runs every gradient-based attack with each
of the 19 gradient estimators (17 BPTT surrogates, BPTR, the ANN proxy) and counts a sample as
robust only if it survives all of them. Here an ensemble is a value, not code::

    Member("pgd", "bptr")                          # name "pgd/bptr"
    Member("pgd", "bptt-pcw-1", {"steps": 100})    # name "pgd[steps=100]/bptt-pcw-1"
    ENSEMBLES.get("pgd-ensemble")                  # PGD-20 x the 19 estimators
    ensemble_from_spec([{"attack": "pgd", "estimator": "bptr", "params": {"steps": 40}}])

For an ANN the estimator grid collapses to its true gradient (:meth:`Ensemble.for_model`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from robustsnn.attacks import ATTACKS, Attack, attack_parameters, build_attack
from robustsnn.errors import UserError
from robustsnn.evaluation.views import is_snn
from robustsnn.registry import Registry
from robustsnn.snn import DEFAULT_ESTIMATOR, paper_estimators, parse_estimator

BLACK_BOX_ATTACKS = frozenset({"square", "none"})
"""Attacks that use forward passes only: they run on the real model, not on an estimator."""

ADAPTIVE_ESTIMATORS = ("bptt-rel-pcw-1", "bptt-pcw-1", "bptr", "ann-proxy")
"""A cheap but diverse estimator set: the default surrogate in threshold units (first, so the
diagnostics use it: its width follows each layer's threshold, which conversion rules such as MSE
thresholds or QCFS clip levels put anywhere from 0.3 to 10), the paper's default surrogate in
absolute units, the rate-based BPTR and the ANN proxy."""

_SPEC_KEYS = ("attack", "estimator", "params", "name", "close_call")


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def canonical_estimator(name: str) -> str:
    """``"bptt-pcw-1.0"`` / ``"ann"`` -> ``"bptt-pcw-1"`` / ``"ann-proxy"`` (UserError if unknown)."""
    try:
        return parse_estimator(str(name).strip()).name
    except ValueError:  # e.g. a gamma that is not a number
        valid = ", ".join(e.name for e in paper_estimators())
        raise UserError(f"unknown gradient estimator {name!r}; valid: {valid}") from None


@dataclass(frozen=True)
class Member:
    """One ensemble member: a registered attack with parameters, seen through one estimator.

    Args:
        attack: a name in ``robustsnn.attacks.ATTACKS`` (``"pgd"``, ``"apgd-ce"``, ...).
        estimator: gradient estimator name (``"bptt-pcw-1"``, ``"bptr"``, ``"ann-proxy"``);
            None = the model's default (BPTT with PCW, gamma 1) for an SNN, the true gradient for
            an ANN. Black-box attacks ignore it.
        params: attack parameters besides ``eps`` (defaults: the paper's).
        label: optional display name replacing the generated one.
        close_call: None (default): the member attacks every sample still standing. A fraction
            ``f``: only those where the closest any earlier member came is within ``f`` of the
            clean margin (real margin ``z_y - max_{j != y} z_j`` at the best example so far
            ``<= f x`` the margin at the clean input): an adaptive budget spent where the
            attacks nearly succeeded. Scale-free (a ratio of the model's own margins). A random
            model has no single margin: every standing sample qualifies.
    """

    attack: str
    estimator: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    close_call: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        if self.close_call is not None:
            value = self.close_call
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UserError(
                    f"ensemble member {self.attack!r}: close_call must be a fraction >= 0 of "
                    f"the clean margin (e.g. 0.3), got {value!r}"
                )
            object.__setattr__(self, "close_call", float(value))

    def __hash__(self) -> int:
        return hash((self.attack, self.estimator, self._params_key(), self.label, self.close_call))

    def _params_key(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True, default=str)

    @property
    def black_box(self) -> bool:
        """True for attacks that never use gradients (they run on the real forward pass)."""
        return self.attack in BLACK_BOX_ATTACKS

    @property
    def name(self) -> str:
        """``attack[k=v,...]/estimator``, e.g. ``pgd/bptt-pcw-1`` (or ``label`` when set)."""
        if self.label:
            text = self.label
        else:
            text = self.attack
            if self.params:
                args = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(self.params.items()))
                text += f"[{args}]"
            if self.estimator:
                text += f"/{self.estimator}"
        if self.close_call is not None:
            text += f"@close-{_format_value(self.close_call)}"
        return text

    def build(self, eps: float) -> Attack:
        """The attack object at radius ``eps``."""
        return build_attack(self.attack, eps=eps, **dict(self.params))

    def validate(self) -> Member:
        """Check attack name, parameter names and estimator; return the canonical member."""
        cls = ATTACKS.get(self.attack)
        valid = attack_parameters(cls)
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            listed = ", ".join(valid) if valid else "none besides eps"
            raise UserError(
                f"ensemble member {self.name!r}: attack {self.attack!r} has no parameter "
                f"{', '.join(map(repr, unknown))}; valid: {listed}"
            )
        estimator = canonical_estimator(self.estimator) if self.estimator else None
        return replace(self, estimator=estimator)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (for evaluation.json and the resume fingerprint)."""
        description: dict[str, Any] = {
            "name": self.name,
            "attack": self.attack,
            "estimator": self.estimator,
            "params": json.loads(self._params_key()),
        }
        if self.close_call is not None:  # absent otherwise: older fingerprints stay the same
            description["close_call"] = self.close_call
        return description


@dataclass(frozen=True)
class Ensemble:
    """A named, ordered tuple of members; a sample is robust only if it survives all of them."""

    name: str
    members: tuple[Member, ...]
    description: str = ""
    left_out: tuple[tuple[str, str], ...] = ()  # (member, reason): estimators the model lacks
    # the first member whose breaks count as "late" for `--escalate` (None: the second half);
    # set where rounds were appended to a preset, so they do not move the line its older
    # members are judged by (a weaker trigger)
    late_from: str | None = None

    def __len__(self) -> int:
        return len(self.members)

    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def for_model(self, model: nn.Module) -> Ensemble:
        """The members as run on ``model``.

        For an SNN, white-box members without an estimator get the default one and black-box
        members drop theirs. For an ANN every estimator collapses to the true gradient, so
        members that differ only in their estimator become one (the first is kept).
        """
        snn = is_snn(model)
        resolved: list[Member] = []
        seen: set[str] = set()
        left_out = list(self.left_out)
        # a model that cannot run some estimators (a wrapped foreign model: HART) says why
        unsupported = getattr(model, "unsupported_estimator", None)
        for member in self.members:
            member = member.validate()
            if member.black_box or not snn:
                member = replace(member, estimator=None)
            elif member.estimator is None:
                member = replace(member, estimator=DEFAULT_ESTIMATOR.name)
            if member.name in seen:
                continue
            seen.add(member.name)
            if unsupported is not None and member.estimator is not None:
                reason = unsupported(parse_estimator(member.estimator))
                if reason:
                    left_out.append((member.name, str(reason)))
                    continue
            resolved.append(member)
        return replace(self, members=tuple(resolved), left_out=tuple(left_out))

    def restrict(self, estimator: str) -> Ensemble:
        """Only the members using ``estimator`` (black-box members are kept)."""
        wanted = canonical_estimator(estimator)
        kept = tuple(
            m
            for m in self.members
            if m.black_box
            or (canonical_estimator(m.estimator) if m.estimator else DEFAULT_ESTIMATOR.name)
            == wanted
        )
        if not any(not m.black_box for m in kept) and any(not m.black_box for m in self.members):
            raise UserError(
                f"ensemble {self.name!r} has no member with estimator {wanted!r}; "
                f"its members: {', '.join(self.names())}"
            )
        return replace(self, members=kept)

    def with_params(self, overrides: Mapping[str, Mapping[str, Any]]) -> Ensemble:
        """A copy whose members of attack ``a`` get ``overrides[a]`` merged into their params.

        Useful for cheaper variants on a CPU, e.g. ``{"apgd-ce": {"n_iter": 20}}``.
        """
        unknown = sorted(set(overrides) - {m.attack for m in self.members})
        if unknown:
            raise UserError(
                f"ensemble {self.name!r} has no attack {', '.join(map(repr, unknown))}; "
                f"its attacks: {', '.join(sorted({m.attack for m in self.members}))}"
            )
        members = tuple(
            replace(m, params={**m.params, **overrides.get(m.attack, {})}) for m in self.members
        )
        return replace(self, members=members)


# --------------------------------------------------------------------------- building


# Members run on the samples still standing, so the usually strongest estimators go first:
# the per-sample worst case does not depend on the order, the cost does.
FIRST_ESTIMATORS = ("bptt-pcw-1", "bptr", "ann-proxy")


def estimator_grid(attack: str, params: Mapping[str, Any] | None = None) -> tuple[Member, ...]:
    """``attack`` with each of the paper's 19 gradient estimators (strongest-first order)."""
    names = [e.name for e in paper_estimators()]
    ordered = [*FIRST_ESTIMATORS, *(n for n in names if n not in FIRST_ESTIMATORS)]
    return tuple(Member(attack, name, dict(params or {})) for name in ordered)


def _members_from_item(item: Any, position: int) -> list[Member]:
    if isinstance(item, Member):
        return [item]
    if isinstance(item, str):  # "pgd" or "pgd/bptr"
        attack, _, view = item.partition("/")
        return [Member(attack.strip(), view.strip() or None)]
    if not isinstance(item, Mapping):
        raise UserError(
            f"ensemble entry {position} must be a mapping like "
            f"{{attack: pgd, estimator: bptr, params: {{steps: 20}}}}, got {item!r}"
        )
    unknown = sorted(set(item) - set(_SPEC_KEYS))
    if unknown or "attack" not in item:
        raise UserError(
            f"ensemble entry {position} ({dict(item)!r}) needs 'attack' and may have "
            f"{', '.join(_SPEC_KEYS[1:])}; unknown keys: {', '.join(unknown) or 'none'}"
        )
    params = item.get("params") or {}
    if not isinstance(params, Mapping):
        raise UserError(f"ensemble entry {position}: 'params' must be a mapping, got {params!r}")
    estimator = item.get("estimator")
    if isinstance(estimator, str) and estimator.strip().lower() == "all":
        estimators: list[str | None] = [e.name for e in paper_estimators()]
    elif isinstance(estimator, (list, tuple)):
        estimators = [str(e) for e in estimator]
    else:
        estimators = [None if estimator is None else str(estimator)]
    label = item.get("name")
    if label is not None and len(estimators) > 1:
        raise UserError(f"ensemble entry {position}: 'name' needs a single estimator")
    close_call = item.get("close_call")
    return [
        Member(
            str(item["attack"]),
            est,
            dict(params),
            None if label is None else str(label),
            close_call=None if close_call is None else close_call,
        )
        for est in estimators
    ]


def ensemble_from_spec(
    spec: Sequence[Mapping[str, Any] | str | Member], name: str = "custom"
) -> Ensemble:
    """An ensemble from config data: a list of ``{attack, estimator, params[, name]}`` dicts.

    ``estimator`` may be one name, a list of names or ``"all"`` (the 19); strings
    ``"pgd/bptr"`` are accepted as shorthand. Every member is validated.
    """
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise UserError(
            f"an ensemble spec is a list of {{attack, estimator, params}} entries, got {spec!r}"
        )
    members: list[Member] = []
    for position, item in enumerate(spec):
        members.extend(m.validate() for m in _members_from_item(item, position))
    if not members:
        raise UserError(f"ensemble {name!r} has no members")
    names = [m.name for m in members]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(
            f"ensemble {name!r} lists {', '.join(duplicates)} more than once; give each "
            "entry different params or a 'name'"
        )
    return Ensemble(name, tuple(members), "user-defined")


def resolve_ensemble(spec: str | Ensemble | Sequence[Mapping[str, Any] | str | Member]) -> Ensemble:
    """A preset name, an :class:`Ensemble`, or a spec list -> :class:`Ensemble`."""
    if isinstance(spec, Ensemble):
        return spec
    if isinstance(spec, str):
        return ENSEMBLES.get(spec.strip())
    return ensemble_from_spec(spec)


def attack_grid(
    attack: str,
    model: nn.Module,
    estimator: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> Ensemble:
    """One attack with every estimator (SNN), one estimator, or the true gradient (ANN).

    The name is ``"<attack> (all estimators)"`` when the grid has several members, else the
    member's name; this is what ``robustsnn evaluate --attack NAME`` runs, independently.
    """
    if attack not in ATTACKS:
        ATTACKS.get(attack)  # raises the UserError listing valid attacks
    if estimator is not None:
        members: tuple[Member, ...] = (
            Member(attack, canonical_estimator(estimator), params or {}),
        )
    else:
        members = estimator_grid(attack, params)
    grid = Ensemble(attack, members, f"{attack} with each gradient estimator").for_model(model)
    name = f"{attack} (all estimators)" if len(grid) > 1 else grid.members[0].name
    return replace(grid, name=name)


# --------------------------------------------------------------------------- presets

ENSEMBLES: Registry[Ensemble] = Registry("ensemble")


def _add(
    name: str, members: Iterable[Member], description: str, late_from: str | None = None
) -> None:
    ENSEMBLES.add(name, Ensemble(name, tuple(members), description, late_from=late_from))


def second_half(members: Sequence[Member]) -> str:
    """The name of the first member of ``members``' second half (the default line of "late"
    members for ``--escalate``)."""
    return members[len(members) // 2].name


_add("fgsm-ensemble", estimator_grid("fgsm"), "FGSM with each of the 19 gradient estimators")
_add("rfgsm-ensemble", estimator_grid("rfgsm"), "R+FGSM with each of the 19 gradient estimators")
_add("pgd-ensemble", estimator_grid("pgd"), "PGD-20 with each of the 19 gradient estimators")
_add("apgd-ensemble", estimator_grid("apgd-ce"), "APGD-CE with each of the 19 gradient estimators")
_add(
    "apgd-dlr-ensemble",
    estimator_grid("apgd-dlr"),
    "APGD-DLR with each of the 19 gradient estimators",
)
_add("apgdt-ensemble", estimator_grid("apgd-t"), "APGD-T with each of the 19 gradient estimators")
_add(
    "autoattack",
    [
        Member("apgd-ce", DEFAULT_ESTIMATOR.name),
        Member("apgd-t", DEFAULT_ESTIMATOR.name),
        Member("fab-t", DEFAULT_ESTIMATOR.name),
        Member("square"),
    ],
    "AutoAttack's standard set (APGD-CE, APGD-T, FAB-T, Square) with the default estimator",
)
_add(
    "autoattack-adaptive",
    [
        *(Member(a, e) for a in ("apgd-ce", "apgd-t", "fab-t") for e in ADAPTIVE_ESTIMATORS),
        Member("square"),
    ],
    "AutoAttack's white-box attacks with BPTT(PCW, 1) in threshold and absolute units, BPTR and "
    "the ANN proxy, then Square",
)
# --------------------------------------------------------------------------- state of the art

RELIABLE_ESTIMATORS = (
    "assg-atan-0.425-dr",
    "ann-proxy",
    "assg-atan-0.4-dr",
    "assg-atan-0.45-dr",
    "rga",
    "pdsg",
    "hart-1",
    "bptt-rel-pcw-1",
    "bptr",
)
"""SA-PGD-100 members of ``reliable``: ASSG at three widths (a fixed grid instead of the ASSG
authors' ternary search of ``a`` on the test set) with the reset detached as in their code
(through the reset, the sharp adaptive surrogate compounds over T steps and layers: input
gradients of 1e16-1e29 on the CIFAR VGG, overflowing float32 during attacks), PDSG, RGA, HART, the paper's default
surrogate in threshold units (``bptt-rel-pcw-1``, identical to ``bptt-pcw-1`` where a layer's
threshold is 1), BPTR and the ANN proxy; likely strongest first (the order changes cost, not
the per-sample worst case). Every member is invariant to rescaling a layer's threshold and
incoming weights together, so no model can look more robust to ``reliable`` by such a
rescaling (the false robustness of fixed-width surrogates)."""


def reliable_members(
    steps: int = 100,
    estimators: Iterable[str] = RELIABLE_ESTIMATORS,
    apgdt_targets: int = 3,
    square_queries: int = 1000,
    restarts: int = 1,
) -> tuple[Member, ...]:
    """SA-PGD with each estimator, then APGD-T (DLR, with ASSG) and Square (no gradients)."""
    sapgd = {"steps": steps} if restarts == 1 else {"steps": steps, "restarts": restarts}
    return (
        *(Member("sapgd", e, sapgd) for e in estimators),
        Member(
            "apgd-t",
            "assg-atan-0.425-dr",
            {"n_iter": steps, "n_target_classes": apgdt_targets, "n_restarts": restarts},
        ),
        Member("square", None, {"n_queries": square_queries}),
    )


ANCHOR_ESTIMATOR = "assg-atan-0.425-dr"
"""The estimator of ``reliable``'s first member and of its APGD-T: in ``reliable-v1``, SA-PGD-100
and APGD-T through it made 28 of the 31 breaks on the quickstart's converted SNN (n = 200) and
11 of 13 on the shared CIFAR SNN (n = 32); the ASSG authors' default sharpness."""

ANCHOR_ESTIMATORS = (ANCHOR_ESTIMATOR, "assg-atan-0.4-dr", "assg-atan-0.45-dr")
"""``reliable``'s anchors, each SA-PGD-100 on every standing sample, in ``reliable-v1``'s order:
ASSG adapts its sharpness over the run and starts slowly, so a race that ranks after a few
iterations drops it where its full run breaks the sample (measured: the race alone, and a race
with only the first anchor, each missed samples ``reliable-v1`` broke)."""

RACE_ESTIMATORS = (
    "bptt-rel-pcw-1",
    "ann-proxy",
    "bptt-rel-pcw-0.5",
    "bptt-rel-pcw-0.25",
    "bptt-rel-pcw-2",
    "bptt-rel-pcw-0.125",
    "assg-atan-0.35-dr",
    "pdsg",
    "rga",
    "hart-1",
    "bptr",
)
"""Candidates of ``reliable``'s race: the six other SA-PGD members of ``reliable-v1`` plus the
threshold-relative widths 0.125-2 and a fourth ASSG sharpness. Every candidate is invariant to
rescaling a layer's threshold and incoming weights together (absolute widths are not: a
rescaled copy would see them lose the race and other candidates win, and so look more or
less robust than the original); ties in the race go to the earlier one."""


def race_member(
    estimators: Iterable[str] = RACE_ESTIMATORS,
    steps: int = 100,
    checkpoints: Sequence[int] = (8, 30),
    keep: Sequence[int] = (4, 2),
    finisher_iter: int = 50,
    finisher_targets: int = 3,
    starts: int = 1,
    losses: Sequence[str] = ("ce",),
    close_call: float | None = None,
) -> Member:
    """A race of SA-PGD-``steps`` through ``estimators`` (:mod:`robustsnn.attacks.race`):
    all run to ``checkpoints[0]``, the best ``keep[0]`` per sample to ``checkpoints[1]``, ...;
    then targeted APGD through each standing sample's winning estimator. With ``starts`` > 1
    or several ``losses``, every (estimator, loss, start) is a candidate; ``close_call`` gates
    the member like any other (:class:`Member`)."""
    names = tuple(estimators)
    params: dict[str, Any] = {
        "estimators": list(names),
        "steps": steps,
        "checkpoints": list(checkpoints),
        "keep": list(keep),
        "finisher_iter": finisher_iter,
        "finisher_targets": finisher_targets,
    }
    candidates = f"{len(names)} estimators"
    if starts != 1 or tuple(losses) != ("ce",):  # absent otherwise: older names and keys hold
        params["starts"], params["losses"] = starts, list(losses)
        candidates += f" x {'+'.join(losses)} x {starts} starts"
    return Member(
        "race",
        names[0],
        params,
        label=f"race[sapgd-{steps},{candidates},keep "
        f"{'/'.join(map(str, keep))}@{'/'.join(map(str, checkpoints))}"
        + (f",apgd-t-{finisher_iter}x{finisher_targets}]" if finisher_iter else "]"),
        close_call=close_call,
    )


CLOSE_CALL_LOOSE = 0.5
"""``reliable`` spends its close-call budget on samples whose closest call is within this
fraction of their clean margin (the reference pool's breaks that ``reliable`` without it
missed sat at 0-0.41 of the clean margin on three suite models)."""

CLOSE_CALL_TIGHT = 0.2
"""... and a second, restarted round on samples within this fraction: at the boundary, whether
a run breaks a sample depends on its random start (measured: the pool members that broke the
gap samples, rerun with three seeds, broke a different subset with each)."""


def close_call_members(
    loose: float = CLOSE_CALL_LOOSE, tight: float = CLOSE_CALL_TIGHT
) -> tuple[Member, ...]:
    """The close-call budget: where the attacks came within ``loose`` of the clean margin,
    SA-PGD-300 through ASSG (atan a = 0.4 and the piecewise-linear shape, reset detached),
    APGD-T through ASSG with all 9 target classes, APGD-DLR-300 through the threshold-relative
    width 0.5 and through ASSG; within ``tight``, the same again from two more random starts.
    These are the reference pool's members that broke samples ``reliable`` left standing."""

    def round_of(fraction: float, restarts: int) -> tuple[Member, ...]:
        sapgd: dict[str, Any] = {"steps": 300}
        apgd: dict[str, Any] = {"n_iter": 300}
        apgdt: dict[str, Any] = {"n_iter": 100, "n_target_classes": 9}
        if restarts > 1:
            sapgd["restarts"] = restarts
            apgd["n_restarts"] = restarts
            apgdt["n_restarts"] = restarts
        return (
            Member("sapgd", "assg-atan-0.4-dr", sapgd, close_call=fraction),
            Member("sapgd", "assg-pcw-0.85-dr", sapgd, close_call=fraction),
            Member("apgd-t", ANCHOR_ESTIMATOR, apgdt, close_call=fraction),
            Member("apgd-dlr", "bptt-rel-pcw-0.5", apgd, close_call=fraction),
            Member("apgd-dlr", ANCHOR_ESTIMATOR, apgd, close_call=fraction),
        )

    return (*round_of(loose, 1), *round_of(tight, 2))


WARM_START_ESTIMATORS = (
    ("assg-atan-0.4-dr", "ce"),
    ("assg-pcw-0.85-dr", "ce"),
    ("bptt-rel-pcw-0.5", "dlr"),
    (ANCHOR_ESTIMATOR, "dlr"),
)
"""(estimator, loss) of the warm-start round: the close-call budget's estimators, the
threshold-relative width and ASSG with the DLR loss (scale-free) as its APGD-DLR members."""


def warm_start_members(
    fraction: float = CLOSE_CALL_TIGHT, steps: int = 100, restarts: int = 3
) -> tuple[Member, ...]:
    """The warm-start round: where the attacks came within ``fraction`` of the clean margin,
    SA-PGD-``steps`` that **starts at the sample's closest call** (``init="given"``, first step
    eps / 4; later restarts within eps / 8 of it) through each of
    :data:`WARM_START_ESTIMATORS`. A sample on a spike-count tie (margin 0) sits one nudge from
    a break that a fresh random start throws away (measured: the snnTorch CSNN's #170, which
    the reference pool broke and the close-call budget's restarts did not)."""
    return tuple(
        Member(
            "sapgd",
            estimator,
            {
                "steps": steps,
                "init": "given",
                "first_step": 0.25,
                "restarts": restarts,
                "loss": loss,
            },
            close_call=fraction,
        )
        for estimator, loss in WARM_START_ESTIMATORS
    )


def adaptive_members(
    race: Member,
    square_queries: int = 1000,
    apgdt_iter: int = 100,
    apgdt_targets: int = 3,
    anchors: Sequence[str] = ANCHOR_ESTIMATORS,
    close_calls: Sequence[Member] = (),
) -> tuple[Member, ...]:
    """The anchored race: SA-PGD-100 through each of ``anchors`` on every standing sample, then
    targeted APGD through :data:`ANCHOR_ESTIMATOR` (``reliable-v1``'s members of the same
    names, so the same seeds, in its order), then ``race`` on the samples still standing, then
    Square (black-box coverage: what no gradient estimator sees). The race replaces
    ``reliable-v1``'s six fixed SA-PGD-100 members that rarely break a sample the anchors miss,
    and adds the narrow widths that do."""
    members: list[Member] = [Member("sapgd", e, {"steps": 100}) for e in anchors]
    if apgdt_iter > 0:
        members.append(
            Member(
                "apgd-t",
                ANCHOR_ESTIMATOR,
                {"n_iter": apgdt_iter, "n_target_classes": apgdt_targets, "n_restarts": 1},
            )
        )
    members.append(race)
    members.append(Member("square", None, {"n_queries": square_queries}))
    members.extend(close_calls)
    return tuple(members)


RELIABLE_V2 = adaptive_members(race_member(finisher_iter=0), close_calls=close_call_members())
RELIABLE_V3 = (*RELIABLE_V2, *warm_start_members())

RACE_BEYOND_V1 = (
    "bptt-rel-pcw-0.5",
    "bptt-rel-pcw-0.25",
    "bptt-rel-pcw-2",
    "bptt-rel-pcw-0.125",
    "assg-atan-0.35-dr",
)
"""The race candidates of ``reliable`` that ``reliable-v1`` does not run: threshold-relative
widths 1/8-2 and a fourth ASSG sharpness (scale-free, like every ``reliable`` estimator)."""

RELIABLE_V4 = (
    *reliable_members(),
    race_member(RACE_BEYOND_V1, checkpoints=(8, 30), keep=(3, 2), finisher_iter=0),
    *close_call_members(),
    *warm_start_members(),
)
"""``reliable`` (issue 30, fourth design): every member of ``reliable-v1`` first, the same
members in the same order (so the same seeds on the same standing samples: every
``reliable-v1`` break stands, by construction), then a race through the estimators v1 lacks,
the close-call budget and the warm-start round. ``reliable-v3`` ran only four of v1's members in
full and raced the other six from 8 iterations; on the CIFAR recipe-D SNN its race dropped
SA-PGD through HART, whose full 100-step run breaks sample #1600 from every seed (margin -0.55
of a clean 0.56; docs/RESULTS.md 12g)."""

BOUNDARY_RESTARTS = 2
"""Fresh random starts per ASSG anchor in ``reliable``'s boundary-restart round."""


def boundary_restart_members(
    fraction: float = CLOSE_CALL_LOOSE, steps: int = 300, restarts: int = BOUNDARY_RESTARTS
) -> tuple[Member, ...]:
    """The boundary-restart round: where the attacks came within ``fraction`` of the clean
    margin, SA-PGD-``steps`` from ``restarts`` fresh random starts through each ASSG anchor
    (:data:`ANCHOR_ESTIMATORS`: a = 0.425, 0.4, 0.45, reset detached).

    At the decision boundary a run is a lottery ticket: whether it breaks a sample depends on
    its random start and, in float32, on the batch it runs in (the batch size changes the
    rounding of convolutions; spike decisions amplify the last bits; in float64 a sample's run
    does not depend on its batch). Measured on the gap benchmark's three pool-only breaks
    (docs/RESULTS.md 12h): SA-PGD-300 through an anchor breaks the snnTorch CSNN's #97 from
    13 of 16 fresh starts alone and 2 of 4 inside its first batch, the SpikingJelly CSNN's #90
    from 10 of 20, where ``reliable-v4``'s 26 members had left both standing. More tickets of
    the strongest family, only where a sample is near the boundary."""
    params: dict[str, Any] = {"steps": steps, "restarts": restarts}
    return tuple(Member("sapgd", e, params, close_call=fraction) for e in ANCHOR_ESTIMATORS)


RELIABLE_V5 = (*RELIABLE_V4, *boundary_restart_members())
"""``reliable`` (issue 30, fifth design): ``reliable-v4`` (the same members first, so every
``reliable-v4`` break stands) and the boundary-restart round."""

CLOSE_CALL_WIDE = 0.75
"""The gate of the wide close-call round of ``reliable`` (v6)."""


def wide_close_call_members(fraction: float = CLOSE_CALL_WIDE) -> tuple[Member, ...]:
    """The wide close-call round: where the attacks came within ``fraction`` of the clean
    margin, APGD-DLR-300 and SA-PGD-300 (reset detached) through the threshold-relative width
    0.5. Measured (docs/RESULTS.md 12i): on the CIFAR recipe-D SNN the reference pool broke
    #2, which ``reliable`` v5 left standing with its closest call at 0.509 of the clean margin,
    just outside the close-call gate (0.5), through SA-PGD-300/``bptt-rel-pcw-0.5-dr``; on that
    image alone the close-call budget's APGD-DLR-300/``bptt-rel-pcw-0.5`` breaks it too. A hard
    gate has an edge; this round moves the width the breaks needed past it."""
    return (
        Member("apgd-dlr", "bptt-rel-pcw-0.5", {"n_iter": 300}, close_call=fraction),
        Member("sapgd", "bptt-rel-pcw-0.5-dr", {"steps": 300}, close_call=fraction),
    )


RELIABLE_V6 = (*RELIABLE_V5, *wide_close_call_members())
"""``reliable`` (issue 30, sixth design): ``reliable-v5`` whole and first (every v5 break stands
by construction: the same members in the same order draw the same seeds on the same standing
samples), then the wide close-call round."""

MIXED_WIDTH_DRAWS = 8
"""Width configurations (draws) of ``reliable``'s mixed-width round."""
MIXED_WIDTH_RANGE = (0.25, 1.0)
"""Threshold-relative PCW widths the mixed-width round draws from (log-uniform, per layer)."""


def mixed_width_members(
    fraction: float = CLOSE_CALL_LOOSE, draws: int = MIXED_WIDTH_DRAWS, steps: int = 300
) -> tuple[Member, ...]:
    """The mixed-width round: where the attacks came within ``fraction`` of the clean margin,
    SA-PGD-``steps`` through ``draws`` configurations of per-layer widths
    (``bptt-mix-0.25-1-d``, :class:`robustsnn.snn.estimators.MixedWidthBPTT`: every layer's
    threshold-relative PCW width drawn log-uniformly in [0.25, 1], independently per layer).

    Why (issue 30, docs/RESULTS.md 12k/12l): under ``reliable`` v6 the reference pool broke a
    converted MNIST SNN's #2 only through the *absolute* width 2 (relative 0.55 / 0.63 / 0.26 in
    its three layers); every uniform relative width, ASSG setting and PDSG stopped at the same
    margin. The near-boundary samples sit on plateaus that one gradient configuration leaves
    and others do not; as the boundary-restart round buys diversity of starts, this round buys
    diversity of per-layer widths, in threshold units so a layer's rescaling does not move it."""
    low, high = MIXED_WIDTH_RANGE
    return tuple(
        Member("sapgd", f"bptt-mix-{low:g}-{high:g}-{d}", {"steps": steps}, close_call=fraction)
        for d in range(draws)
    )


RELIABLE_V7 = (*RELIABLE_V6, *mixed_width_members())
"""``reliable`` (issue 30, seventh design): ``reliable-v6`` whole and first (every v6 break
stands by construction), then the mixed-width round."""

_add(
    "reliable",
    RELIABLE_V7,
    "the default evaluation: every member of `reliable-v1` (SA-PGD-100 through ASSG a = 0.425 / "
    "0.4 / 0.45 with the reset detached, PDSG, RGA, HART, BPTT(relative PCW 1), BPTR and the ANN "
    "proxy; APGD-T with 3 targets through ASSG; Square-1000), then a per-sample race of "
    "SA-PGD-100 through the threshold-relative widths 1/8-2 and ASSG 0.35 (all 8 iterations, "
    "the 3 best per sample by the real model's margin to 30, the best 2 to 100); where the "
    "attacks came within 0.5 of the clean margin, the close-call budget (SA-PGD-300, APGD-T "
    "with 9 targets, APGD-DLR-300), within 0.2 the same from 2 more random starts and SA-PGD-100 "
    "started at the closest call; within 0.5, SA-PGD-300 from 2 more random starts through each "
    "ASSG anchor (the boundary-restart round); within 0.75, APGD-DLR-300 and SA-PGD-300 (reset "
    "detached) through the threshold-relative width 0.5 (the wide close-call round); within "
    "0.5, SA-PGD-300 through 8 draws of per-layer relative widths in [0.25, 1] (the mixed-width "
    "round)",
    late_from=second_half(RELIABLE_V6),
)
_add(
    "reliable-v7",
    RELIABLE_V7,
    "`reliable` of issue 30's seventh design under its own name (the same members: `reliable-v6` "
    "and the mixed-width round), so numbers that name it stay reproducible when the default "
    "moves on",
    late_from=second_half(RELIABLE_V6),
)
_add(
    "reliable-v6",
    RELIABLE_V6,
    "`reliable` of issue 30's sixth design (`reliable-v5` and the wide close-call round; no "
    "mixed-width round), kept so its numbers can be reproduced",
)
_add(
    "reliable-v5",
    RELIABLE_V5,
    "`reliable` of issue 30's fifth design (`reliable-v4` and the boundary-restart round; no "
    "wide close-call round), kept so its numbers can be reproduced",
)
_add(
    "reliable-v4",
    RELIABLE_V4,
    "`reliable` of issue 30's fourth design (every `reliable-v1` member, the race through the "
    "estimators v1 lacks, the close-call budget and the warm-start round; no boundary-restart "
    "round), kept so its numbers can be reproduced",
)
_add(
    "reliable-v3",
    RELIABLE_V3,
    "`reliable` of issue 30's third design (the anchored race, the close-call budget and the "
    "warm-start round: four of `reliable-v1`'s members in full, its other six raced), kept so "
    "its numbers can be reproduced",
)
_add(
    "reliable-v2",
    RELIABLE_V2,
    "`reliable` of issue 30's second design (the anchored race and the close-call budget, "
    "without the warm-start round), kept so its numbers can be reproduced",
)
_add(
    "reliable-v1",
    reliable_members(),
    "the fixed-estimator `reliable` of releases up to issue 22 (SA-PGD-100 x 9 estimators, "
    "APGD-T with 3 targets, Square-1000), kept so every older number can be reproduced",
)
_add(
    "assg-sapgd",
    [Member("sapgd", "assg-atan-0.425-dr", {"steps": 100})],
    "ASSG (atan, a = 0.425, detached reset) with SA-PGD-100: the protocol of arXiv 2512.22522 "
    "at its default a",
)
RELIABLE_PLUS_V1 = reliable_members(
    steps=300,
    estimators=(
        *RELIABLE_ESTIMATORS,
        "assg-atan-0.425",
        "assg-atan-0.4",
        "assg-atan-0.45",
        "assg-pcw-0.85-dr",
        "assg-rect-0.85-dr",
        "bptt-rel-pcw-0.5",
        "bptt-rel-pcw-1",
        "hart-0.5",
        "hart-2",
    ),
    apgdt_targets=9,
    square_queries=5000,
)
_add(
    "reliable-plus-v1",
    RELIABLE_PLUS_V1,
    "escalation level 2 up to issue 22: SA-PGD-300 x 18 estimators (ASSG with and without the "
    "reset path, threshold-relative widths, more HART widths), APGD-T (9 targets), Square "
    "(5000 queries)",
)
_add(
    "reliable-max",
    reliable_members(
        steps=1000,
        estimators=(
            "assg-atan-0.425-dr",
            "assg-atan-0.4-dr",
            "assg-atan-0.45-dr",
            "assg-atan-0.425",
            "bptt-rel-pcw-0.5",
            "rga",
            "ann-proxy",
        ),
        apgdt_targets=9,
        square_queries=10000,
        restarts=2,
    ),
    "escalation level 3: SA-PGD-1000 x 2 restarts x 7 estimators, APGD-T (9 targets, "
    "2 restarts), Square (10000 queries)",
)

ESCALATION_LADDER = ("pgd-fast", "reliable", "reliable-plus", "reliable-max")
"""Presets in order of strength: ``evaluate --escalate`` moves up this ladder from the preset
it started with (or from its start when that preset is not on it)."""

_add(
    "pgd-fast",
    [Member("pgd", e) for e in ADAPTIVE_ESTIMATORS],
    "PGD-20 with BPTT(PCW, 1) in threshold and in absolute units, BPTR and the ANN proxy: a cheap "
    "adaptive check for CPU runs",
)

# --------------------------------------------------------------------------- reference pool

REFERENCE_POOL_VERSION = "1"
"""Bumped whenever :func:`reference_pool_members` changes (gap benchmarks name the version)."""

REFERENCE_SAPGD_ESTIMATORS = (
    # surrogate widths in units of each layer's threshold, 1/8 to 4
    "bptt-rel-pcw-1",
    "bptt-rel-pcw-0.5",
    "bptt-rel-pcw-0.25",
    "bptt-rel-pcw-0.125",
    "bptt-rel-pcw-2",
    "bptt-rel-pcw-4",
    "bptt-rel-pcw-0.5-dr",
    "bptt-rel-pcw-1-dr",
    "bptt-rel-exp-1",
    "bptt-rel-rect-1",
    # absolute widths (a different relative width in every layer)
    "bptt-pcw-0.5",
    "bptt-pcw-1",
    "bptt-pcw-2",
    "bptt-pcw-4",
    # ASSG over its useful range, with and without the reset path, three shapes
    "assg-atan-0.35-dr",
    "assg-atan-0.4-dr",
    "assg-atan-0.425-dr",
    "assg-atan-0.45-dr",
    "assg-atan-0.49-dr",
    "assg-atan-0.4",
    "assg-atan-0.425",
    "assg-atan-0.45",
    "assg-pcw-0.85-dr",
    "assg-rect-0.85-dr",
    # the other families
    "pdsg",
    "pdsg-pooled",
    "rga",
    "hart-0.5",
    "hart-1",
    "hart-2",
    "bptr",
    "ann-proxy",
)
"""Estimators that the reference pool attacks through with SA-PGD-300."""

REFERENCE_APGD_ESTIMATORS = (
    "bptt-rel-pcw-1",
    "bptt-rel-pcw-0.5",
    "bptt-rel-pcw-0.25",
    "bptt-pcw-1",
    "bptt-pcw-2",
    "assg-atan-0.425-dr",
    "bptr",
    "ann-proxy",
)
"""Estimators that the reference pool attacks through with APGD-CE-300 (and, first four +
ASSG, APGD-DLR-300): a second optimiser, so no width is judged by SA-PGD's schedule alone."""


def reference_pool_members(steps: int = 300, square_queries: int = 5000) -> tuple[Member, ...]:
    """The reference ("oracle") pool of the gap benchmark (``benchmarks/oracle_gap.py``).

    Far wider and longer than any default: SA-PGD-``steps`` through 32 estimators (relative
    widths 0.125-4 and three shapes, absolute widths 0.5-4, ASSG a = 0.35-0.49 with and without
    the reset path and in three shapes, PDSG, RGA, HART 0.5/1/2, BPTR, the ANN proxy), APGD-CE
    through 8 and APGD-DLR through 5 of them, APGD-T (9 targets) through two, and Square with
    ``square_queries`` queries. Its per-sample union (together with ``reliable-v1``, whose
    members it contains by reference: the benchmark runs that preset too) is the ground truth
    an evaluation preset is measured against. Early exit: a sample broken by one member is not
    attacked again, so the union, not each member's own accuracy, is what a run gives.
    """
    apgd = {"n_iter": steps}
    return (
        *(Member("sapgd", e, {"steps": steps}) for e in REFERENCE_SAPGD_ESTIMATORS),
        *(Member("apgd-ce", e, apgd) for e in REFERENCE_APGD_ESTIMATORS),
        *(
            Member("apgd-dlr", e, apgd)
            for e in (*REFERENCE_APGD_ESTIMATORS[:4], "assg-atan-0.425-dr")
        ),
        Member("apgd-t", "assg-atan-0.425-dr", {"n_iter": 100, "n_target_classes": 9}),
        Member("apgd-t", "bptt-rel-pcw-0.5", {"n_iter": 100, "n_target_classes": 9}),
        Member("square", None, {"n_queries": square_queries}),
    )


_add(
    "reference-pool",
    reference_pool_members(),
    f"the gap benchmark's reference pool v{REFERENCE_POOL_VERSION}: SA-PGD-300 x 32 estimators, "
    "APGD-CE-300 x 8, APGD-DLR-300 x 5, APGD-T x 2 (9 targets), Square-5000 (slow: for "
    "benchmarks)",
)

# the escalation level above `reliable` races the reference pool's scale-free estimators
RELIABLE_PLUS_V2 = (
    race_member(
        tuple(e for e in REFERENCE_SAPGD_ESTIMATORS if not e.startswith("bptt-pcw")),
        steps=300,
        checkpoints=(10, 40, 120),
        keep=(8, 4, 2),
        finisher_iter=100,
        finisher_targets=9,
    ),
    *RELIABLE_PLUS_V1,
    # `reliable`'s close-call members that reliable-plus-v1 lacks: APGD-DLR on every
    # standing sample, the restarted round where the attacks came within 0.2
    Member("apgd-dlr", "bptt-rel-pcw-0.5", {"n_iter": 300}),
    Member("apgd-dlr", ANCHOR_ESTIMATOR, {"n_iter": 300}),
    *(m for m in close_call_members() if m.close_call == CLOSE_CALL_TIGHT),
    *warm_start_members(CLOSE_CALL_LOOSE),
)
"""``reliable-plus`` up to issue 30's fifth design (without the boundary-restart round)."""
RELIABLE_PLUS_V3 = (*RELIABLE_PLUS_V2, *boundary_restart_members())
"""``reliable-plus`` of issue 30's fifth design (without the wide close-call round)."""
RELIABLE_PLUS_V4 = (*RELIABLE_PLUS_V3, *wide_close_call_members())
"""``reliable-plus`` of issue 30's sixth design (without the mixed-width round)."""
_add(
    "reliable-plus",
    (*RELIABLE_PLUS_V4, *mixed_width_members()),
    "escalation level 2: a race of SA-PGD-300 through the reference pool's 28 scale-free "
    "estimators (keep 8/4/2 after 10/40/120 iterations, APGD-T with 9 targets through the "
    "winner), every member of reliable-plus-v1, APGD-DLR-300 through the relative width 0.5 and "
    "ASSG, reliable's restarted close-call round and its warm-start round (within 0.5), "
    "reliable's boundary-restart round and its wide close-call round (within 0.75), reliable's "
    "mixed-width round (within 0.5)",
    late_from=second_half(RELIABLE_PLUS_V4),
)
_add(
    "reliable-plus-v4",
    RELIABLE_PLUS_V4,
    "`reliable-plus` before the mixed-width round (issue 30's sixth design), kept so its "
    "numbers can be reproduced",
)
_add(
    "reliable-plus-v3",
    RELIABLE_PLUS_V3,
    "`reliable-plus` before the wide close-call round (issue 30's fifth design), kept so its "
    "numbers can be reproduced",
)
_add(
    "reliable-plus-v2",
    RELIABLE_PLUS_V2,
    "`reliable-plus` before the boundary-restart round (issue 30's fourth design), kept so its "
    "numbers can be reproduced",
)
