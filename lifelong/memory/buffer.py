"""A replay buffer: preallocated tensors on one device, filled a batch at a time.

Columns: ``x``, ``y``, ``task`` (when task ids are given) and any named
payload (DER's logits, loss scores, ...), each allocated on the first
:meth:`Buffer.add` with that column's per-sample shape and dtype, plus one
scratch row that absorbs the writes of rejected samples, so that an insert
is a handful of fixed-size tensor operations with no host sync (reservoir)
and a cost that does not grow with the capacity.

Examples
--------
>>> import torch
>>> buf = Buffer(4, seed=0)
>>> slots = buf.add(torch.randn(10, 3), torch.arange(10), score=torch.zeros(10))
>>> len(buf), buf.sample(2).x.shape, sorted(buf.columns)
(4, torch.Size([2, 3]), ['score', 'x', 'y'])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.errors import CheckpointError, ConfigError, DataError
from lifelong.memory.selection import RandomRetrieval, Reservoir, Retrieval, Selection
from lifelong.stream.base import Batch

__all__ = ["Buffer", "last_writer_wins", "check_sizes"]


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def check_sizes(plugin: str, mem_size: Any, batch_size: Any, what: str = "batch_size") -> None:
    """:class:`ConfigError` naming ``plugin`` unless ``0 < batch_size <= mem_size``.

    ``batch_size`` may be ``None`` (decided later); ``what`` names it in the message.
    """
    if not _positive_int(mem_size):
        raise ConfigError(f"plugin {plugin!r}: mem_size must be a positive integer, got "
                          f"{mem_size!r}")
    if batch_size is None:
        return
    if not _positive_int(batch_size):
        raise ConfigError(f"plugin {plugin!r}: {what} must be a positive integer, got "
                          f"{batch_size!r}")
    if batch_size > mem_size:
        raise ConfigError(f"plugin {plugin!r}: the replay batch ({what}={batch_size}) is larger "
                          f"than the buffer (mem_size={mem_size}); lower it or raise mem_size")


def buffer_state(buffer: Buffer | None) -> dict[str, Any] | None:
    """A plugin's buffer as checkpoint data (``None`` before ``before_training``)."""
    return None if buffer is None else buffer.state_dict()


def load_buffer_state(plugin: str, buffer: Buffer | None, state: dict[str, Any] | None) -> None:
    """Restore a saved buffer; a saved buffer with nowhere to go is an error, not dropped."""
    if state is None:
        return
    if buffer is None:
        raise CheckpointError(f"plugin {plugin!r}: a saved replay buffer was loaded before the "
                              "run was assembled; load the state after before_training "
                              "(Learner.fit(stream, state=...) does)")
    buffer.load_state_dict(state)


def last_writer_wins(slots: Tensor, trash: int) -> Tensor:
    """Resolve samples of one batch aimed at the same slot as sequential writes would.

    ``slots[i]`` is sample i's target (``-1``: none). Among samples with the
    same target only the last one (highest i) keeps it; every other sample is
    sent to ``trash``. O(B log B), no host sync.
    """
    s = torch.where(slots < 0, trash, slots)
    sorted_s, order = torch.sort(s, stable=True)
    last = torch.ones_like(sorted_s, dtype=torch.bool)
    last[:-1] = sorted_s[1:] != sorted_s[:-1]
    dst = torch.empty_like(s)
    dst[order] = torch.where(last, sorted_s, trash)
    return dst


class Buffer:
    """Fixed-capacity sample memory with a pluggable selection and retrieval.

    :param capacity: number of samples it holds (> 0).
    :param selection: what enters: :class:`~lifelong.memory.Reservoir` (default),
        :class:`~lifelong.memory.ClassBalanced`, :class:`~lifelong.memory.Episodic`.
    :param retrieval: what is replayed: :class:`~lifelong.memory.RandomRetrieval` (default).
    :param device: where the columns live (the learner's device).
    :param seed: seeds the buffer's private generator (selection and, by default, retrieval).
    """

    def __init__(self, capacity: int, *, selection: Selection | None = None,
                 retrieval: Retrieval | None = None, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
        if not _positive_int(capacity):
            raise ConfigError(f"a buffer's capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self.device = torch.device(device)
        self.selection: Selection = selection if selection is not None else Reservoir()
        self.retrieval: Retrieval = retrieval if retrieval is not None else RandomRetrieval()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.columns: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.selection.filled(self)

    def __repr__(self) -> str:
        return (f"Buffer(capacity={self.capacity}, filled={len(self)}, "
                f"selection={type(self.selection).__name__}, columns={sorted(self.columns)})")

    # ------------------------------------------------------------------ insertion
    def add(self, x: Tensor, y: Tensor, task: Tensor | None = None, **payload: Tensor) -> Tensor:
        """Offer a batch; returns the slot each sample was written to (``-1``: not stored).

        Payload columns travel with their samples; every call must give the
        same columns (a column's shape and dtype are fixed by the first call).
        """
        cols = {"x": x, "y": y, **({} if task is None else {"task": task}), **payload}
        n = y.shape[0]
        for name, v in cols.items():
            if v.shape[:1] != (n,):
                raise DataError(f"buffer column {name!r} has {tuple(v.shape)[:1]} rows for a batch "
                                f"of {n} samples")
        if not self.columns:
            self.columns = {k: torch.zeros((self.capacity + 1, *v.shape[1:]), dtype=v.dtype,
                                           device=self.device) for k, v in cols.items()}
        elif cols.keys() != self.columns.keys():
            raise DataError(f"buffer columns are {sorted(self.columns)}, this batch gives "
                            f"{sorted(cols)}; give the same columns at every insert")
        for name, v in cols.items():
            if v.shape[1:] != self.columns[name].shape[1:]:
                raise DataError(f"buffer column {name!r} holds samples of shape "
                                f"{tuple(self.columns[name].shape[1:])}, got {tuple(v.shape[1:])}")
        dev = self.device
        slots = self.selection.assign(self, y.to(dev), None if task is None else task.to(dev))
        dst = last_writer_wins(slots, self.capacity)
        for name, v in cols.items():
            col = self.columns[name]
            col.index_copy_(0, dst, v.detach().to(device=dev, dtype=col.dtype))
        return torch.where(dst == self.capacity, -1, dst)

    def _move(self, src: Tensor, dst: Tensor) -> None:
        """Copy rows ``src`` to rows ``dst`` in every column (selections re-laying out memory)."""
        for col in self.columns.values():
            col[dst] = col[src]

    # ------------------------------------------------------------------ retrieval
    def filled_slots(self) -> Tensor:
        """Slot index of every stored sample."""
        return self.selection.slot_of_rank(self, torch.arange(len(self), device=self.device))

    def gather(self, slots: Tensor) -> Batch:
        """The samples in ``slots`` as a :class:`Batch` (payload columns in ``extras``)."""
        extras = {k: v[slots] for k, v in self.columns.items() if k not in ("x", "y", "task")}
        task = self.columns["task"][slots] if "task" in self.columns else None
        return Batch(self.columns["x"][slots], self.columns["y"][slots], task, extras or None)

    def sample(self, n: int, generator: torch.Generator | None = None, **context: Any) -> Batch:
        """``min(n, len(self))`` samples chosen by the retrieval (random by default).

        :param generator: a private generator of the caller's; the buffer's own if ``None``.
        :param context: passed to the retrieval (``learner``, ``step`` for model-aware rules).
        """
        if not self.columns:
            raise DataError("the buffer is empty: add samples before sampling from it")
        gen = generator if generator is not None else self.generator
        return self.gather(self.retrieval(self, n, gen, **context))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Stored rows only, their slots, the selection's state and the generator state."""
        slots = self.filled_slots()
        return {"capacity": self.capacity, "slots": slots,
                "columns": {k: v[slots] for k, v in self.columns.items()},
                "selection": self.selection.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise CheckpointError(f"the checkpoint's buffer holds {state['capacity']} samples, "
                                  f"this one {self.capacity}: use the same mem_size to resume")
        self.selection.load_state_dict(state["selection"])
        slots = state["slots"].to(self.device)
        self.columns = {}
        for k, v in state["columns"].items():
            col = torch.zeros((self.capacity + 1, *v.shape[1:]), dtype=v.dtype, device=self.device)
            col[slots] = v.to(self.device)
            self.columns[k] = col
        self.generator.set_state(state["generator"])
