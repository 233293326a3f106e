"""The commands' evaluation defaults are named profiles in robustsnn.evaluation.config (issue
34: every default lives once): the parser reads them, so a default cannot drift between the
code and the help text, and the values are the ones every recorded CLI run was made with."""

from __future__ import annotations

from robustsnn.cli.parser import build_parser
from robustsnn.evaluation.config import EVALUATE_COMMAND, LATENCY_COMMAND, CommandProfile


def test_evaluate_reads_its_profile() -> None:
    args = build_parser().parse_args(["evaluate", "model.safetensors"])
    assert (args.n, args.batch_size, args.workers) == (
        EVALUATE_COMMAND.n,
        EVALUATE_COMMAND.batch_size,
        EVALUATE_COMMAND.workers,
    )
    assert args.escalate_levels == EVALUATE_COMMAND.escalate_levels
    # no --ensemble and no --attack: run_evaluation's default preset, the profile's
    assert args.ensemble is None and args.attack is None
    assert EVALUATE_COMMAND.ensemble == "reliable"


def test_latency_reads_its_profile() -> None:
    args = build_parser().parse_args(["latency", "snn.safetensors"])
    assert (args.n, args.batch_size, args.ensemble, args.escalate_levels) == (
        LATENCY_COMMAND.n,
        LATENCY_COMMAND.batch_size,
        LATENCY_COMMAND.ensemble,
        LATENCY_COMMAND.escalate_levels,
    )


def test_the_profiles_keep_the_recorded_defaults() -> None:
    # changing one changes every default run's records (the batch size is in the random
    # streams): a new profile, not an edit
    assert EVALUATE_COMMAND == CommandProfile(
        n=1000, batch_size=100, ensemble="reliable", escalate_levels=2, workers=0
    )
    assert LATENCY_COMMAND == CommandProfile(
        n=200, batch_size=100, ensemble="reliable", escalate_levels=1, workers=1
    )
