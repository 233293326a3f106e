"""Finetuning adversaries as values: an attack, its settings, and the estimators it sees the SNN
through, decoupled from the estimator the training loss backpropagates through.

The paper finetunes against a single-step KL adversary that differentiates the SNN through the
same fixed-width surrogate the loss uses. Measured under ``reliable``, that teaches the SNN to
be hard to attack *through that surrogate* rather than robust (docs/RESULTS.md 8e, 9). Here
the adversary is written in the member language of the evaluation ensembles::

    kl/bptt-pcw-1                                   # the paper's (steps 1)
    pgd[steps=3]/bptt-rel-pcw-1+ann-proxy+bptr      # PGD-3 on the CE, one estimator per batch
    {attack: sapgd, params: {steps: 5}, estimator: [assg-atan-0.425-dr, ann-proxy]}

With several estimators, each batch draws one from the trainer's seeded step generator (same
seed, same draws; a resumed run re-seeds it per epoch, so it draws the same again). Every
adversary run attacks a fresh :class:`~robustsnn.snn.network.EstimatorView`, so a stateful
estimator (ASSG) starts from nothing for every batch, exactly as in evaluation.

Attacks (registry :data:`ADVERSARY_ATTACKS`):

- ``kl``: the paper's adversary: random sign start of ``alpha``, ``steps`` signed steps on
  ``KL(f(x') || f(x))`` (one step of ``eps - alpha``; more: ``2.5 eps / steps`` each);
- ``pgd``: PGD on the cross-entropy from a uniform start, last iterate (Madry's inner
  maximisation; the evaluation's PGD stops on success and is a weaker training distribution);
- ``sapgd``: the evaluation's SA-PGD with ``steps`` iterations (any-iterate success).

Named adversaries (registry :data:`ADVERSARIES`, accepted wherever a spec is: ``--adversary
pgd7-drawn``, ``finetune.adversary: sapgd10-widths``) are the issue-31 levers of adversary
strength and estimator spread, each a plain spec in this language:

- ``pgd3-drawn``: PGD-3 through one of :data:`DRAWN_ESTIMATORS` per batch (the default since
  issue 21, recipe D); ``pgd7-drawn``: PGD-7; ``sapgd10-drawn``: SA-PGD-10;
- ``pgd3-widths``, ``pgd7-widths``, ``sapgd10-widths``: the same attacks through
  :data:`WIDTH_ESTIMATORS`: the four drawn estimators plus narrow threshold-relative widths
  (PCW 0.25 and 0.5 of the threshold) and absolute widths (PCW 1 and 2 in membrane units), so
  the SNN cannot lean on the one width its loss backpropagates through.

The training PGD is :func:`~robustsnn.training.inner.pgd_ce`, the last iterate of every sample
(:func:`robustsnn.attacks.pgd.pgd_last_iterate`, PGD's last-iterate mode on the attacks' own
primitives) rather than :class:`robustsnn.attacks.PGD`, whose evaluation bookkeeping freezes a
sample at its first success: a weaker training distribution. SA-PGD is the evaluation's attack
as is.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from robustsnn.attacks import build_attack
from robustsnn.attacks.base import begin_run, default_step_size
from robustsnn.errors import UserError
from robustsnn.registry import Registry
from robustsnn.snn import SpikingNetwork, parse_estimator
from robustsnn.snn.estimators import Estimator
from robustsnn.training.inner import Classifier, attack_mode, finetune_kl_adversary, pgd_ce

AttackFunction = Callable[..., Tensor]
"""``(view, x, y, *, eps, alpha, generator, **params) -> x_adv`` (the view is in eval mode)."""


@dataclass(frozen=True)
class AdversaryAttack:
    """One registered finetuning attack: its function and the parameters it accepts."""

    run: AttackFunction
    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)


ADVERSARY_ATTACKS: Registry[AdversaryAttack] = Registry("finetuning adversary attack")


def _kl(
    view: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    generator: torch.Generator | None,
    steps: int = 1,
    step_size: float | None = None,
) -> Tensor:
    del y
    return finetune_kl_adversary(
        view, x, eps=eps, alpha=alpha, steps=int(steps), step_size=step_size, generator=generator
    )


def _pgd(
    view: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    generator: torch.Generator | None,
    steps: int = 3,
    step_size: float | None = None,
    random_start: bool = True,
) -> Tensor:
    del alpha
    size = default_step_size(eps, int(steps)) if step_size is None else float(step_size)
    return pgd_ce(
        view,
        x,
        y,
        eps=eps,
        steps=int(steps),
        step_size=size,
        random_start=bool(random_start),
        generator=generator,
    )


def _sapgd(
    view: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    generator: torch.Generator | None,
    steps: int = 5,
) -> Tensor:
    del alpha
    attack = build_attack("sapgd", eps=eps, steps=int(steps))
    return attack(view, x, y, generator=generator)


ADVERSARY_ATTACKS.register("kl")(AdversaryAttack(_kl, ("steps", "step_size"), {"steps": 1}))
ADVERSARY_ATTACKS.register("pgd")(
    AdversaryAttack(_pgd, ("steps", "step_size", "random_start"), {"steps": 3})
)
ADVERSARY_ATTACKS.register("sapgd")(AdversaryAttack(_sapgd, ("steps",), {"steps": 5}))


DRAWN_ESTIMATORS = ("bptt-rel-pcw-1", "ann-proxy", "bptr", "assg-atan-0.425-dr")
"""The four estimators of issue 21's adversary (one drawn per batch): threshold-relative PCW,
the ANN proxy, BPTR and ASSG with the reset detached."""

WIDTH_ESTIMATORS = (
    *DRAWN_ESTIMATORS,
    "bptt-rel-pcw-0.25",
    "bptt-rel-pcw-0.5",
    "bptt-pcw-1",
    "bptt-pcw-2",
)
""":data:`DRAWN_ESTIMATORS` plus surrogate widths drawn too: narrow relative widths (a quarter
and a half of each layer's threshold) and absolute widths (1 and 2 in membrane units)."""

ADVERSARIES: Registry[str] = Registry("finetuning adversary")
"""Named finetuning adversaries: name -> spec in the member language (see the module doc)."""

for _attack, _label in (
    ("pgd[steps=3]", "pgd3"),
    ("pgd[steps=7]", "pgd7"),
    ("sapgd[steps=10]", "sapgd10"),
):
    ADVERSARIES.add(f"{_label}-drawn", f"{_attack}/{'+'.join(DRAWN_ESTIMATORS)}")
    ADVERSARIES.add(f"{_label}-widths", f"{_attack}/{'+'.join(WIDTH_ESTIMATORS)}")


@dataclass(frozen=True)
class AdversarySpec:
    """A finetuning adversary: ``attack`` with ``params``, seen through one of ``estimators``
    (drawn per batch when there are several)."""

    attack: str = "kl"
    estimators: tuple[str, ...] = ("bptt-pcw-1",)
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``attack[k=v,...]/est1+est2``: the compact form :func:`parse_adversary` reads."""
        text = self.attack
        if self.params:
            text += "[" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items())) + "]"
        return text + "/" + "+".join(self.estimators)

    def describe(self) -> dict[str, Any]:
        """JSON-able form for checkpoint metadata and the resume fingerprint."""
        return {
            "name": self.name,
            "attack": self.attack,
            "estimators": list(self.estimators),
            "params": json.loads(json.dumps(dict(self.params), sort_keys=True, default=str)),
        }


_COMPACT = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*(?:\[(.*)\])?\s*(?:/\s*(.+))?$")


def _parse_compact(text: str) -> dict[str, Any]:
    match = _COMPACT.match(text)
    if not match:
        raise UserError(
            f"finetuning adversary {text!r}: write attack[k=v,...]/estimator[+estimator...], "
            "e.g. pgd[steps=3]/bptt-rel-pcw-1+ann-proxy, or a name: "
            + ", ".join(ADVERSARIES.names())
        )
    attack, args, estimators = match.groups()
    params: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in (args or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"finetuning adversary {text!r}: parameter {item!r} needs k=v")
        params[key.strip()] = yaml.safe_load(value.strip())
    spec: dict[str, Any] = {"attack": attack, "params": params}
    if estimators:
        spec["estimator"] = [e.strip() for e in estimators.split("+") if e.strip()]
    return spec


def parse_adversary(
    spec: str | Mapping[str, Any] | AdversarySpec | None,
    *,
    default_estimator: str = "bptt-pcw-1",
) -> AdversarySpec:
    """An :class:`AdversarySpec` from a named adversary (:data:`ADVERSARIES`), the compact
    string, a mapping ``{attack, estimator, params}`` (``estimator`` one name or a list), or
    YAML/JSON text of that mapping; None is the paper's single-step KL adversary through
    ``default_estimator``. Unknown attacks, parameters or estimators fail with one line naming
    the valid ones."""
    if isinstance(spec, str) and spec.strip() in ADVERSARIES:
        spec = ADVERSARIES.get(spec.strip())
    if isinstance(spec, AdversarySpec):
        data: Any = {
            "attack": spec.attack,
            "estimator": list(spec.estimators),
            "params": spec.params,
        }
    elif spec is None:
        data = {"attack": "kl"}
    elif isinstance(spec, str):
        text = spec.strip()
        try:
            data = yaml.safe_load(text) if text.startswith("{") else _parse_compact(text)
        except yaml.YAMLError:
            raise UserError(
                f"finetuning adversary {text!r} is not valid YAML; write e.g. "
                "{attack: pgd, params: {steps: 3}, estimator: [bptr, ann-proxy]}"
            ) from None
    else:
        data = dict(spec)
    if not isinstance(data, Mapping):
        raise UserError(f"finetuning adversary must be a mapping or attack/estimator, got {spec!r}")
    unknown = sorted(set(data) - {"attack", "estimator", "params"})
    if unknown:
        raise UserError(
            f"finetuning adversary: unknown key(s) {', '.join(unknown)}; "
            "valid: attack, estimator, params"
        )
    attack = str(data.get("attack", "kl"))
    if attack not in ADVERSARY_ATTACKS:
        raise UserError(
            f"unknown finetuning adversary attack {attack!r}; valid: "
            f"{', '.join(ADVERSARY_ATTACKS.names())}; named adversaries: "
            f"{', '.join(ADVERSARIES.names())}"
        )
    entry = ADVERSARY_ATTACKS.get(attack)
    params = dict(data.get("params") or {})
    bad = sorted(set(params) - set(entry.params))
    if bad:
        raise UserError(
            f"finetuning adversary {attack!r}: unknown parameter(s) {', '.join(bad)}; "
            f"valid: {', '.join(entry.params)}"
        )
    steps = params.get("steps", entry.defaults.get("steps", 1))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"finetuning adversary {attack!r}: steps must be an integer >= 1")
    raw = data.get("estimator", default_estimator)
    names: Sequence[Any] = [raw] if isinstance(raw, str) else list(raw or [])
    if not names:
        raise UserError("finetuning adversary: estimator list is empty")
    estimators = []
    for name in names:
        try:
            estimators.append(parse_estimator(str(name)).name)
        except ValueError as exc:
            raise UserError(f"finetuning adversary: {exc}") from None
    return AdversarySpec(attack, tuple(estimators), {**entry.defaults, **params})


class FinetuneAdversary:
    """Callable ``(model, x, y, generator) -> x_adv`` for the finetuning objectives.

    The attack runs in eval mode with parameter gradients off (:func:`attack_mode`), on a fresh
    estimator view of the SNN per call; ``draws`` counts the estimators drawn so far.
    """

    def __init__(self, spec: AdversarySpec, *, eps: float, alpha: float) -> None:
        self.spec = spec
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.estimators: list[Estimator] = [parse_estimator(e) for e in spec.estimators]
        self._run = ADVERSARY_ATTACKS.get(spec.attack).run
        self.draws: Counter[str] = Counter()

    def draw(self, generator: torch.Generator | None) -> Estimator:
        """This batch's estimator: the only one, or one drawn uniformly from ``generator``
        (a single estimator draws nothing, so the paper's adversary repeats bit for bit)."""
        if len(self.estimators) == 1:
            chosen = self.estimators[0]
        else:
            index = int(torch.randint(len(self.estimators), (1,), generator=generator))
            chosen = self.estimators[index]
        self.draws[chosen.name] += 1
        return chosen

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        estimator = self.draw(generator)
        with attack_mode(model) as net:
            view = net.with_estimator(estimator) if isinstance(net, SpikingNetwork) else net
            begin_run(view, x.shape[0])  # a stateful estimator starts fresh for every batch
            x_adv = self._run(
                view,
                x,
                y,
                eps=self.eps,
                alpha=self.alpha,
                generator=generator,
                **dict(self.spec.params),
            )
        return x_adv.detach()

    def describe(self) -> dict[str, Any]:
        return {**self.spec.describe(), "eps": self.eps, "alpha": self.alpha}
