"""Command-line interface: parse arguments, call one pipeline step. No logic of its own.

The package: :mod:`~robustsnn.cli.options` (argument types and the options several subcommands
share, each defined once), :mod:`~robustsnn.cli.parser` (``build_parser``: one small function per
subcommand), :mod:`~robustsnn.cli.commands` (one ``cmd_<command>`` per subcommand) and here
``main``, which checks the device, joins torchrun and runs the command."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

# ``name as name``: the helpers stay importable from robustsnn.cli, as when it was one module
from robustsnn.cli.commands import _clear_run_folder as _clear_run_folder
from robustsnn.cli.commands import _file_digest as _file_digest
from robustsnn.cli.commands import _foreign_model as _foreign_model
from robustsnn.cli.commands import _key_values as _key_values
from robustsnn.cli.commands import _latency as _latency
from robustsnn.cli.commands import _metrics as _metrics
from robustsnn.cli.commands import _model_kwargs as _model_kwargs
from robustsnn.cli.commands import _owned as _owned
from robustsnn.cli.commands import _print_json as _print_json
from robustsnn.cli.commands import _randomness as _randomness
from robustsnn.cli.commands import _run_evaluation as _run_evaluation
from robustsnn.cli.commands import _settings as _settings
from robustsnn.cli.commands import (
    _training_lock,
    cmd_compare,
    cmd_convert,
    cmd_evaluate,
    cmd_export,
    cmd_finetune,
    cmd_import,
    cmd_latency,
    cmd_recheck,
    cmd_report,
    cmd_run,
    cmd_sweep,
    cmd_train_ann,
    cmd_train_snn,
    cmd_transfer,
    cmd_verify,
)
from robustsnn.cli.options import _common as _common
from robustsnn.cli.options import _eps as _eps
from robustsnn.cli.options import _int_list as _int_list
from robustsnn.cli.options import _OneLineParser as _OneLineParser
from robustsnn.cli.options import _overwrite as _overwrite
from robustsnn.cli.options import _stochastic_parts as _stochastic_parts
from robustsnn.cli.parser import build_parser
from robustsnn.errors import UserError

__all__ = [
    "COMMANDS",
    "TORCHRUN_COMMANDS",
    "build_parser",
    "check_device",
    "cmd_compare",
    "cmd_convert",
    "cmd_evaluate",
    "cmd_export",
    "cmd_finetune",
    "cmd_import",
    "cmd_latency",
    "cmd_recheck",
    "cmd_report",
    "cmd_run",
    "cmd_sweep",
    "cmd_train_ann",
    "cmd_train_snn",
    "cmd_transfer",
    "cmd_verify",
    "main",
]


def check_device(text: str) -> None:
    """Fail with one line unless ``text`` names a torch device this machine can compute on."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(
            f"--device {text!r} is not a torch device; use cpu, cuda or cuda:N (see torch.device)"
        ) from None
    if device.type == "meta":
        raise UserError("--device meta holds no data; use cpu, cuda or cuda:N")
    try:
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001 - any backend's refusal becomes one line
        detail = " ".join(str(exc).split())[:160]
        raise UserError(
            f"--device {text!r} cannot be used on this machine ({detail}); use --device cpu"
        ) from None


COMMANDS = {
    "train-ann": cmd_train_ann,
    "convert": cmd_convert,
    "finetune": cmd_finetune,
    "train-snn": cmd_train_snn,
    "evaluate": cmd_evaluate,
    "run": cmd_run,
    "report": cmd_report,
    "compare": cmd_compare,
    "latency": cmd_latency,
    "recheck": cmd_recheck,
    "transfer": cmd_transfer,
    "sweep": cmd_sweep,
    "export": cmd_export,
    "import": cmd_import,
    "verify": cmd_verify,
}


TORCHRUN_COMMANDS = ("train-ann", "finetune", "train-snn", "evaluate", "run")
"""Commands that run on several processes under ``torchrun ... -m robustsnn``."""


def _join_torchrun(args: argparse.Namespace) -> None:
    """Under torchrun with several processes: start the process group, take this rank's device
    (``cuda`` -> ``cuda:LOCAL_RANK``) and keep every rank but 0 quiet. Nothing with one process."""
    from robustsnn import distributed

    if distributed.launched_world_size() == 1:
        return
    if args.command not in TORCHRUN_COMMANDS:
        raise UserError(
            f"robustsnn {args.command} runs in one process; start it without torchrun "
            f"(torchrun runs {', '.join(TORCHRUN_COMMANDS)})"
        )
    args.device = distributed.init(args.device)
    if not distributed.is_main():
        args.quiet = True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        import torch

        if getattr(args, "device", "cpu").startswith("cuda") and not torch.cuda.is_available():
            raise UserError(
                f"--device {args.device}: no CUDA device is available; use --device cpu"
            )
        if hasattr(args, "device"):
            check_device(args.device)
        if getattr(args, "download", False):
            from robustsnn.data.datasets import DOWNLOAD_ENV

            os.environ[DOWNLOAD_ENV] = "1"
        _join_torchrun(args)
        from robustsnn.validation import validate_args

        validate_args(args)  # numbers, names, output paths: before any work
        from robustsnn import distributed

        with _training_lock(args):
            if distributed.is_main():
                COMMANDS[args.command](args)
            else:  # one copy of the results on stdout: rank 0's
                with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                    COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system refuses (permissions, full disk): one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        from robustsnn import distributed

        distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
