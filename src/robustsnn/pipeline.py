"""``robustsnn run``: train ANN -> convert -> robust finetune -> evaluate -> summary -> report.

Each stage writes its output atomically into the run folder and is skipped when that output
already exists, so a killed run continues where it stopped (the trainers also resume
mid-stage from their last epoch).

Under torchrun the training stages run DistributedDataParallel and the evaluations are sharded on
every rank; conversion, statistics, summary and report run on rank 0 while the others wait.
Rank 0 decides which stages are done and alone writes the run folder's own files.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustsnn import distributed
from robustsnn.checkpoint import atomic_write_json, atomic_write_text
from robustsnn.config import RunConfig, dump_config, load_config
from robustsnn.conversion import ConversionConfig
from robustsnn.errors import UserError

MODELS = ("ann", "snn_converted", "snn_finetuned")


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    if not distributed.is_main():
        return
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _stage(
    run_dir: Path,
    name: str,
    output: Path,
    fn: Callable[[], Any],
    quiet: bool,
    every_rank: bool = False,
) -> None:
    """Run ``fn`` unless ``output`` exists; log the stage's wall time.

    Under torchrun rank 0 decides whether the stage is done; ``fn`` runs on every rank when
    ``every_rank`` (training, evaluation), else on rank 0 alone; all ranks leave together.
    """
    quiet = quiet or not distributed.is_main()
    if distributed.on_main(output.exists):
        if not quiet:
            print(f"[{name}] done already ({output.name}), skipping")
        return
    if not quiet:
        print(f"[{name}] ...")
    start = time.perf_counter()
    if every_rank:
        fn()
    else:
        distributed.on_main(fn)
    distributed.barrier()
    _log(run_dir, {"phase": name, "stage_seconds": round(time.perf_counter() - start, 2)})


def conversion_config(cfg: RunConfig) -> ConversionConfig:
    s = cfg.snn
    return ConversionConfig(
        T=s.T, calib_T=s.calib_T, percentile=s.percentile, calib_batches=s.calib_batches,
        calib_batch_size=s.calib_batch_size, scale=s.scale, reset=s.reset, leak=s.leak, bn=s.bn,
        v_init=s.v_init, threshold=s.threshold, calibration=s.calibration,
        correction_images=s.correction_images,
    )  # fmt: skip


def default_run_dir(config_path: str | Path | None, cfg: RunConfig) -> Path:
    name = cfg.name or (Path(config_path).stem if config_path else "quickstart")
    return Path("runs") / name


def run_pipeline(
    config_path: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    seed: int | None = None,
    quiet: bool = False,
    device: str = "cpu",
    config: RunConfig | None = None,
) -> dict[str, Any]:
    """Run every stage of the pipeline into a run folder; return the summary."""
    cfg = config or load_config(config_path, overrides)
    if seed:
        cfg.seed = seed
    if cfg.data.download:
        from robustsnn.data.datasets import DOWNLOAD_ENV

        os.environ[DOWNLOAD_ENV] = "1"
    run_dir = Path(out) if out else default_run_dir(config_path, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = dump_config(cfg)
    cfg_file = run_dir / "config.yaml"
    if cfg_file.exists() and cfg_file.read_text() != resolved:
        raise UserError(
            f"{run_dir} holds a run with a different config; use another --out or delete the folder"
        )
    if distributed.is_main():
        atomic_write_text(cfg_file, resolved)
    ann_path = run_dir / "ann.safetensors"
    conv_path = run_dir / "snn_converted.safetensors"
    snn_path = run_dir / "snn.safetensors"

    def train() -> None:
        from robustsnn.training.ann import train_ann

        a = cfg.ann
        params: dict[str, Any] = {}
        if a.beta is not None:
            params["beta"] = a.beta
        if a.objective in ("pgd_at", "mart", "trades"):
            params["steps"] = a.steps
        m = cfg.model
        model_kwargs = {
            k: v
            for k, v in (
                ("width", m.width), ("fc", m.fc), ("activation", m.activation),
                ("qcfs_levels", m.qcfs_levels), ("qcfs_lam", m.qcfs_lam),
            )
            if v is not None
        }  # fmt: skip
        train_ann(
            cfg.data.dataset, cfg.model.name, a.objective, eps=a.eps, epochs=a.epochs,
            out_dir=run_dir, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer,
            weight_decay=a.weight_decay, seed=cfg.seed, data_dir=cfg.data.data_dir,
            model_kwargs=model_kwargs, eval_n=cfg.eval.n, augment=a.augment, quiet=quiet,
            device=device, momentum=a.momentum, cutout=a.cutout, **params,
        )  # fmt: skip

    def convert() -> None:
        from robustsnn.stages import convert_checkpoint

        _, info = convert_checkpoint(
            ann_path, conv_path, conversion_config(cfg), data_dir=cfg.data.data_dir,
            seed=cfg.seed, eval_n=cfg.eval.n, device=device,
        )  # fmt: skip
        _log(run_dir, {"phase": "convert", **info})

    def finetune() -> None:
        from robustsnn.training.snn import finetune_snn

        f = cfg.finetune
        finetune_snn(
            conv_path, out_dir=run_dir, beta=f.beta, epochs=f.epochs, lr=f.lr, momentum=f.momentum,
            weight_decay=f.weight_decay, batch_size=f.batch_size, eps=f.eps, alpha=f.alpha,
            adversary_steps=f.adversary_steps,
            train_thresholds=f.train_thresholds, train_weights=f.train_weights, seed=cfg.seed,
            add_biases=f.add_biases, cutout=f.cutout, estimator=f.estimator,
            data_dir=cfg.data.data_dir, quiet=quiet, device=device, eval_n=cfg.eval.n, name="snn",
        )  # fmt: skip

    _stage(run_dir, "train_ann", ann_path, train, quiet, every_rank=True)
    _stage(run_dir, "convert", conv_path, convert, quiet)
    _stage(run_dir, "finetune", snn_path, finetune, quiet, every_rank=True)

    checkpoints = {"ann": ann_path, "snn_converted": conv_path, "snn_finetuned": snn_path}
    for model, path in checkpoints.items():
        evaluate = functools.partial(_evaluate, cfg, run_dir, model, path, quiet, device)
        target = run_dir / f"evaluation-{model}.json"
        _stage(run_dir, f"evaluate_{model}", target, evaluate, quiet, every_rank=True)
    if distributed.is_main():
        shutil.copyfile(run_dir / "evaluation-snn_finetuned.json", run_dir / "evaluation.json")
    for model, path in checkpoints.items():
        if model != "ann":
            stats = functools.partial(_statistics, cfg, run_dir, model, path, device)
            _stage(run_dir, f"stats_{model}", run_dir / f"stats-{model}.json", stats, quiet)
    if not distributed.is_main():  # rank 0 writes the summary and the report
        distributed.barrier()
        return {}
    summary = write_summary(run_dir)
    _report(run_dir, quiet)
    if not quiet:
        print(format_summary(summary))
    distributed.barrier()
    return summary


def _evaluate(
    cfg: RunConfig, run_dir: Path, model: str, path: Path, quiet: bool, device: str
) -> None:
    from robustsnn.evaluation import run_evaluation

    out = run_dir / "eval" / model
    run_evaluation(
        path, ensemble=cfg.eval.ensemble, eps=cfg.eval.eps, n=cfg.eval.n, out_dir=out,
        seed=cfg.seed, batch_size=cfg.eval.batch_size, quiet=quiet, device=device,
        data_dir=cfg.data.data_dir, diagnostics=cfg.eval.diagnostics, split=cfg.eval.split,
        escalate=cfg.eval.escalate, escalate_levels=cfg.eval.escalate_levels,
        save_adversarial=cfg.eval.save_adversarial,
    )  # fmt: skip
    if distributed.is_main():
        shutil.copyfile(out / "evaluation.json", run_dir / f"evaluation-{model}.json")


def _statistics(cfg: RunConfig, run_dir: Path, model: str, path: Path, device: str) -> None:
    import torch

    from robustsnn.analysis import adversarial_statistics
    from robustsnn.attacks import build_attack
    from robustsnn.data import load_dataset
    from robustsnn.modelio import load_model
    from robustsnn.snn import SpikingNetwork
    from robustsnn.stages import dataset_spec_of, eval_subset

    snn, meta = load_model(path, device)
    if not isinstance(snn, SpikingNetwork):
        raise UserError(f"{path} is not an SNN checkpoint")
    data = load_dataset(dataset_spec_of(meta), cfg.data.data_dir)
    x, y = eval_subset(data, min(cfg.eval.n, 200))
    attack = build_attack("pgd", eps=cfg.eval.eps, steps=20)
    torch.manual_seed(cfg.seed)
    stats = adversarial_statistics(snn, x.to(device), y.to(device), attack)
    atomic_write_json(
        run_dir / f"stats-{model}.json", {"model": model, "eps": cfg.eval.eps, **stats}
    )


def _headline(evaluation: dict[str, Any]) -> str | None:
    """The ensemble whose robust accuracy is the evaluation's number: the one evaluation.json
    names (``"<preset> + escalation"`` after ``--escalate``), else the first one."""
    ensembles = evaluation.get("ensembles") or {}
    named = evaluation.get("ensemble")
    return named if named in ensembles else next(iter(ensembles), None)


def _robust_row(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """The row of the headline robust accuracy: its ensemble, else the weakest attack."""
    ensembles = evaluation.get("ensembles") or {}
    if ensembles:
        return dict(ensembles[_headline(evaluation)])
    attacks = evaluation.get("attacks") or {}
    if attacks:
        return dict(min(attacks.values(), key=lambda r: float(r["robust_accuracy"])))
    return None


def _robust(evaluation: dict[str, Any]) -> float | None:
    row = _robust_row(evaluation)
    return None if row is None else float(row["robust_accuracy"])


def _verdict(evaluation: dict[str, Any]) -> str:
    """The masking checks' verdict of an evaluation, and how often it escalated."""
    from robustsnn.evaluation.table import diagnostics_verdict

    verdict = diagnostics_verdict(evaluation.get("diagnostics"))
    steps = (evaluation.get("escalation") or {}).get("steps") or []
    return f"{verdict}; escalated {len(steps)}x" if steps else verdict


def _spikes(stats: dict[str, Any] | None) -> float | None:
    if not stats:
        return None
    clean = stats.get("clean", stats)
    value = clean.get("spikes_per_image", clean.get("totals", {}).get("spikes_per_image"))
    return None if value is None else float(value)


def write_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json (contract): clean/robust accuracy and spikes per image for each model."""
    from robustsnn.analysis.report import accuracy_interval

    summary: dict[str, Any] = {}
    for model in MODELS:
        ev_path = run_dir / f"evaluation-{model}.json"
        if not ev_path.exists():
            continue
        ev = json.loads(ev_path.read_text())
        stats_path = run_dir / f"stats-{model}.json"
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
        robust_row = _robust_row(ev)
        robust_ci = accuracy_interval(robust_row or {}, "robust_accuracy", ev["n"])
        clean_ci = accuracy_interval(ev, "clean_accuracy", ev["n"])
        summary[model] = {
            "clean_accuracy": ev["clean_accuracy"],
            "clean_accuracy_ci95": None if clean_ci is None else list(clean_ci),
            "robust_accuracy": _robust(ev),
            "robust_accuracy_ci95": None if robust_ci is None else list(robust_ci),
            "diagnostics": _verdict(ev),
            "spikes_per_image": _spikes(stats),
            "eps": ev["eps"],
            "n": ev["n"],
            "T": ev.get("T"),
            "ensemble": _headline(ev),
            "source": ev_path.name,
        }
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of the summary: each accuracy with its 95% Wilson interval and n, and
    the masking checks' verdict per row (a number whose checks failed never stands alone)."""
    from robustsnn.evaluation.intervals import format_accuracy

    def acc(v: float | None, n: int) -> str:
        return "-" if v is None else format_accuracy(v, n)

    lines = [f"{'model':<15} {'clean':<28} {'robust':<28} {'spikes/img':>10}  diagnostics"]
    for model, row in summary.items():
        spikes = "-" if row["spikes_per_image"] is None else f"{row['spikes_per_image']:.0f}"
        n = int(row.get("n") or 0)
        lines.append(
            f"{model:<15} {acc(row['clean_accuracy'], n):<28} "
            f"{acc(row['robust_accuracy'], n):<28} {spikes:>10}  {row.get('diagnostics', '-')}"
        )
    first = next(iter(summary.values()), None)
    if first:
        names = {row["ensemble"] for row in summary.values()}
        which = (
            first["ensemble"]
            if len(names) == 1
            else ", ".join(f"{model}: {row['ensemble']}" for model, row in summary.items())
        )
        lines.append(
            f"(robust: {which}; eps {first['eps'] * 255:g}/255; "
            "[low, high] = 95% Wilson interval over n images)"
        )
    return "\n".join(lines)


def _report(run_dir: Path, quiet: bool) -> None:
    from robustsnn.analysis import make_run_figures, write_report

    make_run_figures(run_dir)
    md, html = write_report([run_dir], run_dir)
    if not quiet:
        print(f"report: {md} , {html}")


def run_sweep(
    config_path: str | Path | None,
    param: str,
    values: list[str],
    *,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    seed: int | None = None,
    quiet: bool = False,
    device: str = "cpu",
) -> list[Path]:
    """Run the pipeline once per value of ``param`` (sharing nothing), then one comparison report.

    For ``finetune.*`` parameters the ANN and conversion of the first run are reused (copied),
    since they do not depend on the swept value.
    """
    base = load_config(config_path, overrides)
    root = (
        Path(out)
        if out
        else default_run_dir(config_path, base).with_name(
            f"{default_run_dir(config_path, base).name}-sweep-{param.replace('.', '_')}"
        )
    )
    runs: list[Path] = []
    for value in values:
        cfg = load_config(config_path, [*(overrides or []), f"{param}={value}"])
        run_dir = root / f"{param.split('.')[-1]}={value}"
        if runs and param.startswith(("finetune.", "eval.")):
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in (
                "ann.safetensors",
                "ann.json",
                "snn_converted.safetensors",
                "snn_converted.json",
            ):
                src = runs[0] / name
                if src.exists() and not (run_dir / name).exists():
                    shutil.copyfile(src, run_dir / name)
            for name in (
                "evaluation-ann.json",
                "evaluation-snn_converted.json",
                "stats-snn_converted.json",
            ):
                src = runs[0] / name
                if src.exists() and not (run_dir / name).exists() and param.startswith("finetune."):
                    shutil.copyfile(src, run_dir / name)
        run_pipeline(config=cfg, out=run_dir, seed=seed, quiet=quiet, device=device)
        runs.append(run_dir)
    from robustsnn.analysis import write_report

    write_report(runs, root)
    rows = []
    for value, run_dir in zip(values, runs, strict=True):
        s = json.loads((run_dir / "summary.json").read_text()).get("snn_finetuned", {})
        rows.append({"value": value, **s})
    atomic_write_json(root / "sweep.json", {"param": param, "rows": rows})
    return runs
