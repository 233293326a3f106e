"""``robustsnn run``: train ANN -> convert -> robust finetune -> evaluate -> summary -> report.

Each stage writes its output atomically into the run folder and is skipped when that output
already exists, so a killed run continues where it stopped (the trainers also resume
mid-stage from their last epoch).

Under torchrun the training stages run DistributedDataParallel and the evaluations are sharded on
every rank; conversion, statistics, summary and report run on rank 0 while the others wait.
Rank 0 decides which stages are done and alone writes the run folder's own files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustsnn import distributed
from robustsnn.config import RunConfig, RunContext, dump_config, load_config
from robustsnn.conversion import ConversionConfig
from robustsnn.errors import UserError
from robustsnn.io.atomic import atomic_write_json, atomic_write_text

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


def _run_context(cfg: RunConfig, run_dir: Path, quiet: bool, device: str) -> RunContext:
    """Where and how the run's training stages run: into the run folder, with the run's seed
    and dataset folder, their checkpoints measured on ``eval.n`` test images."""
    return RunContext(
        out_dir=run_dir, seed=cfg.seed, device=device, quiet=quiet, data_dir=cfg.data.data_dir,
        eval_n=cfg.eval.n,
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

        train_ann(
            cfg.data.dataset, cfg.model.name, cfg.ann, _run_context(cfg, run_dir, quiet, device),
            model_kwargs=cfg.model.kwargs(),
        )  # fmt: skip

    def convert() -> None:
        from robustsnn.stages import convert_checkpoint

        _, info = convert_checkpoint(
            ann_path, conv_path, conversion_config(cfg), data_dir=cfg.data.data_dir,
            seed=cfg.seed, eval_n=cfg.eval.n, device=device,
            input_encoding=cfg.snn.input_encoding, threshold_noise=cfg.snn.threshold_noise,
        )  # fmt: skip
        _log(run_dir, {"phase": "convert", **info})

    def finetune() -> None:
        from robustsnn.training.snn import finetune_snn

        # distillation's default teacher in a run: the run's own ANN
        teacher = cfg.finetune.teacher if cfg.finetune.teacher is not None else str(ann_path)
        config = dataclasses.replace(cfg.finetune, teacher=teacher)
        run = dataclasses.replace(_run_context(cfg, run_dir, quiet, device), name="snn")
        finetune_snn(conv_path, config, run)

    _stage(run_dir, "train_ann", ann_path, train, quiet, every_rank=True)
    _stage(run_dir, "convert", conv_path, convert, quiet)
    _stage(run_dir, "finetune", snn_path, finetune, quiet, every_rank=True)

    checkpoints = {"ann": ann_path, "snn_converted": conv_path, "snn_finetuned": snn_path}
    for model, path in checkpoints.items():
        evaluate = functools.partial(_evaluate, cfg, run_dir, model, path, quiet, device)
        target = run_dir / f"evaluation-{model}.json"
        _stage(run_dir, f"evaluate_{model}", target, evaluate, quiet, every_rank=True)
    if cfg.eval.escalate:
        _match_protocols(cfg, run_dir, checkpoints, quiet, device)
    if cfg.eval.latency_T:
        for model, path in checkpoints.items():
            if model != "ann":
                curve = functools.partial(_latency, cfg, run_dir, model, path, quiet, device)
                target = run_dir / "latency" / model / "latency.json"
                _stage(run_dir, f"latency_{model}", target, curve, quiet)
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
    cfg: RunConfig,
    run_dir: Path,
    model: str,
    path: Path,
    quiet: bool,
    device: str,
    at_least: str | None = None,
) -> None:
    from robustsnn.evaluation import EvaluationConfig, EvaluationRun, run_evaluation
    from robustsnn.evaluation.escalate import EscalationPolicy
    from robustsnn.evaluation.stochastic import StochasticConfig

    out = run_dir / "eval" / model
    escalate = None
    if cfg.eval.escalate:
        escalate = EscalationPolicy(cfg.eval.escalate_levels, None, at_least)
    config = EvaluationConfig(
        eps=cfg.eval.eps, ensemble=cfg.eval.ensemble, seed=cfg.seed,
        batch_size=cfg.eval.batch_size, diagnostics=cfg.eval.diagnostics,
        save_adversarial=cfg.eval.save_adversarial,
        randomness=StochasticConfig(cfg.eval.randomness, cfg.eval.prediction_draws),
    )  # fmt: skip
    run = EvaluationRun(
        n=cfg.eval.n, split=cfg.eval.split, data_dir=cfg.data.data_dir, escalate=escalate,
        out_dir=out, device=device, workers=cfg.eval.workers, quiet=quiet,
    )  # fmt: skip
    run_evaluation(path, config, run)
    if distributed.is_main():
        shutil.copyfile(out / "evaluation.json", run_dir / f"evaluation-{model}.json")


def _match_protocols(
    cfg: RunConfig, run_dir: Path, checkpoints: dict[str, Path], quiet: bool, device: str
) -> None:
    """Apples to apples: every model's evaluation ends on the same ladder preset.

    Escalation adapts to each model (an ANN whose checks pass stops at the cheap screen while
    its SNNs go on to ``reliable``), which would compare numbers from different attacks. Models
    that stopped below the strongest preset any model reached are escalated up to it (their
    finished steps resume from the evaluation's state); repeated until all agree, since a
    matched model's checks may escalate it further.
    """
    from robustsnn.evaluation.escalate import final_preset, ladder_level

    def finals() -> dict[str, str | None]:
        return {
            model: final_preset(json.loads((run_dir / f"evaluation-{model}.json").read_text()))
            for model in checkpoints
        }

    for _ in range(4):  # the ladder has four presets
        presets = distributed.on_main(finals)
        target = max(presets.values(), key=ladder_level)
        behind = [m for m, p in presets.items() if ladder_level(p) < ladder_level(target)]
        if not behind or ladder_level(target) < 0:
            return
        for model in behind:
            if not quiet and distributed.is_main():
                print(f"[evaluate_{model}] escalating to {target} to match the other rows")
            _evaluate(cfg, run_dir, model, checkpoints[model], quiet, device, at_least=target)
            distributed.barrier()


def _latency(
    cfg: RunConfig, run_dir: Path, model: str, path: Path, quiet: bool, device: str
) -> None:
    """Robustness vs latency of one SNN: the run's ensemble, eps and images at each
    ``eval.latency_T``, escalated (when the run escalates) at least to the preset the run's
    rows were matched on."""
    from robustsnn.evaluation import EvaluationConfig, EvaluationRun
    from robustsnn.evaluation.escalate import EscalationPolicy, final_preset
    from robustsnn.evaluation.latency import latency_curve

    evaluation = json.loads((run_dir / f"evaluation-{model}.json").read_text())
    policy = None
    if cfg.eval.escalate:
        policy = EscalationPolicy(cfg.eval.escalate_levels, None, final_preset(evaluation))
    config = EvaluationConfig(
        eps=cfg.eval.eps, ensemble=cfg.eval.ensemble, seed=cfg.seed,
        batch_size=cfg.eval.batch_size, diagnostics=cfg.eval.diagnostics,
    )  # fmt: skip
    run = EvaluationRun(
        n=cfg.eval.n, data_dir=cfg.data.data_dir, escalate=policy,
        out_dir=run_dir / "latency" / model, device=device, quiet=quiet,
    )  # fmt: skip
    latency_curve(path, cfg.eval.latency_T, config, run, label=model)


def _statistics(cfg: RunConfig, run_dir: Path, model: str, path: Path, device: str) -> None:
    import torch

    from robustsnn.analysis import adversarial_statistics
    from robustsnn.attacks import build_attack
    from robustsnn.data import load_dataset
    from robustsnn.io.models import load_model
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
    if steps:
        verdict += f"; escalated {len(steps)}x"
    from robustsnn.evaluation.ties import tie_suffix

    return verdict + tie_suffix(evaluation)


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
            "escalation": [
                step["preset"] for step in (ev.get("escalation") or {}).get("steps", [])
            ],
            "source": ev_path.name,
        }
    _add_ratios(run_dir, summary)
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def _robust_flags(run_dir: Path, model: str) -> dict[int, bool] | None:
    """Per-image robust outcome of ``model``'s evaluation (dataset index -> robust)."""
    path = run_dir / "eval" / model / "records.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {int(r["index"]): bool(r["robust"]) for r in records}


def _add_ratios(run_dir: Path, summary: dict[str, Any]) -> None:
    """``robust_ratio_to_ann`` per SNN row: its robust accuracy over the ANN's on the same
    images, with a paired bootstrap interval; only where both rows share images, eps and the
    robust row's ensemble (anything else is not a like-for-like ratio and gets None + why)."""
    from robustsnn.evaluation.intervals import paired_ratio_interval

    ann = summary.get("ann")
    if ann is None:
        return
    ann_flags = _robust_flags(run_dir, "ann")
    for model, row in summary.items():
        if model == "ann":
            continue
        why = None
        if row["eps"] != ann["eps"] or row["n"] != ann["n"]:
            why = "different eps or n"
        elif row["ensemble"] != ann["ensemble"] or row["escalation"] != ann["escalation"]:
            why = f"different attacks ({row['ensemble']} vs the ANN's {ann['ensemble']})"
        flags = _robust_flags(run_dir, model)
        if why is None and (flags is None or ann_flags is None or set(flags) != set(ann_flags)):
            why = "per-image records missing or on different images"
        ratio = None
        if why is None:
            assert flags is not None and ann_flags is not None
            order = sorted(flags)
            ratio = paired_ratio_interval([flags[i] for i in order], [ann_flags[i] for i in order])
            if ratio is None:
                why = "the ANN keeps no sample (ratio undefined)"
        row["robust_ratio_to_ann"] = ratio
        if why is not None:
            row["robust_ratio_to_ann_missing"] = why


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of the summary: each accuracy with its 95% Wilson interval and n, and
    the masking checks' verdict per row (a number whose checks failed never stands alone)."""
    from robustsnn.evaluation.intervals import format_accuracy, format_ratio

    def acc(v: float | None, n: int) -> str:
        return "-" if v is None else format_accuracy(v, n)

    lines = [
        f"{'model':<15} {'clean':<28} {'robust':<28} {'robust vs ANN':<20} {'spikes/img':>10}"
        "  diagnostics"
    ]
    for model, row in summary.items():
        spikes = "-" if row["spikes_per_image"] is None else f"{row['spikes_per_image']:.0f}"
        n = int(row.get("n") or 0)
        ratio = "1 (reference)" if model == "ann" else format_ratio(row.get("robust_ratio_to_ann"))
        lines.append(
            f"{model:<15} {acc(row['clean_accuracy'], n):<28} "
            f"{acc(row['robust_accuracy'], n):<28} {ratio:<20} {spikes:>10}  "
            f"{row.get('diagnostics', '-')}"
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
            "[low, high] = 95% Wilson interval over n images; robust vs ANN: paired bootstrap "
            "95% interval on the same images)"
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
    # every value is checked before the first run starts (a bad third value fails now)
    configs = [load_config(config_path, [*(overrides or []), f"{param}={v}"]) for v in values]
    runs: list[Path] = []
    for value, cfg in zip(values, configs, strict=True):
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
