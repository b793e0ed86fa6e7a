"""The stream vocabulary: ``Batch``, ``Experience``, ``EvalSet`` and ``Stream``.

A stream is a lazy sequence of experiences; an experience yields batches.
Streams built from tensors are validated once, on the host, when they are
built (labels in range, finite inputs, consistent shapes), so the training
loop never pays for it; streams fed by iterators are validated chunk by
chunk on the host before anything reaches the learner's device.

Every shuffle is drawn from a generator seeded by ``(stream seed,
experience id, epoch)``: the same stream gives the same batches, and a
resumed run can skip to any batch without replaying the RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import DataError

__all__ = [
    "Batch",
    "TaskSpec",
    "Experience",
    "TensorExperience",
    "IterableExperience",
    "EvalSet",
    "Stream",
    "validate_tensors",
    "validate_targets",
    "primary_target",
    "batch_seed",
]

TASK_KINDS = ("classification", "regression")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-target stream: its name, kind and size.

    ``kind`` is ``"classification"`` (``size`` classes, integer targets,
    cross-entropy ``ce/<name>``) or ``"regression"`` (``size`` outputs, float
    targets of shape ``(N,)`` when ``size == 1`` or ``(N, size)``, squared error
    ``mse/<name>``).
    """

    name: str
    kind: str
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or set("/.") & set(self.name):
            raise DataError(f"task name {self.name!r}: a non-empty string without '/' or '.'")
        if self.kind not in TASK_KINDS:
            raise DataError(f"task {self.name!r}: kind must be one of {TASK_KINDS}, "
                            f"got {self.kind!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise DataError(f"task {self.name!r}: size must be a positive integer, "
                            f"got {self.size!r}")

    @property
    def loss_name(self) -> str:
        """The name of this task's loss in ``step.losses``: ``ce/<name>`` or ``mse/<name>``."""
        return ("ce/" if self.kind == "classification" else "mse/") + self.name


@dataclass(slots=True)
class Batch:
    """A mini-batch: inputs ``x``, integer labels ``y``, optional task ids.

    ``extras`` carries payload columns (stored logits for DER, loss scores,
    ...) that travel with the samples; it is ``None`` when there are none.

    ``predict`` is set only by streams with delayed labels
    (:func:`lifelong.stream.delay.label_delay`): the samples that *arrived*
    at this step and must be predicted now, while ``x, y`` are older samples
    whose labels have just come in. The learner predicts ``predict.x``
    before it trains on ``x, y`` and never trains on ``predict``; its labels
    are there only so that the evaluation can score those predictions.

    ``targets`` is set only by multi-target streams (``Stream.tasks``): one
    tensor per task name (see :class:`TaskSpec`). ``y`` then holds the
    targets of the stream's first classification task (zeros when every
    task is a regression), so that code reading ``y`` keeps working.
    """

    x: Tensor
    y: Tensor
    task: Tensor | None = None
    extras: dict[str, Tensor] | None = None
    predict: Batch | None = None
    targets: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with every tensor on ``device`` (no copy if already there)."""
        task = None if self.task is None else self.task.to(device, non_blocking=non_blocking)
        extras = (
            None
            if self.extras is None
            else {k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()}
        )
        return Batch(
            self.x.to(device, non_blocking=non_blocking),
            self.y.to(device, non_blocking=non_blocking),
            task,
            extras,
            None if self.predict is None else self.predict.to(device, non_blocking=non_blocking),
            None if self.targets is None
            else {k: v.to(device, non_blocking=non_blocking) for k, v in self.targets.items()},
        )


def batch_seed(seed: int, experience_id: int, epoch: int) -> int:
    """The seed of one experience's shuffle in one epoch (stable across runs)."""
    return (int(seed) * 1_000_003 + int(experience_id) * 10_007 + int(epoch)) % (2**63 - 1)


def validate_tensors(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int | None,
    input_shape: Sequence[int] | None,
    where: str,
    task: Tensor | None = None,
    check_finite: bool = True,
) -> None:
    """Raise :class:`DataError` naming ``where`` if the data cannot be trained on.

    Checks: ``x`` is floating point with shape ``(N, *input_shape)``; ``y`` is a
    1-d integer tensor of length N with every label in ``[0, num_classes)``;
    ``x`` has no NaN/inf (unless ``check_finite=False``); ``task`` (if given) is an
    integer vector of length N.
    Vectorized over the whole tensor: call it once per data set or chunk.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise DataError(f"{where}: inputs and labels must be torch tensors, got "
                        f"{type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise DataError(f"{where}: inputs must be floating point, got dtype {x.dtype}; "
                        "convert with x.float() (and scale to a sensible range)")
    if y.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise DataError(f"{where}: labels must be integer class indices, got dtype {y.dtype}")
    if y.dim() != 1:
        raise DataError(f"{where}: labels must be a 1-d vector, got shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{where}: inputs have shape {tuple(x.shape[1:])} per sample, "
                        f"the stream declares {tuple(input_shape)}")
    if y.numel() and num_classes is not None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(f"{where}: label {bad} is outside the declared classes "
                            f"[0, {num_classes - 1}]; declare num_classes={max(hi + 1, num_classes)}"
                            " (or relabel the data to 0..num_classes-1)")
    if check_finite and x.numel() and not bool(torch.isfinite(x).all()):
        rows = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).nonzero().flatten()
        raise DataError(f"{where}: {rows.numel()} input row(s) contain NaN or inf "
                        f"(first at row {int(rows[0])}); clean the data or drop those rows")
    if task is not None:
        if task.dtype.is_floating_point or task.dim() != 1 or task.shape[0] != y.shape[0]:
            raise DataError(f"{where}: task ids must be an integer vector with one id per sample")


def primary_target(tasks: Sequence[TaskSpec], targets: dict[str, Tensor], n: int) -> Tensor:
    """``Batch.y`` of a multi-target batch: the first classification task's targets, else zeros."""
    for t in tasks:
        if t.kind == "classification":
            return targets[t.name]
    return torch.zeros(n, dtype=torch.long)


def validate_targets(targets: Any, tasks: Sequence[TaskSpec], n: int, *, where: str,
                     check_finite: bool = True) -> None:
    """Raise :class:`DataError` naming ``where`` and the task if ``targets`` do not fit ``tasks``.

    Checks: a mapping with exactly one tensor per declared task (a missing or an
    undeclared task is named); classification targets are integer vectors of
    length ``n`` in ``[0, size)``; regression targets are floating point of shape
    ``(n,)`` (size 1) or ``(n, size)`` and finite. Vectorized; call once per data set
    or chunk.
    """
    if not isinstance(targets, dict):
        raise DataError(f"{where}: a multi-target stream needs targets as a mapping from task "
                        f"name to tensor, got {type(targets).__name__}")
    names = [t.name for t in tasks]
    for t in tasks:
        if t.name not in targets:
            raise DataError(f"{where}: no target for task {t.name!r}; every sample needs one "
                            f"target per declared task ({', '.join(names)})")
    for k in targets:
        if k not in names:
            raise DataError(f"{where}: target for task {k!r}, which the stream does not declare "
                            f"(tasks: {', '.join(names)}); declare it or drop the column")
    for t in tasks:
        v = targets[t.name]
        if not isinstance(v, Tensor):
            raise DataError(f"{where}: task {t.name!r}: targets must be a torch tensor, "
                            f"got {type(v).__name__}")
        if v.shape[:1] != (n,):
            raise DataError(f"{where}: task {t.name!r}: {v.shape[0] if v.dim() else 0} targets "
                            f"for {n} samples")
        if t.kind == "classification":
            if v.dtype.is_floating_point or v.dtype == torch.bool or v.dim() != 1:
                raise DataError(f"{where}: task {t.name!r} is a classification: targets must be "
                                f"a 1-d integer vector, got dtype {v.dtype}, shape {tuple(v.shape)}")
            if v.numel():
                lo, hi = int(v.min()), int(v.max())
                if lo < 0 or hi >= t.size:
                    raise DataError(f"{where}: task {t.name!r}: label {lo if lo < 0 else hi} is "
                                    f"outside its classes [0, {t.size - 1}]; declare size="
                                    f"{max(hi + 1, t.size)}")
        else:
            shape_ok = v.shape[1:] == (t.size,) or (t.size == 1 and v.dim() == 1)
            if not v.is_floating_point() or not shape_ok:
                want = f"({n},) or ({n}, 1)" if t.size == 1 else f"({n}, {t.size})"
                raise DataError(f"{where}: task {t.name!r} is a regression of size {t.size}: "
                                f"targets must be floating point of shape {want}, got dtype "
                                f"{v.dtype}, shape {tuple(v.shape)}")
            if check_finite and v.numel() and not bool(torch.isfinite(v).all()):
                bad = (~torch.isfinite(v.reshape(n, -1))).any(1).nonzero().flatten()
                raise DataError(f"{where}: task {t.name!r}: {bad.numel()} regression target(s) "
                                f"are NaN or inf (first at row {int(bad[0])}); clean or drop them")


@dataclass(eq=False)
class EvalSet:
    """Held-out data of one experience, used for the accuracy matrix.

    ``classes`` are the classes of that experience (Task-IL masks the logits
    to them); ``task_id`` is the task label when the stream has them.
    ``targets`` (multi-target streams only) holds one tensor per task, as in
    :class:`Batch`; ``y`` is then the first classification task's targets.
    """

    x: Tensor
    y: Tensor
    classes: tuple[int, ...]
    task_id: int | None = None
    name: str = ""
    targets: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


class Experience:
    """One segment of a stream. Subclasses yield its training batches."""

    id: int
    classes: tuple[int, ...]
    task_id: int | None
    n_samples: int | None
    #: False when inputs are not checked for NaN/inf up front: the learner then
    #: checks each batch on the host and applies its ``nan_policy``.
    finite_checked: bool = True

    def batches(
        self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
        start: int = 0,
    ) -> Iterator[Batch]:
        """Yield training batches (CPU tensors); skip the first ``start`` batches."""
        raise NotImplementedError

    def n_batches(self, batch_size: int, epochs: int = 1) -> int | None:
        """How many batches :meth:`batches` yields, if known."""
        if self.n_samples is None:
            return None
        return epochs * -(-self.n_samples // batch_size)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(id={self.id}, n_samples={self.n_samples}, "
                f"classes={list(self.classes)}, task_id={self.task_id})")


class TensorExperience(Experience):
    """An experience held as tensors (the usual case for benchmark scenarios)."""

    def __init__(
        self, id: int, x: Tensor, y: Tensor, *, task_id: int | None = None,
        classes: Sequence[int] | None = None, with_task_labels: bool = False,
        targets: dict[str, Tensor] | None = None,
    ) -> None:
        if x.shape[0] == 0:
            raise DataError(f"experience {id} is empty: it has no training samples")
        self.id = id
        self.x = x
        self.y = y
        self.task_id = task_id
        self.classes = tuple(sorted(int(c) for c in (classes if classes is not None
                                                     else torch.unique(y).tolist())))
        self.n_samples = int(y.shape[0])
        self._task = (torch.full_like(y, task_id) if with_task_labels and task_id is not None
                      else None)
        self.targets = targets

    def batches(
        self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
        start: int = 0,
    ) -> Iterator[Batch]:
        n = self.n_samples
        per_epoch = -(-n // batch_size)
        for epoch in range(epochs):
            if start >= per_epoch:
                start -= per_epoch
                continue
            if shuffle:
                g = torch.Generator().manual_seed(batch_seed(seed, self.id, epoch))
                perm = torch.randperm(n, generator=g)
                x, y = self.x[perm], self.y[perm]
                t = None if self._task is None else self._task[perm]
                tg = None if self.targets is None else {k: v[perm] for k, v in self.targets.items()}
            else:
                x, y, t, tg = self.x, self.y, self._task, self.targets
            if tg is not None:
                for i in range(start * batch_size, n, batch_size):
                    yield Batch(x[i:i + batch_size], y[i:i + batch_size],
                                None if t is None else t[i:i + batch_size],
                                targets={k: v[i:i + batch_size] for k, v in tg.items()})
                start = 0
                continue
            for i in range(start * batch_size, n, batch_size):
                yield Batch(x[i:i + batch_size], y[i:i + batch_size],
                            None if t is None else t[i:i + batch_size])
            start = 0


class IterableExperience(Experience):
    """An experience fed by a re-iterable source of batches (streams larger than memory).

    ``source(batch_size)`` returns a fresh iterator of CPU batches of that
    size; each is validated on the host (shape, dtype, labels) before it is
    yielded; non-finite inputs are left to the learner's ``nan_policy``.
    """

    finite_checked = False

    def __init__(
        self, id: int, source: Callable[[int], Iterable[Batch]], *, num_classes: int | None,
        input_shape: Sequence[int] | None, n_samples: int | None = None,
        classes: Sequence[int] = (), task_id: int | None = None,
        tasks: Sequence[TaskSpec] = (),
    ) -> None:
        self.id = id
        self.tasks = tuple(tasks)
        self._source = source
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.n_samples = n_samples
        self.classes = tuple(classes)
        self.task_id = task_id

    def batches(
        self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
        start: int = 0,
    ) -> Iterator[Batch]:
        k = 0
        for _ in range(epochs):
            for b in self._source(batch_size):
                if k >= start:
                    validate_tensors(b.x, b.y, num_classes=self.num_classes,
                                     input_shape=self.input_shape, task=b.task,
                                     where=f"experience {self.id}, batch {k}",
                                     check_finite=False)
                    if self.tasks:  # streamed multi-target data: checked at the batch
                        validate_targets(b.targets, self.tasks, len(b),
                                         where=f"experience {self.id}, batch {k}")
                    yield b
                k += 1


@dataclass(eq=False)
class Stream:
    """A lazy, seeded sequence of experiences plus held-out data per experience.

    ``task_aware`` streams announce their boundaries (and may carry task
    ids); task-free streams do not, and methods must detect boundaries
    themselves. ``change_points`` are the true boundaries in samples seen,
    known to the evaluation but never shown to the methods. ``tasks`` is
    non-empty for multi-target streams: every batch and evaluation set then
    carries ``targets``, one per :class:`TaskSpec`.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    make_experiences: Callable[[], Iterable[Experience]]
    test: list[EvalSet] = field(default_factory=list)
    task_aware: bool = True
    n_experiences: int | None = None
    task_labels: bool = False
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[TaskSpec, ...] = ()
    #: multi-target streams that declare tasks per experience: the names of the tasks whose
    #: targets experience ``e`` carries (empty: every task in every experience). A task
    #: exists (its head, its evaluation) from the first experience that lists it on.
    experience_tasks: tuple[tuple[str, ...], ...] = ()

    def tasks_at(self, experience: int) -> tuple[TaskSpec, ...]:
        """The tasks that exist once ``experience`` has started (in declaration order)."""
        if not self.experience_tasks:
            return self.tasks
        seen = {n for names in self.experience_tasks[:max(experience, 0) + 1] for n in names}
        return tuple(t for t in self.tasks if t.name in seen)

    def experiences(self) -> Iterator[Experience]:
        """A fresh iterator over the experiences (the same ones every call)."""
        return iter(self.make_experiences())

    @property
    def change_points(self) -> list[int] | None:
        """True boundaries, counted in training samples, when known."""
        return self.meta.get("change_points")

    def __repr__(self) -> str:
        kind = "task-aware" if self.task_aware else "task-free"
        return (f"Stream({self.name!r}, {kind}, n_experiences={self.n_experiences}, "
                f"num_classes={self.num_classes}, input_shape={self.input_shape})")
