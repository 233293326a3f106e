"""torchrun helpers: process-group setup, rank and world accessors, rank-0-only work.

``torchrun --nproc-per-node N -m robustsnn <command> ...`` starts N processes with the environment
variables ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set. :func:`init` reads them, starts the
process group (``nccl`` on CUDA, ``gloo`` on CPU) and picks the device: ``--device cuda`` becomes
``cuda:LOCAL_RANK``, so each process owns one GPU.

**World size 1 is today's code path.** Without torchrun (or with ``--nproc-per-node 1``) no
process group is started, and every helper here answers from constants (rank 0, world 1) or does
nothing: no collective, no barrier, no ``init_process_group``. Code that calls these helpers needs
no ``if distributed`` of its own.

Collectives are only ever called from code that runs the same number of times on every rank
(once per training step, once per evaluation), never from inside an attack loop, whose number of
iterations can differ between ranks (per-sample early exit).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from robustsnn.errors import UserError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 1800.0
"""How long a collective waits for the other ranks before failing (seconds)."""


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(
            f"environment variable {name}={text!r} is not an integer; torchrun sets it, "
            "do not set it by hand"
        ) from None


def launched_world_size() -> int:
    """The world size torchrun asked for (``WORLD_SIZE``; 1 when not launched by torchrun)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def is_initialized() -> bool:
    """Whether a process group is running (only under torchrun with more than one process)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``; 0 when not launched by torchrun)."""
    return _env_int("LOCAL_RANK", 0) if launched_world_size() > 1 else 0


def is_main() -> bool:
    """True on the process that writes files and prints results (rank 0)."""
    return rank() == 0


def resolve_device(device: str | torch.device) -> str:
    """The device this process computes on.

    With more than one process, ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process); an
    explicit ``cuda:N`` is refused there, because every process would share that one GPU. With
    one process the device is returned as given.
    """
    text = str(device)
    if launched_world_size() == 1:
        return text
    parsed = torch.device(text)
    if parsed.type != "cuda":
        return text
    if parsed.index is not None:
        raise UserError(
            f"--device {text} under torchrun: give --device cuda and each process takes "
            "cuda:LOCAL_RANK (restrict GPUs with CUDA_VISIBLE_DEVICES)"
        )
    index = local_rank()
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(
            f"torchrun started local rank {index} but this node has {count} CUDA device(s); "
            f"use --nproc-per-node {max(count, 1)} or fewer"
        )
    return f"cuda:{index}"


def init(
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    init_method: str = "env://",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Start the process group when torchrun launched more than one process; return the device.

    The backend is ``nccl`` for a CUDA device and ``gloo`` otherwise, unless ``backend`` says.
    Calling it again once the group runs only resolves the device. With one process it only
    resolves the device and starts nothing.
    """
    resolved = resolve_device(device)
    world = launched_world_size()
    if world == 1 or is_initialized():
        return resolved
    if not dist.is_available():
        raise UserError("torchrun started several processes but torch.distributed is unavailable")
    is_cuda = torch.device(resolved).type == "cuda"
    if is_cuda:
        torch.cuda.set_device(torch.device(resolved))
    chosen = backend or ("nccl" if is_cuda else "gloo")
    dist.init_process_group(
        backend=chosen,
        init_method=init_method,
        world_size=world,
        rank=_env_int("RANK", 0),
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return resolved


def shutdown() -> None:
    """Leave the process group (nothing to do without one)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing to do without a process group)."""
    if is_initialized():
        dist.barrier()


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj`` in rank order (``[obj]`` without a process group).

    For small, picklable Python objects (per-sample evaluation records), not for tensors.
    """
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself without a process group)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give its result to every rank.

    For work that must happen once (diagnostics, a file written from one process) but whose
    result every rank needs so that all ranks keep taking the same branches. An exception on
    rank 0 is re-raised there after the other ranks got its message (a UserError stays one).
    """
    if not is_initialized():
        return fn()
    value: Any = None
    failure: BaseException | None = None
    if is_main():
        try:
            value = fn()
        except BaseException as exc:  # the other ranks must be released before it propagates
            failure = exc
    message = None if failure is None else (isinstance(failure, UserError), str(failure))
    value, message = broadcast_object((value, message))
    if failure is not None:
        raise failure
    if message is not None:
        user_error, text = message
        if user_error:
            raise UserError(text)
        raise RuntimeError(f"rank 0 failed: {text}")
    return value  # type: ignore[no-any-return]


def broadcast_module_state(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (BatchNorm running statistics) to every rank.

    DistributedDataParallel keeps parameters equal but each rank updates its own BatchNorm
    running statistics in its last forward pass; after training every rank should hold rank
    ``src``'s model, the one rank 0 saves.
    """
    if not is_initialized():
        return
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            dist.broadcast(tensor.data, src=src)


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "all_gather_object",
    "barrier",
    "broadcast_module_state",
    "broadcast_object",
    "init",
    "is_initialized",
    "is_main",
    "launched_world_size",
    "local_rank",
    "on_main",
    "rank",
    "resolve_device",
    "shutdown",
    "world_size",
]
