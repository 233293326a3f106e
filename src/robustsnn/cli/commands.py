"""One function per subcommand (``cmd_<command>``): read the parsed options, call one pipeline
step, print what it wrote. No logic of their own."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustsnn.errors import UserError


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


def _from_args(base: Any, a: argparse.Namespace, names: Sequence[str]) -> Any:
    """``base`` (a config object: the command's profile) with the options ``names`` as given
    on the command line (each option's destination is the config field of that name)."""
    return dataclasses.replace(base, **{name: getattr(a, name) for name in names})


def _run_context(a: argparse.Namespace, out: str | Path, eval_n: int | None = None) -> Any:
    """The command's :class:`~robustsnn.config.RunContext`: ``out`` and the common options."""
    from robustsnn.config import RunContext

    return RunContext(
        out_dir=out, seed=a.seed, device=a.device, quiet=a.quiet,
        data_dir=getattr(a, "data_dir", None), eval_n=a.eval_n if eval_n is None else eval_n,
    )  # fmt: skip


ANN_OPTIONS = ("objective", "eps", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
               "cutout", "beta")  # fmt: skip
"""``train-ann``'s options that are :class:`~robustsnn.config.ANNConfig` fields."""


def cmd_train_ann(a: argparse.Namespace) -> None:
    from robustsnn.config import ANNConfig
    from robustsnn.training.ann import train_ann

    config = _from_args(ANNConfig.command_line(), a, ANN_OPTIONS)
    path = train_ann(
        a.dataset, a.model, config, _run_context(a, a.out), model_kwargs=_model_kwargs(a)
    )
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


FINETUNE_OPTIONS = ("beta", "epochs", "lr", "eps", "alpha", "adversary_steps", "batch_size",
                    "add_biases", "estimator", "objective", "teacher", "T", "T_choices")  # fmt: skip
"""``finetune``'s options that are :class:`~robustsnn.config.FinetuneConfig` fields as they are
(``--freeze-*``, ``--adversary none`` and ``--objective-option`` are translated)."""


def cmd_finetune(a: argparse.Namespace) -> None:
    from robustsnn.config import FinetuneConfig
    from robustsnn.training.snn import finetune_snn

    out = Path(a.out) if a.out else Path(a.checkpoint).parent / "finetuned"
    config = dataclasses.replace(
        _from_args(FinetuneConfig(), a, FINETUNE_OPTIONS),
        train_thresholds=not a.freeze_thresholds, train_weights=not a.freeze_weights,
        adversary=None if str(a.adversary).lower() in ("none", "null") else a.adversary,
        objective_options=_key_values(a.objective_option, "--objective-option"),
    )  # fmt: skip
    path = finetune_snn(a.checkpoint, config, _run_context(a, out))
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path}: {_metrics(meta)}")


TRAIN_SNN_OPTIONS = ("T", "epochs", "leak", "reset", "bntt", "eps", "batch_size",
                     "input_encoding", "threshold_noise")  # fmt: skip
"""``train-snn``'s options that are :class:`~robustsnn.config.SNNTrainingConfig` fields."""


def cmd_train_snn(a: argparse.Namespace) -> None:
    from robustsnn.config import SNNTrainingConfig
    from robustsnn.training.snn import TRAIN_SNN_KEYWORDS, train_snn

    objective, snn_rat = a.objective, False
    if objective == "snn_rat":
        objective, snn_rat = "rfgsm_at", True
    options: dict[str, Any] = dict(_key_values(a.objective_option, "--objective-option"))
    taken = sorted(set(options) & TRAIN_SNN_KEYWORDS)
    if taken:
        raise UserError(
            f"--objective-option {', '.join(taken)}: set by train-snn's own option "
            f"(--{taken[0].replace('_', '-')}), not as an objective option"
        )
    base = SNNTrainingConfig()
    config = dataclasses.replace(
        _from_args(base, a, TRAIN_SNN_OPTIONS), objective=objective, objective_options=options,
        snn_rat=snn_rat, optimizer=dataclasses.replace(base.optimizer, lr=a.lr),
    )  # fmt: skip
    path = train_snn(
        a.dataset, a.model, config, _run_context(a, a.out), model_kwargs=_model_kwargs(a)
    )
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
    from robustsnn.evaluation import EvaluationConfig, EvaluationRun, run_evaluation

    config = EvaluationConfig(
        eps=a.eps, attacks=a.attack, ensemble=a.ensemble, seed=a.seed, batch_size=a.batch_size,
        diagnostics=a.diagnostics, save_adversarial=a.save_adversarial,
        randomness=_randomness(a),
    )  # fmt: skip
    run = EvaluationRun(
        n=a.n, split=a.split, dataset=a.dataset, data_dir=a.data_dir, estimator=a.estimator,
        transfer_from=a.transfer_from, escalate=escalate or None, out_dir=out, device=a.device,
        workers=a.workers, quiet=a.quiet,
    )  # fmt: skip
    return run_evaluation(a.checkpoint, config, run, loaded=loaded)


def _randomness(a: argparse.Namespace) -> Any:
    """``evaluate``'s randomness options as a StochasticConfig (one-line errors)."""
    from robustsnn.evaluation.stochastic import StochasticConfig

    return StochasticConfig(
        mode=a.randomness, prediction_draws=a.prediction_draws, eot_draws=a.eot_draws
    )


def cmd_export(a: argparse.Namespace) -> None:
    from robustsnn.interop.nir_export import export_checkpoint

    path = export_checkpoint(
        a.checkpoint, a.out, dt=a.dt, drop_input_encoding=a.drop_input_encoding
    )
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
    from robustsnn.evaluation import EvaluationConfig, EvaluationRun
    from robustsnn.evaluation.escalate import EscalationPolicy
    from robustsnn.evaluation.latency import latency_curve

    config = EvaluationConfig(
        eps=a.eps, ensemble=a.ensemble, seed=a.seed, batch_size=a.batch_size,
        diagnostics=a.diagnostics,
    )  # fmt: skip
    run = EvaluationRun(
        n=a.n, data_dir=a.data_dir, out_dir=out, device=a.device, quiet=a.quiet,
        escalate=EscalationPolicy(a.escalate_levels) if a.escalate else None,
    )  # fmt: skip
    return latency_curve(a.checkpoint, steps, config, run, label=a.label)


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

    for line in transfer_lines(*transfer_matrix(a.sources, a.on, seed=a.seed)):
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
