"""Per-sample record of a speed-up: does the new code break every sample the old code broke?

Reads two JSON files of ``benchmarks/bench_reliable.py`` made on the same models, images and
seed, one with the code before a change and one after, and writes per model and preset: the
CPU seconds per sample before and after and their ratio, the samples broken before and after,
``lost`` (broken before, standing after: must be empty), ``gained``, and whether every
sample's record (clean prediction, verdict, the member that broke it) is the same. Exit
status 1 when any sample is lost.

    python benchmarks/compare_reliable.py before.json after.json --out compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def broken(row: dict[str, Any]) -> set[int]:
    """Dataset indices of the clean-correct samples the run broke."""
    return {r["index"] for r in row["records"] if r["clean_correct"] and not r["robust"]}


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (model, preset) present in both runs."""
    entries = []
    for label, model in before["models"].items():
        if label not in after["models"]:
            continue
        new_rows = {r["preset"]: r for r in after["models"][label]["rows"]}
        for old in model["rows"]:
            new = new_rows.get(old["preset"])
            if new is None:
                continue
            lost = sorted(broken(old) - broken(new))
            entries.append(
                {
                    "model": label,
                    "preset": old["preset"],
                    "n": old["n"],
                    "cpu_per_sample_before": old["cpu_per_sample"],
                    "cpu_per_sample_after": new["cpu_per_sample"],
                    "speedup": old["cpu_per_sample"] / new["cpu_per_sample"],
                    "broken_before": len(broken(old)),
                    "broken_after": len(broken(new)),
                    "lost": lost,
                    "gained": sorted(broken(new) - broken(old)),
                    "same_records": old["records"] == new["records"],
                }
            )
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    entries = compare(
        json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text())
    )
    print(
        "| model | preset | n | CPU s/sample before | after | speed-up | broken before | after "
        "| lost | records identical |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for e in entries:
        print(
            f"| {e['model']} | {e['preset']} | {e['n']} | {e['cpu_per_sample_before']:.3f} | "
            f"{e['cpu_per_sample_after']:.3f} | {e['speedup']:.2f}x | {e['broken_before']} | "
            f"{e['broken_after']} | {len(e['lost'])} | {'yes' if e['same_records'] else 'no'} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(entries, indent=1))
    return 1 if any(e["lost"] for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
