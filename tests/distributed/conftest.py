"""The distributed tests reuse the tiny models of tests/evaluation (evaluation_test_utils)."""

from __future__ import annotations

import sys
from pathlib import Path

EVALUATION_TESTS = str(Path(__file__).resolve().parent.parent / "evaluation")
if EVALUATION_TESTS not in sys.path:
    sys.path.insert(0, EVALUATION_TESTS)
