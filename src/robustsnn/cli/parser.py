"""``build_parser``: the top-level parser and one small function per subcommand."""

from __future__ import annotations

import argparse

from robustsnn.cli.options import (
    Options,
    SubParsers,
    _batch_size,
    _checkpoint,
    _common,
    _config,
    _data_dir,
    _dataset,
    _diagnostics,
    _dt,
    _ensemble,
    _epochs,
    _eps,
    _eps_option,
    _escalate,
    _escalate_levels,
    _eval_n,
    _int_list,
    _leak,
    _lr,
    _model,
    _model_size,
    _num_samples,
    _objective_option,
    _OneLineParser,
    _out,
    _overwrite,
    _reference,
    _reset,
    _set,
    _stochastic_parts,
    _time_steps,
)
from robustsnn.evaluation.config import EVALUATE_COMMAND, LATENCY_COMMAND


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
    from robustsnn.config import ANNConfig

    d = ANNConfig.command_line()  # this command's defaults (the run config's differ, see there)
    p = sub.add_parser("train-ann", help="train a (robust) ANN")
    _dataset(
        p, "mnist5k",
        "mnist5k, cifar10, cifar100, svhn, tinyimagenet, npz:PATH, imagefolder:PATH",
    )  # fmt: skip
    _model(p, "model name (see models registry)")
    p.add_argument("--objective", default=d.objective, help="natural, pgd_at, trades, mart")
    _eps_option(p, d.eps, "training radius, e.g. 2/255")
    _epochs(p, d.epochs)
    _batch_size(p, d.batch_size)
    _lr(p, d.lr)
    p.add_argument("--optimizer", default=d.optimizer, choices=["sgd", "adam"])
    p.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help="L2 weight decay (>= 0)"
    )
    p.add_argument(
        "--cutout", type=int, default=d.cutout,
        help="cutout hole side in pixels, 0 = off (default: the dataset's, 8 on 32x32 color)",
    )  # fmt: skip
    _model_size(p)
    p.add_argument(
        "--activation", choices=["relu", "qcfs"], default=None,
        help="ANN activation: relu, or qcfs (quantised clip, converts near-losslessly)",
    )  # fmt: skip
    p.add_argument("--qcfs-levels", type=int, default=None, help="QCFS levels L (default 8)")
    p.add_argument("--beta", type=float, default=d.beta, help="TRADES/MART beta")
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
    from robustsnn.config import SNNTrainingConfig

    d = SNNTrainingConfig()
    p = sub.add_parser("train-snn", help="train an SNN baseline from scratch with BPTT")
    _dataset(p, "mnist5k")
    _model(p)
    p.add_argument(
        "--objective", default=d.objective,
        help="natural, rfgsm_at, snn_rat, tgo (Threshold Guarding Optimization), or any "
        "registered objective",
    )  # fmt: skip
    _objective_option(p, "a parameter of the objective, e.g. weight=1 or delta=0.2 (tgo)")
    _time_steps(p, d.T)
    _epochs(p, d.epochs)
    _eps_option(p, d.eps)
    _lr(p, d.optimizer.lr)
    _batch_size(p, d.batch_size)
    _leak(p)
    _reset(p, d.reset)
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
    _ensemble(
        g,
        help=f"preset ensemble (default {EVALUATE_COMMAND.ensemble}), e.g. pgd-ensemble, pgd-fast",
    )
    p.add_argument("--estimator", default=None, help="restrict --attack to one estimator")
    _eps_option(p)
    _num_samples(
        p, EVALUATE_COMMAND.n,
        "number of samples, stratified by class (--n is a short alias; torchrun's own parser "
        "misreads --n, so write --num-samples under torchrun)",
    )  # fmt: skip
    _batch_size(p, EVALUATE_COMMAND.batch_size)
    _diagnostics(p)
    _escalate(
        p,
        "while a masking check fails or late members still break samples, rerun the "
        "standing samples with the next stronger preset (reliable, reliable-plus, reliable-max)",
    )  # fmt: skip
    _escalate_levels(p, EVALUATE_COMMAND.escalate_levels, "most escalation steps")
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
        "--workers", type=int, default=EVALUATE_COMMAND.workers,
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
    p.add_argument(
        "--drop-input-encoding", action="store_true",
        help="export a Poisson-coded SNN without its input coding (NIR has no random input "
        "node): the graph is the network the coding feeds, and its metadata names the coding "
        "the consumer must apply (without this flag such an SNN is refused)",
    )  # fmt: skip
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
    _ensemble(p, LATENCY_COMMAND.ensemble)
    _eps_option(p)
    _num_samples(p, LATENCY_COMMAND.n)
    _batch_size(p, LATENCY_COMMAND.batch_size)
    _diagnostics(p)
    _escalate(p, "escalate at each T (see evaluate)")
    _escalate_levels(p, LATENCY_COMMAND.escalate_levels)
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
