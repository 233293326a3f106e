"""Per-attack-run state of stateful gradient estimators (ASSG's running moments).

ASSG sets each neuron's surrogate width from moments of ``|h - theta|`` accumulated over the
iterations of **one** attack run on **one** batch. That state must never leak across batches,
restarts or samples, and a sample's moments must follow that sample when an attack drops the
samples it has already fooled. The attack side knows nothing of spikes; it only calls two
duck-typed hooks on the model it attacks (``robustsnn.attacks.base``):

- ``begin_attack_run(n)``: a new run on ``n`` samples starts (fresh state);
- ``select_attack_rows(rows)``: the next forward passes cover these rows of the run's batch
  (``None`` = all of them, in order).

:class:`RunState` is what an :class:`~robustsnn.snn.network.EstimatorView` of a stateful
estimator keeps between those calls. Without the hooks (a user's own attack loop), a forward
pass on a batch of another size than the run's starts a new run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Moments:
    """ASSG moments of one layer: ``M``, ``D`` shaped ``[T, n, ...]`` and which rows are set.

    An attack that stops querying fooled samples makes its later passes on a shrinking subset
    of the run's rows, the same subset many passes in a row. :meth:`compact` keeps those rows'
    moments as compact tensors that such passes update in place (instead of gathering and
    scattering the rows at every pass); :meth:`sync` writes them back. Code that reads or
    writes ``mean`` / ``dispersion`` directly calls :meth:`sync` first.
    """

    mean: Tensor
    dispersion: Tensor
    seen: Tensor  # [n] bool: rows whose first pass has happened
    work_rows: Tensor | None = None
    work_mean: Tensor | None = None
    work_dispersion: Tensor | None = None

    def sync(self) -> None:
        """Write the compact rows back into ``mean`` / ``dispersion`` and drop them."""
        if self.work_rows is not None:
            assert self.work_mean is not None and self.work_dispersion is not None
            self.mean[:, self.work_rows] = self.work_mean
            self.dispersion[:, self.work_rows] = self.work_dispersion
        self.work_rows = self.work_mean = self.work_dispersion = None

    def compact(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(M, D)`` of ``rows`` (in that order) as contiguous ``[T, len(rows), ...]`` tensors
        that stand for those rows until the next :meth:`sync`; update them in place."""
        if self.work_rows is None or not torch.equal(self.work_rows, rows):
            self.sync()
            self.work_rows = rows.clone()
            self.work_mean = self.mean[:, rows].contiguous()
            self.work_dispersion = self.dispersion[:, rows].contiguous()
        assert self.work_mean is not None and self.work_dispersion is not None
        return self.work_mean, self.work_dispersion


@dataclass
class RunState:
    """State of one attack run: per-layer moments, the run's size and the rows in use."""

    n: int | None = None
    rows: Tensor | None = None
    layers: dict[str, Moments] = field(default_factory=dict)

    def begin(self, n: int | None = None) -> None:
        """Forget everything: a new attack run on ``n`` samples (None: size of the next pass)."""
        self.n = n
        self.rows = None
        self.layers.clear()

    def select(self, rows: Tensor | None) -> None:
        """The rows of the run's batch that the next forward passes cover (None: all)."""
        self.rows = None if rows is None else rows.detach().long().reshape(-1)

    def rows_for(self, batch: int, device: torch.device) -> Tensor:
        """Run rows of a forward pass on ``batch`` samples (starting a new run if they cannot
        belong to the current one)."""
        rows = self.rows
        if rows is not None and rows.numel() == batch:
            needed = int(rows.max()) + 1 if batch else 0
            if self.n is None or needed > self.n:
                self._grow(max(needed, self.n or 0))
            return rows.to(device)
        if self.n != batch:
            self.begin(batch)
        return torch.arange(batch, device=device)

    def _grow(self, n: int) -> None:
        for moments in self.layers.values():
            moments.sync()
            extra = n - moments.seen.shape[0]
            if extra > 0:
                pad = (moments.mean.shape[0], extra, *moments.mean.shape[2:])
                moments.mean = torch.cat([moments.mean, moments.mean.new_zeros(pad)], 1)
                moments.dispersion = torch.cat(
                    [moments.dispersion, moments.dispersion.new_zeros(pad)], 1
                )
                moments.seen = torch.cat([moments.seen, moments.seen.new_zeros(extra)])
        self.n = n

    def moments(self, layer: str, like: Tensor) -> Moments:
        """The moments of ``layer`` for membranes shaped like ``like`` = ``[T, b, ...]``."""
        assert self.n is not None
        shape = (like.shape[0], self.n, *like.shape[2:])
        existing = self.layers.get(layer)
        if existing is None or existing.mean.shape != shape:
            existing = Moments(
                like.new_zeros(shape),
                like.new_zeros(shape),
                torch.zeros(self.n, dtype=torch.bool, device=like.device),
            )
            self.layers[layer] = existing
        return existing
