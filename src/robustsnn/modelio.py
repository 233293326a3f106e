"""Deprecated alias of :mod:`robustsnn.io.models` (ANN and SNN checkpoints as models).

Moved in issue 34; this module only re-exports the names and will be removed in the next
release.
"""

import warnings

from robustsnn.io.models import (
    ARCH_BUILDERS,
    BODY_TRANSFORMS,
    build_snn_from_metadata,
    check_input,
    expected_input,
    load_model,
    save_ann,
    save_snn,
    snn_metadata,
)

__all__ = [
    "ARCH_BUILDERS",
    "BODY_TRANSFORMS",
    "build_snn_from_metadata",
    "check_input",
    "expected_input",
    "load_model",
    "save_ann",
    "save_snn",
    "snn_metadata",
]

warnings.warn(
    "robustsnn.modelio is deprecated: import from robustsnn.io.models instead; "
    "robustsnn.modelio will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
