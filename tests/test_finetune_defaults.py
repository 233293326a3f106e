"""One default finetuning recipe (issue 33): ``robustsnn finetune``, ``robustsnn run`` and the
library's ``finetune_snn`` share :class:`robustsnn.config.FinetuneConfig`'s values; the paper's
recipe stays a named option."""

from __future__ import annotations

import inspect

from robustsnn.cli import build_parser
from robustsnn.config import FinetuneConfig
from robustsnn.training.snn import finetune_snn

RECIPE = ("objective", "adversary", "estimator", "beta", "lr", "eps", "alpha", "epochs",
          "adversary_steps", "batch_size")  # fmt: skip


def test_the_command_line_default_is_the_config_default() -> None:
    args = build_parser().parse_args(["finetune", "snn.safetensors"])
    ft = FinetuneConfig()
    for key in RECIPE:
        assert getattr(args, key) == getattr(ft, key), key
    assert args.objective == "distill"


def test_the_library_default_is_the_config_default() -> None:
    """finetune_snn takes the config object and has no defaults of its own; its old keyword
    style (deprecated) fills the missing keywords from FinetuneConfig too."""
    params = inspect.signature(finetune_snn).parameters
    assert params["config"].annotation in ("FinetuneConfig | None", FinetuneConfig | None)
    assert not set(RECIPE) & set(params)
    from robustsnn.config import OptimizerConfig

    ft = FinetuneConfig()
    assert ft.optimizer_config() == OptimizerConfig(
        "sgd", ft.lr, ft.momentum, ft.weight_decay, "cosine"
    )


def test_the_papers_recipe_stays_a_named_option() -> None:
    args = build_parser().parse_args(
        ["finetune", "snn.safetensors", "--objective", "robust_finetune", "--adversary", "none",
         "--estimator", "bptt-pcw-1"]
    )  # fmt: skip
    assert args.objective == "robust_finetune" and args.adversary == "none"
