"""The one-paragraph verdict a run's report opens with: did the SNN keep its ANN's robustness?

Read from ``summary.json`` alone (:func:`robustsnn.pipeline.write_summary`): what was measured
(images, eps, the attacks that produced the robust numbers), each model's clean and robust
accuracy with its interval, each SNN's robustness as a ratio of the ANN's on the same images
with its paired interval, and what the gradient-masking checks say. The wording follows the
interval, never the point estimate alone: "kept" needs a ratio of at least 1, "lost" an
interval entirely below 1, and anything between is said to be undecided at this n.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustsnn.evaluation.intervals import format_accuracy, format_ratio

_NAMES = {
    "ann": "the ANN",
    "snn_converted": "the converted SNN",
    "snn_finetuned": "the finetuned SNN",
}


def _acc(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return "n/a" if value is None else format_accuracy(float(value), int(row.get("n") or 0))


def _kept(ratio: Mapping[str, Any]) -> str:
    low, high = ratio["ci95"]
    if ratio["ratio"] >= 1.0:
        return "kept its ANN's robustness"
    if high < 1.0:
        return "did not keep its ANN's robustness (the whole interval is below 1)"
    return f"is not shown to differ from its ANN at this n (interval {low:.2f}-{high:.2f} holds 1)"


def run_verdict(summary: Mapping[str, Any] | None) -> str | None:
    """The verdict paragraph for one run's summary, or None without an ANN and an SNN row."""
    if not summary or "ann" not in summary:
        return None
    ann = summary["ann"]
    snns = [m for m in summary if m != "ann" and isinstance(summary[m], Mapping)]
    if not snns:
        return None
    eps = ann.get("eps")
    eps_text = "n/a" if eps is None else f"{float(eps) * 255:g}/255 ({float(eps):.4g})"
    ensembles = {str(summary[m].get("ensemble")) for m in ["ann", *snns]}
    same = len(ensembles) == 1
    attacks = (
        f"`{next(iter(ensembles))}` for every row (same images, attacks and escalation)"
        if same
        else "different attacks per row (" + ", ".join(sorted(ensembles)) + "): not comparable"
    )
    parts = [
        f"Verdict. Measured on n = {ann.get('n')} test images at eps {eps_text} under "
        f"{attacks}: {_NAMES['ann']} keeps {_acc(ann, 'robust_accuracy')} robust "
        f"(clean {_acc(ann, 'clean_accuracy')})."
    ]
    for model in snns:
        row = summary[model]
        name = _NAMES.get(model, model)
        ratio = row.get("robust_ratio_to_ann")
        text = (
            f"{name[0].upper() + name[1:]} (T = {row.get('T')}) keeps {_acc(row, 'robust_accuracy')} "
            f"(clean {_acc(row, 'clean_accuracy')})"
        )
        if ratio:
            text += f", {format_ratio(ratio)} of the ANN's robust accuracy: it {_kept(ratio)}."
        else:
            why = row.get("robust_ratio_to_ann_missing") or "no per-image records"
            text += f"; no ratio to the ANN ({why})."
        parts.append(text)
    verdicts = {m: str(summary[m].get("diagnostics", "n/a")) for m in ["ann", *snns]}
    failing = {m: v for m, v in verdicts.items() if "fail" in v.lower()}
    not_run = [m for m, v in verdicts.items() if "not run" in v.lower() or v == "n/a"]
    if failing:
        parts.append(
            "Masking checks FAIL for "
            + "; ".join(f"{_NAMES.get(m, m)} ({v})" for m, v in failing.items())
            + ": those robust numbers may be overstated."
        )
    if not_run:
        parts.append(
            "The gradient-masking checks did not run for "
            + ", ".join(_NAMES.get(m, m) for m in not_run)
            + ": nothing says whether those numbers are masked."
        )
    if not failing and not not_run:
        parts.append("The gradient-masking checks pass on every row.")
    return " ".join(parts)
