"""One evaluation in several local processes on a multi-core CPU, without torchrun.

On a CPU the attacks' tensors are small (a batch of images at T steps, fewer and fewer as
samples are broken) and intra-op threads share them out less well than processes share out
whole batches: ``reliable`` on 32 samples of the quickstart's MNIST SNN took 36.1 s wall with
two threads in one process and 26.5 s in two one-thread processes on this project's 2-core
machine (the CIFAR VGG, with larger tensors: 60.2 s vs 59.7 s; docs/RESULTS_performance.md).
So ``run_evaluation(..., workers=N)`` forks ``N - 1`` worker processes and runs the evaluation
in all ``N`` as a sharded evaluation (:mod:`robustsnn.evaluation.sharding`): the batches, their
seeds, the merge and the diagnostics on rank 0 are those of a torchrun evaluation, so the
result is the single-process one (bit for bit when that process also runs one thread), and each
process keeps its own resume file. Unlike torchrun's fixed deal (batch ``b`` on rank
``b % N``), a process takes the next unattacked batch whenever it finishes one: a batch of
robust samples costs the whole ensemble, one of fragile samples a few steps. The two
collectives a sharded evaluation makes (``all_gather_object`` of finished batches, ``on_main``
for the diagnostics and the escalation's clock) go over pipes instead of a process group; the
parent runs ``on_main``'s work with its own thread count while the workers wait, and each
process runs one intra-op thread for the batches.

Forking is used (Linux only): the workers inherit the loaded model and data without pickling
or reloading, and exit with ``os._exit`` after their part, never returning into the caller.
What they send back (records, adversarial examples) is pickled by value between a process and
its own forked children, never read from a file.
A worker that fails sends its error to the parent, which raises it (a UserError stays one); a
worker that dies (killed, out of memory) makes the parent raise instead of waiting forever;
when the parent fails, the workers are terminated.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, Pipe
from typing import Any, TypeVar

import torch

from robustsnn import distributed
from robustsnn.errors import UserError
from robustsnn.evaluation.sharding import BatchShard, merge_shards

T = TypeVar("T")

MAX_AUTO_WORKERS = 8
"""``workers=0`` (auto) uses one process per available core, at most this many."""

_ERROR = "__robustsnn_worker_error__"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int, device: str | torch.device) -> int:
    """The number of processes an evaluation runs in.

    ``workers`` >= 1 is taken as given on a CPU; 0 means one per available core (at most
    :data:`MAX_AUTO_WORKERS`). Always 1 on an accelerator, under torchrun (the ranks already
    share the work) and where ``os.fork`` is not safe to use (not Linux).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"workers must be an integer >= 0 (0 = one per CPU core), got {workers!r}")
    if torch.device(device).type != "cpu" or distributed.launched_world_size() > 1:
        return 1
    if not sys.platform.startswith("linux"):
        return 1
    if workers == 0:
        return max(1, min(available_cores(), MAX_AUTO_WORKERS))
    return workers


class _PipeCollectives:
    """``all_gather_object`` and ``on_main`` between a parent (rank 0) and its workers."""

    def __init__(self, rank: int, links: list[Connection], threads: int = 1) -> None:
        self.rank = rank
        self.links = links  # rank 0: one per worker, in rank order; a worker: [to the parent]
        self.threads = threads  # rank 0 runs on_main's work with these (the workers wait)

    def _receive(self, link: Connection) -> Any:
        try:
            message = pickle.loads(link.recv_bytes())
        except (EOFError, OSError):
            who = "the parent process" if self.rank else "an evaluation worker"
            raise RuntimeError(f"{who} exited during the evaluation") from None
        if isinstance(message, tuple) and len(message) == 3 and message[0] == _ERROR:
            _, user_error, text = message
            if user_error:
                raise UserError(text)
            raise RuntimeError(f"an evaluation worker failed: {text}")
        return message

    def _send(self, link: Connection, obj: Any) -> None:
        try:
            _send_bytes(link, obj)
        except (BrokenPipeError, EOFError, OSError):
            who = "the parent process" if self.rank else "an evaluation worker"
            raise RuntimeError(f"{who} exited during the evaluation") from None

    def all_gather(self, obj: Any) -> list[Any]:
        if self.rank:
            self._send(self.links[0], obj)
            return list(self._receive(self.links[0]))
        parts = [obj, *(self._receive(link) for link in self.links)]
        for link in self.links:
            self._send(link, parts)
        return parts

    def on_main(self, fn: Callable[[], T]) -> T:
        if self.rank:
            return self._receive(self.links[0])  # type: ignore[no-any-return]
        own = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # the workers idle meanwhile: use every core
        try:
            value = fn()
        except BaseException as exc:
            for link in self.links:
                _send_error(link, exc)
            raise
        finally:
            torch.set_num_threads(own)
        for link in self.links:
            self._send(link, value)
        return value


def _send_bytes(link: Connection, obj: Any) -> None:
    """Send ``obj`` pickled by value. ``Connection.send`` would hand tensors over as shared
    memory through a helper thread of the sender (torch's multiprocessing reductions), which
    dies with a worker that exits right after sending; plain pickle copies the data."""
    link.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _send_error(link: Connection, exc: BaseException) -> None:
    text = str(exc) if isinstance(exc, UserError) else "".join(traceback.format_exception(exc))
    try:
        _send_bytes(link, (_ERROR, isinstance(exc, UserError), text))
    except (OSError, ValueError):
        pass


class _SharedCounter:
    """The next batch index of the current ``evaluate`` call, in memory shared by the forked
    processes, behind a lock."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.value = context.RawValue("q", 0)
        self.lock = context.Lock()

    def reset(self) -> None:
        with self.lock:
            self.value.value = 0

    def take(self, limit: int) -> int | None:
        with self.lock:
            b = int(self.value.value)
            if b >= limit:
                return None
            self.value.value = b + 1
            return b


class _PulledBatches:
    """Batch indices taken one at a time from the shared counter (the Collection a sharded
    ``evaluate`` iterates); remembers which this process took."""

    def __init__(self, counter: _SharedCounter, n_batches: int, world: int) -> None:
        self.counter = counter
        self.n_batches = n_batches
        self.world = world
        self.taken: set[int] = set()

    def __len__(self) -> int:  # this process's expected share, for the progress bar
        return -(-self.n_batches // self.world)

    def __contains__(self, b: object) -> bool:
        return b in self.taken

    def __iter__(self) -> Iterator[int]:
        while (b := self.counter.take(self.n_batches)) is not None:
            self.taken.add(b)
            yield b


class _PullingShard(BatchShard):
    """A :class:`BatchShard` whose processes take the next unattacked batch when they finish
    one, instead of every ``world``-th batch: the work per batch varies (a batch of robust
    samples costs the whole ensemble), so a fixed deal leaves processes idle. The batches,
    their seeds and the merge are unchanged, so the result is too.

    On a rerun every process also reads the other processes' resume files (as under
    torchrun), so a batch finished by any process before is not attacked again, whichever
    process takes it now.
    """

    def __init__(
        self, rank: int, world: int, collectives: _PipeCollectives, counter: _SharedCounter
    ) -> None:
        super().__init__(
            rank, world, gather_fn=collectives.all_gather, on_main_fn=collectives.on_main
        )
        self.counter = counter
        self.pulled: _PulledBatches | None = None

    def batches(self, n_batches: int) -> _PulledBatches:  # type: ignore[override]
        # a collective: rank 0 resets the counter before any process takes a batch (every
        # process has left the previous call's gather, so none still takes from it)
        self.on_main(self.counter.reset)
        self._n_batches = n_batches
        self.pulled = _PulledBatches(self.counter, n_batches, self.world)
        return self.pulled

    def gather(self, done: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        if self.pulled is None or self._n_batches is None:
            raise RuntimeError("gather before batches")
        mine = {b: payload for b, payload in done.items() if b in self.pulled.taken}
        return merge_shards(list(self._gather_fn(mine)), self._n_batches)


def run_in_workers(workers: int, job: Callable[[BatchShard | None, bool], T]) -> T:
    """Run ``job(shard, is_main)`` in ``workers`` processes; return the parent's (rank 0's) result.

    ``job`` must make the same collective calls on its shard in every process (a sharded
    ``evaluate`` or ``evaluate_escalating`` does). With ``workers == 1`` it runs here, unsharded
    (``shard`` is None).
    """
    if workers <= 1:
        return job(None, True)
    sys.stdout.flush()
    sys.stderr.flush()
    threads = torch.get_num_threads()
    children: list[int] = []
    links: list[Connection] = []
    counter = _SharedCounter()
    try:
        for rank in range(1, workers):
            parent_end, child_end = Pipe()
            pid = os.fork()
            if pid == 0:  # a worker: its part, then exit without returning to the caller
                parent_end.close()
                for link in links:
                    link.close()
                _work(rank, workers, child_end, job, counter)
            child_end.close()
            children.append(pid)
            links.append(parent_end)
        torch.set_num_threads(1)
        shard = _PullingShard(0, workers, _PipeCollectives(0, links, threads), counter)
        result = job(shard, True)
        for pid in children:
            os.waitpid(pid, 0)
        children.clear()
        return result
    finally:
        torch.set_num_threads(threads)
        for pid in children:  # the parent failed: stop the workers
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for link in links:
            link.close()


def _work(
    rank: int,
    workers: int,
    link: Connection,
    job: Callable[[BatchShard | None, bool], Any],
    counter: _SharedCounter,
) -> None:
    """A forked worker's life: one thread, its shard of the job, ``os._exit``."""
    status = 0
    try:
        torch.set_num_threads(1)
        job(_PullingShard(rank, workers, _PipeCollectives(rank, [link]), counter), False)
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
        status = 1
        _send_error(link, exc)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


__all__ = ["MAX_AUTO_WORKERS", "available_cores", "resolve_workers", "run_in_workers"]
