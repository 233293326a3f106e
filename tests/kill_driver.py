"""Run ``robustsnn ARGV`` and SIGKILL this process right after the k-th call of a function has
returned: a kill at a chosen point, for the kill-and-resume tests (tests/test_kill_resume.py).

    python tests/kill_driver.py robustsnn.training.trainer:Trainer.save_state 1 finetune ...
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any


def main() -> None:
    target, k, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    module_name, _, attr = target.partition(":")
    owner_name, _, name = attr.rpartition(".")
    module = importlib.import_module(module_name)
    owner = getattr(module, owner_name) if owner_name else module
    original = getattr(owner, name)
    calls = [0]

    def killing(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(owner, name, killing)
    from robustsnn.cli import main as cli

    raise SystemExit(cli(argv))


if __name__ == "__main__":
    main()
