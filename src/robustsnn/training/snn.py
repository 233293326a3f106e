"""SNN training: the paper's robust finetuning of a converted SNN, and SNNs trained from scratch.

:func:`finetune_snn` is step 3 of the pipeline (PAPER.md section 4): thresholds and weights of an
SNN checkpoint trained with BPTT (PCW surrogate, gamma 1) on ``CE(f(x), y) + beta * KL(f(x_adv) ||
f(x))``, ``x_adv`` from the single-step KL adversary run against the SNN itself.
:func:`train_snn` trains the baselines of section 6 from scratch with BPTT: vanilla, RFGSM
adversarial training, SNN-RAT (RFGSM + orthogonality regularizer), BNTT, IF or LIF neurons.

Both write ``<out>/<name>.safetensors`` (+ ``.json``) with :func:`robustsnn.io.models.save_snn`,
keep the resumable ``<out>/<name>.state.safetensors`` and append to ``<out>/log.jsonl``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

import robustsnn.training.legacy as legacy
from robustsnn import distributed
from robustsnn.attacks import build_attack
from robustsnn.config import FinetuneConfig, OptimizerConfig, RunContext, SNNTrainingConfig
from robustsnn.conversion import ConversionConfig, spiking_body
from robustsnn.data import Dataset, DatasetInfo, load_dataset, stratified_indices
from robustsnn.errors import UserError
from robustsnn.io.models import load_model, save_snn
from robustsnn.models import build_model
from robustsnn.snn import DEFAULT_ESTIMATOR, SpikingNetwork, SpikingNeuron, parse_estimator
from robustsnn.snn.bntt import BNTT, bntt_transform
from robustsnn.snn.encoding import configure_stochastic
from robustsnn.snn.estimators import ANNProxy, Estimator, gives_threshold_gradient
from robustsnn.training.adversaries import FinetuneAdversary, parse_adversary
from robustsnn.training.ann import provenance
from robustsnn.training.inner import unwrap
from robustsnn.training.metrics import evaluate_accuracy
from robustsnn.training.objectives import (
    FINETUNE_OBJECTIVES,
    Objective,
    TimeStepDraw,
    build_objective,
    objective_params,
    prepare_model,
)
from robustsnn.training.regularizers import OrthogonalityRegularizer
from robustsnn.training.trainer import Trainer, TrainerConfig

FINETUNE_PHASE = "finetune"
TRAIN_SNN_PHASE = "train_snn"
EVAL_BATCH_SIZE = 128
SNN_RAT = "snn_rat"
SNN_NAME = "snn"  # the checkpoint name of finetune_snn and train_snn (RunContext.name None)
# Metadata keys that save_snn regenerates from the network itself.
_SNN_KEYS = {
    "format_version",
    "kind",
    "arch",
    "conversion",
    "transforms",
    "T",
    "thresholds",
    "leak",
    "reset",
    "threshold_min",
}


# --------------------------------------------------------------------------------- helpers
def evaluate_snn(
    snn: SpikingNetwork,
    data: Dataset,
    *,
    eps: float,
    eval_n: int,
    seed: int,
    quiet: bool = True,
) -> dict[str, Any]:
    """Clean and PGD-20 accuracy (BPTT with PCW gamma 1, at ``eps``) on ``eval_n`` stratified
    test images; the metadata entries of a trained SNN."""
    index = stratified_indices(data.y_test, eval_n)
    n = len(index)
    result: dict[str, Any] = {
        "eval_n": n,
        "eval_selection": "stratified",
        "clean_accuracy": None,
        "pgd20_accuracy": None,
        "pgd20_estimator": DEFAULT_ESTIMATOR.name,
    }
    if n == 0:
        return result
    x_eval, y_eval = data.x_test[index], data.y_test[index]
    view = snn.with_estimator(DEFAULT_ESTIMATOR)
    result["clean_accuracy"] = evaluate_accuracy(
        view, x_eval, y_eval, EVAL_BATCH_SIZE, quiet=quiet, desc="clean"
    )
    if eps > 0:
        pgd20 = build_attack("pgd", eps=float(eps), steps=20)
        result["pgd20_accuracy"] = evaluate_accuracy(
            view,
            x_eval,
            y_eval,
            EVAL_BATCH_SIZE,
            pgd20,
            generator=torch.Generator().manual_seed(seed),
            quiet=quiet,
            desc="pgd20",
        )
    return result


def _save_snn_on_main(path: Path, snn: SpikingNetwork, **meta: Any) -> None:
    """:func:`save_snn` on rank 0 only (under torchrun every rank holds the same model after
    training); the other ranks wait until the file exists."""
    if distributed.is_main():
        save_snn(path, snn, **meta)
    distributed.barrier()


def _clamp_thresholds(model: nn.Module) -> None:
    """Trainer clamp hook: thresholds back to >= their minimum after every optimizer step."""
    if isinstance(model, SpikingNetwork):
        model.clamp_thresholds()


def _parameter_names(snn: SpikingNetwork) -> tuple[list[str], list[str]]:
    """Names of the threshold parameters and of all other parameters."""
    threshold_ids = {id(p) for p in snn.threshold_parameters()}
    thresholds: list[str] = []
    others: list[str] = []
    for name, param in snn.named_parameters():
        (thresholds if id(param) in threshold_ids else others).append(name)
    return thresholds, others


class FrozenBatchNormStatistics(Objective):
    """Runs ``base`` with every BatchNorm in eval mode: running statistics stay as they are and
    normalization uses them, as at inference (for training the thresholds alone)."""

    def __init__(self, base: Objective) -> None:
        self.base = base

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name

    @property
    def params(self) -> dict[str, Any]:
        return {**self.base.params, "batchnorm_statistics": "frozen"}

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        for module in unwrap(model).modules():
            if isinstance(module, _BatchNorm):
                module.eval()
        return self.base(model, x, y, generator)


def _dataset_metadata(spec: str, data: Dataset) -> dict[str, Any]:
    return {"spec": spec, **dataclasses.asdict(data.info)}


def _fit_and_evaluate(
    snn: SpikingNetwork,
    loss: Objective,
    data: Dataset,
    config: TrainerConfig,
    *,
    freeze: Iterable[str] = (),
    setup: dict[str, Any],
    eps: float,
    eval_n: int,
    estimator: Estimator = DEFAULT_ESTIMATOR,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train ``snn`` through ``estimator`` (BPTT with PCW(1) by default; thresholds clamped
    after every step), then evaluate it (:func:`evaluate_snn`); returns the history and
    evaluation."""
    trainer = Trainer(
        snn, loss, config, freeze=freeze, clamp=_clamp_thresholds, fingerprint_extra=setup
    )
    with snn.use_estimator(estimator):
        history = trainer.fit(data)
    snn.eval()
    evaluation = evaluate_snn(
        snn, data, eps=float(eps), eval_n=eval_n, seed=config.seed, quiet=config.quiet
    )
    return history, evaluation


def _trainer_config(
    run: RunContext, phase: str, epochs: int, batch_size: int, optimizer: OptimizerConfig,
    augment: bool,
) -> TrainerConfig:  # fmt: skip
    """The trainer's config of an SNN entry point: its run context, ``phase`` and options."""
    return TrainerConfig(
        epochs=epochs, out_dir=Path(run.out_dir), name=run.name or SNN_NAME, phase=phase,
        batch_size=batch_size, optimizer=optimizer, seed=run.seed, device=run.device,
        augment=augment, quiet=run.quiet,
    )  # fmt: skip


# ------------------------------------------------------------------------------ finetune
TEACHER_PROXY = "proxy"


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def load_teacher(
    teacher: str | None, snn: SpikingNetwork, meta: dict[str, Any], source: Path, device: str
) -> tuple[nn.Module, str]:
    """The distillation teacher and what it is: the source ANN that ``snn`` was converted from
    (``teacher`` None or ``"source"``: the path in the checkpoint's ``source`` metadata, as
    written or beside the checkpoint), ``"proxy"`` (a frozen copy of ``snn`` seen as its ANN
    proxy: the ANN itself for a conversion that kept the ANN's weights), or an ANN checkpoint
    path. Frozen and in eval mode."""
    import copy

    if teacher == TEACHER_PROXY:
        proxy = copy.deepcopy(snn).with_estimator(ANNProxy())
        return _frozen(proxy), "proxy (ANN proxy of the converted SNN)"
    if teacher in (None, "source"):
        recorded = (meta.get("source") or {}).get("path")
        if not recorded:
            raise UserError(
                f"{source} names no source ANN (metadata source.path); pass --teacher PATH "
                "or --teacher proxy"
            )
        candidates = [Path(recorded), source.parent / recorded, source.parent / Path(recorded).name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UserError(
                f"the source ANN {recorded!r} of {source} is not found (looked as written and "
                "beside the checkpoint); pass --teacher PATH or --teacher proxy"
            )
        path = found
    else:
        path = Path(teacher)
        if not path.is_file():
            raise UserError(f"teacher checkpoint {teacher!r} not found; give an ANN checkpoint")
    model, teacher_meta = load_model(path, device)
    if isinstance(model, SpikingNetwork):
        raise UserError(
            f"teacher {path} is an SNN; distillation needs the robust ANN it was converted from"
        )
    _check_teacher_matches(path, teacher_meta.get("arch") or {}, meta.get("arch") or {})
    return _frozen(model), str(path)


def _check_teacher_matches(
    path: Path, teacher_arch: dict[str, Any], snn_arch: dict[str, Any]
) -> None:
    """Refuse a teacher that sees other inputs or predicts other classes than the SNN (e.g. an
    MNIST ANN given to a CIFAR SNN), in one line before any batch runs."""
    for key in ("num_classes", "in_channels", "image_size"):
        want, got = snn_arch.get(key), teacher_arch.get(key)
        if want is not None and got is not None and want != got:
            raise UserError(
                f"teacher {path} has {key} {got}, the SNN {want}: distill from the ANN of the "
                "same task (--teacher PATH of that ANN, or --teacher proxy)"
            )


def finetune_snn(
    snn_checkpoint: str | Path,
    config: FinetuneConfig | None = None,
    run: RunContext | None = None,
    *,
    augment: bool = True,
    **keywords: Any,
) -> Path:
    """Robust finetuning of an SNN checkpoint (the paper's step 3); returns the new checkpoint.

    ``finetune_snn(path, FinetuneConfig(...), RunContext(out_dir=...))``. ``FinetuneConfig()``
    is the one default recipe of ``robustsnn run``, ``robustsnn finetune`` and this function
    (``distill`` from the source ANN on PGD-3 examples through drawn estimators, loss through
    ``bptt-rel-pcw-1``); the paper's finetuning is ``objective="robust_finetune",
    adversary=None, estimator="bptt-pcw-1", beta=2, lr=1e-3``. ``augment=False`` trains on the
    plain images (no crop, flip or cutout). The old call ``finetune_snn(path, out_dir=...,
    beta=..., ...)`` (the config's and the run context's fields as keywords) still works for
    one release, with a DeprecationWarning.

    ``adversary`` (a :mod:`~robustsnn.training.adversaries` spec, e.g.
    ``"pgd[steps=3]/bptt-rel-pcw-1+ann-proxy"``; None = the paper's KL adversary with
    ``adversary_steps`` through ``estimator``) generates ``x_adv`` at ``eps`` independently of
    the loss's ``estimator``. ``objective``: ``robust_finetune`` (the paper's, below),
    ``distill`` (KL to the source ANN ``teacher``) or ``adversarial_ce``;
    ``objective_options`` are that objective's own parameters (e.g. ``clean_weight``,
    ``teacher_input``; ``margin_weight``/``margin``: the membrane-margin regularizer).
    ``T_choices`` (e.g. ``[4, 8]``): latency-aware finetuning, every batch at a T drawn from
    the list (:class:`~robustsnn.training.objectives.TimeStepDraw`); the checkpoint keeps its
    own T (or ``T``), which is what it is saved and evaluated at. All of it is recorded in the
    checkpoint's ``finetune`` metadata.

    Loss ``CE(f(x), y) + beta * KL(f(x_adv) || f(x))`` (objective ``robust_finetune``): ``x_adv``
    is the single-step KL adversary (random sign step ``alpha``, one step ``eps - alpha``) run
    against the SNN itself through BPTT with the PCW surrogate (gamma 1), the same estimator
    the training loss backpropagates through (``adversary_steps > 1``: the multi-step extension,
    beyond the paper); ``beta = 0`` is plain clean cross-entropy
    finetuning without an attack. SGD with momentum, cosine schedule per step; thresholds are
    clamped to their minimum (0.03) after every step. ``train_thresholds=False`` /
    ``train_weights=False`` freeze the thresholds / everything else (the "weights only" and
    "thresholds only" ablations; with the weights frozen the BatchNorm running statistics are
    frozen too, so nothing but the thresholds changes). ``T=None`` keeps the checkpoint's T.
    ``add_biases`` gives every bias-free conv/linear layer a zero-initialised bias that trains
    with the weights (the paper's finetuning, ``--use_bias``); the checkpoint's ``arch`` then
    records ``bias: true`` so it rebuilds with them. ``cutout`` overrides the dataset's cutout
    hole side during finetuning (0 = off, as the paper's finetuning runs; None = the dataset's).
    ``estimator`` is the gradient estimator of both the adversary and the training loss: the
    paper's is ``bptt-pcw-1`` (surrogate width 1 in membrane units); a wider one (e.g.
    ``bptt-pcw-4``) suits SNNs whose thresholds are far above 1 (MSE or QCFS conversion: 2-8).
    Trained thresholds need an estimator whose backward differentiates them (BPTT with a fixed
    surrogate through the reset, or BPTR); the attack-only estimators (threshold-relative, ASSG,
    PDSG, RGA, HART, detached reset) are refused unless the thresholds are frozen.

    The dataset is the one named in the checkpoint's metadata (``meta["dataset"]["spec"]``).
    Writes ``<out>/<name>.safetensors`` + ``.json`` (finetune settings, source, dataset, clean
    and PGD-20 accuracy at ``eps`` on ``eval_n`` stratified test images, provenance); a rerun
    resumes an interrupted run from ``<out>/<name>.state.safetensors`` or only re-evaluates.
    """
    if config is None and run is None:
        config, run = _finetune_keywords(keywords)
    elif keywords:
        raise TypeError(f"finetune_snn: pass {', '.join(keywords)} in the config or run context")
    if config is None or run is None:
        raise TypeError("finetune_snn(path, config, run): give both")
    return _finetune(Path(snn_checkpoint), config, run, augment)


def _finetune_keywords(keywords: dict[str, Any]) -> tuple[FinetuneConfig, RunContext]:
    """The config and run context of the old call ``finetune_snn(path, out_dir=..., beta=...)``."""
    legacy.warn(
        "finetune_snn(path, out_dir=..., beta=..., ...)",
        "finetune_snn(path, FinetuneConfig(...), RunContext(out_dir=...))",
    )
    run, options = legacy.split_run(keywords)
    return FinetuneConfig(**options), run


def _finetune(source: Path, config: FinetuneConfig, run: RunContext, augment: bool) -> Path:
    """:func:`finetune_snn` with its arguments checked: load, build the loss, train, save."""
    c = config
    out = Path(run.out_dir)
    path = out / f"{run.name or SNN_NAME}.safetensors"
    if path.resolve() == source.resolve():
        raise UserError(
            f"finetuning would overwrite its source checkpoint {source}; use another --out or name"
        )
    train_estimator, adversary_spec = _check_finetune_options(c)
    snn, meta = _load_finetune_source(source, c, run.device)
    torch.manual_seed(run.seed)  # dropout masks; everything else: the trainer's generator
    data = load_dataset(str(meta["dataset"]["spec"]), run.data_dir)
    if c.cutout is not None:
        if c.cutout < 0:
            raise UserError(f"cutout must be >= 0 (0 = off), got {c.cutout}")
        data = dataclasses.replace(data, info=dataclasses.replace(data.info, cutout=int(c.cutout)))
    loss, adversary_spec, finetune_adversary, teacher_name, freeze = _finetune_loss(
        c, snn, meta, source, run.device, adversary_spec
    )
    setup = {
        "source": str(source),
        "T": snn.T,
        "momentum": c.momentum,
        "train_thresholds": c.train_thresholds,
        "train_weights": c.train_weights,
        "augment": augment,
        "estimator": train_estimator.name,
    }
    if c.add_biases:  # only when on: older runs' resume fingerprints stay valid
        setup["add_biases"] = True
    if c.objective != "robust_finetune" or c.objective_options:
        setup["objective"] = loss.describe()
    if adversary_spec is not None:
        setup["adversary"] = adversary_spec.describe()
    if teacher_name is not None:
        setup["teacher"] = teacher_name
    if c.cutout is not None:
        setup["cutout"] = int(c.cutout)
    if c.T_choices is not None:
        setup["T_choices"] = list(c.T_choices)
    trainer = _trainer_config(
        run, FINETUNE_PHASE, c.epochs, c.batch_size, c.optimizer_config(), augment
    )
    history, evaluation = _fit_and_evaluate(
        snn, loss, data, trainer, freeze=freeze, setup=setup, eps=c.eps, eval_n=run.eval_n,
        estimator=train_estimator,
    )  # fmt: skip
    adversary = (
        finetune_adversary.describe()
        if finetune_adversary is not None
        else None
        if not getattr(loss, "uses_adversary", True)
        else parse_adversary(
            {"attack": "kl", "params": {"steps": int(c.adversary_steps)}},
            default_estimator=train_estimator.name,
        ).describe()
    )
    finetune = _finetune_metadata(c, loss, snn, data, augment, train_estimator, run.seed)
    finetune.update(adversary=adversary, teacher=teacher_name)
    source_meta = {
        "path": str(source),
        "T": meta.get("T"),
        "thresholds": meta.get("thresholds"),
        "metadata": {k: v for k, v in meta.items() if k not in _SNN_KEYS and k != "dataset"},
    }
    extra: dict[str, Any] = {}
    if "normalization" in meta:
        extra["normalization"] = meta["normalization"]
    _save_snn_on_main(
        path,
        snn,
        dataset=meta["dataset"],
        **extra,
        finetune=finetune,
        source=source_meta,
        eps=float(c.eps),
        **evaluation,
        train=history[-1] if history else None,
        provenance=provenance(run.device),
    )
    return path


def _check_finetune_options(c: FinetuneConfig) -> tuple[Estimator, Any]:
    """The loss's estimator and the adversary spec (None: the objective's own KL adversary),
    or a one-line UserError for options no finetuning can run with."""
    if not (c.train_thresholds or c.train_weights):
        raise UserError("finetune: nothing to train (train_thresholds and train_weights are off)")
    try:
        train_estimator = parse_estimator(c.estimator)
    except ValueError as exc:
        raise UserError(f"finetune estimator: {exc}") from None
    if c.train_thresholds and not gives_threshold_gradient(train_estimator):
        raise UserError(
            f"finetune estimator {train_estimator.name!r} gives the thresholds no gradient (its "
            "backward is written for attacks); use a BPTT-type estimator (e.g. bptt-rel-pcw-1, "
            "bptt-pcw-4, assg-atan-0.425-dr) or bptr, or freeze the thresholds"
        )
    if c.objective not in FINETUNE_OBJECTIVES:
        raise UserError(
            f"unknown finetuning objective {c.objective!r}; valid: {', '.join(FINETUNE_OBJECTIVES)}"
        )
    return train_estimator, None if c.adversary is None else parse_adversary(c.adversary)


def _load_finetune_source(
    source: Path, c: FinetuneConfig, device: str
) -> tuple[SpikingNetwork, dict[str, Any]]:
    """The SNN to finetune, at ``c.T`` and with ``c.add_biases``, and its checkpoint metadata."""
    model, meta = load_model(source, device)
    if not isinstance(model, SpikingNetwork):
        raise UserError(
            f"finetune needs an SNN checkpoint, {source} holds a {meta.get('kind')!r} model; "
            "convert it first (robustsnn convert)"
        )
    snn = model
    if not (meta.get("dataset") or {}).get("spec"):
        raise UserError(
            f"checkpoint {source} does not name its dataset (metadata dataset.spec); "
            "it was not written by robustsnn convert/train-snn"
        )
    T = c.T
    if T is not None and int(T) != snn.T:
        if BNTT in getattr(snn, "transforms", []):
            raise UserError(
                f"{source} is a BNTT network with one BatchNorm per step for T={snn.T}; "
                f"it cannot be finetuned at T={T}"
            )
        if int(T) < 1:
            raise UserError(f"T must be >= 1, got {T}")
        snn.T = int(T)
    if c.T_choices is not None and BNTT in getattr(snn, "transforms", []):
        raise UserError(
            f"{source} is a BNTT network with one BatchNorm per step for T={snn.T}; "
            "it cannot be finetuned at drawn T values (T_choices)"
        )
    if c.add_biases:
        from robustsnn.models import add_zero_biases

        if add_zero_biases(snn.body):
            snn.arch = {**snn.arch, "bias": True}  # type: ignore[assignment, dict-item]
    return snn, meta


def _finetune_loss(
    c: FinetuneConfig,
    snn: SpikingNetwork,
    meta: dict[str, Any],
    source: Path,
    device: str,
    adversary_spec: Any,
) -> tuple[Objective, Any, FinetuneAdversary | None, str | None, list[str]]:
    """The finetuning loss (objective, adversary, teacher, frozen BatchNorm statistics, drawn
    T), the adversary spec it runs (None: none or the objective's own), its adversary, the
    teacher's name and the names of the frozen parameters."""
    shared: dict[str, Any] = {"eps": float(c.eps), "beta": float(c.beta), "alpha": float(c.alpha)}
    shared["steps"] = int(c.adversary_steps)
    accepted = objective_params(c.objective)
    loss: Objective = build_objective(
        c.objective,
        **{k: v for k, v in shared.items() if k in accepted},
        **dict(c.objective_options or {}),
    )
    if not getattr(loss, "uses_adversary", True):
        adversary_spec = None  # a loss without an adversarial term (tgo by default) runs no attack
    prepare_model(loss, snn)  # tgo: noisy neurons, trained with and saved
    teacher_name = None
    finetune_adversary = None
    if adversary_spec is not None:
        finetune_adversary = FinetuneAdversary(
            adversary_spec, eps=float(c.eps), alpha=float(c.alpha)
        )
        loss.adversary = finetune_adversary  # type: ignore[attr-defined]
    if c.objective == "distill":
        loss.teacher, teacher_name = load_teacher(c.teacher, snn, meta, source, device)  # type: ignore[attr-defined]
    threshold_names, weight_names = _parameter_names(snn)
    freeze: list[str] = []
    if not c.train_thresholds:
        freeze += threshold_names
    if not c.train_weights:
        freeze += weight_names
        loss = FrozenBatchNormStatistics(loss)
    if c.T_choices is not None:
        loss = TimeStepDraw(loss, c.T_choices)
    return loss, adversary_spec, finetune_adversary, teacher_name, freeze


def _finetune_metadata(
    c: FinetuneConfig,
    loss: Objective,
    snn: SpikingNetwork,
    data: Dataset,
    augment: bool,
    estimator: Estimator,
    seed: int,
) -> dict[str, Any]:
    """The checkpoint's ``finetune`` metadata (adversary and teacher added by the caller)."""
    return {
        "objective": loss.describe(),
        "beta": float(c.beta),
        "eps": float(c.eps),
        "alpha": float(c.alpha),
        "adversary_steps": int(c.adversary_steps),
        "add_biases": c.add_biases,
        "cutout": data.info.cutout if augment else 0,
        "epochs": c.epochs,
        "lr": c.lr,
        "momentum": c.momentum,
        "weight_decay": c.weight_decay,
        "batch_size": c.batch_size,
        "optimizer": "sgd",
        "schedule": "cosine",
        "T": snn.T,
        "T_choices": list(c.T_choices) if c.T_choices is not None else None,
        "train_thresholds": c.train_thresholds,
        "train_weights": c.train_weights,
        "augment": augment,
        "estimator": estimator.name,
        "adversary": None,
        "teacher": None,
        "seed": seed,
    }


# ----------------------------------------------------------------------------- from scratch
def build_spiking_model(
    model_name: str,
    data_info: DatasetInfo,
    *,
    T: int,
    leak: float = 1.0,
    reset: str = "hard",
    bntt: bool = False,
    init_threshold: float = 1.0,
    model_kwargs: Mapping[str, Any] | None = None,
) -> SpikingNetwork:
    """A freshly initialized SNN: the zoo model ``model_name`` (for a dataset with ``data_info``)
    with its ReLUs replaced by IF/LIF neurons whose thresholds start at ``init_threshold``,
    optionally with BNTT. Carries ``arch``, ``conversion`` and ``transforms`` for ``save_snn``."""
    # an SNN trained from scratch starts from a zero membrane (not conversion's theta/2)
    cfg = ConversionConfig(T=int(T), leak=float(leak), reset=reset, v_init=0.0)
    if init_threshold < cfg.threshold_min:
        raise UserError(
            f"init_threshold must be >= the threshold minimum {cfg.threshold_min}, "
            f"got {init_threshold}"
        )
    ann = build_model(
        model_name,
        num_classes=data_info.num_classes,
        in_channels=data_info.channels,
        image_size=data_info.image_size,
        mean=data_info.mean,
        std=data_info.std,
        **dict(model_kwargs or {}),
    )
    try:
        body = spiking_body(ann, cfg)
        with torch.no_grad():
            for module in body.modules():
                if isinstance(module, SpikingNeuron):
                    module.threshold.fill_(float(init_threshold))
        transforms: list[str] = []
        if bntt:
            body = bntt_transform(body, {"T": int(T)})
            transforms.append(BNTT)
        snn = SpikingNetwork(body, T=int(T))
    except ValueError as exc:  # bad leak/reset/T values from the neuron or network
        raise UserError(f"train-snn: {exc}") from None
    snn.arch = getattr(ann, "arch", {"name": model_name})  # type: ignore[assignment]
    snn.conversion = asdict(cfg)  # type: ignore[assignment]
    snn.transforms = transforms  # type: ignore[assignment]
    return snn


_OPTIMIZER_KEYWORDS = {"optimizer": "name", "lr": "lr", "momentum": "momentum",
                       "weight_decay": "weight_decay"}  # fmt: skip
TRAIN_SNN_KEYWORDS = frozenset(
    {*legacy.config_fields(SNNTrainingConfig), *legacy.RUN_FIELDS, *_OPTIMIZER_KEYWORDS,
     "model_kwargs", "dataset_spec", "model_name"}
)  # fmt: skip
"""Keywords of :func:`train_snn`'s old call style that are its own options (not the objective's
parameters): ``robustsnn train-snn --objective-option`` refuses them."""


def _train_snn_keywords(
    objective: str | None, keywords: dict[str, Any]
) -> tuple[SNNTrainingConfig, RunContext, dict[str, Any] | None]:
    """The config, run context and model keywords of ``train_snn(dataset, model, objective,
    T=..., epochs=..., out_dir=..., lr=..., **objective_params)``."""
    legacy.warn(
        "train_snn(dataset, model, objective, T=..., out_dir=..., ...)",
        "train_snn(dataset, model, SNNTrainingConfig(...), RunContext(out_dir=...))",
    )
    run, rest = legacy.split_run(keywords)
    model_kwargs = rest.pop("model_kwargs", None)
    optimizer = {v: rest.pop(k) for k, v in _OPTIMIZER_KEYWORDS.items() if k in rest}
    fields = legacy.config_fields(SNNTrainingConfig)
    options = {k: v for k, v in rest.items() if k in fields}
    objective_options = {k: v for k, v in rest.items() if k not in fields}
    if objective is None:
        objective = options.pop("objective")
    config = SNNTrainingConfig(
        **options,
        objective=objective,
        objective_options=objective_options,
        optimizer=OptimizerConfig(**optimizer),
    )
    return config, run, model_kwargs


def train_snn(
    dataset: str,
    model: str,
    config: SNNTrainingConfig | str | None = None,
    run: RunContext | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    **keywords: Any,
) -> Path:
    """Train an SNN baseline from scratch with BPTT (PCW surrogate, gamma 1); returns its path.

    ``train_snn(dataset, model, SNNTrainingConfig(...), RunContext(out_dir=...))``: the zoo
    model ``model`` (with ``model_kwargs``) for the dataset spec ``dataset``, with IF
    (``leak=1``) or LIF (e.g. ``leak=0.99, reset="soft"``) neurons in place of its ReLUs,
    thresholds learnable from ``init_threshold`` (clamped to >= 0.03 after every step).
    ``objective``: ``natural`` (vanilla SNN), ``rfgsm_at`` (RFGSM adversarial training at
    ``eps``), or any registered objective (``objective_options``: its parameters);
    ``snn_rat=True`` adds the orthogonality regularizer ``orth_beta * sum ||W W^T - I||_F^2``
    (:class:`~robustsnn.training.regularizers.OrthogonalityRegularizer`), which with
    ``rfgsm_at`` is the SNN-RAT baseline (``objective="snn_rat"`` is shorthand for exactly that).
    ``bntt=True`` gives every BatchNorm one copy per time step (:mod:`robustsnn.snn.bntt`).
    ``input_encoding="poisson"`` / ``threshold_noise`` train (and save) a random SNN
    (:mod:`robustsnn.snn.encoding`). Adversaries are generated against the SNN itself with the
    same BPTT estimator. The old call ``train_snn(dataset, model, objective, T=...,
    out_dir=..., lr=..., **objective_params)`` still works for one release, with a
    DeprecationWarning.

    Writes ``<out>/<name>.safetensors`` + ``.json`` (settings, dataset, clean and PGD-20
    accuracy at ``eps`` on ``eval_n`` stratified test images, provenance); resumable.
    """
    if config is None or isinstance(config, str):
        if run is not None:
            raise TypeError(
                "train_snn(dataset, model, config, run): config is an SNNTrainingConfig"
            )
        config, run, model_kwargs = _train_snn_keywords(
            config, {**keywords, "model_kwargs": model_kwargs}
        )
    elif keywords:
        raise TypeError(f"train_snn: pass {', '.join(keywords)} in the config or run context")
    if run is None:
        raise TypeError("train_snn(dataset, model, config, run): give the run context")
    return _train_snn(dataset, model, config, run, dict(model_kwargs or {}))


def _train_snn(
    dataset_spec: str,
    model_name: str,
    c: SNNTrainingConfig,
    run: RunContext,
    model_kwargs: dict[str, Any],
) -> Path:
    """:func:`train_snn` with its arguments checked."""
    objective, snn_rat = c.objective, c.snn_rat
    if objective == SNN_RAT:
        objective, snn_rat = "rfgsm_at", True
    torch.manual_seed(run.seed)  # weight initialization and dropout; the rest uses generators
    data = load_dataset(dataset_spec, run.data_dir)
    info = data.info
    snn = build_spiking_model(
        model_name,
        info,
        T=c.T,
        leak=c.leak,
        reset=c.reset,
        bntt=c.bntt,
        init_threshold=c.init_threshold,
        model_kwargs=model_kwargs,
    )
    configure_stochastic(snn, c.input_encoding, c.threshold_noise)
    params = dict(c.objective_options)
    if "eps" in objective_params(objective):
        params.setdefault("eps", float(c.eps))
    if objective == "tgo" and c.threshold_noise:  # --threshold-noise is TGO's noisy-neuron std
        if params.setdefault("noise", float(c.threshold_noise)) != float(c.threshold_noise):
            raise UserError(
                f"train-snn: threshold_noise={c.threshold_noise} and the tgo objective's "
                f"noise={params['noise']} disagree; give one of them"
            )
    regularizer = OrthogonalityRegularizer(c.orth_beta) if snn_rat else None
    loss = build_objective(objective, regularizer=regularizer, **params)
    prepare_model(loss, snn)  # tgo: noisy neurons, trained with and saved
    baseline = (
        SNN_RAT
        if snn_rat and objective == "rfgsm_at"
        else "vanilla"
        if objective == "natural" and not snn_rat
        else objective
    )
    opt = c.optimizer
    setup = {
        "dataset": dataset_spec,
        "model": model_name,
        "model_kwargs": model_kwargs or {},
        "T": c.T,
        "leak": c.leak,
        "reset": c.reset,
        "bntt": c.bntt,
        "init_threshold": c.init_threshold,
        "momentum": opt.momentum,
        "augment": c.augment,
        "estimator": DEFAULT_ESTIMATOR.name,
    }
    if c.input_encoding != "direct" or c.threshold_noise:  # part of the resume key when set
        setup.update(input_encoding=c.input_encoding, threshold_noise=c.threshold_noise)
    trainer = _trainer_config(run, TRAIN_SNN_PHASE, c.epochs, c.batch_size, opt, c.augment)
    history, evaluation = _fit_and_evaluate(
        snn, loss, data, trainer, setup=setup, eps=c.eps, eval_n=run.eval_n
    )
    training = {
        "baseline": baseline,
        "objective": loss.describe(),
        "eps": float(c.eps),
        "epochs": c.epochs,
        "batch_size": c.batch_size,
        "optimizer": opt.name,
        "lr": opt.lr,
        "momentum": opt.momentum,
        "weight_decay": opt.weight_decay,
        "schedule": opt.schedule,
        "T": c.T,
        "leak": c.leak,
        "reset": c.reset,
        "bntt": c.bntt,
        "snn_rat": snn_rat,
        "orth_beta": c.orth_beta if snn_rat else None,
        "init_threshold": c.init_threshold,
        "augment": c.augment,
        "estimator": DEFAULT_ESTIMATOR.name,
        "seed": run.seed,
    }
    path = Path(run.out_dir) / f"{run.name or SNN_NAME}.safetensors"
    _save_snn_on_main(
        path,
        snn,
        dataset=_dataset_metadata(dataset_spec, data),
        normalization={"mean": list(info.mean), "std": list(info.std)},
        objective=loss.describe(),
        training=training,
        eps=float(c.eps),
        **evaluation,
        train=history[-1] if history else None,
        provenance=provenance(run.device),
    )
    return path


__all__ = [
    "FrozenBatchNormStatistics",
    "build_spiking_model",
    "evaluate_snn",
    "finetune_snn",
    "stratified_indices",
    "train_snn",
]
