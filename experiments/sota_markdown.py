"""Markdown rows from the ``table.json`` files of ``experiments/sota_table.py`` (for RESULTS.md).

Usage: python experiments/sota_markdown.py TABLE_JSON [TABLE_JSON ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from robustsnn.evaluation.intervals import format_accuracy


def main() -> None:
    print("| column | row | robust (95% Wilson CI, n) | s/sample | checks failing |")
    print("|---|---|---|---|---|")
    for path in sys.argv[1:]:
        table = json.loads(Path(path).read_text())
        for column, entry in table.items():
            if not isinstance(entry, dict) or "rows" not in entry:
                continue
            n = entry["n"]
            failing = ", ".join(entry.get("diagnostics_failing", [])) or "none"
            print(f"| {column} | clean | {format_accuracy(entry['clean'], n)} | | |")
            for row, values in entry["rows"].items():
                print(
                    f"| {column} | `{row}` | {format_accuracy(values['robust'], n)} | "
                    f"{values['seconds_per_sample']:.2f} | {failing} |"
                )
            steps = entry.get("escalation", {}).get("steps", [])
            for step in steps:
                print(
                    f"| {column} | escalation {step['level']}: {step['preset']} | "
                    f"{format_accuracy(step['robust_accuracy'], n)} | "
                    f"{step['seconds'] / n:.2f} | {'; '.join(step['reasons'])} |"
                )


if __name__ == "__main__":
    main()
