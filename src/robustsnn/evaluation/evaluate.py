"""Adaptive robustness evaluation: an ensemble of (attack, estimator) members, per-sample worst case.

``evaluate(model, x, y, eps=8/255, ensemble="pgd-ensemble")`` returns the ``evaluation.json``
dict of DESIGN.md section 5. Semantics (PAPER.md section 5):

- one clean forward (the model's real forward pass) decides ``clean_correct``;
- early-exit mode (default): members run in order, each only on the samples still standing;
  a sample is robust only if it survives every member;
- independent mode: every member attacks every clean-correct sample (``attacks`` gets one row
  per member) and the ensemble result is the per-sample AND;
- an adversarial example counts only if the model's *real* forward pass (default estimator,
  ``torch.no_grad``) misclassifies it: an attack's own logits (e.g. the ANN proxy's) are never
  trusted; a random model's example must be misclassified by the majority of M draws twice,
  the screen's (the ensemble's success test) and then the verdict's, a seed stream no search
  draws from (:mod:`robustsnn.evaluation.stochastic`);
- every attack call gets a generator seeded from (seed, batch index, member name), so results do
  not depend on the order batches run in, nor on resuming;
- with ``state_dir``, every finished batch is saved atomically; a restart with the same settings
  skips finished batches and gives the same result (other settings: it starts over);
- with ``shard`` (:mod:`robustsnn.evaluation.sharding`, under torchrun), this process attacks only
  its share of the batches, the ranks' finished batches are gathered, and the diagnostics run
  once on rank 0; every rank returns the result a single process would.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

import robustsnn.evaluation.adversarial as adv_store
from robustsnn.attacks import Attack
from robustsnn.attacks.race import real_margin
from robustsnn.errors import UserError
from robustsnn.evaluation.config import (
    DEFAULT_BATCH_SIZE,
    BatchShard,
    EnsembleLike,
    EvaluationConfig,
    EvaluationContext,
    split_keywords,
    warn_old_call,
)
from robustsnn.evaluation.diagnostics import (
    DiagnosticsConfig,
    DiagnosticsRun,
    resolve_config,
    run_diagnostics,
)
from robustsnn.evaluation.ensembles import (
    Ensemble,
    Member,
    attack_grid,
    ensemble_from_spec,
    resolve_ensemble,
)
from robustsnn.evaluation.intervals import wilson_interval
from robustsnn.evaluation.stochastic import (
    Randomness,
    misclassification_interval,
    resolve_randomness,
    seeded_global_rng,
)
from robustsnn.evaluation.ties import robust_at_tie
from robustsnn.evaluation.views import (
    derive_seed,
    eval_mode,
    is_snn,
    member_view,
    model_digest,
    real_logits,
    real_predict,
    real_verdict,
    seeded_generator,
    tensor_digest,
)
from robustsnn.io.atomic import atomic_write_json

STATE_FILE = "evaluation-state.json"
STATE_VERSION = 1
_RANGE_TOLERANCE = 1e-5

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "STATE_FILE",
    "BatchShard",
    "EnsembleLike",
    "EvaluationConfig",
    "EvaluationContext",
    "evaluate",
    "parse_eps",
]


def parse_eps(value: str | float | int) -> float:
    """``"8/255"`` / ``"0.0314"`` / ``0.0314`` -> float in [0, 1] pixel units.

    A value above 1 is refused with a hint (``8`` is most likely meant as ``8/255``).
    """
    if isinstance(value, bool):
        raise UserError(f"eps must be a number like 8/255 or 0.0314, got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                numerator, denominator = text.split("/", 1)
                eps = float(numerator) / float(denominator)
            else:
                eps = float(text)
        except (ValueError, ZeroDivisionError):
            raise UserError(
                f"cannot read eps {value!r}; write it as a fraction like 8/255 or a decimal "
                "like 0.0314 (pixel units in [0, 1])"
            ) from None
    else:
        raise UserError(f"eps must be a number like 8/255 or 0.0314, got {value!r}")
    if not math.isfinite(eps) or eps < 0:
        raise UserError(f"eps must be a finite number >= 0 in pixel units, got {value!r}")
    if eps > 1:
        raise UserError(
            f"eps {value!r} is larger than 1 but eps is in [0, 1] pixel units; did you mean "
            f"{value}/255?"
        )
    return eps


# --------------------------------------------------------------------------- inputs


def _check_data(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise UserError("evaluate needs images x as a tensor [N, C, H, W] (or [N, D])")
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    if not x.dtype.is_floating_point:
        raise UserError(f"evaluate needs float images in [0, 1] (or uint8), got {x.dtype}")
    if x.numel() and (float(x.min()) < -_RANGE_TOLERANCE or float(x.max()) > 1 + _RANGE_TOLERANCE):
        raise UserError(
            "evaluate needs images in [0, 1] pixel space; normalization belongs inside the model"
        )
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise UserError(f"evaluate needs labels y [N] for N = {x.shape[0]} images")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise UserError(f"labels must be integer class indices, got dtype {y.dtype}")
    if x.shape[0] == 0:
        raise UserError("evaluate got no samples (n = 0); ask for at least one")
    return x.detach().clamp(0.0, 1.0), y.detach().long()


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return fallback


def _resolve_members(
    model: nn.Module,
    ensemble: EnsembleLike | None,
    attacks: str | Sequence[Mapping[str, Any] | str | Member] | None,
) -> tuple[Ensemble | None, bool]:
    """The ensemble to run and whether it came from ``attacks`` (a table, run independently)."""
    if ensemble is not None and attacks is not None:
        raise UserError("give either an ensemble or a list of attacks, not both")
    if attacks is not None:
        if isinstance(attacks, str):
            return attack_grid(attacks, model), True
        table = ensemble_from_spec(attacks, name="attacks").for_model(model)
        kinds = {m.attack for m in table.members}
        if len(kinds) == 1 and len(table) > 1:
            name = f"{next(iter(kinds))} (all estimators)"
        elif len(table) > 1:
            name = "attacks (worst case)"
        else:
            name = table.members[0].name
        return Ensemble(name, table.members, "attacks run independently", table.left_out), True
    if ensemble is None:
        return None, False
    resolved = resolve_ensemble(ensemble).for_model(model)
    if not resolved.members:
        raise UserError(f"ensemble {resolved.name!r} has no members")
    return resolved, False


# --------------------------------------------------------------------------- resume state


def _normalized(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


class _ResumeState:
    """Per-batch progress in ``<state_dir>/evaluation-state.json``, written atomically."""

    def __init__(
        self,
        state_dir: str | Path | None,
        fingerprint: dict[str, Any],
        log: Callable[[str], None],
        name: str = STATE_FILE,
    ) -> None:
        self.path = Path(state_dir) / name if state_dir is not None else None
        self.fingerprint = _normalized(fingerprint)
        self.data: dict[str, Any] = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "batches": {},
            "diagnostics": None,
        }
        if self.path is None:
            return
        self._adopt_siblings()
        if not self.path.is_file():
            return
        try:
            previous = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log(f"resume state {self.path} is unreadable ({exc}); starting the evaluation over")
            return
        if (
            isinstance(previous, dict)
            and previous.get("version") == STATE_VERSION
            and previous.get("fingerprint") == self.fingerprint
            and isinstance(previous.get("batches"), dict)
        ):
            siblings = self.data["batches"]
            self.data = previous
            for key, value in siblings.items():
                self.data["batches"].setdefault(key, value)
            done = len(previous["batches"])
            if done:
                log(f"resuming from {self.path}: {done} finished batch(es) are skipped")
        else:
            log(
                f"resume state {self.path} was made with other settings (model, data, eps, "
                "ensemble, seed or batch size); starting the evaluation over"
            )

    def _adopt_siblings(self) -> None:
        """Finished batches from the other state files in the folder (``evaluation-state*.json``:
        the shards of a sharded run, or a single process's state) made with the same settings,
        so a restart with another number of processes reuses them. Read only."""
        assert self.path is not None
        stem = Path(STATE_FILE).stem
        for other in sorted(self.path.parent.glob(f"{stem}*.json")):
            if other == self.path:
                continue
            try:
                previous = json.loads(other.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if (
                isinstance(previous, dict)
                and previous.get("version") == STATE_VERSION
                and previous.get("fingerprint") == self.fingerprint
                and isinstance(previous.get("batches"), dict)
            ):
                for key, value in previous["batches"].items():
                    self.data["batches"].setdefault(key, value)

    def batch(self, index: int) -> dict[str, Any] | None:
        result = self.data["batches"].get(str(index))
        return result if isinstance(result, dict) else None

    def save_batch(self, index: int, payload: dict[str, Any]) -> None:
        self.data["batches"][str(index)] = _normalized(payload)
        self._write()

    def diagnostics(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        saved = self.data.get("diagnostics")
        if isinstance(saved, dict) and saved.get("fingerprint") == _normalized(fingerprint):
            results = saved.get("results")
            return results if isinstance(results, dict) else None
        return None

    def save_diagnostics(self, fingerprint: dict[str, Any], results: dict[str, Any]) -> None:
        self.data["diagnostics"] = {
            "fingerprint": _normalized(fingerprint),
            "results": _normalized(results),
        }
        self._write()

    def _write(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.data)


# --------------------------------------------------------------------------- one batch


class _BatchBook:
    """Per-sample bookkeeping of one batch while its members run: who stands, who broke it,
    the closest call (a deterministic model's margins) and a random model's verdict counts."""

    def __init__(self, model: nn.Module, xb: Tensor, yb: Tensor) -> None:
        n = xb.shape[0]
        self.yb = yb
        logits = real_logits(model, xb)
        # a random model: the verdict stream's (majority labels, wrong draws, M); else None
        self.clean_votes = real_verdict(model, xb, yb) if logits is None else None
        if logits is not None:
            self.clean_pred = logits.argmax(1)
        elif self.clean_votes is not None:
            self.clean_pred = self.clean_votes[0]
        else:
            self.clean_pred = real_predict(model, xb)
        # per sample: the real model's margin z_y - max_{j != y} z_j at the clean input and the
        # smallest any member's example reached (how close the attacks came)
        self.clean_margin = real_margin(logits, yb) if logits is not None else None
        self.closest = self.clean_margin.clone() if self.clean_margin is not None else None
        # ... and where: the example that reached it (the clean image until one comes closer),
        # the start of members that begin from the closest call (``init="given"``)
        self.closest_x = xb.clone() if self.closest is not None else None
        self.correct = self.clean_pred == yb
        self.standing = self.correct.clone()
        self.prediction = self.clean_pred.clone()
        self.broken_by: list[str | None] = [None] * n
        self.broken_all: list[list[str]] = [[] for _ in range(n)]
        self.refused: list[list[str]] = [[] for _ in range(n)]
        self.unconfirmed: list[list[str]] = [[] for _ in range(n)]
        self.adversarial_wrong: dict[int, int] = {}

    def targets(self, member: Member, independent: bool) -> Tensor:
        """Positions ``member`` attacks: the standing (or, independent, the clean-correct)
        samples, within its close-call fraction of the clean margin if it has one."""
        active = self.correct if independent else self.standing
        if (
            member.close_call is not None
            and self.closest is not None
            and self.clean_margin is not None
        ):
            active = active & (self.closest <= member.close_call * self.clean_margin)
        return active.nonzero().squeeze(1)

    def judge(
        self, model: nn.Module, member: str, idx: Tensor, x_adv: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The real model's labels of ``x_adv`` and which of them count as breaks; updates the
        closest calls. A random model: each break the screen (``real_predict``, which searches
        may have seen) calls is confirmed on the verdict stream's draws."""
        y = self.yb[idx]
        adv_logits = real_logits(model, x_adv)
        pred = adv_logits.argmax(1) if adv_logits is not None else real_predict(model, x_adv)
        if self.closest is not None and adv_logits is not None:
            reached = real_margin(adv_logits, y)
            reached[~valid] = math.inf
            closer = reached < self.closest[idx]
            if self.closest_x is not None and bool(closer.any()):
                self.closest_x[idx[closer]] = x_adv[closer].to(self.closest_x.dtype)
            self.closest[idx] = torch.minimum(self.closest[idx], reached)
        fooled = (pred != y) & valid
        if self.clean_votes is not None and bool(fooled.any()):
            rows = fooled.nonzero().squeeze(1)
            verdict = real_verdict(model, x_adv[rows], y[rows])
            if verdict is not None:
                labels, wrong, draws = verdict
                held = 2 * wrong > draws
                pred = pred.clone()
                pred[rows] = labels
                fooled[rows[~held]] = False
                for row, count, ok in zip(
                    rows.tolist(), wrong.tolist(), held.tolist(), strict=True
                ):
                    position = int(idx[row])
                    if not ok:
                        self.unconfirmed[position].append(member)
                    elif bool(self.standing[position]):
                        self.adversarial_wrong[position] = int(count)
        return pred, fooled

    def record(self, i: int, index: int, any_members: bool, independent: bool) -> dict[str, Any]:
        """Sample ``i``'s record (``index``: its dataset index)."""
        record: dict[str, Any] = {
            "index": index,
            "label": int(self.yb[i]),
            "clean_correct": bool(self.correct[i]),
            "clean_prediction": int(self.clean_pred[i]),
            "robust": bool(self.standing[i]) if any_members else bool(self.correct[i]),
            "broken_by": self.broken_by[i],
            "prediction": int(self.prediction[i]),
        }
        if self.clean_margin is not None and self.closest is not None:
            record["clean_margin"] = _margin_value(self.clean_margin[i])
            if bool(self.correct[i]) and any_members:
                record["margin"] = _margin_value(self.closest[i])
        if independent:
            record["broken_by_all"] = self.broken_all[i]
        if self.refused[i]:
            record["refused_by"] = self.refused[i]
        votes = self.clean_votes
        if votes is not None:  # a random model: majority of M verdict draws, counts kept
            record["draws"] = votes[2]
            record["clean_wrong_draws"] = int(votes[1][i])
            if i in self.adversarial_wrong:
                record["adversarial_wrong_draws"] = self.adversarial_wrong[i]
                record["misclassification_ci95"] = misclassification_interval(
                    self.adversarial_wrong[i], votes[2]
                )
            if self.unconfirmed[
                i
            ]:  # the screen called these members' examples wrong, not the verdict
                record["unconfirmed_by"] = self.unconfirmed[i]
        return record


def _valid_or_warn(
    member: str, x_adv: Tensor, x: Tensor, eps: float, idx: Tensor, refused: list[list[str]]
) -> Tensor:
    """Which examples are finite, in [0, 1] and in the eps-ball; the others are refused (named
    in ``refused`` per position) with a warning."""
    valid = adv_store.valid_examples(x_adv, x, eps)
    if not bool(valid.all()):
        for position in idx[~valid].tolist():
            refused[position].append(member)
        warnings.warn(
            f"member {member!r} returned {int((~valid).sum())} example(s) outside "
            f"[0, 1] or the eps-ball (eps {eps:.6g}) or not finite; refused: they do not "
            "count as breaks (attack bug)",
            RuntimeWarning,
            stacklevel=3,
        )
    return valid


def _run_batch(
    model: nn.Module,
    xb: Tensor,
    yb: Tensor,
    indices: Sequence[int],
    lineup: Sequence[tuple[Member, Attack, Callable[[Tensor], Tensor]]],
    *,
    eps: float,
    independent: bool,
    seed: int,
    batch_index: int,
    on_member: Callable[[str], None],
    keep: dict[int, tuple[Tensor, str]] | None = None,
) -> dict[str, Any]:
    """Attack one batch with every member (``lineup``: each member, its built attack and the
    view it runs on, in order); return its per-sample records and timings.

    An example that is not finite, leaves [0, 1] or the eps-ball is refused: it does not count
    as a break, the record's ``refused_by`` names the member, and a warning says so. ``keep``
    (if given) receives, per broken position, the example that broke it and the member."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    book = _BatchBook(model, xb, yb)
    seconds["clean"] = time.perf_counter() - start
    standing = book.standing

    for member, attack, view in lineup:
        on_member(member.name)
        idx = book.targets(member, independent)
        seconds[member.name] = 0.0
        if idx.numel() == 0:
            continue
        start = time.perf_counter()
        generator = seeded_generator(seed, xb.device, "batch", batch_index, "member", member.name)
        if getattr(attack, "wants_start", False):  # begins at each sample's closest call
            begin = (book.closest_x if book.closest_x is not None else xb)[idx]
            x_adv = attack(view, xb[idx], yb[idx], generator=generator, start=begin)
        else:
            x_adv = attack(view, xb[idx], yb[idx], generator=generator)
        if x_adv.shape != xb[idx].shape:
            raise RuntimeError(f"member {member.name!r} returned examples of another shape")
        valid = _valid_or_warn(member.name, x_adv, xb[idx], eps, idx, book.refused)
        pred, fooled = book.judge(model, member.name, idx, x_adv, valid)
        seconds[member.name] = time.perf_counter() - start
        for position in idx[fooled].tolist():
            book.broken_all[position].append(member.name)
        first = idx[fooled & standing[idx]]
        for position, label in zip(
            first.tolist(), pred[fooled & standing[idx]].tolist(), strict=True
        ):
            book.broken_by[position] = member.name
            book.prediction[position] = label
        if keep is not None:
            for row, position in zip(
                (fooled & standing[idx]).nonzero().squeeze(1).tolist(), first.tolist(), strict=True
            ):
                keep[position] = (x_adv[row], member.name)
        standing[first] = False

    records = [
        book.record(i, int(indices[i]), bool(lineup), independent) for i in range(xb.shape[0])
    ]
    return {"records": records, "seconds": seconds}


def _margin_value(value: Tensor) -> float:
    """A margin for the records: 6 significant digits (JSON-friendly, still exact enough to
    rank samples by how close the attacks came)."""
    return float(f"{float(value):.6g}")


# --------------------------------------------------------------------------- evaluate


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: EvaluationConfig | None = None,
    context: EvaluationContext | None = None,
    **old: Any,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``(x, y)`` against an ensemble; return the evaluation.json dict.

    Args:
        model: an ANN or a SpikingNetwork (x in [0, 1] -> logits); evaluated in eval mode, its
            train/eval flags are restored afterwards.
        x, y: images ``[N, C, H, W]`` in [0, 1] (uint8 accepted) and labels ``[N]``.
        config: what is measured (:class:`EvaluationConfig`: radius, ensemble, batch size,
            seed, diagnostics, randomness, saved examples).
        context: how this call runs (:class:`EvaluationContext`: resume folder, progress,
            metadata, sample indices, transfer source, view factory, callback, shard);
            None: the defaults.
        old: the old keyword style (``eps=..., ensemble=..., state_dir=...``), deprecated: it
            warns and goes in the next release.

    Returns:
        The evaluation.json dict (DESIGN.md section 5) plus ``robust_accuracy`` (headline),
        ``records`` (one dict per sample), ``members``, ``settings`` and ``seconds``; with
        ``save_adversarial``, ``adversarial`` (an
        :class:`~robustsnn.evaluation.adversarial.AdversarialSet`).
    """
    config, context = _configs(config, context, old)
    plan = _plan(model, x, y, config, context)
    started = time.perf_counter()
    with eval_mode(model, context.transfer_source), plan.handling.scope():
        done, parts = _attack_batches(model, plan, context)
        batches = [done[b] for b in range(plan.n_batches) if b in done]
        records = [r for batch in batches for r in batch["records"]]
        if [r["index"] for r in records] != plan.index_list:
            raise RuntimeError("the finished batches do not hold every sample exactly once")
        attack_seconds = time.perf_counter() - started
        diag_started = time.perf_counter()
        diag_results = _diagnose(model, plan, context, records)
        diag_seconds = time.perf_counter() - diag_started

    summary = _summarize(
        model,
        plan,
        records,
        batches,
        seed=config.seed,
        batch_size=config.batch_size,
        diagnostics=diag_results,
        seconds={"attacks": attack_seconds, "diagnostics": diag_seconds},
    )
    summary["randomness"] = plan.handling.describe(records)
    if plan.store is not None:
        summary["adversarial"] = adv_store.concat([parts[b] for b in range(plan.n_batches)])
    return summary


def _configs(
    config: EvaluationConfig | None, context: EvaluationContext | None, old: dict[str, Any]
) -> tuple[EvaluationConfig, EvaluationContext]:
    """The call's config and context; the old keyword style is read (and warned about)."""
    if old:
        if config is not None or context is not None:
            raise TypeError("evaluate() takes a config or the old keywords, not both")
        config, context, rest = split_keywords(old, "evaluate")
        if rest:
            raise TypeError(f"evaluate() got unexpected keyword arguments: {', '.join(rest)}")
        warn_old_call(
            "evaluate(model, x, y, eps=..., ...)",
            "evaluate(model, x, y, EvaluationConfig(eps=..., ...), EvaluationContext(...))",
        )
    if config is None:
        raise TypeError(
            "evaluate() missing its config: evaluate(model, x, y, EvaluationConfig(eps=...))"
        )
    return config, context if context is not None else EvaluationContext()


@dataclass
class _Plan:
    """What an evaluation call settled before its first batch."""

    eps: float
    x: Tensor
    y: Tensor
    index_list: list[int]
    diagnostics: DiagnosticsConfig
    chosen: Ensemble | None
    from_attacks: bool
    independent: bool
    members: tuple[Member, ...]
    meta: dict[str, Any]
    log: Callable[[str], None]
    device: torch.device
    handling: Randomness
    seed: int
    batch_size: int
    state: _ResumeState
    store: adv_store.PartStore | None
    built: list[Attack]
    views: list[Any]

    @property
    def n_batches(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)


def _plan(
    model: nn.Module, x: Tensor, y: Tensor, config: EvaluationConfig, context: EvaluationContext
) -> _Plan:
    """Check the inputs, resolve the members, the randomness and the resume state."""
    eps = parse_eps(config.eps)
    x, y = _check_data(x, y)
    batch_size, seed, quiet = config.batch_size, config.seed, context.quiet
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = x.shape[0]
    indices = context.indices
    if indices is None:
        index_list = list(range(n))
    else:
        index_list = [
            int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)
        ]
        if len(index_list) != n:
            raise UserError(f"indices has {len(index_list)} entries for {n} samples")
    diagnostics = resolve_config(config.diagnostics, config.diagnostics_n)
    chosen, from_attacks = _resolve_members(model, config.ensemble, config.attacks)
    independent = bool(config.independent or from_attacks)
    members: tuple[Member, ...] = chosen.members if chosen is not None else ()

    def log(message: str) -> None:
        if not quiet:
            tqdm.write(message, file=sys.stderr)

    device = _model_device(model, x.device)
    handling = resolve_randomness(
        model,
        x,
        y,
        seed=seed,
        config=config.randomness,
        view_factory=context.view_factory,
        estimator=next((m.estimator for m in members if not m.black_box), None),
        device=device,
        eps=eps,
        attacked=bool(members),
    )
    fingerprint: dict[str, Any] = {
        "eps": eps,
        "seed": int(seed),
        "batch_size": batch_size,
        "independent": independent,
        "ensemble": chosen.name if chosen is not None else None,
        "members": [m.describe() for m in members],
        "n": n,
        "data": tensor_digest(x, y, torch.tensor(index_list, dtype=torch.long)),
        "model": model_digest(model),
    }
    if handling.active:
        fingerprint["randomness"] = handling.fingerprint()
    shard, state_dir = context.shard, context.state_dir
    state = _ResumeState(
        state_dir, fingerprint, log, shard.state_name if shard is not None else STATE_FILE
    )
    store = adv_store.PartStore(state_dir, fingerprint) if config.save_adversarial else None
    built = [m.build(eps) for m in members]
    views = [
        member_view(model, m.estimator, a, handling.view_factory)
        for m, a in zip(members, built, strict=True)
    ]
    return _Plan(
        eps, x, y, index_list, diagnostics, chosen, from_attacks, independent, members,
        dict(context.meta or {}), log, device, handling, seed, batch_size, state, store, built,
        views,
    )  # fmt: skip


def _attack_batches(
    model: nn.Module, plan: _Plan, context: EvaluationContext
) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """Run (or resume) this process's batches; every rank's finished batches and kept
    examples, by batch index."""
    shard, members, store, device = context.shard, plan.members, plan.store, plan.device
    x, y, n, batch_size = plan.x, plan.y, plan.x.shape[0], plan.batch_size
    mine = list(range(plan.n_batches)) if shard is None else shard.batches(plan.n_batches)
    done: dict[int, dict[str, Any]] = {}
    name = plan.chosen.name if plan.chosen is not None else "clean"
    bar = tqdm(
        total=len(mine) * max(1, len(members)),
        desc=f"evaluate {name}",
        unit="attack" if members else "batch",
        disable=context.quiet,
        leave=False,
        file=sys.stderr,
    )

    def on_member(member_name: str) -> None:
        bar.set_postfix_str(member_name, refresh=False)
        bar.update(1)

    lineup = list(zip(members, plan.built, plan.views, strict=True))
    try:
        for b in mine:
            saved = plan.state.batch(b)
            if saved is not None and (store is None or store.load(b)):
                done[b] = saved
                bar.update(max(1, len(members)))
                continue
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            keep: dict[int, tuple[Tensor, str]] | None = {} if store is not None else None
            result = _run_batch(
                model,
                x[lo:hi].to(device),
                y[lo:hi].to(device),
                plan.index_list[lo:hi],
                lineup,
                eps=plan.eps,
                independent=plan.independent,
                seed=plan.seed,
                batch_index=b,
                on_member=on_member,
                keep=keep,
            )
            if not members:
                bar.update(1)
            if store is not None and keep is not None:
                rows = sorted(keep)
                # the saved logits of a random model repeat too (one seeded draw)
                with seeded_global_rng(derive_seed(plan.seed, "batch", b, "kept"), device):
                    kept = _kept(model, x, y, plan.index_list, lo, rows, keep, device)
                store.save(b, kept)
            plan.state.save_batch(b, result)
            done[b] = _normalized(result)
            if context.callback is not None:
                context.callback(b)
    finally:
        bar.close()
    if shard is not None:
        done = shard.gather(done)
    parts: dict[int, Any] = {}
    if store is not None:
        parts = store.parts if shard is None else shard.gather(dict(store.parts))  # type: ignore[arg-type]
    return done, parts


def _diagnose(
    model: nn.Module, plan: _Plan, context: EvaluationContext, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """The masking checks (cached in the resume state); sharded: once, on rank 0 (the checks
    draw their own seeded samples), the result given to every rank."""
    clean_correct = torch.tensor([r["clean_correct"] for r in records], dtype=torch.bool)
    robust = torch.tensor([r["robust"] for r in records], dtype=torch.bool)
    transfer_source = context.transfer_source
    diag_fingerprint = {
        "config": plan.diagnostics.describe(),
        "transfer": model_digest(transfer_source) if transfer_source is not None else None,
    }

    def diagnose() -> dict[str, Any]:
        cached = plan.state.diagnostics(diag_fingerprint) if plan.members else {}
        if cached is not None:  # clean accuracy only (no attack): nothing to diagnose
            return cached
        results = run_diagnostics(
            model,
            plan.x,
            plan.y,
            clean_correct,
            robust,
            eps=plan.eps,
            members=plan.members,
            config=plan.diagnostics,
            run=DiagnosticsRun(
                seed=plan.seed,
                transfer_source=transfer_source,
                view_factory=plan.handling.view_factory,
                device=plan.device,
                progress=lambda check: plan.log(f"diagnostics: {check}"),
            ),
        )
        if results:
            plan.state.save_diagnostics(diag_fingerprint, results)
        return results

    shard = context.shard
    diag_results = diagnose() if shard is None else shard.on_main(diagnose)
    return plan.handling.with_check(diag_results)  # type: ignore[no-any-return]


def _kept(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    index_list: Sequence[int],
    lo: int,
    rows: list[int],
    keep: dict[int, tuple[Tensor, str]],
    device: torch.device,
) -> adv_store.AdversarialSet:
    """The broken samples of the batch starting at ``lo``, with their logits."""
    if not rows:
        return adv_store.AdversarialSet.empty(tuple(x.shape[1:]))
    at = torch.tensor([lo + r for r in rows])
    return adv_store.collect(
        model,
        x[at].to(device),
        torch.stack([keep[r][0] for r in rows]),
        [index_list[lo + r] for r in rows],
        y[at],
        [keep[r][1] for r in rows],
    )


def _summarize(
    model: nn.Module,
    plan: _Plan,
    records: list[dict[str, Any]],
    batches: list[dict[str, Any]],
    *,
    seed: int,
    batch_size: int,
    diagnostics: dict[str, Any],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """Aggregate per-sample records into the evaluation.json dict (what was attacked, how and
    with which checks: from the call's ``plan``)."""
    meta, chosen, from_attacks = plan.meta, plan.chosen, plan.from_attacks
    independent, eps, config = plan.independent, plan.eps, plan.diagnostics
    n = len(records)
    members = chosen.members if chosen is not None else ()
    member_seconds = {
        m.name: sum(float(b["seconds"].get(m.name, 0.0)) for b in batches) for m in members
    }
    clean_seconds = sum(float(b["seconds"].get("clean", 0.0)) for b in batches)
    clean_count = sum(bool(r["clean_correct"]) for r in records)
    robust_count = sum(bool(r["robust"]) for r in records)
    clean_accuracy = clean_count / n
    robust_accuracy = robust_count / n

    attack_rows: dict[str, dict[str, Any]] = {}
    if independent:
        for m in members:
            survived = sum(
                1 for r in records if r["clean_correct"] and m.name not in r["broken_by_all"]
            )
            attack_rows[m.name] = {
                "robust_accuracy": survived / n,
                "robust_accuracy_ci95": list(wilson_interval(survived, n)),
                "seconds": member_seconds[m.name],
                "attack": m.attack,
                "estimator": m.estimator,
            }

    ensembles: dict[str, dict[str, Any]] = {}
    if chosen is not None and (not from_attacks or len(members) > 1):
        broken_counts = {
            m.name: sum(1 for r in records if r["broken_by"] == m.name) for m in members
        }
        still = sum(r["clean_correct"] for r in records)
        after: dict[str, float] = {}
        for m in members:
            still -= broken_counts[m.name]
            after[m.name] = still / n
        ensembles[chosen.name] = {
            "robust_accuracy": robust_accuracy,
            "robust_accuracy_ci95": list(wilson_interval(robust_count, n)),
            "members": len(members),
            "seconds": sum(member_seconds.values()),
            "member_seconds": member_seconds,  # where the time goes, member by member
            "mode": "independent" if independent else "early-exit",
            "member_names": [m.name for m in members],
            "broken_by": broken_counts,
            "robust_accuracy_after": after,
        }
        if chosen.late_from is not None and chosen.late_from in broken_counts:
            ensembles[chosen.name]["late_from"] = chosen.late_from

    if ensembles:
        headline: float | None = robust_accuracy
    elif attack_rows:
        headline = next(iter(attack_rows.values()))["robust_accuracy"]
    else:
        headline = None
    headline_ci = None if headline is None else list(wilson_interval(round(headline * n), n))

    result: dict[str, Any] = {
        "model": str(meta.pop("model", type(model).__name__)),
        "dataset": str(meta.pop("dataset", "unknown")),
        "split": str(meta.pop("split", "test")),
        "n": n,
        "eps": eps,
        "T": int(model.T) if is_snn(model) else None,  # type: ignore[arg-type]
        "clean_accuracy": clean_accuracy,
        "clean_accuracy_ci95": list(wilson_interval(clean_count, n)),
        "attacks": attack_rows,
        "ensembles": ensembles,
        "diagnostics": diagnostics,
        "robust_accuracy": headline,
        "robust_accuracy_ci95": headline_ci,
        "interval": "Wilson score interval, 95%, over the n evaluated samples",
        "kind": "snn" if is_snn(model) else "ann",
        "ensemble": chosen.name if chosen is not None else None,
        "members": [m.describe() for m in members],
        "left_out": dict(chosen.left_out) if chosen is not None else {},
        "settings": {
            "seed": seed,
            "batch_size": batch_size,
            "independent": independent,
            "diagnostics": config.describe(),
        },
        "seconds": {"clean": clean_seconds, **seconds},
    }
    for key, value in meta.items():
        result.setdefault(key, value)
    ties = robust_at_tie(records)
    if ties is not None:  # absent without ties: such results are unchanged
        result["ties"] = ties
    result["records"] = records
    return result
