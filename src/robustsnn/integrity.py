"""Content hashes of written evidence: a number that was changed after it was written is found.

``evaluation.json`` carries ``"integrity": {"sha256": ..., "files": {name: sha256}}``: the
SHA-256 of its own content (every key but ``integrity`` and the wall-clock timings ``seconds``
and ``member_seconds``, so two runs with the same results carry the same hash) and of the files
written beside it (``records.jsonl``, ``adversarial.safetensors``). ``robustsnn recheck`` recomputes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

INTEGRITY_KEY = "integrity"
TIMING_KEYS = ("seconds", "member_seconds")
NO_HASH = "no hash recorded"


def _without_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def content_sha256(result: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON result without its ``integrity`` entry and its timings."""
    body = {k: v for k, v in result.items() if k != INTEGRITY_KEY}
    text = json.dumps(_without_timings(body), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def with_integrity(
    result: Mapping[str, Any], folder: str | Path, files: Sequence[str] = ()
) -> dict[str, Any]:
    """``result`` plus its ``integrity`` entry (the files named must already be written)."""
    body = {k: v for k, v in result.items() if k != INTEGRITY_KEY}
    hashes = {name: file_sha256(Path(folder) / name) for name in files}
    return {**body, INTEGRITY_KEY: {"sha256": content_sha256(body), "files": hashes}}


def integrity_problems(path: str | Path) -> list[str]:
    """What no longer matches the hashes a JSON result recorded ([] if all match; ``[NO_HASH]``
    for a file written before hashes existed, a warning); never raises on a malformed file."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path.name} is not readable JSON ({' '.join(str(exc).split())[:100]})"]
    if not isinstance(result, dict):
        return [f"{path.name} is not a JSON object"]
    recorded = result.get(INTEGRITY_KEY)
    if recorded is None:
        return [NO_HASH]
    if not isinstance(recorded, dict) or not isinstance(recorded.get("files", {}), dict):
        return [f"{path.name}: its integrity entry is malformed"]
    problems = []
    if recorded.get("sha256") != content_sha256(result):
        problems.append(f"{path.name}: content hash mismatch (changed after it was written)")
    for name, digest in recorded.get("files", {}).items():
        other = path.parent / str(name)
        if not other.is_file():
            problems.append(f"{name}: missing (recorded in {path.name} with its hash)")
        elif file_sha256(other) != digest:
            problems.append(
                f"{name}: hash mismatch with {path.name} (changed after it was written)"
            )
    return problems


__all__ = ["INTEGRITY_KEY", "NO_HASH", "content_sha256", "file_sha256", "integrity_problems",
           "with_integrity"]  # fmt: skip
