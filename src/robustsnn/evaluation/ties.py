"""Samples that stand only by argmax's tie rule.

A spiking network's logits are often spike counts (or rates): whole numbers over T. Two classes
then tie exactly, and ``argmax`` returns the lower class index. A sample whose attacks brought
the true class to an exact tie with another class (its closest call, the record's ``margin``,
is 0) counts as robust when the true class has the lower index, and as broken otherwise: its
verdict depends on the order of the class labels, not on the model. Measured on the oracle
suite (docs/RESULTS.md 12f): 19 of the 37 samples a snnTorch CSNN kept under `reliable` and 4
of a SpikingJelly CSNN's 10 stand at such a tie.

robustsnn keeps argmax's rule (the prediction a user's deployment makes), and says how many
robust samples rest on it: ``evaluation.json`` gets a ``"ties"`` entry when there is at least
one (absent otherwise, so results without ties are unchanged), with their dataset indices and
the robust accuracy that counts them as broken (with its interval), a lower bound that no
relabelling of the classes can beat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robustsnn.evaluation.intervals import format_accuracy, wilson_interval


def robust_at_tie(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``"ties"`` entry of an evaluation (None when no robust sample stands at a tie).

    A deterministic record counts when it is robust, clean-correct and its closest call
    (``margin``: true-class logit minus the largest other logit) is <= 0. Random models'
    records (``draws``: majority verdicts) are left out: their margins are single draws.
    """
    tied = [
        int(r["index"])
        for r in records
        if r.get("robust")
        and r.get("clean_correct")
        and "draws" not in r
        and r.get("margin") is not None
        and float(r["margin"]) <= 0.0
    ]
    if not tied:
        return None
    n = len(records)
    robust = sum(bool(r.get("robust")) for r in records)
    without = robust - len(tied)
    return {
        "count": len(tied),
        "indices": tied,
        "robust_accuracy_ties_broken": without / n,
        "robust_accuracy_ties_broken_ci95": list(wilson_interval(without, n)),
        "note": "robust only because argmax breaks an exact tie toward the lower class index "
        "(closest call: margin 0); robust_accuracy_ties_broken counts them as broken",
    }


def tie_suffix(result: Mapping[str, Any]) -> str:
    """``"; N robust at a tie"`` for a verdict text (empty without ties)."""
    ties = result.get("ties")
    return f"; {int(ties['count'])} robust at a tie" if isinstance(ties, Mapping) else ""


def tie_line(result: dict[str, Any]) -> str | None:
    """The terminal line that reports a result's ties (None without any)."""
    ties = result.get("ties")
    if not ties:
        return None
    n = int(result.get("n", 0))
    return (
        f"  ties     {ties['count']} robust sample(s) stand only by argmax's tie rule "
        f"(margin 0 at their closest call); counted as broken: robust "
        f"{format_accuracy(ties['robust_accuracy_ties_broken'], n)}"
    )
