"""The command line's building blocks: argument types, the one-line-error parser, and every
option that several subcommands share, each defined once (:mod:`robustsnn.cli.parser` uses
them)."""

from __future__ import annotations

import argparse
from typing import Any, TypeAlias

from robustsnn.errors import UserError


def _int_list(text: str) -> list[int]:
    """Comma-separated integers (``4,8``), for argparse."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 4,8, got {text!r}"
        ) from None


def _eps(text: str) -> float:
    from robustsnn.config import parse_eps

    try:
        return parse_eps(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (not the whole usage block)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


Options = argparse._ActionsContainer
"""Where an option goes: a parser or one of its argument groups."""

SubParsers: TypeAlias = "argparse._SubParsersAction[_OneLineParser]"
"""``build_parser``'s subcommands, to which each ``_add_*_parser`` adds one."""

REFERENCE_HELP = ".npz with x, logits (and spike_counts) from the source"


# Options that several subcommands share: each defined once here; what differs between the
# subcommands (a default, a help line) is an argument, the command's own value at its call.


def _checkpoint(p: Options) -> None:
    p.add_argument("checkpoint")


def _config(p: Options) -> None:
    p.add_argument("config", nargs="?", default=None)


def _dataset(
    p: Options, default: str | None = None, help: str | None = None, required: bool = False
) -> None:
    p.add_argument("--dataset", default=default, help=help, required=required)


def _model(p: Options, help: str | None = None) -> None:
    p.add_argument("--model", default="cnn_small", help=help)


def _objective_option(p: Options, help: str) -> None:
    p.add_argument(
        "--objective-option", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _eps_option(p: Options, default: float = 8 / 255, help: str | None = None) -> None:
    p.add_argument("--eps", type=_eps, default=default, help=help)


def _epochs(p: Options, default: int = 10) -> None:
    p.add_argument("--epochs", type=int, default=default)


def _batch_size(p: Options, default: int) -> None:
    p.add_argument("--batch-size", type=int, default=default)


def _lr(p: Options, default: float = 0.1) -> None:
    p.add_argument("--lr", type=float, default=default)


def _model_size(p: Options) -> None:
    """``--width`` and ``--fc`` of the small models."""
    p.add_argument("--width", type=int, default=None, help="model width (small models)")
    p.add_argument("--fc", type=int, default=None, help="hidden FC size (small models)")


def _time_steps(p: Options, default: int | None = None, help: str | None = None) -> None:
    p.add_argument("--T", type=int, default=default, help=help)


def _reset(p: Options, default: str) -> None:
    p.add_argument("--reset", choices=["hard", "soft"], default=default)


def _leak(p: Options) -> None:
    p.add_argument("--leak", type=float, default=1.0)


def _ensemble(p: Options, default: str | None = None, help: str | None = None) -> None:
    p.add_argument("--ensemble", default=default, help=help)


def _num_samples(p: Options, default: int | None, help: str | None = None) -> None:
    p.add_argument("--num-samples", "--n", dest="n", type=int, default=default, help=help)


def _diagnostics(p: Options) -> None:
    p.add_argument("--diagnostics", choices=["none", "fast", "full"], default="fast")


def _escalate(p: Options, help: str) -> None:
    p.add_argument("--escalate", action="store_true", help=help)


def _escalate_levels(p: Options, default: int, help: str | None = None) -> None:
    p.add_argument("--escalate-levels", type=int, default=default, help=help)


def _reference(p: Options, required: bool = False) -> None:
    p.add_argument("--reference", default=None, required=required, help=REFERENCE_HELP)


def _dt(p: Options, default: float | None, help: str) -> None:
    p.add_argument("--dt", type=float, default=default, help=help)


def _set(p: Options, help: str | None = None) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def _data_dir(p: Options) -> None:
    p.add_argument("--data-dir", default=None)


def _eval_n(p: Options) -> None:
    p.add_argument("--eval-n", type=int, default=1000)


def _out(
    p: Options, default: str | None = None, help: str | None = None, required: bool = False
) -> None:
    p.add_argument("--out", default=default, help=help, required=required)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (a CPU run repeats bit for bit)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--download", action="store_true",
        help="download a missing named dataset (checksummed); same as ROBUSTSNN_DOWNLOAD=1",
    )  # fmt: skip


def _overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace a finished result of other settings in the output folder (without it such "
        "a folder is refused; the same settings resume)",
    )  # fmt: skip


def _stochastic_parts(p: argparse.ArgumentParser) -> None:
    """``--input-encoding`` and ``--threshold-noise`` of the commands that make an SNN."""
    p.add_argument(
        "--input-encoding", choices=["direct", "poisson"], default="direct",
        help="direct: the image is the input current; poisson: Bernoulli rate-coded input "
        "spikes (a random SNN, straight-through gradient)",
    )  # fmt: skip
    p.add_argument(
        "--threshold-noise", type=float, default=0.0, metavar="SIGMA",
        help="Gaussian noise on every threshold (std relative to it) per neuron and step",
    )  # fmt: skip
