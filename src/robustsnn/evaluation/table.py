"""The terminal table of an evaluation: every accuracy with its 95% interval and n, and the
masking-diagnostics verdict on every robust row (so a number whose checks failed never
appears without saying so)."""

from __future__ import annotations

from typing import Any

from robustsnn.evaluation.escalate import failing_checks
from robustsnn.evaluation.intervals import format_accuracy
from robustsnn.evaluation.ties import tie_line


def diagnostics_verdict(diagnostics: dict[str, Any] | None) -> str:
    """``"checks PASS"``, ``"checks FAIL: a, b"`` or ``"checks not run"``."""
    ran = [
        name
        for name, check in (diagnostics or {}).items()
        if isinstance(check, dict) and not check.get("skipped")
    ]
    if not ran:
        return "checks not run"
    failed = failing_checks(diagnostics or {})
    return f"checks FAIL: {', '.join(failed)}" if failed else f"checks PASS ({len(ran)})"


def evaluation_lines(result: dict[str, Any], *, label: str = "") -> list[str]:
    """Lines for the terminal: clean accuracy, each ensemble/attack row, escalation steps and
    failing checks (one line each)."""
    n = int(result.get("n", 0))
    prefix = f"{label}: " if label else ""
    lines = [
        f"{prefix}clean {format_accuracy(result.get('clean_accuracy'), n)}, "
        f"eps {float(result.get('eps', 0.0)) * 255:g}/255"
    ]
    verdict = diagnostics_verdict(result.get("diagnostics"))
    for name, row in result.get("ensembles", {}).items():
        seconds = float(row.get("seconds", 0.0))
        lines.append(
            f"  ensemble {name:<30} robust {format_accuracy(row.get('robust_accuracy'), n)}  "
            f"[{row.get('members', '?')} members, {seconds:.0f} s]  {verdict}"
        )
    for name, row in result.get("attacks", {}).items():
        lines.append(
            f"  attack   {name:<30} robust {format_accuracy(row.get('robust_accuracy'), n)}"
            f"  {verdict}"
        )
    escalation = result.get("escalation")
    if escalation:
        for step in escalation.get("steps", []):
            lines.append(
                f"  escalation {step['level']}: {step['preset']} on {step['samples_attacked']} "
                f"standing samples broke {step['broken']} ({'; '.join(step['reasons'])})"
            )
        lines.append(
            f"  escalation stopped: {escalation.get('stopped')}; still failing: "
            f"{', '.join(escalation.get('still_failing', [])) or 'none'}"
        )
    for name, check in (result.get("diagnostics") or {}).items():
        if isinstance(check, dict) and not check.get("passed", True):
            lines.append(f"  check    {name:<30} FAIL: {check.get('detail', '')}")
    ties = tie_line(result)
    if ties is not None:
        lines.append(ties)
    return lines
