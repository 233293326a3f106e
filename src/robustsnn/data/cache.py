"""Cache of decoded datasets as uint8 `.npz` files, so slow formats are decoded only once.

A cache file sits next to the data it was decoded from (or in the user cache folder when that
place is read-only). Its name holds a hash of the source's location and a hash of the source's
state (sizes and modification times), so a changed source is decoded again and the stale cache
of the same source is removed. Files are written atomically (temporary file + ``os.replace``), so
several processes (e.g. the ranks of a distributed run) may decode and write at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from robustsnn.data.types import Splits

CACHE_VERSION = 1
_PREFIX = "robustsnn-cache"
_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def user_cache_dir() -> Path:
    """The per-user fallback cache folder: $ROBUSTSNN_CACHE_DIR, else $XDG_CACHE_HOME/robustsnn,
    else ~/.cache/robustsnn."""
    explicit = os.environ.get("ROBUSTSNN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "robustsnn"


def list_files(root: Path, subdirs: Sequence[str] = ("",)) -> list[Path]:
    """All files under ``root/<subdir>`` (recursive, sorted): the state of a folder dataset."""
    files: list[Path] = []
    for sub in subdirs:
        top = root / sub if sub else root
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            files.extend(Path(dirpath) / name for name in sorted(filenames))
    return files


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def cache_name(fmt: str, sources: Iterable[Path], home: Path, extra: str = "") -> tuple[str, str]:
    """(file name, glob pattern of every cache of the same dataset location) for ``sources``.

    The location part depends on ``fmt`` and ``home`` only; the state part on the sources' paths,
    sizes and modification times, so any change to the source gives a new name.
    """
    where = _digest([fmt, str(home.resolve())])[:10]
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in sources]
    state = _digest([CACHE_VERSION, extra, stats])[:12]
    return f"{_PREFIX}-{fmt}-{where}-{state}.npz", f"{_PREFIX}-{fmt}-{where}-*.npz"


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


def _read(path: Path) -> Splits | None:
    """A cache file's content, or None when it is missing, truncated or malformed."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if any(key not in data.files for key in _REQUIRED):
                return None
            arrays = {key: data[key] for key in _REQUIRED}
            classes = tuple(str(c) for c in data["classes"]) if "classes" in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if arrays["x_train"].dtype != np.uint8 or arrays["x_train"].ndim != 4:
        return None
    return Splits(**arrays, classes=classes)


def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` so that readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy stub: str keys ok
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cached_decode(
    fmt: str, sources: Sequence[Path], home: Path, decode: Callable[[], Splits], extra: str = ""
) -> Splits:
    """Load ``fmt`` decoded from ``sources`` from a cache, or decode it and save the cache.

    ``home`` is the folder beside the data where the cache goes when it is writable.
    """
    name, stale_pattern = cache_name(fmt, sources, home, extra)
    for folder in (home, user_cache_dir()):
        hit = _read(folder / name)
        if hit is not None:
            return hit
    splits = decode()
    fallback = user_cache_dir()
    for folder in (home, fallback):
        try:
            if folder == fallback:
                folder.mkdir(parents=True, exist_ok=True)
            if not _writable(folder):
                continue
            atomic_save_npz(folder / name, splits.arrays())
        except OSError:
            continue
        for old in folder.glob(stale_pattern):
            if old.name != name:
                with contextlib.suppress(OSError):
                    old.unlink()
        break
    else:
        warnings.warn(
            f"could not write a cache for {fmt} in {home} or {fallback}; "
            "it will be decoded again next time",
            stacklevel=2,
        )
    return splits
