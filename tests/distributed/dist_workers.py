"""Process launcher and the per-rank bodies of the distributed tests (gloo on CPU).

:func:`launch` starts ``world`` processes with ``torch.multiprocessing`` (fork), each with the
environment torchrun would give it (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), and a ``file://``
rendezvous in the test's temporary folder (no ports). Every body writes what it computed to a JSON
file, which the test reads back. Bodies use tiny models and one thread per process: the CI
machine has two cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "evaluation"))  # evaluation_test_utils (tiny models)


def _load(name: str, path: Path) -> Any:
    """``make_toy_dataset`` of a conftest loaded by path (conftest names clash on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_toy_dataset


# fork: the children inherit the imported torch (seconds saved per launch on a busy 2-core
# machine); each child sets one intra-op thread before any torch op, as DataLoader workers do,
# so no OpenMP pool crosses the fork. ROBUSTSNN_TEST_START_METHOD=spawn for the clean start.
START_METHOD = os.environ.get("ROBUSTSNN_TEST_START_METHOD", "fork")

EVAL_N = 24
EVAL_BATCH = 5  # 5 batches: rank 0 gets 0, 2, 4 and rank 1 gets 1, 3 (uneven shards)


def _entry(
    rank: int, world: int, rendezvous: str, body: Callable[..., Any], kwargs: dict[str, Any]
) -> None:
    os.environ.update(
        {
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
        }
    )
    torch.set_num_threads(1)
    from robustsnn import distributed

    device = distributed.init("cpu", init_method=f"file://{rendezvous}", timeout_s=30)
    assert device == "cpu" and distributed.world_size() == world and distributed.rank() == rank
    try:
        body(**kwargs)
    finally:
        distributed.shutdown()


def launch(
    body: Callable[..., Any], world: int, tmp: Path, timeout_s: float = 90, **kwargs: Any
) -> list[int | None]:
    """Run ``body(**kwargs)`` on ``world`` gloo ranks; return the exit codes (0 = fine)."""
    tmp.mkdir(parents=True, exist_ok=True)
    rendezvous = tmp / f"rendezvous-{time.monotonic_ns()}"
    context = mp.start_processes(
        _entry,
        args=(world, str(rendezvous), body, kwargs),
        nprocs=world,
        join=False,
        start_method=START_METHOD,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"distributed test body {body.__name__} hung")
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        pass  # the caller looks at the exit codes
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    return [p.exitcode for p in context.processes]


# --------------------------------------------------------------------------- evaluation


def eval_inputs() -> tuple[Any, Any, Any]:
    from evaluation_test_utils import images, labels_of, tiny_mlp, tiny_snn

    x = images(EVAL_N)
    return tiny_snn(), x, labels_of(tiny_mlp(), x)


def eval_diagnostics() -> Any:
    from robustsnn.evaluation import DiagnosticsConfig

    return DiagnosticsConfig(n=4, square_queries=10, base_steps=2, convergence_factor=2)


def run_eval(state_dir: Path | None, out: Path, shard: Any, die_after: int | None = None) -> dict:  # type: ignore[type-arg]
    """One evaluation of the tiny SNN (sharded when ``shard`` is given); the batches this
    process attacked go to ``out``/ran.rank<r>.json, rank 0's result to ``out``/result.json."""
    from robustsnn.evaluation import EvaluationConfig, EvaluationContext, adversarial, evaluate

    rank = shard.rank if shard is not None else 0
    ran: list[int] = []

    def callback(batch: int) -> None:
        ran.append(batch)
        (out / f"ran.rank{rank}.json").write_text(json.dumps(ran))
        if die_after is not None and batch == die_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a kill: no cleanup, no exception

    (out / f"ran.rank{rank}.json").write_text("[]")
    model, x, y = eval_inputs()
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(
            eps=0.08,
            ensemble="pgd-fast",
            batch_size=EVAL_BATCH,
            seed=3,
            diagnostics=eval_diagnostics(),
            save_adversarial=True,
        ),
        EvaluationContext(state_dir=state_dir, quiet=True, callback=callback, shard=shard),
    )
    # the saved examples' file bytes, digested: equal digests = the same file, bit for bit
    examples = result.pop("adversarial")
    data = adversarial.to_bytes(examples, {"members": sorted(set(examples.member))})
    result["adversarial_sha256"] = hashlib.sha256(data).hexdigest()
    result["adversarial_count"] = len(examples)
    if rank == 0:
        (out / "result.json").write_text(json.dumps(result))
    return result


def eval_body(state_dir: str, out: str, die_rank: int | None = None, die_after: int = -1) -> None:
    from robustsnn import distributed
    from robustsnn.evaluation.sharding import current_shard

    shard = current_shard()
    assert shard is not None
    die = die_after if distributed.rank() == die_rank else None
    run_eval(Path(state_dir), Path(out), shard, die)


# --------------------------------------------------------------------------- training

TRAIN_N = 19  # batches of 8, 8 and 3: the last one splits 2 + 1
TRAIN_BATCH = 8


def tiny_cnn(seed: int = 0) -> torch.nn.Module:
    """Conv-ReLU-pool-linear without batch statistics or dropout (deterministic steps)."""
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 2),
    )


def tiny_bn_cnn(seed: int = 0) -> torch.nn.Module:
    """The tiny CNN with a BatchNorm after the convolution."""
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 2),
    )


def train(
    out: Path, epochs: int = 1, objective: str = "natural", batchnorm: bool = False, **extra: Any
) -> dict:  # type: ignore[type-arg]
    """Train the tiny CNN on the toy dataset; returns its parameters and the history."""
    make_toy_dataset = _load("training_conftest", HERE.parent / "training" / "conftest.py")
    from robustsnn.config import OptimizerConfig
    from robustsnn.training.objectives import build_objective
    from robustsnn.training.trainer import Trainer, TrainerConfig

    data = make_toy_dataset(n_train=TRAIN_N, n_test=4)
    model = tiny_bn_cnn() if batchnorm else tiny_cnn()
    params = {"eps": 0.05, "steps": 2} if objective == "pgd_at" else {}
    optimizer = OptimizerConfig(lr=0.05, momentum=0.9, weight_decay=0.0)
    callbacks = extra.pop("callbacks", ())
    config = TrainerConfig(
        epochs=epochs, out_dir=out, batch_size=TRAIN_BATCH, optimizer=optimizer, seed=5,
        quiet=True, **extra,
    )  # fmt: skip
    trainer = Trainer(model, build_objective(objective, **params), config, callbacks=callbacks)
    history = trainer.fit(data)
    return {
        "params": {k: v.tolist() for k, v in model.state_dict().items()},
        "history": [{k: v for k, v in h.items() if k != "seconds"} for h in history],
    }


def train_body(
    out: str, epochs: int = 1, objective: str = "natural", batchnorm: bool = False
) -> None:
    from robustsnn import distributed

    result = train(Path(out), epochs=epochs, objective=objective, batchnorm=batchnorm)
    (Path(out) / f"train.rank{distributed.rank()}.json").write_text(json.dumps(result))


def train_kill_body(out: str, epochs: int, die_rank: int, die_after_epoch: int) -> None:
    """``train_body`` whose rank ``die_rank`` is killed (SIGKILL) once epoch
    ``die_after_epoch`` is saved by rank 0 (the callbacks run after the barrier)."""
    from robustsnn import distributed

    def kill(trainer: Any, record: dict[str, Any]) -> None:
        if distributed.rank() == die_rank and record["epoch"] == die_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    result = train(Path(out), epochs=epochs, callbacks=[kill])
    (Path(out) / f"train.rank{distributed.rank()}.json").write_text(json.dumps(result))


def run_escalation(state_dir: Path | None, out: Path, shard: Any) -> dict:  # type: ignore[type-arg]
    """``evaluate --escalate`` on the tiny SNN from PGD with BPTT-PCW(1) alone, off the cheap
    two-rung ladder (pgd-fast, then the FGSM ensemble); at eps 0.08 it fails a check, so one
    escalation step (to the FGSM ensemble) runs."""
    from robustsnn.evaluation import EvaluationConfig, EvaluationContext, adversarial
    from robustsnn.evaluation.escalate import EscalationPolicy, evaluate_escalating

    model, x, y = eval_inputs()
    result = evaluate_escalating(
        model, x, y,
        EvaluationConfig(
            eps=0.08, ensemble=[{"attack": "pgd", "estimator": "bptt-pcw-1"}],
            batch_size=EVAL_BATCH, seed=3, diagnostics=eval_diagnostics(), save_adversarial=True,
        ),
        EvaluationContext(state_dir=state_dir, quiet=True, shard=shard),
        EscalationPolicy(levels=1),
        ladder=("pgd-fast", "fgsm-ensemble"),
    )  # fmt: skip
    examples = result.pop("adversarial")
    data = adversarial.to_bytes(examples, {"members": sorted(set(examples.member))})
    result["adversarial_sha256"] = hashlib.sha256(data).hexdigest()
    if shard is None or shard.rank == 0:
        (out / "escalated.json").write_text(json.dumps(result))
    return result  # type: ignore[no-any-return]


def escalate_body(state_dir: str, out: str) -> None:
    from robustsnn.evaluation.sharding import current_shard

    run_escalation(Path(state_dir), Path(out), current_shard())
