"""Output folders are owned: one live process writes a folder at a time, and a finished result
of other settings is never silently replaced.

- :class:`FolderLock`: ``<folder>/.robustsnn.lock`` holds the owner's pid, host and command,
  created atomically (a hard link of a fully written temp file: never a half-written lock).
  Another live holder -> a one-line :class:`UserError` (exit 2). A lock whose process is dead
  (same host) is stale and taken over. The same process may take it again (re-entrant).
- :func:`claim`: the lock, plus the settings check. ``<folder>/settings.json`` records the
  settings of the finished result beside it; a folder whose finished result was made with other
  settings is refused unless ``overwrite`` (then the old result files are removed first).
  The same settings resume as before; a folder written before settings were recorded is
  taken as it is (resume).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from robustsnn.errors import UserError
from robustsnn.io.atomic import atomic_write_json

LOCK_FILE = ".robustsnn.lock"
SETTINGS_FILE = "settings.json"

_held: dict[str, int] = {}  # resolved folder -> depth, for this process


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    # a zombie (killed, not yet reaped by its parent) holds nothing, nor does an unrelated
    # program that reuses the pid of a dead owner (robustsnn runs in python)
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().lower()
        return not cmdline or b"python" in cmdline or b"robustsnn" in cmdline
    except OSError:
        return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class FolderLock:
    """Exclusive, re-entrant (per process) ownership of an output folder."""

    def __init__(self, folder: str | Path, command: str = "robustsnn") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command
        self._key = ""
        self._created: list[Path] = []  # folders this lock created (removed again if left empty)

    def _create(self) -> bool:
        """Create the lock file atomically with its content; False if it exists."""
        body = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".lock.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(body, f)
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def acquire(self) -> None:
        existing = self.folder
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        self._created = [] if existing == self.folder else [self.folder, *self.folder.parents]
        self._created = self._created[: len(self._created) - len(existing.parents) - 1]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = str(self.folder.resolve())
        if self._key in _held:
            _held[self._key] += 1
            return
        for _ in range(50):
            if self._create():
                _held[self._key] = 1
                return
            owner = _read(self.path)
            if owner is None:  # vanished, or being replaced this instant: look again
                time.sleep(0.02)
                if not self.path.exists():
                    continue
                owner = _read(self.path) or {}
            pid, host = int(owner.get("pid") or 0), str(owner.get("host") or "")
            if host == socket.gethostname() and pid == os.getpid():
                _held[self._key] = 1  # ours, left by an earlier call in this process
                return
            if host == socket.gethostname() and not _alive(pid):
                # stale: its process is gone; take it over (a racing taker finds ours alive)
                with contextlib.suppress(FileNotFoundError):
                    if _read(self.path) == owner or _read(self.path) is None:
                        os.unlink(self.path)
                continue
            where = f"pid {pid} on {host}" if host else f"pid {pid}"
            raise UserError(
                f"{self.folder} is in use by another robustsnn process ({where}, "
                f"{owner.get('command', '?')}); wait for it to finish or use another --out"
            )
        raise UserError(f"could not take the lock {self.path}; remove it if no robustsnn runs")

    def release(self) -> None:
        if not self._key or self._key not in _held:
            return
        _held[self._key] -= 1
        if _held[self._key] > 0:
            return
        del _held[self._key]
        owner = _read(self.path)
        if owner is not None and int(owner.get("pid") or 0) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        for folder in self._created:  # a refused or failed command leaves no empty folder
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _normal(settings: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(settings), sort_keys=True, default=str))


def settings_conflict(
    folder: str | Path, settings: Mapping[str, Any], result_files: Sequence[str]
) -> str | None:
    """What differs between ``settings`` and those of the finished result in ``folder`` (None
    when nothing is finished there, the settings match, or none were recorded)."""
    folder = Path(folder)
    if not any((folder / name).exists() for name in result_files):
        return None
    recorded = _read(folder / SETTINGS_FILE)
    if recorded is None:
        return None
    now = _normal(settings)
    keys = sorted(set(recorded) | set(now))
    differ = [k for k in keys if recorded.get(k) != now.get(k)]
    if not differ:
        return None
    shown = ", ".join(f"{k} {recorded.get(k)!r} -> {now.get(k)!r}" for k in differ[:3])
    return shown + (f" (+{len(differ) - 3} more)" if len(differ) > 3 else "")


@contextlib.contextmanager
def claim(
    folder: str | Path,
    command: str,
    settings: Mapping[str, Any] | None = None,
    result_files: Sequence[str] = (),
    overwrite: bool = False,
    remove_on_overwrite: Sequence[str] = (),
) -> Iterator[Path]:
    """Own ``folder`` for the block: the lock, then the settings check; on success the
    settings are recorded beside the result."""
    folder = Path(folder)
    with FolderLock(folder, command):
        if settings is not None:
            conflict = settings_conflict(folder, settings, result_files)
            if conflict is not None and not overwrite:
                raise UserError(
                    f"{folder} holds a finished result of other settings ({conflict}); use "
                    "another --out, or --overwrite to replace it"
                )
            if conflict is not None:
                for name in (*result_files, *remove_on_overwrite, SETTINGS_FILE):
                    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                        (folder / name).unlink()
        yield folder
        if settings is not None:
            atomic_write_json(folder / SETTINGS_FILE, _normal(settings))


__all__ = ["LOCK_FILE", "SETTINGS_FILE", "FolderLock", "claim", "settings_conflict"]
