"""An evaluation that escalates until its own checks pass (``evaluate --escalate``).

A robust accuracy is only as good as the attacks behind it. After an ensemble has run, two
signs say that it was not strong enough for this model:

- a masking diagnostic failed (zero or non-finite gradients, Square beats the white-box
  attacks, robustness at huge or trivial radii, non-converged attacks);
- late members still break samples: members in the second half of the ensemble broke samples
  that every earlier member missed, so the ensemble has not saturated.

Then the samples still standing are attacked again with the next preset of
:data:`~robustsnn.evaluation.ensembles.ESCALATION_LADDER` (more steps and restarts, more
estimators, more Square queries), the diagnostics are rerun with that preset's estimators, and
so on until no sign remains, the ladder ends or the time budget is spent. Escalation only ever
removes robust samples, so the final number is never above the first one. The result says
every step taken and every check that still fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.evaluation.adversarial import AdversarialSet, concat, ordered_like
from robustsnn.evaluation.config import (
    EscalationPolicy,
    EvaluationConfig,
    EvaluationContext,
    split_keywords,
    warn_old_call,
)
from robustsnn.evaluation.diagnostics import DiagnosticsRun, resolve_config, run_diagnostics
from robustsnn.evaluation.ensembles import ENSEMBLES, ESCALATION_LADDER
from robustsnn.evaluation.evaluate import _model_device, evaluate
from robustsnn.evaluation.intervals import wilson_interval
from robustsnn.evaluation.stochastic import restore_randomness
from robustsnn.evaluation.stochastic import step_config as randomness_step
from robustsnn.evaluation.ties import robust_at_tie
from robustsnn.evaluation.views import eval_mode

LATE_FRACTION = 0.5
"""Members after this fraction of an ensemble count as late (see the module doc)."""


def failing_checks(diagnostics: dict[str, Any]) -> list[str]:
    """Names of the diagnostics that ran and failed."""
    return sorted(
        name
        for name, check in diagnostics.items()
        if isinstance(check, dict) and not check.get("passed", True) and not check.get("skipped")
    )


def late_breaks(result: dict[str, Any]) -> int:
    """Samples first broken by a member in the second half of the result's ensemble (or from
    the member the preset names as its ``late_from``: rounds appended to a preset do not move
    the line its older members are judged by)."""
    total = 0
    for summary in result.get("ensembles", {}).values():
        names = summary.get("member_names", [])
        first_late = int(len(names) * LATE_FRACTION)
        if summary.get("late_from") in names:
            first_late = min(first_late, names.index(summary["late_from"]))
        if len(names) < 2:
            continue
        counts = summary.get("broken_by", {})
        total += sum(int(counts.get(name, 0)) for name in names[first_late:])
    return total


def next_preset(current: str, ladder: Sequence[str] = ESCALATION_LADDER) -> str | None:
    """The preset after ``current`` on the ladder; for a preset off the ladder, the first
    ladder preset stronger than the cheap screen (``reliable``)."""
    if current in ladder:
        position = ladder.index(current)
        return ladder[position + 1] if position + 1 < len(ladder) else None
    return ladder[1] if len(ladder) > 1 else None


def final_preset(evaluation: dict[str, Any]) -> str | None:
    """The strongest preset an evaluation ran: its last escalation step's, else its start."""
    escalation = evaluation.get("escalation") or {}
    steps = escalation.get("steps") or []
    if steps:
        return str(steps[-1]["preset"])
    start = escalation.get("start") or evaluation.get("ensemble")
    return None if start is None else str(start)


def ladder_level(preset: str | None, ladder: Sequence[str] = ESCALATION_LADDER) -> int:
    """Position of ``preset`` on the ladder (-1 off the ladder or None)."""
    return ladder.index(preset) if preset in ladder else -1


def evaluate_escalating(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: EvaluationConfig | None = None,
    context: EvaluationContext | None = None,
    policy: EscalationPolicy | None = None,
    *,
    ladder: Sequence[str] = ESCALATION_LADDER,
    log: Callable[[str], None] | None = None,
    step_batch_size: int | None = None,
    **old: Any,
) -> dict[str, Any]:
    """:func:`~robustsnn.evaluation.evaluate.evaluate`, then escalate (see the module doc).

    Args:
        config: the first evaluation's :class:`EvaluationConfig`; its ``ensemble`` is the
            preset (or ensemble) to start with. The steps take the same config with the
            step's preset, no diagnostics of their own and ``step_batch_size``.
        context: the :class:`EvaluationContext`; each step resumes in
            ``escalation-<k>-<preset>`` inside ``state_dir``.
        policy: how far to escalate (:class:`EscalationPolicy`: at most ``levels`` steps, none
            started after ``seconds``, at least up to ``at_least`` whatever the checks say,
            the reason recorded being the match; those steps ignore ``levels``).
        ladder: presets in order of strength.
        log: called with a line per step taken.
        step_batch_size: batch size of the escalation steps (default: ``batch_size``); the
            few standing samples of a strong preset are worth saving (resuming) more often.
        old: the old keyword style (``eps=..., ensemble=..., max_levels=...``), deprecated.

    Returns:
        The evaluation.json dict of the first run with the final per-sample records and
        headline, an ensemble row ``"<start> + escalation"`` and ``escalation``: the steps
        taken, why, and the checks that still fail.
    """
    config, context, policy = _escalation_configs(config, context, policy, old)
    max_levels = policy.levels
    if isinstance(max_levels, bool) or not isinstance(max_levels, int) or max_levels < 0:
        raise UserError(f"max escalation levels must be an integer >= 0, got {max_levels!r}")
    for name in ladder:
        ENSEMBLES.get(name)
    at_least = policy.at_least
    if at_least is not None and at_least not in ladder:
        raise UserError(f"escalation target {at_least!r} is not on the ladder {', '.join(ladder)}")
    say = log or (lambda message: None)
    started = time.perf_counter()
    result = evaluate(model, x, y, config, context)
    start_name = result.get("ensemble") or "clean"
    current = start_name
    records = result["records"]
    steps: list[dict[str, Any]] = []
    target = ladder_level(at_least, ladder)

    def matching() -> list[str]:
        if ladder_level(current, ladder) < target:
            return [f"matching the protocol of the compared rows (at least {at_least})"]
        return []

    reasons = _reasons(result["diagnostics"], late_breaks(result))
    forced = matching()
    stopped = "checks passed" if not reasons else ""
    n = len(records)
    budget_seconds = policy.seconds
    while reasons or forced:
        preset = next_preset(current, ladder)
        if preset is None:
            stopped = "ladder exhausted"
            break
        if not forced and len(steps) >= max_levels:
            stopped = f"level limit ({max_levels}) reached"
            break
        if budget_seconds is not None and _on_main(
            context, lambda: time.perf_counter() - started > budget_seconds
        ):  # sharded: rank 0's clock decides, so every rank takes the same branch
            stopped = f"time budget ({budget_seconds:g} s) spent"
            break
        standing = [i for i, r in enumerate(records) if r["robust"]]
        why = ", ".join(reasons + forced)
        say(f"escalating to {preset} on {len(standing)} standing samples: {why}")
        step_started = time.perf_counter()
        step_config, step_context = _step_configs(
            config, context, result, preset, len(steps) + 1, step_batch_size
        )
        broken, sub = _attack_standing(model, x, y, result, standing, step_config, step_context)
        diag = _on_main(context, _step_diagnostics(model, x, y, result, config, preset))
        late = late_breaks(sub) if sub is not None else 0
        robust_now = sum(bool(r["robust"]) for r in records)
        steps.append(
            {
                "level": len(steps) + 1,
                "preset": preset,
                "reasons": reasons + forced,
                "samples_attacked": len(standing),
                "broken": broken,
                "robust_accuracy": robust_now / n,
                "robust_accuracy_ci95": list(wilson_interval(robust_now, n)),
                "late_breaks": late,
                "diagnostics": diag,
                "seconds": time.perf_counter() - step_started,
            }
        )
        result["diagnostics"] = diag
        current = preset
        reasons = _reasons(diag, late)
        forced = matching()
        if not reasons:
            stopped = "checks passed"
    _finish(model, result, start_name, steps)
    result["escalation"] = {
        "start": start_name,
        "ladder": list(ladder),
        "steps": steps,
        "stopped": stopped or "checks passed",
        "still_failing": failing_checks(result["diagnostics"]),
        "max_levels": max_levels,
        "at_least": at_least,
        "budget_seconds": policy.seconds,
        "seconds": time.perf_counter() - started,
    }
    return result


def _escalation_configs(
    config: EvaluationConfig | None,
    context: EvaluationContext | None,
    policy: EscalationPolicy | None,
    old: dict[str, Any],
) -> tuple[EvaluationConfig, EvaluationContext, EscalationPolicy]:
    """The call's config, context and policy; the old keyword style is read (and warned
    about): its ensemble defaulted to ``reliable``."""
    if old:
        if config is not None or context is not None or policy is not None:
            raise TypeError("evaluate_escalating() takes configs or the old keywords, not both")
        config, context, rest = split_keywords(
            old, "evaluate_escalating", defaults={"ensemble": "reliable"}
        )
        unknown = set(rest) - set(_OLD_POLICY)
        if unknown:
            raise TypeError(
                f"evaluate_escalating() got unexpected keyword arguments: {', '.join(sorted(unknown))}"
            )
        policy = EscalationPolicy(**{_OLD_POLICY[k]: v for k, v in rest.items()})
        warn_old_call(
            "evaluate_escalating(model, x, y, eps=..., max_levels=..., ...)",
            "evaluate_escalating(model, x, y, EvaluationConfig(...), EvaluationContext(...), "
            "EscalationPolicy(...))",
        )
    if config is None:
        raise TypeError(
            "evaluate_escalating() missing its config: "
            "evaluate_escalating(model, x, y, EvaluationConfig(eps=..., ensemble=...))"
        )
    return (
        config,
        context if context is not None else EvaluationContext(),
        policy if policy is not None else EscalationPolicy(),
    )


_OLD_POLICY = {"max_levels": "levels", "budget_seconds": "seconds", "at_least": "at_least"}


def _step_configs(
    config: EvaluationConfig,
    context: EvaluationContext,
    result: dict[str, Any],
    preset: str,
    level: int,
    step_batch_size: int | None,
) -> tuple[EvaluationConfig, EvaluationContext]:
    """The config and context of escalation step ``level``: its preset, no diagnostics of its
    own, a random model's K and M from the first evaluation (without a new variance check),
    ``step_batch_size``, and its resume folder ``escalation-<level>-<preset>`` in
    ``state_dir``."""
    step_config = replace(
        config,
        ensemble=preset,
        diagnostics="none",
        diagnostics_n=None,
        randomness=randomness_step(result.get("randomness"), config.randomness),
        batch_size=step_batch_size if step_batch_size is not None else config.batch_size,
    )
    state_dir = context.state_dir
    step_context = replace(
        context,
        state_dir=None if state_dir is None else Path(state_dir) / f"escalation-{level}-{preset}",
    )
    return step_config, step_context


def _attack_standing(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    result: dict[str, Any],
    standing: list[int],
    config: EvaluationConfig,
    context: EvaluationContext,
) -> tuple[int, dict[str, Any] | None]:
    """One escalation step's evaluation of the standing samples; the records it breaks are
    updated in ``result`` (its left-out members and kept examples too). Returns how many it
    broke and its result (None: nothing was standing)."""
    if not standing:
        return 0, None
    records = result["records"]
    preset = config.ensemble
    rows = torch.tensor(standing)
    sub = evaluate(
        model,
        x[rows],
        y[rows],
        config,
        replace(context, indices=[records[i]["index"] for i in standing]),
    )
    broken = 0
    for i, record in zip(standing, sub["records"], strict=True):
        if not record["robust"] and record["clean_correct"]:
            records[i]["robust"] = False
            records[i]["broken_by"] = f"{preset}:{record['broken_by']}"
            records[i]["prediction"] = record["prediction"]
            # the break's margin, not an earlier step's closest call (a positive margin on a
            # broken record would contradict it, and a tie break must read as margin 0)
            if "margin" in record:
                records[i]["margin"] = record["margin"]
            else:
                records[i].pop("margin", None)
            broken += 1
        elif _came_closer(record, records[i]):  # the closest call of any step
            records[i]["margin"] = record["margin"]
    # members the model cannot run (a wrapped model's HART), with their reasons
    result.setdefault("left_out", {}).update(sub.get("left_out", {}))
    if "adversarial" in result and "adversarial" in sub:
        result["adversarial"] = _merge_examples(
            result["adversarial"], sub["adversarial"], str(preset), records
        )
    return broken, sub


def _step_diagnostics(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    result: dict[str, Any],
    config: EvaluationConfig,
    preset: str,
) -> Callable[[], dict[str, Any]]:
    """The diagnostics of an escalation step (with the preset's members) on the current
    records, as a function to run (on rank 0 when sharded)."""
    records = result["records"]
    members = tuple(ENSEMBLES.get(preset).for_model(model).members)
    robust_mask = torch.tensor([r["robust"] for r in records], dtype=torch.bool)
    clean_mask = torch.tensor([r["clean_correct"] for r in records], dtype=torch.bool)
    randomness = result.get("randomness")
    diagnostics = resolve_config(config.diagnostics, config.diagnostics_n)

    def diagnose_step() -> dict[str, Any]:
        handling = restore_randomness(model, randomness, config.seed)
        with eval_mode(model), handling.scope():
            return handling.with_check(
                run_diagnostics(
                    model,
                    x,
                    y,
                    clean_mask,
                    robust_mask,
                    eps=result["eps"],
                    members=members,
                    config=diagnostics,
                    run=DiagnosticsRun(seed=config.seed, device=_model_device(model, x.device)),
                )
            )

    return diagnose_step


def _finish(
    model: nn.Module, result: dict[str, Any], start_name: str, steps: list[dict[str, Any]]
) -> None:
    """The final headline and the ``"<start> + escalation"`` ensemble row (after any step)."""
    records = result["records"]
    n = len(records)
    robust_count = sum(bool(r["robust"]) for r in records)
    if not steps:
        return
    final = robust_count / n
    ties = robust_at_tie(records)
    if ties is not None:
        result["ties"] = ties
    else:
        result.pop("ties", None)
    result["robust_accuracy"] = final
    result["robust_accuracy_ci95"] = list(wilson_interval(robust_count, n))
    result["ensembles"][f"{start_name} + escalation"] = {
        "robust_accuracy": final,
        "robust_accuracy_ci95": list(wilson_interval(robust_count, n)),
        "members": sum(len(ENSEMBLES.get(s["preset"]).for_model(model)) for s in steps)
        + int(result["ensembles"].get(start_name, {}).get("members", 0)),
        "seconds": sum(s["seconds"] for s in steps),
        "mode": "escalated",
        "steps": [s["preset"] for s in steps],
    }
    result["ensemble"] = f"{start_name} + escalation"


def _came_closer(step_record: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether an escalation step's record of a still-robust sample has a closer call
    (a lower ``margin``) than the record so far (both deterministic margins)."""
    new, old = step_record.get("margin"), record.get("margin")
    if new is None or "draws" in step_record or "draws" in record:
        return False
    return old is None or float(new) < float(old)


def _reasons(diagnostics: dict[str, Any], late: int) -> list[str]:
    reasons = [f"check {name} failed" for name in failing_checks(diagnostics)]
    if late:
        reasons.append(f"late members broke {late} sample(s)")
    return reasons


def _on_main(context: EvaluationContext, fn: Callable[[], Any]) -> Any:
    """``fn()``; in a sharded evaluation (a ``shard`` in the context) once on rank 0, result
    to all."""
    shard = context.shard
    return fn() if shard is None else shard.on_main(fn)


def _merge_examples(
    kept: AdversarialSet, found: AdversarialSet, preset: str, records: list[dict[str, Any]]
) -> AdversarialSet:
    """The saved examples plus an escalation step's (members named ``preset:member``), in
    record order."""
    found = AdversarialSet(
        found.index,
        found.label,
        [f"{preset}:{m}" for m in found.member],
        found.clean,
        found.adversarial,
        found.clean_logits,
        found.adversarial_logits,
    )
    return ordered_like(concat([kept, found]), [int(r["index"]) for r in records])
