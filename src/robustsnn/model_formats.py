"""Deprecated alias of :mod:`robustsnn.io.formats` (the checkpoint-structure registries).

Moved in issue 34; this module only re-exports the names and will be removed in the next
release.
"""

import warnings

from robustsnn.io.formats import (
    ARCH_BUILDERS,
    BODY_TRANSFORMS,
    ArchBuilder,
    BodyTransform,
    register_arch_builder,
    register_body_transform,
)

__all__ = [
    "ARCH_BUILDERS",
    "BODY_TRANSFORMS",
    "ArchBuilder",
    "BodyTransform",
    "register_arch_builder",
    "register_body_transform",
]

warnings.warn(
    "robustsnn.model_formats is deprecated: import from robustsnn.io.formats instead; "
    "robustsnn.model_formats will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
