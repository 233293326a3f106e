"""Sharded evaluation under torchrun: each rank attacks whole batches, rank 0 writes the result.

The single-process evaluation splits the chosen samples into batches ``0 .. B-1`` of
``batch_size`` and seeds every attack call from ``(seed, batch index, member name)``. A sharded
run keeps exactly those batches and seeds and only deals them out: batch ``b`` goes to rank
``b % world``. So

- every sample sees the same batch composition and the same random numbers as in one process,
  and its record is the same, bit for bit on CPU (no padding with repeated samples, unlike
  ``DistributedSampler``: a repeated sample would be counted twice in a robust accuracy);
- each rank saves its finished batches to its own resume file
  (``evaluation-state.rank<r>.json`` in the output folder, written atomically after every batch);
  a killed rank, restarted with the same command, skips what it finished. The files are keyed by
  batch index and made with world-size-independent settings, so a restart with another number
  of processes, or a single process, reuses every finished batch it finds in the folder;
- after its batches, every rank contributes them to one ``all_gather_object``; the merge checks
  that every batch arrives exactly once, and every rank then holds the single-process records;
- the masking diagnostics run once, on rank 0 (they attack their own seeded subsets, so sharding
  them would need a second merge for little gain), and their verdict is broadcast so every rank
  returns the same result. Only rank 0 writes ``evaluation.json`` and ``records.jsonl``.

There is no collective inside an attack: attacks run on the plain model, and the only
collectives (one gather, one broadcast) run once per evaluation on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from robustsnn import distributed
from robustsnn.evaluation.evaluate import STATE_FILE

T = TypeVar("T")


def shard_batches(n_batches: int, rank: int, world: int) -> list[int]:
    """Batch indices of ``rank`` among ``world`` ranks: ``b`` with ``b % world == rank``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    return list(range(rank, n_batches, world))


def shard_state_name(rank: int) -> str:
    """The resume file of ``rank`` (``evaluation-state.rank<r>.json``)."""
    stem = STATE_FILE.removesuffix(".json")
    return f"{stem}.rank{rank}.json"


def merge_shards(
    parts: list[dict[int, dict[str, Any]]], n_batches: int
) -> dict[int, dict[str, Any]]:
    """One dict of finished batches from every rank's part; each batch exactly once.

    Raises RuntimeError if a batch is missing or came from two ranks: either would drop or
    double-count samples.
    """
    merged: dict[int, dict[str, Any]] = {}
    for rank, part in enumerate(parts):
        for b, payload in part.items():
            if b in merged:
                raise RuntimeError(f"batch {b} was evaluated by two ranks (rank {rank} again)")
            merged[b] = payload
    missing = sorted(set(range(n_batches)) - set(merged))
    if missing:
        raise RuntimeError(f"sharded evaluation lost batch(es) {missing[:10]}")
    extra = sorted(set(merged) - set(range(n_batches)))
    if extra:
        raise RuntimeError(f"sharded evaluation got unknown batch(es) {extra[:10]}")
    return merged


class BatchShard:
    """This rank's part of a sharded evaluation; pass it as ``evaluate(..., shard=...)``.

    ``gather_fn`` and ``on_main_fn`` default to the process group's collectives
    (:func:`robustsnn.distributed.all_gather_object`, :func:`robustsnn.distributed.on_main`).
    """

    def __init__(
        self,
        rank: int,
        world: int,
        *,
        gather_fn: Callable[[Any], list[Any]] = distributed.all_gather_object,
        on_main_fn: Callable[[Callable[[], Any]], Any] = distributed.on_main,
    ) -> None:
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.rank = rank
        self.world = world
        self.state_name = shard_state_name(rank)
        self._gather_fn = gather_fn
        self._on_main_fn = on_main_fn
        self._n_batches: int | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batches(self, n_batches: int) -> list[int]:
        """This rank's batch indices (round robin)."""
        self._n_batches = n_batches
        return shard_batches(n_batches, self.rank, self.world)

    def gather(self, done: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Every rank's finished batches (only the ones each rank owns), checked and merged."""
        if self._n_batches is None:
            raise RuntimeError("BatchShard.gather before BatchShard.batches")
        own = set(shard_batches(self._n_batches, self.rank, self.world))
        mine = {b: payload for b, payload in done.items() if b in own}
        parts = self._gather_fn(mine)
        return merge_shards(list(parts), self._n_batches)

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, its result on every rank."""
        return self._on_main_fn(fn)  # type: ignore[no-any-return]


def current_shard() -> BatchShard | None:
    """This process's shard under torchrun, None with a single process (today's code path)."""
    world = distributed.world_size()
    if world == 1:
        return None
    return BatchShard(distributed.rank(), world)


__all__ = ["BatchShard", "current_shard", "merge_shards", "shard_batches", "shard_state_name"]
