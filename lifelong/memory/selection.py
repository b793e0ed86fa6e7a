"""Selection (what enters a buffer) and retrieval (what is replayed from it).

A *selection* maps each incoming sample of a batch to the slot it is
written to (``-1``: not stored), in arrival order; :class:`~lifelong.memory.Buffer`
resolves two samples aimed at one slot so that the later one wins, exactly
as if they had arrived one by one. A selection also knows which slots are
filled (``filled``, ``slot_of_rank``). Three are built in:

* :class:`Reservoir` — Algorithm R (Vitter, "Random sampling with a
  reservoir", ACM TOMS 1985), batchwise and exact: after n samples each one
  is stored with probability capacity / n.
* :class:`ClassBalanced` — an equal share of the capacity per class seen,
  each share an exact reservoir of its class; when a class first appears the
  shares shrink and the classes above the new share (the largest ones) lose
  random members (the balanced memories of Chaudhry et al. 2019, "On tiny
  episodic memories in continual learning", and Prabhu et al. 2020, GDumb).
* :class:`ExperienceBalanced` — an equal share of the capacity per
  experience (keyed by the ``task`` column), each share a reservoir of its
  experience: Avalanche's ``ExperienceBalancedBuffer``.
* :class:`Episodic` — GEM's per-task memory (Lopez-Paz & Ranzato, NeurIPS
  2017, Sec. 3): capacity / T slots per task when T is known, shrinking as
  new tasks appear otherwise, each holding the last m samples of its task.

A *retrieval* picks the slots to replay: ``retrieval(buffer, n, generator,
**context) -> slots``. :class:`RandomRetrieval` draws uniformly without
replacement; a model-aware rule (e.g. MIR) receives ``learner`` and ``step``
through ``context``.

Insertion costs O(B log B) for a batch of B, independent of the capacity;
the partitioned selections read the batch's keys on the host (one sync) and
move rows only when a new class or task appears.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from lifelong.errors import DataError

if TYPE_CHECKING:
    from lifelong.memory.buffer import Buffer

__all__ = ["Selection", "Retrieval", "Reservoir", "ClassBalanced", "ExperienceBalanced", "Episodic",
           "RandomRetrieval", "reservoir_slots"]


class Selection(Protocol):
    """Decides which incoming samples enter a buffer, and where."""

    def assign(self, buffer: Buffer, y: Tensor, task: Tensor | None) -> Tensor:
        """The target slot of each incoming sample (``-1``: not stored), in arrival order."""

    def filled(self, buffer: Buffer) -> int:
        """How many slots hold a sample."""

    def slot_of_rank(self, buffer: Buffer, rank: Tensor) -> Tensor:
        """Map ranks ``0..filled-1`` to slot indices."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Retrieval(Protocol):
    """Decides which stored samples are replayed."""

    def __call__(self, buffer: Buffer, n: int, generator: torch.Generator,
                 **context: Any) -> Tensor:
        """Slots of (at most) ``n`` samples to replay."""


def reservoir_slots(index: Tensor, capacity: Tensor | int, generator: torch.Generator) -> Tensor:
    """Algorithm R for samples with 0-based global indices ``index``: slot, or -1.

    Sample n (0-based) goes to slot n while n < capacity; afterwards a
    uniform j in {0, ..., n} is drawn and the sample replaces slot j if
    j < capacity. ``capacity`` may be a tensor (one per sample).
    """
    j = _uniform_upto(index, generator)
    return torch.where(index < capacity, index, torch.where(j < capacity, j, -1))


def _uniform_upto(index: Tensor, generator: torch.Generator) -> Tensor:
    """A uniform integer in ``{0, ..., index}`` per element (one float64 draw each)."""
    u = torch.rand(index.shape, dtype=torch.float64, generator=generator, device=index.device)
    return torch.minimum((u * (index + 1)).long(), index)


class Reservoir:
    """Reservoir sampling: every sample seen so far is stored with probability capacity / seen."""

    def __init__(self) -> None:
        self.seen = 0

    def assign(self, buffer: Buffer, y: Tensor, task: Tensor | None) -> Tensor:
        index = torch.arange(self.seen, self.seen + y.shape[0], device=y.device)
        self.seen += int(y.shape[0])
        return reservoir_slots(index, buffer.capacity, buffer.generator)

    def fill(self, buffer: Buffer, n: int) -> int:
        """:meth:`assign` for ``n`` samples that all fit in the free slots: the first slot.

        They take slots ``seen .. seen + n - 1``; the generator advances exactly
        as :meth:`assign` advances it, so both paths give the same buffer.
        """
        start = self.seen
        torch.rand((n,), dtype=torch.float64, generator=buffer.generator, device=buffer.device)
        self.seen += n
        return start

    def replace(self, buffer: Buffer, n: int) -> Tensor:
        """:meth:`assign` for ``n`` samples once the buffer is full, not-stored as
        ``capacity`` (the buffer's trash row) instead of -1; same draws, same slots."""
        cap = buffer.capacity
        index = torch.arange(self.seen, self.seen + n, device=buffer.device)
        self.seen += n
        return _uniform_upto(index, buffer.generator).clamp_max_(cap)  # j >= cap: the trash row

    def filled(self, buffer: Buffer) -> int:
        return min(self.seen, buffer.capacity)

    def slot_of_rank(self, buffer: Buffer, rank: Tensor) -> Tensor:
        return rank

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])


class _Partitioned:
    """Capacity split evenly over keys (classes or tasks) in order of first appearance."""

    key = "y"
    fill = "reservoir"  # or "ring": the last m samples of each key

    def __init__(self, n_parts: int | None = None) -> None:
        self.n_parts = n_parts
        self.keys: list[int] = []
        self.seen: list[int] = []

    def _layout(self, capacity: int, n_keys: int) -> tuple[list[int], list[int]]:
        parts = max(self.n_parts or 0, n_keys, 1)
        q, r = divmod(capacity, parts)
        sizes = [q + int(p < r) for p in range(parts)]
        offsets = [sum(sizes[:p]) for p in range(parts)]
        return sizes, offsets

    def _filled(self, capacity: int) -> list[int]:
        sizes, _ = self._layout(capacity, len(self.keys))
        return [min(s, z) for s, z in zip(self.seen, sizes)]

    def filled(self, buffer: Buffer) -> int:
        return sum(self._filled(buffer.capacity))

    def slot_of_rank(self, buffer: Buffer, rank: Tensor) -> Tensor:
        _, offsets = self._layout(buffer.capacity, len(self.keys))
        f = torch.tensor(self._filled(buffer.capacity), dtype=torch.long, device=rank.device)
        off = torch.tensor(offsets[:len(self.keys)], dtype=torch.long, device=rank.device)
        end = f.cumsum(0)
        p = torch.searchsorted(end, rank, right=True)
        return off[p] + rank - (end - f)[p]

    def span_of(self, buffer: Buffer, key: int) -> tuple[int, int]:
        """``(start, stop)``: the filled slots of one key are ``start .. stop - 1``
        (``(0, 0)`` for a key never seen)."""
        if key not in self.keys:
            return 0, 0
        p = self.keys.index(key)
        _, offsets = self._layout(buffer.capacity, len(self.keys))
        return offsets[p], offsets[p] + self._filled(buffer.capacity)[p]

    def slots_of(self, buffer: Buffer, key: int) -> Tensor:
        """The filled slots of one key (class or task), oldest layout position first."""
        start, stop = self.span_of(buffer, key)
        return torch.arange(start, stop, device=buffer.device)

    def _add_keys(self, buffer: Buffer, new: list[int]) -> None:
        """Register new keys; shrink the existing parts (moving rows) if the layout changes."""
        n = len(self.keys)
        old_sizes, old_offsets = self._layout(buffer.capacity, n)
        sizes, offsets = self._layout(buffer.capacity, n + len(new))
        if (sizes[:n], offsets[:n]) != (old_sizes[:n], old_offsets[:n]) and buffer.columns:
            dev, src, dst = buffer.device, [], []
            for p in range(n):
                f = min(self.seen[p], old_sizes[p])
                k = min(f, sizes[p])
                if k == 0:
                    continue
                if self.fill == "ring":  # keep the last k, each at its ring position
                    s = torch.arange(self.seen[p] - k, self.seen[p], device=dev)
                    src.append(old_offsets[p] + s % old_sizes[p])
                    dst.append(offsets[p] + s % sizes[p])
                else:  # a uniform subset of a uniform subset stays a reservoir sample
                    keep = (torch.randperm(f, generator=buffer.generator, device=dev)[:k]
                            if k < f else torch.arange(f, device=dev))
                    src.append(old_offsets[p] + keep)
                    dst.append(offsets[p] + torch.arange(k, device=dev))
            if src:
                buffer._move(torch.cat(src), torch.cat(dst))
        self.keys.extend(new)
        self.seen.extend([0] * len(new))

    def assign(self, buffer: Buffer, y: Tensor, task: Tensor | None) -> Tensor:
        keys = y if self.key == "y" else task
        if keys is None:
            raise DataError(f"{type(self).__name__} memory splits samples by task: pass task ids "
                            "to Buffer.add(x, y, task=...)")
        uniq, counts = torch.unique(keys, sorted=True, return_counts=True)
        uk, uc = uniq.tolist(), counts.tolist()
        new = [k for k in uk if k not in self.keys]
        if new:
            self._add_keys(buffer, new)
        parts = [self.keys.index(k) for k in uk]
        sizes, offsets = self._layout(buffer.capacity, len(self.keys))
        dev = keys.device
        u = torch.searchsorted(uniq, keys)  # which unique key each sample has

        def per_key(values: list[int]) -> Tensor:
            return torch.tensor(values, dtype=torch.long, device=dev)[u]

        order = torch.argsort(u, stable=True)
        starts = torch.tensor([sum(uc[:i]) for i in range(len(uc))], dtype=torch.long, device=dev)
        rank = torch.empty_like(u)
        rank[order] = torch.arange(len(u), device=dev) - starts[u[order]]
        index = per_key([self.seen[p] for p in parts]) + rank
        size = per_key([sizes[p] for p in parts])
        if self.fill == "ring":
            local = torch.where(size > 0, index % size.clamp(min=1), -1)
        else:
            local = reservoir_slots(index, size, buffer.generator)
        for p, c in zip(parts, uc):
            self.seen[p] += c
        return torch.where(local >= 0, per_key([offsets[p] for p in parts]) + local, -1)

    def state_dict(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "seen": list(self.seen), "n_parts": self.n_parts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keys = [int(k) for k in state["keys"]]
        self.seen = [int(s) for s in state["seen"]]
        self.n_parts = state["n_parts"]


class ClassBalanced(_Partitioned):
    """An equal share per class seen, each an exact reservoir of its class.

    :param n_classes: number of classes if known (shares fixed from the
        start); ``None``: shares shrink as classes appear, trimming the
        largest classes by random eviction.
    """

    key = "y"
    fill = "reservoir"

    def __init__(self, n_classes: int | None = None) -> None:
        super().__init__(n_classes)


class ExperienceBalanced(_Partitioned):
    """An equal share per experience (the ``task`` column holds the experience index),
    each an exact reservoir of its experience; shares shrink as experiences appear."""

    key = "task"
    fill = "reservoir"

    def __init__(self) -> None:
        super().__init__(None)


class Episodic(_Partitioned):
    """GEM's episodic memory: capacity / T slots per task, the last m samples of each task.

    :param n_tasks: number of tasks T if known; ``None``: the per-task share
        shrinks as tasks appear, each task keeping its most recent samples.
    """

    key = "task"
    fill = "ring"

    def __init__(self, n_tasks: int | None = None) -> None:
        super().__init__(n_tasks)


class RandomRetrieval:
    """Uniformly random stored samples, without replacement (at most all of them)."""

    def __call__(self, buffer: Buffer, n: int, generator: torch.Generator,
                 **context: Any) -> Tensor:
        k = len(buffer)
        rank = torch.randperm(k, generator=generator, device=buffer.device)[:min(n, k)]
        return buffer.selection.slot_of_rank(buffer, rank)
