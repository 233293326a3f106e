"""The training loop: objective x optimizer x cosine schedule, with exact resume.

One :class:`Trainer` runs ``epochs`` passes of an objective over a dataset. After every epoch it
appends one JSON line to ``<out>/log.jsonl`` and atomically rewrites the training state
``<out>/<name>.state.safetensors`` (weights, flattened optimizer state, data generator state,
global RNG state, epoch). :meth:`Trainer.fit` resumes from that state, so a run killed after
epoch k and restarted ends with the same weights, bit for bit on CPU, as an uninterrupted one.

Under torchrun (more than one process, :mod:`robustsnn.distributed`) the same Trainer runs
DistributedDataParallel with the schedule of one process:

- **data**: every rank draws the same permutation and augments the same *global* batch of
  ``batch_size`` images from one shared generator (seeded with ``seed``), then keeps its
  contiguous slice of it (``_local_rows``). The losses are weighted by each slice's share, so the
  averaged gradient is the gradient of the global batch's mean loss, also for a last batch that
  does not split evenly; ``steps_per_epoch`` and the cosine schedule are those of one process.
  A deterministic objective on a model without batch statistics takes the same steps as one
  process (up to the summation order of the gradient all-reduce).
- **randomness inside a step** (attack random starts, dropout) comes from per-rank streams
  reseeded from ``(seed, rank, epoch)`` at every epoch: independent across ranks, and a resumed
  run repeats them without saving them. With one process the objective draws from the shared
  generator as before, so world size 1 is today's code path.
- **attacks** inside objectives run on the unwrapped module (``inner.attack_mode``), so no
  collective happens inside an attack loop.
- **BatchNorm**: in training mode each rank normalizes with its own slice's statistics (plain
  BatchNorm, not SyncBatchNorm: torch's SyncBatchNorm has no CPU/gloo path), and DDP broadcasts
  rank 0's running statistics at every forward; after training every rank takes rank 0's
  buffers, the model rank 0 saves.
- **files**: rank 0 writes the log and the training state (atomically), then all ranks meet at a
  barrier; a restart after a kill of any rank resumes every rank from that one state file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from robustsnn import distributed
from robustsnn.config import OptimizerConfig, validate_optimizer
from robustsnn.data import Dataset, iterate_batches
from robustsnn.errors import UserError
from robustsnn.io.atomic import atomic_write_text
from robustsnn.io.checkpoint import load_tensors, save_tensors

ObjectiveFn = Callable[[nn.Module, Tensor, Tensor, "torch.Generator | None"], tuple[Tensor, Tensor]]
Clamp = Callable[[nn.Module], None]
Callback = Callable[["Trainer", dict[str, Any]], None]
EpochEval = Callable[[nn.Module], Mapping[str, float]]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
LOG_NAME = "log.jsonl"


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """What one :class:`Trainer` run is: ``epochs`` over the training set in batches of
    ``batch_size`` (augmented when ``augment``; ``drop_last`` drops a short last batch) with
    ``optimizer``; its state and log go to ``out_dir`` as ``<name>.state.safetensors`` and
    ``log.jsonl`` lines of ``phase`` (None = ``name``); ``seed`` seeds data order, augmentation
    and attack starts; ``eval_every``: epochs between ``epoch_eval`` calls."""

    epochs: int
    out_dir: str | Path
    name: str = "train"
    phase: str | None = None
    batch_size: int = 64
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    seed: int = 0
    device: str | torch.device = "cpu"
    augment: bool = True
    drop_last: bool = False
    quiet: bool = False
    eval_every: int = 1


_OPTIMIZER_KEYWORDS = {"optimizer": "name", "lr": "lr", "momentum": "momentum",
                       "weight_decay": "weight_decay", "schedule": "schedule"}  # fmt: skip


def trainer_config_from_keywords(**kwargs: Any) -> TrainerConfig:
    """The :class:`TrainerConfig` of the old keyword style ``Trainer(model, objective,
    epochs=..., out_dir=..., lr=...)`` (``optimizer`` a name, ``lr`` ... flat)."""
    optimizer = {
        _OPTIMIZER_KEYWORDS[k]: kwargs.pop(k) for k in list(kwargs) if k in _OPTIMIZER_KEYWORDS
    }
    return TrainerConfig(**kwargs, optimizer=OptimizerConfig(**optimizer))


def _rank_and_world() -> tuple[int, int]:
    return distributed.rank(), distributed.world_size()


def shard_rows(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous rows of a global batch of ``n``: sizes differ by at most one,
    the first ranks take the extra rows (rank 0 is never empty)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def schedule_factor(schedule: str, step: int, total_steps: int) -> float:
    """Learning-rate multiplier before optimizer step ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant" or total_steps <= 0:
        return 1.0
    progress = min(step, total_steps) / total_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_state_to_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer."
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and JSON-able metadata (no pickle)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    prefix: str = "optimizer.",
) -> None:
    """Inverse of :func:`optimizer_state_to_tensors`: load the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            index, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": list(meta["param_groups"])})


def _read_header_metadata(path: Path) -> dict[str, Any]:
    """The metadata embedded in the safetensors header: written atomically with the tensors,
    unlike the JSON file beside it, so it always describes them."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if "robustsnn" not in header:
        raise UserError(f"training state {path} has no robustsnn header; delete it to restart")
    meta = json.loads(header["robustsnn"])
    assert isinstance(meta, dict)
    return meta


def report_progress(objective: Any, fraction: float) -> None:
    """Tell an objective that schedules itself over training (TGO's dynamic lambda) the fraction
    of the run's optimizer steps done: ``set_progress(fraction)`` of the objective and of every
    objective it wraps (``.base``). Computed from the step index, so a resumed run repeats it."""
    seen: list[Any] = []
    while objective is not None and all(objective is not s for s in seen):
        seen.append(objective)
        hook = getattr(objective, "set_progress", None)
        if callable(hook):
            hook(fraction)
        objective = getattr(objective, "base", None)


class Trainer:
    """Runs an objective over a dataset with SGD/Adam, a per-step cosine schedule and resume.

    ``Trainer(model, objective, TrainerConfig(epochs=..., out_dir=..., optimizer=
    OptimizerConfig(...)), ...)``: the config is what the run is (its defaults live there); the
    keywords are what the caller hooks in. The old keyword style ``Trainer(model, objective,
    epochs=..., out_dir=..., lr=..., ...)`` still works for one release, with a
    DeprecationWarning. ``param_groups``: optional list of dicts, each with ``"params"`` (parameter names, glob
    patterns such as ``"*.threshold"``, or parameter tensors) and optimizer options
    (``lr``, ``weight_decay``, ...); a parameter joins the first group that matches, the rest
    form a default group with the trainer's ``lr``/``weight_decay``. ``freeze``: names or glob
    patterns of parameters that are not trained. ``clamp(model)`` runs (without grad) after every
    optimizer step, e.g. to keep SNN thresholds >= 0.03. ``callbacks(trainer, record)`` run after
    each epoch's state is saved. ``epoch_eval(model) -> {metric: value}`` adds metrics to the log
    line every ``eval_every`` epochs and after the last one; it must not use the global RNG.
    ``fingerprint_extra``: JSON-able settings the trainer cannot see (e.g. an SNN's T, which
    parameters are frozen) that must also match for a saved state to be resumed.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: ObjectiveFn,
        config: TrainerConfig | None = None,
        *,
        param_groups: Sequence[Mapping[str, Any]] | None = None,
        freeze: Iterable[str] = (),
        clamp: Clamp | None = None,
        callbacks: Sequence[Callback] = (),
        epoch_eval: EpochEval | None = None,
        fingerprint_extra: Mapping[str, Any] | None = None,
        **keywords: Any,
    ) -> None:
        if config is None:
            warnings.warn(
                "Trainer(model, objective, epochs=..., out_dir=..., lr=...) is deprecated and "
                "goes in the next release; pass Trainer(model, objective, TrainerConfig(...))",
                DeprecationWarning,
                stacklevel=2,
            )
            config = trainer_config_from_keywords(**keywords)
        elif keywords:
            raise TypeError(f"Trainer: pass {', '.join(keywords)} in the TrainerConfig")
        opt = config.optimizer
        if config.epochs < 0:
            raise UserError(f"epochs must be >= 0, got {config.epochs}")
        if config.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {config.batch_size}")
        if opt.name not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {opt.name!r}; valid: {', '.join(OPTIMIZERS)}")
        if opt.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {opt.schedule!r}; valid: {', '.join(SCHEDULES)}")
        validate_optimizer(opt.lr, opt.momentum, opt.weight_decay)
        self.config = config
        self.rank, self.world_size = _rank_and_world()
        self.is_main = self.rank == 0
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.objective = objective
        self.epochs = config.epochs
        self.out_dir = Path(config.out_dir)
        self.name = config.name
        self.phase = config.phase or config.name
        self.batch_size = config.batch_size
        self.optimizer_name = opt.name
        self.lr = opt.lr
        self.momentum = opt.momentum
        self.weight_decay = opt.weight_decay
        self.schedule = opt.schedule
        self.clamp = clamp
        self.seed = config.seed
        self.augment = config.augment
        self.drop_last = config.drop_last
        self.quiet = config.quiet
        self.callbacks = list(callbacks)
        self.epoch_eval = epoch_eval
        self.eval_every = max(1, config.eval_every)
        # JSON round trip: the saved fingerprint is compared after being read back from JSON.
        self.fingerprint_extra = json.loads(json.dumps(dict(fingerprint_extra or {}), default=str))
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self._freeze(list(freeze))
        self.optimizer = self._build_optimizer(param_groups)
        self.train_model = self._wrap(self.model)
        # Data order, augmentation and (one process) attack random starts draw from this one
        # generator; it is the same on every rank, so all ranks build the same global batches.
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        # With several processes, randomness inside a step draws from a per-rank stream.
        self.step_generator = self.generator
        if self.world_size > 1:
            self.step_generator = torch.Generator(device="cpu")

    # ----------------------------------------------------------------------------- paths
    @property
    def state_path(self) -> Path:
        return self.out_dir / f"{self.name}.state.safetensors"

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_NAME

    # ----------------------------------------------------------------------------- setup
    def _freeze(self, patterns: list[str]) -> None:
        named = dict(self.model.named_parameters())
        for pattern in patterns:
            hits = [n for n in named if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise UserError(
                    f"freeze pattern {pattern!r} matches no parameter; examples: "
                    f"{', '.join(list(named)[:5])}"
                )
            for n in hits:
                named[n].requires_grad_(False)

    def _build_optimizer(
        self, param_groups: Sequence[Mapping[str, Any]] | None
    ) -> torch.optim.Optimizer:
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            raise UserError("nothing to train: every parameter is frozen")
        taken: set[int] = set()
        groups: list[dict[str, Any]] = []
        for i, spec in enumerate(param_groups or []):
            selectors = spec.get("params", [])
            if isinstance(selectors, (str, Tensor)):
                selectors = [selectors]
            chosen = []
            for n, p in named:
                if id(p) in taken:
                    continue
                for sel in selectors:
                    hit = fnmatch.fnmatchcase(n, sel) if isinstance(sel, str) else sel is p
                    if hit:
                        chosen.append(p)
                        taken.add(id(p))
                        break
            if not chosen:
                raise UserError(
                    f"parameter group {i} ({selectors!r}) matches no trainable parameter"
                )
            options = {k: v for k, v in spec.items() if k != "params"}
            groups.append({"params": chosen, **options})
        rest = [p for _, p in named if id(p) not in taken]
        if rest:
            groups.append({"params": rest})
        for group in groups:
            group.setdefault("lr", self.lr)
            group.setdefault("weight_decay", self.weight_decay)
            group["base_lr"] = float(group["lr"])
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum)
        return torch.optim.Adam(groups, lr=self.lr)

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the objective trains: DistributedDataParallel when a process group runs."""
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def _local_rows(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor, float]:
        """This rank's rows of a global batch and the weight of its mean loss.

        The weight ``world * rows / n`` makes DDP's average of the ranks' gradients the gradient
        of the global batch's mean loss. A rank left without rows (a last batch smaller than the
        world) trains on the batch's first row with weight 0, so that it still joins the
        gradient all-reduce.
        """
        if self.world_size == 1:
            return xb, yb, 1.0
        n = yb.shape[0]
        rows = shard_rows(n, self.rank, self.world_size)
        x_local, y_local = xb[rows], yb[rows]
        if y_local.shape[0] == 0:
            return xb[:1], yb[:1], 0.0
        return x_local, y_local, self.world_size * y_local.shape[0] / n

    def _seed_step_randomness(self, epoch: int) -> None:
        """Per-rank streams for one epoch (several processes only): attack random starts draw
        from ``step_generator``, dropout from the global RNG."""
        if self.world_size == 1:
            return
        stream = (self.seed * 1_000_003 + self.rank * 7_919 + epoch) % 2**62
        self.step_generator.manual_seed(stream)
        torch.manual_seed(stream)

    def _all_reduce(self, values: Tensor) -> Tensor:
        if self.world_size > 1:
            dist.all_reduce(values)
        return values

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _fingerprint(self, n_train: int, steps_per_epoch: int) -> dict[str, Any]:
        """What must match for a saved state to be resumed."""
        extra = {"setup": self.fingerprint_extra} if self.fingerprint_extra else {}
        return {
            **extra,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer_name,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "seed": self.seed,
            "world_size": self.world_size,
            "n_train": n_train,
            "steps_per_epoch": steps_per_epoch,
            "objective": json.loads(json.dumps(self._describe_objective(), default=str)),
        }

    def _describe_objective(self) -> dict[str, Any]:
        describe = getattr(self.objective, "describe", None)
        if callable(describe):
            return dict(describe())
        return {"name": getattr(self.objective, "__name__", type(self.objective).__name__)}

    # ------------------------------------------------------------------------ state I/O
    def save_state(self, fingerprint: Mapping[str, Any]) -> None:
        """Atomically write weights, optimizer, generator/RNG states and the epoch."""
        tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_tensors, opt_meta = optimizer_state_to_tensors(self.optimizer)
        tensors.update(opt_tensors)
        tensors["generator"] = self.generator.get_state()
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            "kind": "training_state",
            "name": self.name,
            "phase": self.phase,
            "epoch": self.epoch,
            "fingerprint": dict(fingerprint),
            "optimizer": opt_meta,
            "history": self.history,
        }
        save_tensors(self.state_path, tensors, meta)

    def load_state(self, fingerprint: Mapping[str, Any]) -> int:
        """Restore everything from the state file; returns the epoch it was written after."""
        path = self.state_path
        tensors, _ = load_tensors(path)
        meta = _read_header_metadata(path)
        if meta.get("kind") != "training_state":
            raise UserError(f"{path} is not a training state; delete it or use another --out")
        saved = meta.get("fingerprint", {})
        diffs = [
            f"{k} {saved.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if saved.get(k) != v
        ]
        if diffs:
            raise UserError(
                f"training state {path} was written with another setup ({'; '.join(diffs)}); "
                "delete it to start over, or use another --out"
            )
        prefix = "model."
        model_state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            self.model.load_state_dict(model_state, strict=True)
            optimizer_state_from_tensors(self.optimizer, tensors, meta["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(
                f"training state {path} does not fit this model/optimizer ({exc}); delete it"
            ) from None
        self.generator.set_state(tensors["generator"])
        torch.set_rng_state(tensors["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.history = list(meta.get("history", []))
        self.epoch = int(meta["epoch"])
        return self.epoch

    # ------------------------------------------------------------------------------ log
    def _truncate_log(self, keep_until_epoch: int) -> None:
        """Drop this phase's lines of epochs after ``keep_until_epoch`` (a resumed run rewrites
        them), so the log never holds an epoch twice."""
        if not self.log_path.is_file():
            return
        lines = self.log_path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                kept.append(line)
                continue
            if (
                isinstance(record, dict)
                and record.get("phase") == self.phase
                and isinstance(record.get("epoch"), int)
                and record["epoch"] > keep_until_epoch
            ):
                continue
            kept.append(line)
        if kept != lines:
            atomic_write_text(self.log_path, "".join(f"{line}\n" for line in kept))

    def _append_log(self, record: Mapping[str, Any]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    # ----------------------------------------------------------------------------- loop
    def _set_lr(self, step: int, total_steps: int) -> None:
        factor = schedule_factor(self.schedule, step, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _run_epoch(
        self, epoch: int, x: Tensor, y: Tensor, dataset: Dataset, steps_per_epoch: int
    ) -> dict[str, Any]:
        total_steps = steps_per_epoch * self.epochs
        self.train_model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss*n, correct, n
        first_lr = None
        batches = iterate_batches(
            x,
            y,
            self.batch_size,
            generator=self.generator,
            device=self.device,
            augment_info=dataset.info if self.augment else None,
            drop_last=self.drop_last,
        )
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"{self.phase} {epoch}/{self.epochs}",
            disable=self.quiet or not self.is_main,
            leave=False,
            unit="batch",
        )
        self._seed_step_randomness(epoch)
        for i, (x_global, y_global) in enumerate(bar):
            xb, yb, weight = self._local_rows(x_global, y_global)
            step = (epoch - 1) * steps_per_epoch + i
            self._set_lr(step, total_steps)
            report_progress(self.objective, step / max(total_steps, 1))
            if first_lr is None:
                first_lr = float(self.optimizer.param_groups[0]["lr"])
            self.optimizer.zero_grad(set_to_none=True)
            loss, logits = self.objective(self.train_model, xb, yb, self.step_generator)
            if not torch.isfinite(loss):
                raise UserError(
                    f"{self.phase}: loss is {loss.item()} at epoch {epoch}, batch {i}; "
                    "training diverged, lower the learning rate"
                )
            (loss if weight == 1.0 else loss * weight).backward()
            self.optimizer.step()
            if self.clamp is not None:
                with torch.no_grad():
                    self.clamp(self.model)
            with torch.no_grad():
                n = yb.shape[0] if weight > 0 else 0
                sums += torch.stack(
                    [
                        loss.detach().double() * n,
                        (logits.argmax(dim=1) == yb).sum().double() * (n > 0),
                        torch.tensor(float(n), dtype=torch.float64, device=self.device),
                    ]
                )
            if not bar.disable and (i % 10 == 0 or i + 1 == steps_per_epoch):
                s = sums.tolist()
                bar.set_postfix(loss=f"{s[0] / s[2]:.4f}", acc=f"{s[1] / s[2]:.3f}")
        bar.close()
        loss_sum, correct, count = self._all_reduce(sums).tolist()
        return {
            "phase": self.phase,
            "epoch": epoch,
            "epochs": self.epochs,
            "loss": loss_sum / max(count, 1.0),
            "train_accuracy": correct / max(count, 1.0),
            "lr": first_lr if first_lr is not None else self.lr,
            "seconds": round(time.perf_counter() - start, 3),
            # CPU time of the whole process (all threads): the cost on a shared machine
            "cpu_seconds": round(time.process_time() - cpu_start, 3),
        }

    def fit(self, dataset: Dataset) -> list[dict[str, Any]]:
        """Train for the remaining epochs (resuming from the saved state if there is one) and
        return the per-epoch records of the whole run."""
        x, y = dataset.x_train, dataset.y_train  # every rank: the global batches (_local_rows)
        if len(x) == 0:
            raise UserError(f"{self.phase}: the training set is empty")
        if self.drop_last:
            steps_per_epoch = len(x) // self.batch_size
            if steps_per_epoch == 0:
                raise UserError(
                    f"{self.phase}: batch size {self.batch_size} exceeds the {len(x)} training "
                    "images with drop_last; lower the batch size"
                )
        else:
            steps_per_epoch = math.ceil(len(x) / self.batch_size)
        fingerprint = self._fingerprint(len(dataset.x_train), steps_per_epoch)
        self.epoch = 0
        self.history = []
        if self.state_path.is_file():
            self.load_state(fingerprint)
        if self.is_main:
            self._truncate_log(self.epoch)
        self._barrier()
        for epoch in range(self.epoch + 1, self.epochs + 1):
            record = self._run_epoch(epoch, x, y, dataset, steps_per_epoch)
            self.epoch = epoch
            if self.epoch_eval is not None and (
                epoch % self.eval_every == 0 or epoch == self.epochs
            ):
                if self.is_main:
                    record.update({k: float(v) for k, v in self.epoch_eval(self.model).items()})
            self.history.append(record)
            if self.is_main:
                self._append_log(record)  # log first: a kill in between re-runs this epoch
                self.save_state(fingerprint)
                if not self.quiet:
                    tqdm.write(
                        f"{self.phase} epoch {epoch}/{self.epochs}: loss {record['loss']:.4f} "
                        f"acc {record['train_accuracy']:.3f} lr {record['lr']:.3g} "
                        f"({record['seconds']:.1f}s)"
                    )
            self._barrier()
            for callback in self.callbacks:
                callback(self, record)
        distributed.broadcast_module_state(self.model)  # rank 0's BatchNorm statistics
        return self.history
