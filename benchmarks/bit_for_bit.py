"""Is every output of the whole pipeline the same, bit for bit, at two commits?

Runs ``robustsnn run CONFIG`` once at commit A and once at commit B, each from a ``git archive``
copy of that commit's ``src/`` (``PYTHONPATH=<copy>/src python -m robustsnn``, never the
installed package: the script checks which ``robustsnn`` the child imports), single-threaded
and on the CPU, then compares every file of the two run folders and prints one row per file.
Exit status 1 when any file differs or exists in one run only, 0 when all are the same.

    nice python benchmarks/bit_for_bit.py 83642d9 HEAD \\
        --config configs/tiny-bit-for-bit.yaml --work /tmp/b4b

Same place for both runs: each commit's copy is unpacked to ``WORK/active/src`` and runs into
``WORK/active/run`` (then both move to ``WORK/<sha12>-<config hash>/``), and both runs read the
same copy of the config at ``WORK/config.yaml``. So every path a run records (checkpoint
metadata, evaluation.json's ``model``, the report's ``Folder:``) is the same string in both
runs, and paths are compared as they are, not removed.

What is compared, and what is normalised first (nothing else is):

* ``*.safetensors``: byte-identical, or else every tensor's dtype, shape and raw bytes equal
  (named: tensors bit-equal) and the metadata equal after the JSON normalisation below (a
  metadata value that is a JSON text is parsed first).
* ``*.json``, ``*.jsonl`` (line by line): equal after removing the keys in ``VOLATILE_KEYS``
  (anywhere) and the key paths in ``VOLATILE_PATHS`` (as the end of a key path). Numbers are
  compared exactly; a changed key order alone is noted, not counted.
* ``*.md``, ``*.html``, ``*.txt``, ``*.yaml``, ``*.csv``: identical after ``TEXT_RULES`` and
  after blanking the cells of the table columns named in ``TIMING_COLUMNS`` (markdown tables and
  HTML tables).
* ``*.png``: by bytes. If the bytes differ the decoded pixels are compared too; pixels equal
  counts as the same only when ``--control`` showed that the same figure's bytes also differ
  between two runs of commit A.
* anything else: by bytes.

``--control`` runs commit A a second time first (one more run): any file that differs between
two runs of the same commit is named in the table (the check cannot vouch for it), and it shows
that the normalisation lists are complete. ``--reuse`` takes a finished run of the same commit,
config and interpreter from WORK instead of running it again (bisecting keeps A's run).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# JSON keys removed wherever they occur (each is a measured duration, different in every run)
VOLATILE_KEYS: dict[str, str] = {
    "seconds": "wall-clock seconds: a training epoch (history, train, log.jsonl), the "
    "conversion (conversion_summary), every attack batch, diagnostic, ensemble and escalation "
    "step (evaluation*.json, evaluation-state.json)",
    "cpu_seconds": "CPU seconds of a training epoch",
    "member_seconds": "wall-clock seconds of each ensemble member (evaluation*.json)",
    "stage_seconds": "wall-clock seconds of a pipeline stage (log.jsonl)",
}
# JSON key paths removed where a key path ends with them
VOLATILE_PATHS: dict[tuple[str, ...], str] = {
    ("provenance", "time"): "UTC time a checkpoint was written (training.ann._provenance; "
    "also under source.metadata)",
}
# text substitutions for reports and other text files: (pattern, replacement, what)
TEXT_RULES: list[tuple[re.Pattern[str], str, str]] = [
    (
        re.compile(r"Generated \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"),
        "Generated <date> UTC",
        "the report's 'Generated YYYY-MM-DD HH:MM UTC' stamp",
    ),
]
# table columns (header text) whose cells are durations: blanked in markdown and HTML tables
TIMING_COLUMNS: dict[str, str] = {
    "seconds": "report: an ensemble's or attack member's wall-clock seconds",
    "eval seconds (wall)": "robustsnn compare: an evaluation's wall-clock seconds",
}
TEXT_SUFFIXES = {".md", ".html", ".htm", ".txt", ".yaml", ".yml", ".csv", ".log"}
# the child runs single-threaded on the CPU with a fixed hash seed and writes no bytecode
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}


# ----------------------------------------------------------------------------- running


def git(repo: Path, *args: str, text: bool = True) -> Any:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return out.stdout.decode().strip() if text else out.stdout


def unpack_src(repo: Path, sha: str, dest: Path) -> None:
    """``git archive SHA src`` unpacked into dest (no worktree metadata, nothing of the index)."""
    data = git(repo, "archive", "--format=tar", sha, "src", text=False)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def child_env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CHILD_ENV, PYTHONPATH=str(src))
    return env


def interpreter_id() -> str:
    probe = "import sys, torch; print(sys.version.split()[0], torch.__version__)"
    return subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


@dataclass
class Run:
    sha: str
    folder: Path  # WORK/<sha12>-<cfg8>[-control]
    seconds: float | None  # None: reused

    @property
    def out(self) -> Path:
        return self.folder / "run"


def run_commit(repo: Path, sha: str, work: Path, config: Path, tag: str, reuse: bool) -> Run:
    cfg_hash = hashlib.sha256(config.read_bytes()).hexdigest()
    folder = work / f"{sha[:12]}-{cfg_hash[:8]}{tag}"
    stamp = {"commit": sha, "config_sha256": cfg_hash, "interpreter": interpreter_id()}
    done = folder / "done.json"
    if reuse and done.is_file() and json.loads(done.read_text()) == stamp:
        print(f"[{sha[:12]}{tag}] reusing {folder}", flush=True)
        return Run(sha, folder, None)
    if folder.exists():
        shutil.rmtree(folder)
    active = work / "active"
    if active.exists():
        shutil.rmtree(active)
    unpack_src(repo, sha, active)
    src = active / "src"
    env = child_env(src)
    probe = "import robustsnn; print(robustsnn.__file__)"
    where = subprocess.run([sys.executable, "-c", probe], env=env, cwd=active, check=True,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    if not Path(where).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"the child imports robustsnn from {where}, not from {src}")
    cmd = [sys.executable, "-m", "robustsnn", "run", str(config), "--out", str(active / "run")]
    print(f"[{sha[:12]}{tag}] {' '.join(cmd)}  (PYTHONPATH={src})", flush=True)
    start = time.perf_counter()
    with (active / "run.log").open("wb") as log:
        code = subprocess.run(cmd, env=env, cwd=active, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code.returncode != 0:
        tail = (active / "run.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"robustsnn run failed at {sha[:12]} (exit {code.returncode}):\n{tail}")
    print(f"[{sha[:12]}{tag}] done in {seconds:.0f} s", flush=True)
    active.rename(folder)
    done.write_text(json.dumps(stamp, indent=1) + "\n")
    return Run(sha, folder, seconds)


# ----------------------------------------------------------------------------- normalising


def normalise_json(obj: Any, path: tuple[str, ...] = (), removed: set[str] | None = None) -> Any:
    """obj without the volatile keys; the names of those removed are added to ``removed``."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            here = (*path, str(key))
            if key in VOLATILE_KEYS:
                if removed is not None:
                    removed.add(key)
                continue
            vpath = next((p for p in VOLATILE_PATHS if here[-len(p) :] == p), None)
            if vpath is not None:
                if removed is not None:
                    removed.add(".".join(vpath))
                continue
            out[key] = normalise_json(value, here, removed)
        return out
    if isinstance(obj, list):
        return [normalise_json(v, (*path, "[]"), removed) for v in obj]
    return obj


def first_json_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where a and b first differ (exact numbers; NaN equals NaN), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in b:
                return f"{path}/{key}: only in A"
            if key not in a:
                return f"{path}/{key}: only in B"
            found = first_json_difference(a[key], b[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_json_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        return None
    if type(a) is type(b) and (
        a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
    ):
        return None
    return f"{path or '/'}: A={short(json.dumps(a))} B={short(json.dumps(b))}"


def short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def blank_timing_columns_md(lines: list[str]) -> list[str]:
    out, timing = [], set[int]()
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            timing = set()
            out.append(line)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*", nxt):  # a header row
            timing = {j for j, c in enumerate(cells) if c in TIMING_COLUMNS}
        elif timing and not re.fullmatch(r"[\s|:-]+", line):
            cells = ["<seconds>" if j in timing else c for j, c in enumerate(cells)]
            line = "| " + " | ".join(cells) + " |"
        out.append(line)
    return out


_TABLE = re.compile(r"<table\b.*?</table>", re.S)
_ROW = re.compile(r"<tr\b[^>]*>(.*?)</tr>", re.S)
_CELL = re.compile(r"(<t([dh])\b[^>]*>)(.*?)(</t\2>)", re.S)
_TAG = re.compile(r"<[^>]+>")


def blank_timing_columns_html(text: str) -> str:
    def table(m: re.Match[str]) -> str:
        block = m.group(0)
        timing: set[int] = set()
        for row in _ROW.finditer(block):
            heads = [
                _TAG.sub("", c.group(3)).strip()
                for c in _CELL.finditer(row.group(1))
                if c.group(2) == "h"
            ]
            if heads:
                timing = {j for j, h in enumerate(heads) if h in TIMING_COLUMNS}
                break
        if not timing:
            return block

        def row(r: re.Match[str]) -> str:
            cells = list(_CELL.finditer(r.group(1)))
            if not cells or cells[0].group(2) == "h":
                return r.group(0)
            body = r.group(1)
            for j in sorted(timing, reverse=True):
                if j < len(cells):
                    c = cells[j]
                    body = body[: c.start(3)] + "<seconds>" + body[c.end(3) :]
            return r.group(0).replace(r.group(1), body)

        return _ROW.sub(row, block)

    return _TABLE.sub(table, text)


def normalise_text(text: str, suffix: str) -> tuple[str, set[str]]:
    applied: set[str] = set()
    for pattern, replacement, what in TEXT_RULES:
        text, n = pattern.subn(replacement, text)
        if n:
            applied.add("date stamp" if "Generated" in what else what)
    if suffix in {".html", ".htm"}:
        new = blank_timing_columns_html(text)
    else:
        new = "\n".join(blank_timing_columns_md(text.split("\n")))
    if new != text:
        applied.add("timing columns")
    return new, applied


# ----------------------------------------------------------------------------- comparing


@dataclass
class Result:
    status: str  # identical | same | differs | only in A | only in B
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("identical", "same")


def first_text_difference(a: str, b: str) -> str:
    la, lb = a.split("\n"), b.split("\n")
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            col = next(
                (k for k, (p, q) in enumerate(zip(x, y, strict=False)) if p != q),
                min(len(x), len(y)),
            )
            lo = max(col - 30, 0)
            return f"line {i + 1} col {col + 1}: A={x[lo : col + 40]!r} B={y[lo : col + 40]!r}"
    return f"{len(la)} vs {len(lb)} lines"


def first_byte_difference(a: bytes, b: bytes) -> str:
    k = next((i for i, (p, q) in enumerate(zip(a, b, strict=False)) if p != q), min(len(a), len(b)))
    return f"byte {k} of {len(a)} vs {len(b)} bytes"


def removed_note(removed: set[str], reordered: bool = False) -> str:
    note = "removed " + ", ".join(sorted(removed)) if removed else "nothing removed"
    return note + ("; key order differs" if reordered else "")


def compare_json(a: Path, b: Path) -> Result:
    removed: set[str] = set()
    na = normalise_json(json.loads(a.read_text()), removed=removed)
    nb = normalise_json(json.loads(b.read_text()), removed=removed)
    found = first_json_difference(na, nb)
    if found:
        return Result("differs", found)
    return Result("same", removed_note(removed, json.dumps(na) != json.dumps(nb)))


def compare_jsonl(a: Path, b: Path) -> Result:
    la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    removed: set[str] = set()
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        found = first_json_difference(
            normalise_json(json.loads(x), removed=removed),
            normalise_json(json.loads(y), removed=removed),
        )
        if found:
            return Result("differs", f"line {i + 1}: {found}")
    if len(la) != len(lb):
        return Result("differs", f"{len(la)} vs {len(lb)} lines")
    return Result("same", removed_note(removed))


def compare_text(a: Path, b: Path) -> Result:
    ta, applied = normalise_text(a.read_text(), a.suffix)
    tb, applied_b = normalise_text(b.read_text(), b.suffix)
    if ta != tb:
        return Result("differs", first_text_difference(ta, tb))
    return Result("same", "normalised " + ", ".join(sorted(applied | applied_b)))


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}  # fmt: skip


def read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, tuple[str, list[int], bytes]]]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None) or {}
    for key, value in meta.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            pass
    base = 8 + n
    tensors = {
        name: (
            info["dtype"],
            info["shape"],
            raw[base + info["data_offsets"][0] : base + info["data_offsets"][1]],
        )
        for name, info in header.items()
    }
    return meta, tensors


def tensor_difference(
    name: str, a: tuple[str, list[int], bytes], b: tuple[str, list[int], bytes]
) -> str:
    if a[:2] != b[:2]:
        return f"tensor {name}: {a[0]}{a[1]} vs {b[0]}{b[1]}"
    import numpy as np

    dtype = _DTYPES.get(a[0])
    if dtype is None:
        return f"tensor {name}: {first_byte_difference(a[2], b[2])}"
    x = np.frombuffer(a[2], dtype=dtype)
    y = np.frombuffer(b[2], dtype=dtype)
    diff = (
        np.flatnonzero(x.view(f"u{x.itemsize}") != y.view(f"u{y.itemsize}"))
        if x.itemsize > 1
        else np.flatnonzero(x != y)
    )
    k = int(diff[0])
    where = np.unravel_index(k, a[1]) if a[1] else ()
    gap = ""
    if x.dtype.kind == "f":
        gap = f", max |A-B| {float(np.nanmax(np.abs(x.astype('f8') - y.astype('f8')))):.3g}"
    at = f"{name}{[int(i) for i in where]}"
    count = f"{diff.size} of {x.size} elements differ{gap}"
    return f"tensor {at}: A={x[k].item()!r} B={y[k].item()!r} ({count})"


def compare_safetensors(a: Path, b: Path) -> Result:
    meta_a, ta = read_safetensors(a)
    meta_b, tb = read_safetensors(b)
    for name in sorted(set(ta) | set(tb)):
        if name not in tb or name not in ta:
            return Result("differs", f"tensor {name} only in {'A' if name in ta else 'B'}")
        if ta[name] != tb[name]:
            return Result("differs", tensor_difference(name, ta[name], tb[name]))
    removed: set[str] = set()
    found = first_json_difference(
        normalise_json(meta_a, removed=removed), normalise_json(meta_b, removed=removed)
    )
    if found:
        return Result("differs", f"tensors bit-equal; metadata {found}")
    return Result("same", f"tensors bit-equal ({len(ta)}); metadata {removed_note(removed)}")


def compare_png(a: Path, b: Path, varies_within_a: bool) -> Result:
    import numpy as np
    from PIL import Image

    with Image.open(a) as ia, Image.open(b) as ib:
        pa, pb = np.asarray(ia), np.asarray(ib)
    where = first_byte_difference(a.read_bytes(), b.read_bytes())
    if pa.shape != pb.shape:
        return Result("differs", f"image {pa.shape} vs {pb.shape}")
    if not np.array_equal(pa, pb):
        bad = np.argwhere(pa != pb)
        return Result("differs", f"pixels differ: {len(bad)} values, first at {bad[0].tolist()}")
    if varies_within_a:
        return Result("same", "pixels identical (bytes differ between two runs of A too)")
    return Result("differs", f"bytes differ ({where}), pixels identical; rerun with --control")


def compare_file(a: Path, b: Path, varies_within_a: bool = False) -> Result:
    if a.read_bytes() == b.read_bytes():
        return Result("identical")
    suffix = a.suffix.lower()
    try:
        if suffix == ".safetensors":
            return compare_safetensors(a, b)
        if suffix == ".json":
            return compare_json(a, b)
        if suffix == ".jsonl":
            return compare_jsonl(a, b)
        if suffix == ".png":
            return compare_png(a, b, varies_within_a)
        if suffix in TEXT_SUFFIXES:
            return compare_text(a, b)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        return Result(
            "differs", f"{first_byte_difference(a.read_bytes(), b.read_bytes())}; unreadable: {e}"
        )
    return Result("differs", first_byte_difference(a.read_bytes(), b.read_bytes()))


def compare_runs(a: Path, b: Path, varies: frozenset[str] = frozenset()) -> dict[str, Result]:
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    results = {}
    for rel in sorted(files_a | files_b):
        if rel not in files_b:
            results[rel] = Result("only in A")
        elif rel not in files_a:
            results[rel] = Result("only in B")
        else:
            results[rel] = compare_file(a / rel, b / rel, rel in varies)
            if rel in varies and not results[rel].ok:
                results[rel].detail += " [also differs between two runs of A]"
    return results


def print_table(results: dict[str, Result], title: str) -> None:
    print(f"\n{title}")
    width = max(len(r) for r in results)
    print(f"{'file':<{width}}  {'result':<9}  first difference / what was normalised")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 40}")
    for rel, res in results.items():
        print(f"{rel:<{width}}  {res.status:<9}  {res.detail}")
    counts: dict[str, int] = {}
    for res in results.values():
        counts[res.status] = counts.get(res.status, 0) + 1
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(results)} files")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="commit A (the reference, e.g. before a refactor)")
    p.add_argument("b", help="commit B (e.g. HEAD)")
    p.add_argument("--config", default="configs/tiny-bit-for-bit.yaml", help="robustsnn run CONFIG")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "robustsnn-bit-for-bit"),
                   help="folder for the copies and the runs (kept)")  # fmt: skip
    p.add_argument("--repo", default=".", help="the git repository (default: the current folder)")
    p.add_argument("--control", action="store_true", help="run A twice and compare those first")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs found in --work")
    args = p.parse_args(argv)

    repo = Path(git(Path(args.repo), "rev-parse", "--show-toplevel"))
    sha_a = git(repo, "rev-parse", "--verify", f"{args.a}^{{commit}}")
    sha_b = git(repo, "rev-parse", "--verify", f"{args.b}^{{commit}}")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"  # one copy, one path, for every run
    config.write_bytes(Path(args.config).read_bytes())
    print(f"A {args.a} = {sha_a}\nB {args.b} = {sha_b}\nconfig {args.config}\nwork {work}")

    started = time.perf_counter()
    run_a = run_commit(repo, sha_a, work, config, "", args.reuse)
    varies: set[str] = set()
    if args.control:
        control = run_commit(repo, sha_a, work, config, "-control", args.reuse)
        within = compare_runs(run_a.out, control.out)
        print_table(within, f"control: two runs of A ({sha_a[:12]})")
        varies = {rel for rel, res in within.items() if not res.ok}
        if varies:  # PNGs whose bytes vary but pixels not: judged by pixels in A vs B
            print(
                "files that differ between two runs of the same commit: "
                + ", ".join(sorted(varies))
            )
    run_b = run_commit(repo, sha_b, work, config, "", args.reuse)
    results = compare_runs(run_a.out, run_b.out, frozenset(varies))
    print_table(results, f"A {sha_a[:12]} vs B {sha_b[:12]} ({args.config})")
    for run in (run_a, run_b):
        took = f"{run.seconds:.0f} s" if run.seconds is not None else "reused"
        print(f"run {run.sha[:12]}: {took}, {run.out}")
    print(f"total {time.perf_counter() - started:.0f} s")
    differs = [rel for rel, res in results.items() if not res.ok]
    print("RESULT: " + (f"{len(differs)} file(s) differ" if differs else "every output the same"))
    return 1 if differs else 0


if __name__ == "__main__":
    raise SystemExit(main())
