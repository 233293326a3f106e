"""Command-line interface: parse arguments, call one pipeline step. No logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
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


def _owned(
    a: argparse.Namespace,
    out: Path,
    settings: dict[str, Any] | None = None,
    results: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> Any:
    """Own ``out`` while the command writes it (robustsnn.io.folder_lock): one live process per
    folder, and a finished result of other settings is refused unless ``--overwrite``. Rank 0
    only."""
    from robustsnn import distributed
    from robustsnn.io.folder_lock import claim

    if not distributed.is_main():
        return contextlib.nullcontext(out)
    overwrite = bool(getattr(a, "overwrite", False))
    return claim(out, f"robustsnn {a.command}", settings, results, overwrite, remove)


def _training_lock(a: argparse.Namespace) -> Any:
    """The output folder lock of the commands that train (evaluate, run and latency take theirs
    with the settings check): one live process per folder."""
    folder = None
    if a.command in ("train-ann", "train-snn", "sweep") and getattr(a, "out", None):
        folder = Path(a.out)
    elif a.command == "finetune":
        folder = Path(a.out) if a.out else Path(a.checkpoint).parent / "finetuned"
    return contextlib.nullcontext() if folder is None else _owned(a, folder)


def _settings(a: argparse.Namespace, names: Sequence[str], files: Sequence[str]) -> dict[str, Any]:
    """The options that make a result, for the folder's settings check: a file option by its
    content (SHA-256, so ./x and x, or a moved folder, are the same settings), others as given."""
    settings = {k: getattr(a, k, None) for k in names}
    for key in files:
        digest = _file_digest(settings.get(key))
        if digest is not None:
            settings[key] = f"sha256:{digest}"
    return settings


def _file_digest(path: str | Path | None) -> str | None:
    from robustsnn.integrity import file_sha256

    return file_sha256(path) if path is not None and Path(path).is_file() else None


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


def _num_samples(p: Options, default: int, help: str | None = None) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="robustsnn",
        description="Adversarially robust spiking neural networks through conversion, "
        "with adaptive (attack x gradient estimator) evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_train_ann_parser, _add_convert_parser, _add_finetune_parser, _add_train_snn_parser,
        _add_evaluate_parser, _add_export_parser, _add_import_parser, _add_verify_parser,
        _add_run_parser, _add_latency_parser, _add_recheck_parser, _add_transfer_parser,
        _add_report_parser, _add_compare_parser, _add_sweep_parser,
    ):  # fmt: skip
        add(sub)
    return parser


def _add_train_ann_parser(sub: SubParsers) -> None:
    p = sub.add_parser("train-ann", help="train a (robust) ANN")
    _dataset(
        p, "mnist5k",
        "mnist5k, cifar10, cifar100, svhn, tinyimagenet, npz:PATH, imagefolder:PATH",
    )  # fmt: skip
    _model(p, "model name (see models registry)")
    p.add_argument("--objective", default="pgd_at", help="natural, pgd_at, trades, mart")
    _eps_option(p, 2 / 255, "training radius, e.g. 2/255")
    _epochs(p)
    _batch_size(p, 64)
    _lr(p)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay (>= 0)")
    p.add_argument(
        "--cutout", type=int, default=None,
        help="cutout hole side in pixels, 0 = off (default: the dataset's, 8 on 32x32 color)",
    )  # fmt: skip
    _model_size(p)
    p.add_argument(
        "--activation", choices=["relu", "qcfs"], default=None,
        help="ANN activation: relu, or qcfs (quantised clip, converts near-losslessly)",
    )  # fmt: skip
    p.add_argument("--qcfs-levels", type=int, default=None, help="QCFS levels L (default 8)")
    p.add_argument("--beta", type=float, default=None, help="TRADES/MART beta")
    _data_dir(p)
    _eval_n(p)
    _out(p, "runs/ann")
    _common(p)


def _add_convert_parser(sub: SubParsers) -> None:
    p = sub.add_parser("convert", help="convert an ANN checkpoint to an SNN")
    _checkpoint(p)
    _time_steps(p, 8)
    p.add_argument("--calib-T", type=int, default=100)
    p.add_argument("--percentile", type=float, default=99.7)
    p.add_argument("--scale", type=float, default=0.3, help="percentile thresholds only")
    _reset(p, "soft")
    _leak(p)
    p.add_argument("--bn", choices=["keep", "reset", "reestimate", "fold"], default="keep")
    p.add_argument("--calib-batches", type=int, default=10)
    p.add_argument("--calib-batch-size", type=int, default=64)
    p.add_argument(
        "--v-init", type=float, default=0.5,
        help="initial membrane as a fraction of the threshold (0 paper, 0.5 rounding)",
    )  # fmt: skip
    p.add_argument(
        "--threshold", choices=["percentile", "mse", "qcfs"], default="mse",
        help="threshold rule: percentile x scale, T-aware mse, or a QCFS ANN's lam",
    )  # fmt: skip
    p.add_argument(
        "--calibration", choices=["none", "bias", "potential"], default="none",
        help="post-conversion correction on clean training images (Li et al. 2021)",
    )  # fmt: skip
    p.add_argument("--correction-images", type=int, default=1024)
    p.add_argument(
        "--ta-lif", type=float, default=None, metavar="THETA_V",
        help="HoSNN's threshold-adapting neurons with this initial theta_v (signatures fitted "
        "on the calibration images)",
    )  # fmt: skip
    _stochastic_parts(p)
    _data_dir(p)
    _eval_n(p)
    _out(p, help="output folder (default: beside the ANN)")
    _common(p)


def _add_finetune_parser(sub: SubParsers) -> None:
    from robustsnn.config import FinetuneConfig

    ft = FinetuneConfig()  # one default recipe: the run's, the library's and this command's
    p = sub.add_parser("finetune", help="robust-finetune an SNN's thresholds and weights")
    _checkpoint(p)
    p.add_argument("--beta", type=float, default=ft.beta, help="KL weight; 0 = plain CE finetuning")
    _epochs(p, ft.epochs)
    _lr(p, ft.lr)
    _eps_option(p, ft.eps)
    p.add_argument(
        "--alpha", type=_eps, default=ft.alpha, help="random-start size of the adversary"
    )
    p.add_argument(
        "--adversary-steps", type=int, default=ft.adversary_steps,
        help="KL adversary steps (1 = the paper's single step; more = multi-step, 2.5*eps/steps)",
    )  # fmt: skip
    _batch_size(p, ft.batch_size)
    p.add_argument("--freeze-thresholds", action="store_true")
    p.add_argument("--freeze-weights", action="store_true")
    p.add_argument(
        "--add-biases", action="store_true",
        help="give bias-free layers zero-initialised biases to train (the paper's --use_bias)",
    )  # fmt: skip
    p.add_argument(
        "--estimator", default=ft.estimator,
        help="gradient estimator of the training loss (and of the adversary without --adversary; "
        f"default {ft.estimator}, scale-invariant; the paper's is bptt-pcw-1)",
    )  # fmt: skip
    p.add_argument(
        "--adversary", default=ft.adversary,
        help="finetuning adversary as attack[k=v]/estimator[+estimator...], drawn per batch, e.g. "
        "pgd[steps=3]/bptt-rel-pcw-1+ann-proxy+bptr (attacks: kl, pgd, sapgd; default: the "
        "run's PGD-3 through four drawn estimators; none = the paper's single-step KL through "
        "--estimator), or a name: pgd3-drawn, pgd7-drawn, "
        "sapgd10-drawn, pgd3-widths, pgd7-widths, sapgd10-widths",
    )  # fmt: skip
    p.add_argument(
        "--objective", default=ft.objective,
        help="distill (KL to the source ANN; the default, as in robustsnn run), robust_finetune "
        "(the paper's TRADES-style KL), adversarial_ce, tgo (Threshold Guarding Optimization: "
        "membrane-margin loss + noisy neurons; no attack unless adversarial_weight > 0)",
    )  # fmt: skip
    _objective_option(
        p, "a parameter of the objective, e.g. clean_weight=1 or teacher_input=adversarial"
    )
    p.add_argument(
        "--teacher", default=None,
        help="distill: the source ANN checkpoint (default: the one the SNN was converted from), "
        "or 'proxy'",
    )  # fmt: skip
    _time_steps(p, help="time steps to finetune and save the SNN at (default: the checkpoint's)")
    p.add_argument(
        "--T-choices", type=_int_list, default=None, metavar="T,T,...",
        help="latency-aware finetuning: each batch at a T drawn from the list, e.g. 4,8 (the "
        "SNN is saved at its own T, or --T)",
    )  # fmt: skip
    _data_dir(p)
    _eval_n(p)
    _out(p)
    _common(p)


def _add_train_snn_parser(sub: SubParsers) -> None:
    p = sub.add_parser("train-snn", help="train an SNN baseline from scratch with BPTT")
    _dataset(p, "mnist5k")
    _model(p)
    p.add_argument(
        "--objective", default="natural",
        help="natural, rfgsm_at, snn_rat, tgo (Threshold Guarding Optimization), or any "
        "registered objective",
    )  # fmt: skip
    _objective_option(p, "a parameter of the objective, e.g. weight=1 or delta=0.2 (tgo)")
    _time_steps(p, 8)
    _epochs(p)
    _eps_option(p)
    _lr(p)
    _batch_size(p, 64)
    _leak(p)
    _reset(p, "hard")
    p.add_argument("--bntt", action="store_true", help="a separate BatchNorm per time step")
    _model_size(p)
    _stochastic_parts(p)
    _data_dir(p)
    _eval_n(p)
    _out(p, "runs/snn")
    _common(p)


def _add_evaluate_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "evaluate", help="clean and adversarial accuracy of an ANN or SNN checkpoint"
    )
    _checkpoint(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--attack", default=None, help="single attack (all estimators); 'none' = clean only"
    )
    _ensemble(g, help="preset ensemble (default reliable), e.g. pgd-ensemble, pgd-fast")
    p.add_argument("--estimator", default=None, help="restrict --attack to one estimator")
    _eps_option(p)
    _num_samples(
        p, 1000,
        "number of samples, stratified by class (--n is a short alias; torchrun's own parser "
        "misreads --n, so write --num-samples under torchrun)",
    )  # fmt: skip
    _batch_size(p, 100)
    _diagnostics(p)
    _escalate(
        p,
        "while a masking check fails or late members still break samples, rerun the "
        "standing samples with the next stronger preset (reliable, reliable-plus, reliable-max)",
    )  # fmt: skip
    _escalate_levels(p, 2, "most escalation steps")
    p.add_argument(
        "--escalate-seconds", type=float, default=None, help="no escalation step starts after this"
    )
    p.add_argument(
        "--escalate-to", default=None, metavar="PRESET",
        help="escalate at least up to this preset whatever the checks say (e.g. reliable-plus: "
        "confirm a robust result on its survivors); implies --escalate",
    )  # fmt: skip
    p.add_argument(
        "--save-adversarial", action="store_true",
        help="keep every break's adversarial example, member and logits in "
        "adversarial.safetensors beside evaluation.json (for robustsnn recheck)",
    )  # fmt: skip
    p.add_argument("--transfer-from", default=None, help="source checkpoint for a transfer attack")
    _evaluate_randomness(p)
    _overwrite(p)
    p.add_argument(
        "--workers", type=int, default=0,
        help="processes on a CPU, one thread each, sharing the batches with the result of one "
        "process (0 = one per core, the default; 1 = this process only)",
    )  # fmt: skip
    _dataset(p, help="dataset spec (default: the one the checkpoint names)")
    p.add_argument("--split", choices=["test", "train"], default="test")
    _data_dir(p)
    _out(p)
    _foreign_model_options(p)
    _common(p)


def _evaluate_randomness(p: Options) -> None:
    """``evaluate``'s options for a random model (see :func:`_randomness`)."""
    p.add_argument(
        "--randomness", choices=["auto", "off", "force"], default="auto",
        help="a random model (two forward passes differ): auto = attack its expectation (EOT) "
        "and judge by the majority of fresh draws; off = single draws (flagged by a check)",
    )  # fmt: skip
    p.add_argument("--prediction-draws", type=int, default=15, metavar="M",
                   help="random model: draws per prediction (odd)")  # fmt: skip
    p.add_argument("--eot-draws", type=int, default=None, metavar="K",
                   help="random model: draws per gradient (default: by a variance check)")  # fmt: skip


def _foreign_model_options(p: argparse.ArgumentParser) -> None:
    """``evaluate``'s group for a model given as module:factory (see :func:`_foreign_model`)."""
    f = p.add_argument_group(
        "a SpikingJelly/snnTorch model given as module:factory instead of a checkpoint"
    )
    f.add_argument("--weights", default=None, help="its state dict (.safetensors, .pt, .pth)")
    _time_steps(f, help="time steps its forward runs")
    f.add_argument("--time", choices=["loop", "repeat", "calls"], default="loop",
                   help="loop: its forward runs T steps (default); repeat: it reads x repeated "
                   "to [T, B, ...]; calls: one step per call, called T times")  # fmt: skip
    f.add_argument(
        "--readout",
        choices=["mean", "sum"],
        default="mean",
        help="reduce a [T, B, classes] output over time (a [B, classes] one is kept)",
    )
    f.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        default=None,
        help="the input shape it reads, e.g. 1 28 28 (checked against the dataset)",
    )


def _add_export_parser(sub: SubParsers) -> None:
    p = sub.add_parser("export", help="write an SNN checkpoint as a NIR file")
    _checkpoint(p)
    p.add_argument("--format", choices=["nir"], default="nir")
    _out(p, help="the .nir file to write", required=True)
    _dt(p, 1e-4, "time step the file's r/tau assume")
    _common(p)


def _add_import_parser(sub: SubParsers) -> None:
    p = sub.add_parser("import", help="turn a NIR file into a robustsnn SNN checkpoint")
    p.add_argument("file", help="a .nir file")
    _dataset(p, help="dataset spec the model classifies", required=True)
    _out(p, help="folder for snn.safetensors", required=True)
    _time_steps(p, help="time steps (default: the file's)")
    _dt(p, None, "time step (default: the file's)")
    _reference(p)
    _data_dir(p)
    _common(p)


def _add_verify_parser(sub: SubParsers) -> None:
    p = sub.add_parser("verify", help="compare an imported SNN with its source on a batch")
    _checkpoint(p)
    _reference(p, required=True)
    _common(p)


def _add_run_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "run", help="the whole pipeline from a config (default: MNIST-5k quickstart)"
    )
    _config(p)
    _set(p, "override a config key")
    _out(p, help="run folder (default runs/<config name>)")
    _overwrite(p)
    _common(p)


def _add_latency_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "latency", help="robust accuracy of an SNN at several time steps T (robustness vs latency)"
    )
    _checkpoint(p)
    p.add_argument("--steps", default="4,8,16,32", help="comma-separated T values")
    _ensemble(p, "reliable")
    _eps_option(p)
    _num_samples(p, 200)
    _batch_size(p, 100)
    _diagnostics(p)
    _escalate(p, "escalate at each T (see evaluate)")
    _escalate_levels(p, 1)
    _data_dir(p)
    p.add_argument(
        "--label", default=None, help="curve name in latency.json (default: CKPT's name)"
    )
    _out(p, help="folder for latency.json (default: beside CKPT)")
    _overwrite(p)
    _common(p)


def _add_recheck_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "recheck", help="re-verify every saved adversarial example of a run or evaluation"
    )
    p.add_argument("path", help="a run folder or an evaluation folder (adversarial.safetensors)")
    p.add_argument(
        "--no-reference", action="store_true", help="skip the independent reference simulator"
    )
    _common(p)


def _add_transfer_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "transfer", help="run saved adversarial examples of some models on others (a matrix)"
    )
    p.add_argument("sources", nargs="+", help="run or evaluation folders with saved examples")
    p.add_argument(
        "--on", nargs="+", default=[], metavar="TARGET",
        help="more models to run them on (checkpoints or evaluation folders)",
    )  # fmt: skip
    _common(p)


def _add_report_parser(sub: SubParsers) -> None:
    p = sub.add_parser("report", help="write report.md and report.html for run folders")
    p.add_argument("run_dirs", nargs="+")
    _out(p)
    _common(p)


def _add_compare_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "compare", help="one table (markdown, HTML) and a figure of evaluated models"
    )
    p.add_argument("paths", nargs="+", help="run folders, evaluation folders or evaluation.json")
    _out(p, help="output folder (default: their common folder)")
    p.add_argument(
        "--claims", default=None, metavar="FILE",
        help='JSON {label: {"robust_accuracy": 0.43, "source": "..."}}: papers\' numbers',
    )  # fmt: skip
    _common(p)


def _add_sweep_parser(sub: SubParsers) -> None:
    p = sub.add_parser("sweep", help="run a config over a parameter grid and report it")
    _config(p)
    p.add_argument("--param", required=True, help="dotted key, e.g. finetune.beta")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 0,0.5,1,2,4,8")
    _set(p)
    _out(p)
    _common(p)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _metrics(meta: dict[str, Any]) -> str:
    """``"clean 40.7% [35.3, 46.3] n=300, PGD-20 13.3% [9.9, 17.6] n=300"`` from a trained
    checkpoint's metadata (accuracies on ``eval_n`` test images, with their Wilson 95% interval;
    the bare fraction when the metadata has no n)."""
    from robustsnn.evaluation.intervals import format_accuracy

    n = int(meta.get("eval_n") or 0)
    parts = []
    for label, key in (("clean", "clean_accuracy"), ("PGD-20", "pgd20_accuracy")):
        value = meta.get(key)
        if value is None:
            text = "not measured"
        else:
            text = format_accuracy(float(value), n) if n else str(value)
        parts.append(f"{label} {text}")
    return ", ".join(parts)


def _model_kwargs(a: argparse.Namespace) -> dict[str, Any] | None:
    pairs = (
        ("width", a.width), ("fc", a.fc), ("activation", getattr(a, "activation", None)),
        ("qcfs_levels", getattr(a, "qcfs_levels", None)),
    )  # fmt: skip
    kwargs = {k: v for k, v in pairs if v is not None}
    return kwargs or None


def cmd_train_ann(a: argparse.Namespace) -> None:
    from robustsnn.training.ann import train_ann

    params: dict[str, Any] = {}
    if a.beta is not None:
        params["beta"] = a.beta
    path = train_ann(
        a.dataset, a.model, a.objective, eps=a.eps, epochs=a.epochs, out_dir=a.out,
        batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer, seed=a.seed, data_dir=a.data_dir,
        model_kwargs=_model_kwargs(a), eval_n=a.eval_n, quiet=a.quiet, device=a.device,
        weight_decay=a.weight_decay, cutout=a.cutout, **params,
    )  # fmt: skip
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path}: {_metrics(meta)} at eps {a.eps:.4f}")


def cmd_convert(a: argparse.Namespace) -> None:
    from robustsnn.conversion import ConversionConfig
    from robustsnn.evaluation.intervals import format_accuracy
    from robustsnn.stages import convert_checkpoint

    cfg = ConversionConfig(
        T=a.T, calib_T=a.calib_T, percentile=a.percentile, scale=a.scale, reset=a.reset,
        leak=a.leak, bn=a.bn, calib_batches=a.calib_batches, calib_batch_size=a.calib_batch_size,
        v_init=a.v_init, threshold=a.threshold, calibration=a.calibration,
        correction_images=a.correction_images,
    )  # fmt: skip
    out_dir = Path(a.out) if a.out else Path(a.checkpoint).parent
    path, info = convert_checkpoint(
        a.checkpoint, out_dir / "snn.safetensors", cfg, data_dir=a.data_dir, seed=a.seed,
        eval_n=a.eval_n, device=a.device, input_encoding=a.input_encoding,
        threshold_noise=a.threshold_noise, ta_lif=a.ta_lif,
    )  # fmt: skip
    print(
        f"wrote {path}: clean accuracy ANN "
        f"{format_accuracy(info['ann_clean_accuracy'], info['eval_n'])}, SNN (T={a.T}) "
        f"{format_accuracy(info['snn_clean_accuracy'], info['eval_n'])} on test images "
        "(95% Wilson interval)"
    )


def _key_values(items: list[str], option: str) -> dict[str, object]:
    """``["k=v", ...]`` -> ``{k: yaml value}`` (one clear line for an item without ``=``)."""
    import yaml

    values: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{option} expects KEY=VALUE (e.g. clean_weight=1), got {item!r}")
        values[key.strip()] = yaml.safe_load(raw.strip())
    return values


def cmd_finetune(a: argparse.Namespace) -> None:
    from robustsnn.training.snn import finetune_snn

    out = Path(a.out) if a.out else Path(a.checkpoint).parent / "finetuned"
    path = finetune_snn(
        a.checkpoint, out_dir=out, beta=a.beta, epochs=a.epochs, lr=a.lr, eps=a.eps,
        alpha=a.alpha, adversary_steps=a.adversary_steps, batch_size=a.batch_size,
        train_thresholds=not a.freeze_thresholds, train_weights=not a.freeze_weights,
        add_biases=a.add_biases, estimator=a.estimator,
        adversary=None if str(a.adversary).lower() in ("none", "null") else a.adversary,
        objective=a.objective, objective_options=_key_values(a.objective_option, "--objective-option"),
        teacher=a.teacher, T=a.T, T_choices=a.T_choices,
        seed=a.seed, data_dir=a.data_dir, quiet=a.quiet, device=a.device, eval_n=a.eval_n,
    )  # fmt: skip
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path}: {_metrics(meta)}")


def cmd_train_snn(a: argparse.Namespace) -> None:
    from robustsnn.training.snn import train_snn

    objective, snn_rat = a.objective, False
    if objective == "snn_rat":
        objective, snn_rat = "rfgsm_at", True
    options: dict[str, Any] = dict(_key_values(a.objective_option, "--objective-option"))
    taken = sorted(set(options) & set(inspect.signature(train_snn).parameters))
    if taken:
        raise UserError(
            f"--objective-option {', '.join(taken)}: set by train-snn's own option "
            f"(--{taken[0].replace('_', '-')}), not as an objective option"
        )
    path = train_snn(
        a.dataset, a.model, objective, T=a.T, epochs=a.epochs, out_dir=a.out, leak=a.leak,
        reset=a.reset, bntt=a.bntt, snn_rat=snn_rat, eps=a.eps, lr=a.lr, batch_size=a.batch_size,
        seed=a.seed, model_kwargs=_model_kwargs(a), quiet=a.quiet,
        device=a.device, eval_n=a.eval_n, input_encoding=a.input_encoding,
        threshold_noise=a.threshold_noise, **options,
    )  # fmt: skip
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path}: {_metrics(meta)}")


def _foreign_model(a: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """``evaluate module:factory``: the wrapped model, checked on the dataset's first images."""
    from robustsnn.data import load_dataset, to_float
    from robustsnn.interop.foreign import load_foreign

    if a.dataset is None:
        raise UserError(f"{a.checkpoint} is a model factory: pass --dataset (e.g. mnist5k)")
    data = load_dataset(a.dataset, a.data_dir)
    xs = data.x_test if a.split == "test" else data.x_train
    return load_foreign(a.checkpoint, weights=a.weights, T=a.T, example=to_float(xs[:32]),
                        input_shape=a.input_shape, time=a.time, readout=a.readout,
                        device=a.device)  # fmt: skip


def cmd_evaluate(a: argparse.Namespace) -> None:
    from robustsnn.interop.foreign import is_factory_spec
    from robustsnn.interop.verify import check_verified

    if a.out is not None and Path(a.out).exists() and not Path(a.out).is_dir():
        raise UserError(f"--out {a.out} is an existing file; --out names a folder for the results")
    loaded = None
    if is_factory_spec(a.checkpoint):
        loaded = _foreign_model(a)
        default_out = Path("runs") / f"eval-{a.checkpoint.replace(':', '-')}"
    else:
        if a.weights is not None or a.T is not None:
            raise UserError(
                "--weights and --T are for a model given as module:factory; a checkpoint "
                "carries its own weights and T"
            )
        check_verified(a.checkpoint)  # an imported model that failed verification is refused
        default_out = Path(a.checkpoint).parent / "eval"
    out = Path(a.out) if a.out else default_out
    from robustsnn.evaluation.escalate import EscalationPolicy

    escalate: bool | EscalationPolicy = False
    if a.escalate or a.escalate_to:
        escalate = EscalationPolicy(a.escalate_levels, a.escalate_seconds, a.escalate_to)
    names = ("checkpoint", "attack", "ensemble", "estimator", "eps", "n", "seed", "batch_size",
             "diagnostics", "escalate", "escalate_levels", "escalate_seconds", "escalate_to",
             "save_adversarial", "transfer_from", "dataset", "split", "weights", "T", "time",
             "readout", "input_shape", "randomness", "prediction_draws", "eot_draws")  # fmt: skip
    settings = _settings(a, names, ("checkpoint", "weights", "transfer_from"))
    owner = _owned(a, out, settings, ["evaluation.json"],
                   ["records.jsonl", "adversarial.safetensors", "recheck.json"])  # fmt: skip
    with owner:
        result = _run_evaluation(a, out, escalate, loaded)
    from robustsnn.evaluation.table import evaluation_lines

    for line in evaluation_lines(result):
        print(line)
    for name, d in result.get("diagnostics", {}).items():
        if d.get("passed", True):
            print(f"  check    {name:<30} PASS: {d['detail']}")
    print(f"wrote {out / 'evaluation.json'}")


def _run_evaluation(a: argparse.Namespace, out: Path, escalate: Any, loaded: Any) -> Any:
    from robustsnn.evaluation import run_evaluation

    return run_evaluation(
        a.checkpoint, attack=a.attack, ensemble=a.ensemble, estimator=a.estimator, eps=a.eps,
        n=a.n, out_dir=out, seed=a.seed, batch_size=a.batch_size, quiet=a.quiet, device=a.device,
        data_dir=a.data_dir, transfer_from=a.transfer_from, diagnostics=a.diagnostics,
        escalate=escalate, dataset=a.dataset, split=a.split, loaded=loaded,
        save_adversarial=a.save_adversarial, workers=a.workers, randomness=_randomness(a),
    )  # fmt: skip


def _randomness(a: argparse.Namespace) -> Any:
    """``evaluate``'s randomness options as a StochasticConfig (one-line errors)."""
    from robustsnn.evaluation.stochastic import StochasticConfig

    return StochasticConfig(
        mode=a.randomness, prediction_draws=a.prediction_draws, eot_draws=a.eot_draws
    )


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


def cmd_export(a: argparse.Namespace) -> None:
    from robustsnn.interop.nir_export import export_checkpoint

    path = export_checkpoint(a.checkpoint, a.out, dt=a.dt)
    print(f"wrote {path}")


def cmd_import(a: argparse.Namespace) -> None:
    from robustsnn.interop.nir_import import import_checkpoint

    path, verification = import_checkpoint(
        a.file, a.out, dataset=a.dataset, T=a.T, dt=a.dt, data_dir=a.data_dir,
        reference=a.reference,
    )  # fmt: skip
    print(f"wrote {path}")
    if verification is not None:
        print(f"verified against {a.reference}: {verification.detail}")
    else:
        print("not verified: run `robustsnn verify` with the source framework's outputs")


def cmd_verify(a: argparse.Namespace) -> None:
    from robustsnn.interop.verify import verify_checkpoint

    result = verify_checkpoint(a.checkpoint, a.reference)
    print(f"{'PASS' if result.passed else 'FAIL'}: {result.detail}")
    if not result.passed:
        raise UserError(f"{a.checkpoint} does not reproduce {a.reference}; evaluate will refuse it")


def cmd_run(a: argparse.Namespace) -> None:
    from robustsnn.config import dump_config, load_config
    from robustsnn.pipeline import default_run_dir, run_pipeline

    cfg = load_config(a.config, a.set)  # every value checked before the folder is touched
    if a.seed:
        cfg.seed = a.seed
    run_dir = Path(a.out) if a.out else default_run_dir(a.config, cfg)
    from robustsnn.data import load_dataset

    load_dataset(cfg.data.dataset, cfg.data.data_dir)  # its labels and files, before any stage
    with _owned(a, run_dir):
        recorded = run_dir / "config.yaml"
        if a.overwrite and recorded.is_file() and recorded.read_text() != dump_config(cfg):
            _clear_run_folder(run_dir)
        run_pipeline(a.config, config=cfg, out=run_dir, seed=a.seed, quiet=a.quiet,
                     device=a.device)  # fmt: skip


def _clear_run_folder(run_dir: Path) -> None:
    """``run --overwrite``: remove a finished run of another config (everything but the lock)."""
    import shutil

    from robustsnn.io.folder_lock import LOCK_FILE

    for entry in run_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def cmd_latency(a: argparse.Namespace) -> None:
    from robustsnn.evaluation.intervals import format_accuracy

    try:
        steps = [int(t) for t in str(a.steps).split(",") if t.strip()]
    except ValueError:
        raise UserError(
            f"--steps takes comma-separated integers, e.g. 4,8,16, got {a.steps!r}"
        ) from None
    out = Path(a.out) if a.out else Path(a.checkpoint).parent / f"latency-{Path(a.checkpoint).stem}"
    names = ("checkpoint", "steps", "ensemble", "eps", "n", "seed", "label", "batch_size",
             "diagnostics", "escalate", "escalate_levels")  # fmt: skip
    settings = _settings(a, names, ("checkpoint",))
    with _owned(a, out, settings, ["latency.json"]):
        data = _latency(a, out, steps)
    for row in data["rows"]:
        robust = row["robust_accuracy"]
        print(
            f"T={row['T']:<3} clean {format_accuracy(row['clean_accuracy'], data['n'])}  "
            f"robust ({row['ensemble']}) "
            f"{'n/a' if robust is None else format_accuracy(robust, data['n'])}  "
            f"{row['diagnostics']}"
        )
    print(f"wrote {out / 'latency.json'}")


def _latency(a: argparse.Namespace, out: Path, steps: list[int]) -> Any:
    from robustsnn.evaluation.escalate import EscalationPolicy
    from robustsnn.evaluation.latency import latency_curve

    return latency_curve(
        a.checkpoint, steps, out_dir=out, ensemble=a.ensemble, eps=a.eps, n=a.n, seed=a.seed,
        label=a.label,
        batch_size=a.batch_size, device=a.device, data_dir=a.data_dir, diagnostics=a.diagnostics,
        escalation=EscalationPolicy(a.escalate_levels) if a.escalate else None, quiet=a.quiet,
    )  # fmt: skip


def cmd_recheck(a: argparse.Namespace) -> None:
    from robustsnn.evaluation.recheck import recheck, recheck_lines

    results = recheck(a.path, reference=not a.no_reference)
    for line in recheck_lines(results):
        print(line)
    if not all(r.passed for r in results):
        failed = sum(len(r.failures) for r in results)
        print(f"recheck: {failed} check(s) failed", file=sys.stderr)
        raise SystemExit(1)


def cmd_transfer(a: argparse.Namespace) -> None:
    from robustsnn.evaluation.recheck import transfer_lines, transfer_matrix

    for line in transfer_lines(*transfer_matrix(a.sources, a.on)):
        print(line)


def cmd_report(a: argparse.Namespace) -> None:
    from robustsnn.analysis import write_report

    md, html = write_report([Path(d) for d in a.run_dirs], Path(a.out) if a.out else None)
    print(f"wrote {md} and {html}")


def cmd_compare(a: argparse.Namespace) -> None:
    import os

    from robustsnn.analysis.compare import write_comparison

    folders = [Path(p).resolve() if Path(p).is_dir() else Path(p).resolve().parent for p in a.paths]
    out = Path(a.out) if a.out else Path(os.path.commonpath(folders))
    md, html, figure = write_comparison(a.paths, out, claims=a.claims)
    print(f"wrote {md}, {html}" + (f" and {figure}" if figure is not None else ""))


def cmd_sweep(a: argparse.Namespace) -> None:
    from robustsnn.pipeline import run_sweep

    run_sweep(
        a.config,
        a.param,
        a.values.split(","),
        overrides=a.set,
        out=a.out,
        seed=a.seed,
        quiet=a.quiet,
        device=a.device,
    )


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
