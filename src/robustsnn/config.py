"""Validated run configuration: YAML files plus ``--set section.key=value`` overrides, and the
typed configs of the training entry points.

Unknown keys and wrong types are a one-line UserError naming the key. eps values accept
fractions such as ``8/255``.

The config objects are the one API of the training functions and hold their defaults, once:
:func:`~robustsnn.training.ann.train_ann` takes an :class:`ANNConfig`,
:func:`~robustsnn.training.snn.finetune_snn` a :class:`FinetuneConfig`,
:func:`~robustsnn.training.snn.train_snn` an :class:`SNNTrainingConfig` (each with a
:class:`RunContext`: where the result goes and how the step runs), and
:class:`~robustsnn.training.trainer.Trainer` a ``TrainerConfig`` with an
:class:`OptimizerConfig`. ``robustsnn run`` (the YAML sections) and the command line build
these objects; where their defaults differ, a named profile here says so and why
(:meth:`ANNConfig.command_line`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustsnn.errors import UserError


def parse_eps(value: str | float | int, key: str = "eps") -> float:
    """``8/255`` or ``0.0314`` -> float in [0, 1]; anything else is a UserError naming ``key``."""
    from robustsnn.evaluation.evaluate import parse_eps as parse

    try:
        return parse(value)
    except UserError as exc:
        raise UserError(f"{key}: {exc}") from None


EPS = "eps"  # marker in field metadata: parse with parse_eps


def eps_field(default: float) -> Any:
    return field(default=default, metadata={EPS: True})


def validate_optimizer(lr: float, momentum: float, weight_decay: float, where: str = "") -> None:
    """One-line UserError unless lr > 0, 0 <= momentum < 1 and weight_decay >= 0 (all finite).

    ``where`` prefixes the names (``ann.`` or ``finetune.`` for config keys)."""
    problems = []
    if not (math.isfinite(lr) and lr > 0):
        problems.append(f"{where}lr must be > 0 (got {lr:g})")
    if not (math.isfinite(momentum) and 0 <= momentum < 1):
        problems.append(f"{where}momentum must be in [0, 1) (got {momentum:g})")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        problems.append(f"{where}weight_decay must be >= 0 (got {weight_decay:g})")
    if problems:
        raise UserError("; ".join(problems))


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer and its learning-rate schedule (per optimizer step), as the trainer runs
    them: ``name`` sgd (with ``momentum``) or adam; ``schedule`` cosine or constant."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"


@dataclass(frozen=True)
class RunContext:
    """Where a training entry point writes and how it runs, not what it trains: the output
    folder and checkpoint name (None = the entry point's own: ``ann`` or ``snn``), the seed, the
    torch device, progress bars off (``quiet``), the dataset folder, and how many stratified
    test images the saved checkpoint's clean and PGD-20 accuracy is measured on (``eval_n``)."""

    out_dir: str | Path
    name: str | None = None
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
    data_dir: str | Path | None = None
    eval_n: int = 1000


@dataclass
class DataConfig:
    dataset: str = "mnist5k"
    data_dir: str | None = None
    download: bool = False  # fetch a missing named dataset (checksummed), like --download


@dataclass
class ModelConfig:
    """The ``model`` section. ``width`` and ``fc`` default to the quickstart's ``cnn_small``
    (8, 64); a run config that names another model without them gets that model's own defaults
    (:func:`load_config`), not a ``cnn_small``-sized copy of it."""

    name: str = "cnn_small"
    width: int | None = 8
    fc: int | None = 64
    activation: str | None = None  # relu (default) or qcfs (conversion-ready quantised clip)
    qcfs_levels: int | None = None  # QCFS quantisation levels L (default 8)
    qcfs_lam: float | None = None  # initial QCFS clip level lam (default 8.0, the QCFS code's)

    def kwargs(self) -> dict[str, Any]:
        """The zoo model's keyword arguments: the options that are set (None = the model's)."""
        names = ("width", "fc", "activation", "qcfs_levels", "qcfs_lam")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


STEPS_OBJECTIVES = ("pgd_at", "mart", "trades")
"""The ANN objectives that take ``ANNConfig.steps`` (their attack's steps)."""


@dataclass
class ANNConfig:
    """ANN training (step 1): the ``ann`` section of a run config and the config of
    :func:`~robustsnn.training.ann.train_ann`. ``ANNConfig()`` is the run's (quickstart)
    default; :meth:`command_line` is ``robustsnn train-ann``'s."""

    objective: str = "pgd_at"
    eps: float = eps_field(0.1)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    beta: float | None = None  # TRADES (6) / MART (4) defaults when None
    steps: int = 10
    augment: bool = True
    momentum: float = 0.9
    cutout: int | None = None  # cutout hole side; None = the dataset's default, 0 = off

    @classmethod
    def command_line(cls) -> ANNConfig:
        """``robustsnn train-ann``'s defaults: training radius 2/255 and 10 epochs, where the
        run config (``ANNConfig()``) has 0.1 and 3. Both are kept as they are (every entry point
        keeps its effective defaults): the run's default is the minutes-long CPU quickstart on
        MNIST-5k, whose radius is the quickstart's evaluation radius; the command trains one
        ANN on its own, longer, at a small radius. Everything else is the same."""
        return cls(eps=2 / 255, epochs=10)

    def optimizer_config(self) -> OptimizerConfig:
        """The optimizer with the cosine schedule the ANN trains with."""
        return OptimizerConfig(
            name=self.optimizer, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def objective_params(self) -> dict[str, Any]:
        """The objective's parameters this section sets: ``beta`` when given (else the
        objective's: TRADES 6, MART 4) and ``steps`` for the PGD-based objectives."""
        params: dict[str, Any] = {}
        if self.beta is not None:
            params["beta"] = self.beta
        if self.objective in STEPS_OBJECTIVES:
            params["steps"] = self.steps
        return params


@dataclass
class SNNConfig:
    T: int = 8
    calib_T: int = 100
    percentile: float = 99.7
    scale: float = 0.3  # percentile thresholds only; the paper's recipe: percentile x 0.3, hard, 0
    reset: str = "soft"
    leak: float = 1.0
    bn: str = "keep"
    calib_batches: int = 10
    calib_batch_size: int = 64
    v_init: float = 0.5  # initial membrane / threshold: 0 (paper) or 0.5 (rounding)
    threshold: str = "mse"  # percentile (x scale) | mse (T-aware) | qcfs (lam of a QCFS ANN)
    calibration: str = "none"  # none | bias | potential (post-conversion correction)
    correction_images: int = 1024
    # random SNN parts (robustsnn.snn.encoding): poisson = Bernoulli rate-coded input spikes;
    # threshold_noise = std of a Gaussian noise on every threshold, relative to it
    input_encoding: str = "direct"
    threshold_noise: float = 0.0


ROBUST_ADVERSARY = "pgd[steps=3]/bptt-rel-pcw-1+ann-proxy+bptr+assg-atan-0.425-dr"
"""The default finetuning adversary (issue 21, docs/RESULTS.md section 11): PGD-3 on the
cross-entropy through one of four estimators drawn per batch (threshold-relative PCW, the ANN
proxy, BPTR, ASSG with the reset detached), so the SNN cannot learn to hide behind one
surrogate."""


@dataclass
class FinetuneConfig:
    """Robust finetuning (step 3): the ``finetune`` section of a run config and the config of
    :func:`~robustsnn.training.snn.finetune_snn`. ``FinetuneConfig()`` is the one recipe of
    ``robustsnn run``, ``robustsnn finetune`` and the library (no separate command-line profile:
    the two entry points agree on every field); a run only fills ``teacher`` with its own ANN
    where it is null. The default is issue 21's recipe (distillation from the source ANN on
    adversarial examples from drawn estimators, loss through the threshold-relative surrogate);
    the paper's finetuning is ``objective: robust_finetune``, ``adversary: null``, ``estimator:
    bptt-pcw-1``, ``beta: 2``, ``lr: 0.001`` (configs/paper/*.yaml)."""

    epochs: int = 2
    beta: float = 6.0
    eps: float = eps_field(0.1)
    alpha: float = eps_field(1 / 255)
    adversary_steps: int = 1
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-3
    batch_size: int = 64
    train_thresholds: bool = True
    train_weights: bool = True
    add_biases: bool = False  # the paper's finetuning adds zero-initialised biases (--use_bias)
    cutout: int | None = None  # cutout hole side; None = the dataset's default, 0 = off
    # gradient estimator of the loss (and of the adversary when `adversary` is null): the
    # threshold-relative PCW(1) (scale-invariant), or the paper's bptt-pcw-1
    estimator: str = "bptt-rel-pcw-1"
    # the finetuning adversary as an attack spec (robustsnn.training.adversaries), e.g.
    # "pgd[steps=3]/bptt-rel-pcw-1+ann-proxy" or {attack, estimator, params}; null = the
    # paper's KL adversary (adversary_steps) through `estimator`
    adversary: Any = ROBUST_ADVERSARY
    objective: str = "distill"  # distill | robust_finetune (the paper's) | adversarial_ce
    objective_options: dict[str, Any] = field(default_factory=dict)  # e.g. {clean_weight: 1}
    teacher: str | None = None  # distill: None/"source" = the source ANN, "proxy", or a path
    T: int | None = None  # finetune (and save) at this T; null = the conversion's snn.T
    T_choices: list[int] | None = None  # latency-aware: each batch at a T drawn from e.g. [4, 8]

    def optimizer_config(self) -> OptimizerConfig:
        """SGD with momentum and the cosine schedule, as finetuning always runs."""
        return OptimizerConfig(
            name="sgd", lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )


@dataclass(frozen=True)
class SNNTrainingConfig:
    """An SNN baseline trained from scratch with BPTT (PAPER.md section 6,
    :func:`~robustsnn.training.snn.train_snn`); the defaults are ``robustsnn train-snn``'s.

    The network: the zoo model with IF (``leak=1``) or LIF neurons at ``T`` steps, ``reset``,
    thresholds learnable from ``init_threshold``, ``bntt`` (one BatchNorm per step), a random
    SNN's ``input_encoding`` (direct, poisson) and ``threshold_noise``. The training:
    ``objective`` (natural, rfgsm_at, snn_rat = rfgsm_at + the orthogonality regularizer, or
    any registered one) with ``objective_options``, at radius ``eps``; ``snn_rat`` adds the
    regularizer ``orth_beta * sum ||W W^T - I||_F^2`` to any objective."""

    objective: str = "natural"
    objective_options: dict[str, Any] = field(default_factory=dict)
    T: int = 8
    leak: float = 1.0
    reset: str = "hard"
    bntt: bool = False
    init_threshold: float = 1.0
    input_encoding: str = "direct"
    threshold_noise: float = 0.0
    snn_rat: bool = False
    orth_beta: float = 1e-3
    eps: float = 8 / 255
    epochs: int = 10
    batch_size: int = 64
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    augment: bool = True


@dataclass
class EvalConfig:
    n: int = 200
    eps: float = eps_field(0.1)
    ensemble: str = "pgd-fast"
    batch_size: int = 100
    diagnostics: str = "fast"
    split: str = "test"
    # escalate to stronger presets while a masking check fails or late members still break
    # samples (robustsnn.evaluation.escalate); False restores a single fixed ensemble
    escalate: bool = True
    escalate_levels: int = 1  # CPU-friendly default; the CIFAR configs set 2
    # robustness vs latency: evaluate both SNNs again at these T (same ensemble, escalation
    # target, images and eps; latency/<model>/latency.json and a figure); [] = off
    latency_T: list[int] = field(default_factory=list)
    # keep every break's adversarial example, member and logits in
    # eval/<model>/adversarial.safetensors (robustsnn.evaluation.adversarial; `robustsnn recheck`)
    save_adversarial: bool = True
    # processes on a CPU, one thread each, sharing the evaluation's batches with the result of
    # one process (robustsnn.evaluation.workers); 0 = one per core, 1 = the run's own process
    workers: int = 0
    # a random model (robustsnn.evaluation.stochastic): auto = EOT attacks and majority-of-M
    # verdicts when two forward passes differ; off = single draws (a check fails); force
    randomness: str = "auto"
    prediction_draws: int = 15  # M, draws per prediction of a random model (odd)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ann: ANNConfig = field(default_factory=ANNConfig)
    snn: SNNConfig = field(default_factory=SNNConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, annotation: Any, key: str, is_eps: bool) -> Any:
    """Convert ``value`` (YAML-parsed or a CLI string) to the field's type, or fail on ``key``."""
    if is_eps:
        return parse_eps(value, key)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, False)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "yes",
            "1",
            "on",
            "false",
            "no",
            "0",
            "off",
        ):
            return value.lower() in ("true", "yes", "1", "on")
        raise UserError(f"config key {key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise UserError(f"config key {key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise UserError(f"config key {key}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise UserError(f"config key {key}: expected a number, got {value!r}")
        try:
            return float(value) if not isinstance(value, str) else float(parse_eps_like(value))
        except ValueError:
            raise UserError(f"config key {key}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"config key {key}: expected a string, got {value!r}")
        return str(value)
    return value


def parse_eps_like(text: str) -> float:
    """A float written plainly or as a fraction (``1/255``)."""
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(obj: Any, values: dict[str, Any], prefix: str) -> None:
    if not isinstance(values, dict):
        raise UserError(
            f"config section {prefix.rstrip('.') or '<root>'}: expected a mapping, got {values!r}"
        )
    hints = _hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in fields:
            valid = ", ".join(f"{prefix}{k}" for k in fields)
            raise UserError(f"unknown config key {full!r}; valid keys here: {valid}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full, bool(fields[key].metadata.get(EPS))))


def set_value(config: RunConfig, dotted: str, raw: str) -> None:
    """Apply one ``--set section.key=value`` override (value parsed as YAML scalar)."""
    parts = dotted.split(".")
    try:
        value: Any = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (int, float)) and "/" in raw:
        value = raw
    if isinstance(value, str) and "/" in raw:
        value = raw
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    _apply(config, nested, "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults (the embedded MNIST-5k quickstart), then the YAML file, then ``--set`` overrides."""
    config = RunConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {p} (see configs/ for examples)")
        try:
            data = yaml.safe_load(p.read_text())
            if data is None:  # an empty file would silently run the default job
                raise UserError(
                    f"config file {p} is empty; write the keys to change (see configs/), or "
                    "leave CONFIG out for the default job"
                )
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" line {line + 1}" if line is not None else ""
            raise UserError(f"config file {p}{where} is not valid YAML; fix the syntax") from None
        _apply(config, data, "")
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE (e.g. finetune.epochs=5), got {item!r}")
        key, raw = item.split("=", 1)
        set_value(config, key.strip(), raw.strip())
    _model_defaults(config.model, data if path is not None else None, overrides or [])
    validate_config(config)
    return config


QUICKSTART_MODEL = "cnn_small"
"""The model whose sizes are :class:`ModelConfig`'s ``width`` and ``fc`` defaults."""


def _model_defaults(model: ModelConfig, data: Any, overrides: list[str]) -> None:
    """Clear ``width`` / ``fc`` that come from the quickstart's defaults when the config names
    another model: ``model: {name: resnet20}`` is ResNet-20 at its own width 1, not 8 (which
    would build a network 64x the size), and has no ``fc`` to reject."""
    if model.name == QUICKSTART_MODEL:
        return
    given = set()
    section = data.get("model") if isinstance(data, dict) else None
    if isinstance(section, dict):
        given |= set(section)
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.startswith("model."):
            given.add(key[len("model.") :])
    for key in ("width", "fc"):
        if key not in given:
            setattr(model, key, None)


def validate_config(config: RunConfig) -> None:
    """Values no stage can run with, named by their config key (one-line UserError)."""
    a, f = config.ann, config.finetune
    validate_optimizer(a.lr, a.momentum, a.weight_decay, where="ann.")
    validate_optimizer(f.lr, f.momentum, f.weight_decay, where="finetune.")
    for key, value in (("ann.cutout", a.cutout), ("finetune.cutout", f.cutout)):
        if value is not None and value < 0:
            raise UserError(f"{key} must be >= 0 (0 = off), got {value}")
    from robustsnn.training.adversaries import parse_adversary
    from robustsnn.training.objectives import FINETUNE_OBJECTIVES, objective_params

    if f.adversary is not None:
        parse_adversary(f.adversary)
    if f.objective not in FINETUNE_OBJECTIVES:
        raise UserError(
            f"finetune.objective {f.objective!r} is not a finetuning objective; valid: "
            f"{', '.join(FINETUNE_OBJECTIVES)}"
        )
    if f.T is not None and (isinstance(f.T, bool) or not isinstance(f.T, int) or f.T < 1):
        raise UserError(f"finetune.T must be an integer >= 1 or null, got {f.T!r}")
    if f.T_choices is not None and (
        not f.T_choices
        or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in f.T_choices)
    ):
        raise UserError(
            f"finetune.T_choices must be a non-empty list of integers >= 1 (e.g. [4, 8]) or "
            f"null, got {f.T_choices!r}"
        )
    if not isinstance(f.objective_options, dict):
        raise UserError("finetune.objective_options must be a mapping, e.g. {clean_weight: 1}")
    unknown = sorted(set(f.objective_options) - set(objective_params(f.objective)))
    if unknown:
        raise UserError(
            f"finetune.objective_options: {', '.join(unknown)} not a parameter of "
            f"{f.objective!r}; valid: {', '.join(objective_params(f.objective))}"
        )
    from robustsnn.evaluation.stochastic import StochasticConfig
    from robustsnn.snn.encoding import check_stochastic_options

    check_stochastic_options(config.snn.input_encoding, config.snn.threshold_noise, "snn.")
    # YAML's unquoted `off` arrives as False: store the mode's name
    config.eval.randomness = StochasticConfig(
        config.eval.randomness, config.eval.prediction_draws
    ).mode
    from robustsnn.validation import validate_run_config

    validate_run_config(config)  # every value and name, before any stage starts


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
