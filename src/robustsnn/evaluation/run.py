"""``robustsnn evaluate CKPT``: load a checkpoint and its dataset, evaluate, write evaluation.json.

The test samples are chosen *stratified* (the first n/K of each class, in dataset order) because
some test splits are stored grouped by class, where the first n samples would be one class.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import robustsnn.evaluation.adversarial as adversarial
from robustsnn import distributed
from robustsnn.attacks import ATTACKS
from robustsnn.data import load_dataset, to_float
from robustsnn.data.subsets import stratified_indices as data_stratified_indices
from robustsnn.errors import UserError
from robustsnn.evaluation.config import (
    RUN_FIELDS,
    EscalationPolicy,
    EvaluationConfig,
    EvaluationContext,
    EvaluationRun,
    split_keywords,
    warn_old_call,
)
from robustsnn.evaluation.ensembles import ENSEMBLES, Ensemble, Member, resolve_ensemble
from robustsnn.evaluation.escalate import evaluate_escalating
from robustsnn.evaluation.evaluate import evaluate, parse_eps
from robustsnn.evaluation.sharding import BatchShard, current_shard
from robustsnn.evaluation.views import model_digest
from robustsnn.evaluation.workers import resolve_workers, run_in_workers
from robustsnn.integrity import with_integrity
from robustsnn.io.atomic import atomic_write_json, atomic_write_text
from robustsnn.io.models import check_input, load_model

DEFAULT_ENSEMBLE = "reliable"
EVALUATION_FILE = "evaluation.json"
RECORDS_FILE = "records.jsonl"
SPLITS = ("test", "train")


def stratified_indices(labels: Tensor, n: int | None, num_classes: int | None = None) -> Tensor:
    """Indices of ``n`` samples: the first ``n // K`` of each class in dataset order.

    The remainder goes to the first classes; a class with too few samples leaves its share to
    the next classes with samples to spare. ``n`` None selects everything. The result is sorted.
    """
    labels = labels.detach().cpu().long()
    total = labels.shape[0]
    if n is None:
        return torch.arange(total)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"n must be a positive number of samples, got {n!r}")
    if n > total:
        raise UserError(f"n = {n} is more than the {total} samples of the split; use --n {total}")
    del num_classes  # every class present in the labels is balanced
    return data_stratified_indices(labels, n)


def dataset_spec_from_meta(meta: Mapping[str, Any]) -> str | None:
    """The dataset spec a checkpoint was trained on (``dataset.spec`` or ``dataset`` string)."""
    dataset = meta.get("dataset")
    if isinstance(dataset, Mapping):
        spec = dataset.get("spec") or dataset.get("name")
        return str(spec) if spec else None
    if isinstance(dataset, str) and dataset.strip():
        return dataset.strip()
    return None


def _choose(attack: Any, ensemble: Any, estimator: str | None) -> tuple[Any, Any]:
    """(ensemble, attacks) arguments of :func:`evaluate` for the CLI's flags."""
    if attack is not None and ensemble is not None:
        raise UserError("give either --attack or --ensemble, not both")
    if attack is not None and not isinstance(attack, str):
        return None, attack  # a member list, as evaluate() takes it
    if attack is not None:
        name = attack.strip()
        if name.lower() == "none":
            return None, None
        if name not in ATTACKS and name in ENSEMBLES:  # `--attack pgd-ensemble` is tolerated
            ensemble = name
        else:
            ATTACKS.get(name)  # unknown names fail with the list of attacks
            if estimator is not None:
                return None, [Member(name, estimator)]
            return None, name
    chosen: Ensemble = resolve_ensemble(ensemble if ensemble is not None else DEFAULT_ENSEMBLE)
    if estimator is not None:
        chosen = chosen.restrict(estimator)
    return chosen, None


def run_evaluation(
    checkpoint_path: str | Path,
    config: EvaluationConfig | None = None,
    run: EvaluationRun | None = None,
    *,
    loaded: tuple[torch.nn.Module, dict[str, Any]] | None = None,
    **old: Any,
) -> dict[str, Any]:
    """Evaluate a checkpoint and write ``<out_dir>/evaluation.json`` and ``records.jsonl``.

    Args:
        checkpoint_path: an ANN or SNN ``.safetensors`` checkpoint.
        config: what is measured (:class:`EvaluationConfig`); here ``attacks`` is one attack
            name (with every estimator, independently, for an SNN; a preset name is accepted
            too) or "none" for clean accuracy only, and ``ensemble`` None with ``attacks`` None
            is the preset ``reliable``.
        run: the data, the escalation and where and how it runs (:class:`EvaluationRun`);
            None: the defaults (every test image, no escalation, the default folder).
        loaded: an already built ``(model, metadata)`` (a wrapped foreign model) instead of
            loading ``checkpoint_path``, which then only names the run.
        old: the old keyword style (``eps=..., n=..., out_dir=..., escalate=...``), deprecated.

    Under torchrun every rank attacks its share of the batches
    (:mod:`robustsnn.evaluation.sharding`) and returns the same dict; only rank 0 writes.
    With ``save_adversarial``, every break's adversarial example, member and logits go to
    ``<out_dir>/adversarial.safetensors`` (:mod:`robustsnn.evaluation.adversarial`).

    Returns:
        The dict written to evaluation.json (records are in ``records.jsonl``).
    """
    config, run = _run_configs(config, run, old)
    eps_value = parse_eps(config.eps)
    path = Path(checkpoint_path)
    model, meta, spec, index, x, y = _load(path, run, loaded)
    chosen, attacks = _choose(config.attacks, config.ensemble, run.estimator)
    device = run.device
    source = None
    if run.transfer_from is not None:
        source = load_model(Path(run.transfer_from), device)[0]
    out = Path(run.out_dir) if run.out_dir is not None else path.parent / f"eval-{path.stem}"
    policy = run.escalate
    if policy is not None and attacks is not None:
        raise UserError("--escalate works with an ensemble, not with --attack")
    shard = current_shard()
    quiet = run.quiet or not distributed.is_main()
    processes = 1 if shard is not None else resolve_workers(run.workers, device)
    evaluation = replace(config, eps=eps_value, ensemble=chosen, attacks=attacks)
    context = EvaluationContext(
        state_dir=out,
        quiet=quiet,
        meta={
            "model": str(checkpoint_path),
            "dataset": spec,
            "split": run.split,
            "checkpoint_kind": meta.get("kind"),
            "selection": "stratified" if run.indices is None else "given indices",
            "transfer_from": str(run.transfer_from) if run.transfer_from is not None else None,
        },
        indices=index,
        transfer_source=source,
    )

    def job(local_shard: BatchShard | None, is_main: bool) -> dict[str, Any]:
        silent = quiet or not is_main
        used = shard if shard is not None else local_shard
        here = replace(context, quiet=silent, shard=used)
        if policy is None:
            return evaluate(model, x, y, evaluation, here)
        say = None if silent else (lambda m: print(m, file=sys.stderr))
        return evaluate_escalating(model, x, y, evaluation, here, policy, log=say)

    return _write(run_in_workers(processes, job), out, model)


def _run_configs(
    config: EvaluationConfig | None, run: EvaluationRun | None, old: dict[str, Any]
) -> tuple[EvaluationConfig, EvaluationRun]:
    """The call's config and run; the old keyword style is read (and warned about)."""
    if old:
        if config is not None or run is not None:
            raise TypeError("run_evaluation() takes configs or the old keywords, not both")
        keywords = dict(old)
        if "attack" in keywords:
            keywords["attacks"] = keywords.pop("attack")
        escalate = keywords.pop("escalate", False)
        levels = keywords.pop("escalate_levels", 2)
        seconds = keywords.pop("escalate_seconds", None)
        if escalate:
            keywords["escalate"] = (
                escalate
                if isinstance(escalate, EscalationPolicy)
                else EscalationPolicy(levels, seconds)
            )
        config, _, rest = split_keywords(
            {k: v for k, v in keywords.items() if k not in RUN_FIELDS}, "run_evaluation"
        )
        if rest:
            raise TypeError(f"run_evaluation() got unexpected keyword arguments: {', '.join(rest)}")
        run = EvaluationRun(**{k: v for k, v in keywords.items() if k in RUN_FIELDS})
        warn_old_call(
            "run_evaluation(path, eps=..., n=..., ...)",
            "run_evaluation(path, EvaluationConfig(eps=..., ...), EvaluationRun(n=..., ...))",
        )
    if config is None:
        raise TypeError(
            "run_evaluation() missing its config: run_evaluation(path, EvaluationConfig(eps=...))"
        )
    return config, run if run is not None else EvaluationRun()


def _load(
    path: Path, run: EvaluationRun, loaded: tuple[torch.nn.Module, dict[str, Any]] | None
) -> tuple[torch.nn.Module, dict[str, Any], str, Tensor, Tensor, Tensor]:
    """The model, its metadata, the dataset spec, the stratified indices and their data."""
    if run.split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {run.split!r}")
    model, meta = loaded if loaded is not None else load_model(path, run.device)
    if run.estimator is not None and meta.get("kind") == "ann":
        raise UserError(
            f"--estimator {run.estimator}: gradient estimators are for SNNs; {path} is an ANN, "
            "whose attacks use its one true gradient: drop --estimator"
        )
    spec = run.dataset or dataset_spec_from_meta(meta)
    if spec is None:
        raise UserError(
            f"checkpoint {path} does not say which dataset it was trained on (no 'dataset' in "
            "its metadata); pass the dataset explicitly"
        )
    data = load_dataset(spec, run.data_dir)
    test = run.split == "test"
    xs, ys = (data.x_test, data.y_test) if test else (data.x_train, data.y_train)
    index = _indices(run, ys, data.info.num_classes)
    x, y = to_float(xs[index]), ys[index]
    check_input(model, meta, x.to(run.device), spec)  # a dataset the model cannot read: one line
    return model, meta, spec, index, x, y


def _indices(run: EvaluationRun, ys: Tensor, num_classes: int) -> Tensor:
    """The dataset indices the run evaluates: ``run.indices`` or ``n`` stratified ones."""
    if run.indices is None:
        return stratified_indices(ys, run.n, num_classes)
    index = torch.as_tensor(list(run.indices), dtype=torch.long)
    if index.numel() == 0:
        raise UserError("indices: the list is empty; give at least one dataset index")
    if run.n is not None and run.n != index.numel():
        raise UserError(
            f"n = {run.n} but {index.numel()} indices were given: drop n or make them agree"
        )
    bad = index[(index < 0) | (index >= len(ys))]
    if bad.numel():
        raise UserError(
            f"indices: {bad[0].item()} is outside the split's {len(ys)} samples (0-{len(ys) - 1})"
        )
    if torch.unique(index).numel() != index.numel():
        raise UserError("indices: an index appears twice; give each sample once")
    return index


def _write(result: dict[str, Any], out: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Write evaluation.json, records.jsonl and the kept examples (rank 0); the dict written."""
    records = result.pop("records")
    result["records_file"] = RECORDS_FILE
    result["refused_examples"] = sum(len(r.get("refused_by", [])) for r in records)
    examples = result.pop("adversarial", None)
    if examples is not None and distributed.is_main():
        size = adversarial.write(
            out / adversarial.ADVERSARIAL_FILE,
            examples,
            adversarial_metadata(result, model, records),
        )
        result["adversarial_file"] = adversarial.ADVERSARIAL_FILE
        result["adversarial_examples"] = len(examples)
        result["adversarial_bytes"] = size
    if distributed.is_main():
        atomic_write_text(out / RECORDS_FILE, "".join(json.dumps(r) + "\n" for r in records))
        written = [RECORDS_FILE] + ([adversarial.ADVERSARIAL_FILE] if examples is not None else [])
        result.update(with_integrity(result, out, written))  # returned as written
        atomic_write_json(out / EVALUATION_FILE, result)
    distributed.barrier()  # the files exist on return, on every rank
    return result


def adversarial_metadata(
    result: Mapping[str, Any], model: torch.nn.Module, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a saved-examples file says about the evaluation that made it."""
    members = sorted({str(r["broken_by"]) for r in records if r.get("broken_by")})
    return {
        "model": result.get("model"),
        "model_digest": model_digest(model),
        "kind": result.get("kind"),
        "T": result.get("T"),
        "dataset": result.get("dataset"),
        "split": result.get("split"),
        "eps": float(result["eps"]),
        "eps_tolerance": adversarial.EPS_TOLERANCE,
        "n": int(result["n"]),
        "ensemble": result.get("ensemble"),
        "members": members,
    }
