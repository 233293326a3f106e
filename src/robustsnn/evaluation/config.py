"""The config objects of the evaluation entry points (issue 34): what an evaluation measures
(:class:`EvaluationConfig`) and how one call runs (:class:`EvaluationContext`).

``evaluate(model, x, y, EvaluationConfig(eps=8 / 255, ensemble="reliable"))`` is the API; the
defaults live here, once. The old keyword style (``evaluate(model, x, y, eps=..., ...)``) is
read by :func:`from_keywords`, which warns (DeprecationWarning) at the caller's line.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from robustsnn.evaluation.diagnostics import DiagnosticsConfig
from robustsnn.evaluation.ensembles import Ensemble, Member
from robustsnn.evaluation.stochastic import StochasticConfig
from robustsnn.evaluation.views import ViewFactory, attack_view

DEFAULT_BATCH_SIZE = 128


@dataclass(frozen=True)
class CommandProfile:
    """The defaults of a command that evaluates files (``robustsnn evaluate``, ``latency``),
    named here beside the Python API's so that every default lives in this module.

    They differ from :class:`EvaluationConfig`'s and :class:`EvaluationRun`'s on purpose: a
    command picks a stratified subset (the API: the samples it is given, or the whole split)
    and spreads a CPU's cores over worker processes (the API: the caller's process). The batch
    size is part of every record's random streams, so changing one here changes the numbers
    of every run made with the default: a new profile, not an edit."""

    n: int | None
    batch_size: int
    ensemble: str
    escalate_levels: int
    workers: int = 1


EVALUATE_COMMAND = CommandProfile(
    n=1000, batch_size=100, ensemble="reliable", escalate_levels=2, workers=0
)
"""``robustsnn evaluate``: 1000 stratified test images, batches of 100, the ``reliable``
preset, at most 2 escalation steps, one worker process per core."""

LATENCY_COMMAND = CommandProfile(n=200, batch_size=100, ensemble="reliable", escalate_levels=1)
"""``robustsnn latency``: 200 images per T (a curve runs one evaluation per T), batches of
100, ``reliable``, at most 1 escalation step per T, this process only."""

EnsembleLike = str | Ensemble | Sequence[Mapping[str, Any] | str | Member]


class BatchShard(Protocol):
    """This process's part of a sharded evaluation (see :mod:`robustsnn.evaluation.sharding`)."""

    state_name: str

    def batches(self, n_batches: int) -> Collection[int]:
        """The batch indices this process attacks (iterated once, in order)."""
        ...

    def gather(self, done: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Every rank's finished batches, keyed by batch index (a collective)."""
        ...

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0, its result given to every rank (a collective)."""
        ...


@dataclass(frozen=True)
class EvaluationConfig:
    """What an evaluation measures; the same config gives the same result (resumable).

    Attributes:
        eps: L-inf radius in pixels, as a float or a string (``"8/255"``).
        ensemble: preset name (``ENSEMBLES``), :class:`Ensemble` or a spec list of
            ``{attack, estimator, params}`` dicts. None with ``attacks`` None: clean
            accuracy only in :func:`~robustsnn.evaluation.evaluate.evaluate`, but the default
            preset (``reliable``) in :func:`~robustsnn.evaluation.run.run_evaluation`, which
            mirrors the CLI (there ``attacks="none"`` is clean accuracy only).
        attacks: an attack name (``"pgd"``: with every estimator for an SNN) or a member list,
            run independently to fill ``attacks``; their per-sample worst case is reported as an
            ensemble when there are several.
        independent: run every ensemble member on every clean-correct sample (fills
            ``attacks``); the ensemble result is then the per-sample AND.
        batch_size: samples per attack call (results depend on it: part of the resume key).
        seed: seeds every attack's generator together with the batch index and member name.
        diagnostics: "fast", "full", "none" or a :class:`DiagnosticsConfig`.
        diagnostics_n: samples per diagnostic check (default: the mode's).
        save_adversarial: keep every break's adversarial example and logits
            (:mod:`robustsnn.evaluation.adversarial`).
        randomness: how a random model is handled (:mod:`robustsnn.evaluation.stochastic`):
            None or "auto" (detect; if random, EOT views and majority votes), "off", "force" or
            a :class:`StochasticConfig`. A deterministic model's results do not depend on it.
    """

    eps: float | str
    ensemble: EnsembleLike | None = None
    attacks: str | Sequence[Mapping[str, Any] | str | Member] | None = None
    independent: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    diagnostics: str | DiagnosticsConfig = "fast"
    diagnostics_n: int | None = None
    save_adversarial: bool = False
    randomness: StochasticConfig | str | Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EvaluationContext:
    """How one evaluation call runs, not what it measures.

    Attributes:
        state_dir: folder for the resume state (``evaluation-state.json``); None: no resume.
        quiet: no progress bars or messages.
        meta: ``model``, ``dataset``, ``split`` and any extra keys for the result.
        indices: dataset indices of the samples, for the records (default ``0..N-1``).
        transfer_source: a model to craft transfer attacks on (enables
            ``transfer_vs_white_box``).
        view_factory: ``(model, estimator) -> callable`` an attack runs on (default
            :func:`attack_view`); the verdict always uses the real forward pass.
        callback: called with the batch index after each batch is finished and saved.
        shard: this process's share of a sharded evaluation (None: every batch); the per-rank
            resume file is ``shard.state_name`` in ``state_dir``.
    """

    state_dir: str | Path | None = None
    quiet: bool = False
    meta: Mapping[str, Any] | None = None
    indices: Sequence[int] | Tensor | None = None
    transfer_source: nn.Module | None = None
    view_factory: ViewFactory = attack_view
    callback: Callable[[int], None] | None = None
    shard: BatchShard | None = None


@dataclass(frozen=True)
class EscalationPolicy:
    """How far an evaluation escalates: at most ``levels`` steps, none started after ``seconds``,
    and at least up to the preset ``at_least`` whatever the checks say (so that rows compared
    with each other, e.g. an ANN and its SNNs, end on the same preset of the ladder; steps
    taken for it do not count against ``levels``)."""

    levels: int = 2
    seconds: float | None = None
    at_least: str | None = None


@dataclass(frozen=True)
class EvaluationRun:
    """How :func:`~robustsnn.evaluation.run.run_evaluation` reads a checkpoint's data and runs
    the evaluation around :class:`EvaluationConfig` (whose ``ensemble`` None with ``attacks``
    None is the default preset ``reliable`` there, and ``attacks="none"`` clean accuracy only).

    Attributes:
        n: number of stratified samples (None: the whole split).
        split: ``test`` or ``train``.
        dataset: dataset spec overriding the one in the checkpoint metadata.
        data_dir: the datasets' folder.
        estimator: restrict the members to this gradient estimator.
        transfer_from: a checkpoint to craft transfer attacks on.
        escalate: escalate to stronger presets while checks fail or late members still break
            samples (:mod:`robustsnn.evaluation.escalate`); None: no escalation.
        out_dir: output folder (default: ``<checkpoint folder>/eval-<checkpoint name>``); it
            also holds the resume state, so re-running the same call resumes.
        device: the torch device.
        workers: processes on a CPU (:mod:`robustsnn.evaluation.workers`); 0 = one per core.
        quiet: no progress bars or messages.
        indices: exactly these dataset indices of the split, in this order, instead of the
            stratified ``n`` (e.g. re-attack the samples an earlier run left standing: the
            reference pool of ``benchmarks/oracle_gap.py`` on a preset's survivors); ``n``
            must then be None or their number.
    """

    n: int | None = None
    split: str = "test"
    dataset: str | None = None
    data_dir: str | Path | None = None
    estimator: str | None = None
    transfer_from: str | Path | None = None
    escalate: EscalationPolicy | None = None
    out_dir: str | Path | None = None
    device: str = "cpu"
    workers: int = 1
    quiet: bool = False
    indices: Sequence[int] | None = None


CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(EvaluationConfig))
CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(EvaluationContext))
RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(EvaluationRun))


def warn_old_call(old: str, new: str, stacklevel: int = 4) -> None:
    """The DeprecationWarning of an old call style; the default ``stacklevel`` points at the
    caller of the entry point that called the helper that calls this."""
    warnings.warn(
        f"{old} is deprecated and goes in the next release; call {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def split_keywords(
    keywords: Mapping[str, Any], entry: str, defaults: Mapping[str, Any] | None = None
) -> tuple[EvaluationConfig, EvaluationContext, dict[str, Any]]:
    """The old keywords of ``entry`` as an :class:`EvaluationConfig`, an
    :class:`EvaluationContext` and the rest (the entry's own options); ``defaults`` are the
    entry's old defaults where they differ from the config's."""
    merged = {**(defaults or {}), **keywords}
    if "eps" not in merged:
        raise TypeError(f"{entry}() missing the keyword argument eps")
    config = EvaluationConfig(**{k: v for k, v in merged.items() if k in CONFIG_FIELDS})
    context = EvaluationContext(**{k: v for k, v in merged.items() if k in CONTEXT_FIELDS})
    rest = {k: v for k, v in merged.items() if k not in CONFIG_FIELDS | CONTEXT_FIELDS}
    return config, context, rest
