"""``robustsnn evaluate CKPT``: load a checkpoint and its dataset, evaluate, write evaluation.json.

The test samples are chosen *stratified* (the first n/K of each class, in dataset order) because
some test splits are stored grouped by class, where the first n samples would be one class.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
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
from robustsnn.evaluation.diagnostics import DiagnosticsConfig
from robustsnn.evaluation.ensembles import ENSEMBLES, Ensemble, Member, resolve_ensemble
from robustsnn.evaluation.escalate import EscalationPolicy, evaluate_escalating
from robustsnn.evaluation.evaluate import DEFAULT_BATCH_SIZE, evaluate, parse_eps
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


def _choose(
    attack: str | None, ensemble: str | Any | None, estimator: str | None
) -> tuple[Any, Any]:
    """(ensemble, attacks) arguments of :func:`evaluate` for the CLI's flags."""
    if attack is not None and ensemble is not None:
        raise UserError("give either --attack or --ensemble, not both")
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
    *,
    attack: str | None = None,
    ensemble: str | Any | None = None,
    estimator: str | None = None,
    eps: float | str,
    n: int | None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    quiet: bool = False,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    transfer_from: str | Path | None = None,
    diagnostics: str | DiagnosticsConfig = "fast",
    split: str = "test",
    dataset: str | None = None,
    diagnostics_n: int | None = None,
    escalate: bool | EscalationPolicy = False,
    escalate_levels: int = 2,
    escalate_seconds: float | None = None,
    loaded: tuple[torch.nn.Module, dict[str, Any]] | None = None,
    save_adversarial: bool = False,
    workers: int = 1,
    randomness: Any = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint and write ``<out_dir>/evaluation.json`` and ``records.jsonl``.

    Args:
        checkpoint_path: an ANN or SNN ``.safetensors`` checkpoint.
        attack: one attack name (with every estimator, independently, for an SNN), or "none"
            for clean accuracy only. A preset name is accepted too.
        ensemble: a preset name, an Ensemble or a spec list; default ``reliable`` when
            neither ``attack`` nor ``ensemble`` is given.
        estimator: restrict the members to this gradient estimator.
        eps: radius (``"8/255"`` or a float). n: number of stratified samples (None: all).
        out_dir: output folder (default: ``<checkpoint folder>/eval-<checkpoint name>``); it
            also holds the resume state, so re-running the same command resumes.
        dataset: dataset spec overriding the one in the checkpoint metadata.
        loaded: an already built ``(model, metadata)`` (a wrapped foreign model) instead of
            loading ``checkpoint_path``, which then only names the run.
        escalate: escalate to stronger presets while checks fail or late members still break
            samples (:mod:`robustsnn.evaluation.escalate`), at most ``escalate_levels`` steps,
            none started after ``escalate_seconds``; an :class:`EscalationPolicy` instead of
            True carries those settings and ``at_least`` (a preset to reach in any case).
        save_adversarial: write every break's adversarial example, member and logits to
            ``<out_dir>/adversarial.safetensors`` (:mod:`robustsnn.evaluation.adversarial`).
        randomness: how a random model is evaluated (a mode "auto" / "off" / "force" or a
            :class:`~robustsnn.evaluation.stochastic.StochasticConfig`; None: "auto").
        workers: processes on a CPU (:mod:`robustsnn.evaluation.workers`): the batches are
            shared out as under torchrun, with the same result; 0 = one per core.

    Under torchrun every rank attacks its share of the batches
    (:mod:`robustsnn.evaluation.sharding`) and returns the same dict; only rank 0 writes.

    Returns:
        The dict written to evaluation.json (records are in ``records.jsonl``).
    """
    eps_value = parse_eps(eps)
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(checkpoint_path)
    model, meta = loaded if loaded is not None else load_model(path, device)
    if estimator is not None and meta.get("kind") == "ann":
        raise UserError(
            f"--estimator {estimator}: gradient estimators are for SNNs; {path} is an ANN, whose "
            "attacks use its one true gradient: drop --estimator"
        )
    spec = dataset or dataset_spec_from_meta(meta)
    if spec is None:
        raise UserError(
            f"checkpoint {path} does not say which dataset it was trained on (no 'dataset' in "
            "its metadata); pass the dataset explicitly"
        )
    data = load_dataset(spec, data_dir)
    xs, ys = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    index = stratified_indices(ys, n, data.info.num_classes)
    x, y = to_float(xs[index]), ys[index]
    check_input(model, meta, x.to(device), spec)  # a dataset the model cannot read: one line
    chosen, attacks = _choose(attack, ensemble, estimator)
    source = load_model(Path(transfer_from), device)[0] if transfer_from is not None else None
    out = Path(out_dir) if out_dir is not None else path.parent / f"eval-{path.stem}"
    if escalate and attacks is not None:
        raise UserError("--escalate works with an ensemble, not with --attack")
    shard = current_shard()
    quiet = quiet or not distributed.is_main()
    processes = 1 if shard is not None else resolve_workers(workers, device)
    runner: Any = evaluate
    extra: dict[str, Any] = {"attacks": attacks}
    if escalate:
        policy = (
            escalate
            if isinstance(escalate, EscalationPolicy)
            else EscalationPolicy(escalate_levels, escalate_seconds)
        )
        runner = evaluate_escalating
        extra = {
            "max_levels": policy.levels,
            "budget_seconds": policy.seconds,
            "at_least": policy.at_least,
        }

    def job(local_shard: BatchShard | None, is_main: bool) -> dict[str, Any]:
        silent = quiet or not is_main
        logging: dict[str, Any] = {}
        if escalate:
            logging["log"] = None if silent else (lambda m: print(m, file=sys.stderr))
        used = shard if shard is not None else local_shard
        return runner(  # type: ignore[no-any-return]
            model,
            x,
            y,
            eps=eps_value,
            ensemble=chosen,
            **extra,
            **logging,
            batch_size=batch_size,
            seed=seed,
            state_dir=out,
            quiet=silent,
            diagnostics=diagnostics,
            diagnostics_n=diagnostics_n,
            transfer_source=source,
            meta={
                "model": str(checkpoint_path),
                "dataset": spec,
                "split": split,
                "checkpoint_kind": meta.get("kind"),
                "selection": "stratified",
                "transfer_from": str(transfer_from) if transfer_from is not None else None,
            },
            indices=index,
            **({"shard": used} if used is not None else {}),
            **({"save_adversarial": True} if save_adversarial else {}),
            **({"randomness": randomness} if randomness is not None else {}),
        )

    result = run_in_workers(processes, job)
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
