"""Deprecated alias of :mod:`robustsnn.io.folder_lock` (owned output folders).

Moved in issue 34; this module only re-exports the names and will be removed in the next
release.
"""

import warnings

from robustsnn.io.folder_lock import (
    LOCK_FILE,
    SETTINGS_FILE,
    FolderLock,
    claim,
    settings_conflict,
)

__all__ = [
    "LOCK_FILE",
    "SETTINGS_FILE",
    "FolderLock",
    "claim",
    "settings_conflict",
]

warnings.warn(
    "robustsnn.io_lock is deprecated: import from robustsnn.io.folder_lock instead; "
    "robustsnn.io_lock will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
