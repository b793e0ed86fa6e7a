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

__all__ = ["Buffer", "last_writer_wins", "check_sizes", "check_fits"]


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


def check_fits(plugin: str, mem_size: int, stream: Any, device: Any, *,
               payload_floats: int = 0) -> None:
    """:class:`ConfigError` before training when ``mem_size`` samples of the stream's input
    shape (plus ``payload_floats`` per sample, e.g. DER's logits) cannot fit in memory."""
    import math

    from lifelong.validation import check_memory

    shape = getattr(stream, "input_shape", None) or ()
    per = 4 * (math.prod(shape) + payload_floats) + 16
    check_memory(f"plugin {plugin!r}", "mem_size", (mem_size + 1) * per, device=device,
                 fix=f"lower mem_size (each sample of shape {tuple(shape)} takes {per} bytes)")


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
    buffer.load_state_dict(state, owner=plugin)


def _check_buffer_state(buffer: Buffer, state: dict[str, Any], owner: str) -> None:
    """Everything :meth:`Buffer.load_state_dict` reads, checked before anything is changed."""
    import copy

    from lifelong.validation import (
        check_tensor,
        loading_learner,
        model_output_width,
        state_get,
        state_rng,
    )

    who = owner if " " in owner else f"plugin {owner!r}"

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint state of {who}: the replay buffer's {what}; the "
                               "checkpoint is corrupted")

    selection = copy.deepcopy(buffer.selection)
    sel_state = state_get(state, "selection", owner=owner)
    try:
        _check_selection_state(sel_state, buffer.capacity)
        selection.load_state_dict(sel_state)
        probe = Buffer.__new__(Buffer)
        probe.capacity, probe.device, probe.selection = buffer.capacity, buffer.device, selection
        want = selection.slot_of_rank(probe, torch.arange(selection.filled(probe),
                                                          device=buffer.device))
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise bad(f"selection state is not valid ({exc})") from None
    slots = check_tensor(state_get(state, "slots", owner=owner), "slots", owner=owner,
                         shape=(None,), dtype=torch.int64)
    if slots.shape != want.shape or not torch.equal(slots.to(want.device), want):
        raise bad(f"slots ({len(slots)}) do not match its selection state ({len(want)} filled "
                  f"slots within 0..{buffer.capacity - 1})")
    columns = state_get(state, "columns", owner=owner)
    if not isinstance(columns, dict):
        raise bad(f"columns are a {type(columns).__name__}, not a mapping")
    n = len(want)
    if n and not {"x", "y"} <= set(columns):
        raise bad(f"columns {sorted(columns)} lack x or y")
    learner = loading_learner()
    stream = getattr(learner, "stream", None) if learner is not None else None
    for name, col in columns.items():
        check_tensor(col, f"column {name!r}", owner=owner)
        if col.dim() < 1 or col.shape[0] != n:
            raise bad(f"column {name!r} has {tuple(col.shape)[:1]} rows for {n} stored samples")
        if col.is_floating_point() and not bool(torch.isfinite(col).all()):
            raise bad(f"column {name!r} holds NaN or infinite values")
    if "x" in columns:
        x = columns["x"]
        if not x.is_floating_point():
            raise bad(f"inputs have dtype {x.dtype}, not floating point")
        shape = stream.input_shape if stream is not None else None
        if shape is not None and tuple(x.shape[1:]) != tuple(shape):
            raise bad(f"inputs have shape {tuple(x.shape[1:])}, the stream's are "
                      f"{tuple(stream.input_shape)}")
    if "y" in columns:
        y = columns["y"]
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
            raise bad(f"labels are {tuple(y.shape)} {y.dtype}, not a vector of class indices")
        top = stream.num_classes if stream is not None else None
        if len(y) and (int(y.min()) < 0 or (top is not None and int(y.max()) >= top)):
            raise bad(f"labels span {int(y.min())}..{int(y.max())}, outside the stream's "
                      f"classes 0..{(top or 0) - 1}")
    if "task" in columns:
        t = columns["task"]
        if t.dim() != 1 or t.is_floating_point() or (len(t) and int(t.min()) < 0):
            raise bad("task ids are not a vector of integers >= 0")
    tasks = {t.name: t for t in getattr(stream, "tasks", ())}
    for name, col in columns.items():  # multi-target streams: every task's stored target
        task = tasks.get(name.partition("/")[2]) if name.startswith("target/") else None
        if task is not None and task.kind == "classification" and len(col) and (
                col.is_floating_point() or int(col.min()) < 0 or int(col.max()) >= task.size):
            raise bad(f"targets of task {task.name!r} are not class indices in "
                      f"0..{task.size - 1}")
    if "logits" in columns and learner is not None:
        width = model_output_width(learner)
        lg = columns["logits"]
        if width is not None and (lg.dim() != 2 or lg.shape[1] != width
                                  or not lg.is_floating_point()):
            raise bad(f"stored logits are {tuple(lg.shape[1:])} {lg.dtype}, the model outputs "
                      f"{width} floating logits")
    state_rng(state, "generator", owner=owner, generator=buffer.generator)


def _check_selection_state(state: Any, capacity: int) -> None:
    """A selection's counters: integers >= 0, per-key lists of equal length."""
    def nonneg(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(state, dict):
        raise CheckpointError(f"a buffer selection state must be a mapping, got "
                              f"{type(state).__name__}")
    from lifelong.validation import loading_counters

    top = loading_counters().get("samples_seen")
    if "seen" in state and not isinstance(state["seen"], list):
        if not nonneg(state["seen"]) or (isinstance(top, int) and state["seen"] > top):
            raise CheckpointError(f"the buffer's seen counter is {state['seen']!r} (the run has "
                                  f"seen {top} samples)")
        return
    keys, seen = state.get("keys"), state.get("seen")
    if not (isinstance(keys, list) and isinstance(seen, list) and len(keys) == len(seen)
            and all(nonneg(k) for k in keys) and all(nonneg(s) for s in seen)
            and len(set(keys)) == len(keys)):
        raise CheckpointError("the buffer's per-key counters are not lists of integers >= 0 of "
                              "equal length, with distinct keys")
    if isinstance(top, int) and sum(seen) > top:
        raise CheckpointError(f"the buffer has counted {sum(seen)} samples, the run has seen "
                              f"{top}")
    n_parts = state.get("n_parts")
    if n_parts is not None and not (nonneg(n_parts) and n_parts >= 1):
        raise CheckpointError(f"the buffer's n_parts is {n_parts!r}")


_PAIRWISE_MAX = 64
_LATER: dict[tuple[int, torch.device], Tensor] = {}


def _later(n: int, device: torch.device) -> Tensor:
    """``m[i, j] = j > i`` for an (n, n) batch, cached per size and device."""
    key = (n, device)
    m = _LATER.get(key)
    if m is None:
        m = _LATER[key] = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    return m


def last_writer_wins(slots: Tensor, trash: int) -> Tensor:
    """Resolve samples of one batch aimed at the same slot as sequential writes would.

    ``slots[i]`` is sample i's target (``-1``: none). Among samples with the
    same target only the last one (highest i) keeps it; every other sample is
    sent to ``trash``. No host sync: a (B, B) comparison for small batches,
    a stable sort (O(B log B)) for larger ones.
    """
    return _later_wins(torch.where(slots < 0, trash, slots), trash)


def _later_wins(s: Tensor, trash: int) -> Tensor:
    """:func:`last_writer_wins` for targets already in ``0..trash`` (``trash``: none)."""
    n = s.shape[0]
    if n <= _PAIRWISE_MAX:  # small batch: one (B, B) comparison beats a sort
        dup = ((s.unsqueeze(1) == s.unsqueeze(0)) & _later(n, s.device)).any(1)
        return s.masked_fill(dup, trash)
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
        dst = self._write(x, y, task, payload)
        if isinstance(dst, int):  # filling: n consecutive slots from dst
            return torch.arange(dst, dst + y.shape[0], device=self.device)
        return torch.where(dst == self.capacity, -1, dst)

    def insert(self, x: Tensor, y: Tensor, task: Tensor | None = None, **payload: Tensor) -> None:
        """:meth:`add` without the slot report: the per-step insert of replay plugins."""
        self._write(x, y, task, payload)

    def _check_columns(self, cols: dict[str, Tensor], n: int) -> None:
        for name, v in cols.items():
            if v.shape[:1] != (n,):
                raise DataError(f"buffer column {name!r} has {tuple(v.shape)[:1]} rows for a batch "
                                f"of {n} samples")
        if not self.columns:
            return
        if cols.keys() != self.columns.keys():
            raise DataError(f"buffer columns are {sorted(self.columns)}, this batch gives "
                            f"{sorted(cols)}; give the same columns at every insert")
        for name, v in cols.items():
            if v.shape[1:] != self.columns[name].shape[1:]:
                raise DataError(f"buffer column {name!r} holds samples of shape "
                                f"{tuple(self.columns[name].shape[1:])}, got {tuple(v.shape[1:])}")

    def _write(self, x: Tensor, y: Tensor, task: Tensor | None,
               payload: dict[str, Tensor]) -> Tensor | int:
        """Store a batch; the written slots (``capacity``: not stored) or, while a reservoir
        fills, the first of the consecutive slots taken."""
        cols = {"x": x, "y": y, **({} if task is None else {"task": task}), **payload}
        n = y.shape[0]
        self._check_columns(cols, n)
        if not self.columns:
            self.columns = {k: torch.zeros((self.capacity + 1, *v.shape[1:]), dtype=v.dtype,
                                           device=self.device) for k, v in cols.items()}
        dev = self.device
        sel = self.selection
        if type(sel) is Reservoir and sel.seen + n <= self.capacity:
            # filling: the samples take the next n slots (distinct; no resolution needed)
            start = sel.fill(self, n)
            for name, v in cols.items():
                self.columns[name][start:start + n].copy_(v.detach())
            return start
        if type(sel) is Reservoir and sel.seen >= self.capacity:  # full: slot or the trash row
            dst = _later_wins(sel.replace(self, n), self.capacity)
        else:
            slots = sel.assign(self, y.to(dev), None if task is None else task.to(dev))
            dst = last_writer_wins(slots, self.capacity)
        for name, v in cols.items():
            col = self.columns[name]
            col.index_copy_(0, dst, v.detach().to(device=dev, dtype=col.dtype))
        return dst

    def _move(self, src: Tensor, dst: Tensor) -> None:
        """Copy rows ``src`` to rows ``dst`` in every column (selections re-laying out memory)."""
        for col in self.columns.values():
            col[dst] = col[src]

    # ------------------------------------------------------------------ retrieval
    def filled_slots(self) -> Tensor:
        """Slot index of every stored sample."""
        return self.selection.slot_of_rank(self, torch.arange(len(self), device=self.device))

    def gather(self, slots: Tensor | slice) -> Batch:
        """The samples in ``slots`` as a :class:`Batch` (payload columns in ``extras``); a
        ``slice`` gives views of the columns, an index tensor copies."""
        if isinstance(slots, Tensor):  # index_select: the copy without indexing's parsing
            def pick(v: Tensor) -> Tensor:
                return v.index_select(0, slots)
        else:
            def pick(v: Tensor) -> Tensor:
                return v[slots]
        cols = self.columns
        extras = {k: pick(v) for k, v in cols.items() if k not in ("x", "y", "task")}
        task = pick(cols["task"]) if "task" in cols else None
        return Batch(pick(cols["x"]), pick(cols["y"]), task, extras or None)

    def rows(self, start: int, stop: int) -> Batch:
        """Slots ``start .. stop - 1`` as a :class:`Batch` of views (no copy): read them before
        the buffer's next insert, never write to them."""
        if not self.columns:
            raise DataError("the buffer is empty: add samples before reading from it")
        return self.gather(slice(start, stop))

    def sample(self, n: int, generator: torch.Generator | None = None, **context: Any) -> Batch:
        """``min(n, len(self))`` samples chosen by the retrieval (random by default).

        :param generator: a private generator of the caller's; the buffer's own if ``None``.
        :param context: passed to the retrieval (``learner``, ``step`` for model-aware rules).
        """
        return self.gather(self.draw(n, generator, **context))

    def draw(self, n: int, generator: torch.Generator | None = None, **context: Any) -> Tensor:
        """The slots :meth:`sample` would gather (the same draws), for a caller that joins
        several draws into one gather."""
        if not self.columns:
            raise DataError("the buffer is empty: add samples before sampling from it")
        gen = generator if generator is not None else self.generator
        return self.retrieval(self, n, gen, **context)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Stored rows only, their slots, the selection's state and the generator state."""
        slots = self.filled_slots()
        return {"capacity": self.capacity, "slots": slots,
                "columns": {k: v[slots] for k, v in self.columns.items()},
                "selection": self.selection.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], owner: str = "replay buffer") -> None:
        """Restore a :meth:`state_dict`, checked against this buffer and (during a learner's
        load) the stream: slots, row counts, input shape, dtypes, labels in range."""
        from lifelong.validation import state_get

        capacity = state_get(state, "capacity", owner=owner)
        if capacity != self.capacity:
            raise CheckpointError(f"the checkpoint's buffer holds {capacity!r} samples, "
                                  f"this one {self.capacity}: use the same mem_size to resume")
        _check_buffer_state(self, state, owner)
        self.selection.load_state_dict(state["selection"])
        slots = state["slots"].to(self.device)
        self.columns = {}
        for k, v in state["columns"].items():
            col = torch.zeros((self.capacity + 1, *v.shape[1:]), dtype=v.dtype, device=self.device)
            col[slots] = v.to(self.device)
            self.columns[k] = col
        self.generator.set_state(state["generator"])
