"""Scenario builders: any tensor data set -> a continual-learning :class:`Stream`.

Each builder takes ``(x_train, y_train, x_test, y_test)``, validates it once,
and returns a stream whose experiences are built lazily (one at a time, when
the learner reaches them) and whose ``test`` holds one :class:`EvalSet` per
experience. Everything random is drawn from ``torch.Generator(seed)``: the
same seed gives the same stream. ``meta["change_points"]`` holds the true
boundaries in training samples seen.

* :func:`class_incremental` — classes split evenly over experiences
  (Split-MNIST; van de Ven & Tolias 2019, "Three scenarios for continual learning").
* :func:`permuted` / :func:`rotated` — domain-incremental: a fixed pixel
  permutation or rotation per experience (Goodfellow et al. 2013; Lopez-Paz &
  Ranzato 2017).
* :func:`blurry` — class-incremental without sharp boundaries, task-free
  (Blurry-M of Bang et al. 2021, "Rainbow Memory", CVPR; or a gradual ramp).
* :func:`task_free` — the same stream with boundaries and task ids hidden.

Examples
--------
>>> import torch
>>> x, y = torch.rand(60, 1, 4, 4), torch.arange(60) % 6
>>> s = class_incremental(x, y, x[:12], y[:12], n_experiences=3)
>>> [e.classes for e in s.experiences()], s.change_points
([(0, 1), (2, 3), (4, 5)], [20, 40])
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError, DataError
from lifelong.stream.base import (
    Batch,
    EvalSet,
    Experience,
    Stream,
    TensorExperience,
    validate_tensors,
)

__all__ = [
    "OrderedExperience",
    "class_incremental",
    "permuted",
    "rotated",
    "rotate",
    "blurry",
    "task_free",
    "select_experiences",
    "group_rank",
]


class OrderedExperience(TensorExperience):
    """A :class:`TensorExperience` whose sample order is part of the data: it never shuffles."""

    def batches(
        self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
        start: int = 0,
    ) -> Iterator[Batch]:
        return super().batches(batch_size, epochs=epochs, shuffle=False, seed=seed, start=start)


# ---------------------------------------------------------------------------
# Helpers shared with the adapters and loaders
# ---------------------------------------------------------------------------


def check_data(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, where: str,
               num_classes: int | None = None) -> int:
    """Validate train and test data once; return ``num_classes`` (declared or max label + 1)."""
    validate_tensors(x, y, num_classes=num_classes, input_shape=None, where=f"{where}, train data")
    validate_tensors(x_test, y_test, num_classes=num_classes, input_shape=tuple(x.shape[1:]),
                     where=f"{where}, test data")
    if y.numel() == 0:
        raise DataError(f"{where}: the training set is empty")
    labels = torch.cat([y, y_test])
    if int(labels.min()) < 0:
        raise DataError(f"{where}: label {int(labels.min())} is negative; labels must be class "
                        "indices 0..C-1")
    return num_classes if num_classes is not None else int(labels.max()) + 1


def check_n_experiences(n: int, where: str, most: int | None = None) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{where}: n_experiences must be a positive integer, got {n!r}")
    if most is not None and n > most:
        raise ConfigError(f"{where}: n_experiences={n} is more than the {most} available")


def groups(ids: Tensor, n: int) -> list[Tensor]:
    """Indices of the samples in each group ``0..n-1`` of ``ids``, in their original order."""
    order = torch.argsort(ids, stable=True)
    return list(torch.split(order, torch.bincount(ids, minlength=n).tolist()))


def group_rank(ids: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random rank ``0..count-1`` of every sample within its group, and the group counts."""
    perm = torch.randperm(len(ids), generator=generator)
    order = perm[torch.argsort(ids[perm], stable=True)]
    counts = torch.bincount(ids, minlength=n)
    rank = torch.empty_like(ids)
    rank[order] = torch.arange(len(ids)) - (counts.cumsum(0) - counts).repeat_interleave(counts)
    return rank, counts


def change_points(sizes: Sequence[int]) -> list[int]:
    """Cumulative sample counts at each boundary between experiences (0 and the end excluded)."""
    return torch.tensor(list(sizes), dtype=torch.long).cumsum(0)[:-1].tolist()


def require_nonempty(train: Sequence[Tensor], test: Sequence[Tensor], where: str) -> None:
    for k, idx in enumerate(train):
        if len(idx) == 0:
            raise DataError(f"{where}: experience {k} is empty: it has no training samples")
    if any(len(t) for t in test):
        for k, idx in enumerate(test):
            if len(idx) == 0:
                raise DataError(f"{where}: experience {k} has no test samples")


def _class_split(y: Tensor, n: int, class_order: Sequence[int] | None, shuffle: bool,
                 seed: int, where: str) -> Tensor:
    """The classes of each experience, shaped ``(n, classes per experience)``."""
    classes = torch.unique(y)
    c = len(classes)
    check_n_experiences(n, where)
    if n > c or c % n:
        divisors = [d for d in range(1, c + 1) if c % d == 0]
        raise ConfigError(f"{where}: {c} classes cannot be split evenly into n_experiences={n}; "
                          f"use one of {divisors}")
    if class_order is not None:
        order = torch.as_tensor(list(class_order), dtype=torch.long)
        if sorted(order.tolist()) != classes.tolist():
            raise ConfigError(f"{where}: class_order must list every training class exactly once; "
                              f"got {order.tolist()}, the classes are {classes.tolist()}")
    elif shuffle:
        order = classes[torch.randperm(c, generator=torch.Generator().manual_seed(seed))]
    else:
        order = classes
    return order.reshape(n, c // n)


def _experience_of_class(split: Tensor, num_classes: int, y_test: Tensor, where: str) -> Tensor:
    lut = torch.full((num_classes,), -1, dtype=torch.long)
    lut[split.flatten()] = torch.arange(split.shape[0]).repeat_interleave(split.shape[1])
    unseen = torch.unique(y_test[lut[y_test] < 0]).tolist()
    if unseen:
        raise DataError(f"{where}: test labels {unseen} never occur in the training data")
    return lut


def _tensor_experiences(x: Tensor, y: Tensor, index: Sequence[Tensor],
                        classes: Sequence[tuple[int, ...] | None], task_ids: Sequence[int | None],
                        with_task_labels: bool = False, ordered: bool = False,
                        ) -> Iterator[Experience]:
    kind = OrderedExperience if ordered else TensorExperience
    for k, idx in enumerate(index):
        yield kind(k, x[idx], y[idx], task_id=task_ids[k], classes=classes[k],
                   with_task_labels=with_task_labels)


# ---------------------------------------------------------------------------
# Class-incremental
# ---------------------------------------------------------------------------


def class_incremental(
    x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, n_experiences: int = 5,
    class_order: Sequence[int] | None = None, shuffle_classes: bool = False,
    task_labels: bool = False, seed: int = 0, name: str = "class_incremental",
) -> Stream:
    """Split the classes evenly over ``n_experiences`` (in ``class_order``, sorted, or shuffled).

    Experience ``k`` and its eval set hold the samples of the ``k``-th group of
    classes; ``task_labels=True`` puts ``k`` into every batch as its task id.
    """
    where = f"class_incremental({name!r})"
    nc = check_data(x, y, x_test, y_test, where=where)
    split = _class_split(y, n_experiences, class_order, shuffle_classes, seed, where)
    lut = _experience_of_class(split, nc, y_test, where)
    train, test = groups(lut[y], n_experiences), groups(lut[y_test], n_experiences)
    require_nonempty(train, test, where)
    classes = [tuple(sorted(c)) for c in split.tolist()]
    ids = list(range(n_experiences))
    evals = [EvalSet(x_test[i], y_test[i], classes[k], task_id=k, name=f"{name}/{k}")
             for k, i in enumerate(test)] if len(y_test) else []
    return Stream(
        name, nc, tuple(x.shape[1:]),
        functools.partial(_tensor_experiences, x, y, train, classes, ids, task_labels),
        evals, task_aware=True, n_experiences=n_experiences, task_labels=task_labels, seed=seed,
        meta={"scenario": "class_incremental", "class_order": split.flatten().tolist(),
              "change_points": change_points([len(i) for i in train])},
    )


# ---------------------------------------------------------------------------
# Domain-incremental: permuted and rotated inputs
# ---------------------------------------------------------------------------


def _transformed_experiences(x: Tensor, y: Tensor, transforms: Sequence[Callable[[Tensor], Tensor]],
                             classes: tuple[int, ...]) -> Iterator[Experience]:
    for k, transform in enumerate(transforms):
        yield TensorExperience(k, transform(x), y, task_id=k, classes=classes)


def _domain_stream(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, nc: int,
                   transforms: Sequence[Callable[[Tensor], Tensor]], scenario: str, name: str,
                   seed: int, meta: dict[str, object]) -> Stream:
    classes = tuple(torch.unique(y).tolist())
    n = len(transforms)
    evals = [EvalSet(t(x_test), y_test, classes, task_id=k, name=f"{name}/{k}")
             for k, t in enumerate(transforms)] if len(y_test) else []
    return Stream(name, nc, tuple(x.shape[1:]),
                  functools.partial(_transformed_experiences, x, y, transforms, classes), evals,
                  task_aware=True, n_experiences=n, seed=seed,
                  meta={"scenario": scenario, "change_points": change_points([len(y)] * n), **meta})


def _permute(x: Tensor, perm: Tensor | None) -> Tensor:
    return x if perm is None else x.reshape(len(x), -1)[:, perm].reshape(x.shape)


def permuted(
    x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, n_experiences: int = 5,
    seed: int = 0, keep_first: bool = True, name: str = "permuted",
) -> Stream:
    """Every experience is the whole data set under its own fixed, seeded pixel permutation.

    With ``keep_first`` experience 0 sees the data unpermuted. Each
    experience's permuted copy is made only when the learner reaches it.
    """
    where = f"permuted({name!r})"
    nc = check_data(x, y, x_test, y_test, where=where)
    check_n_experiences(n_experiences, where)
    g = torch.Generator().manual_seed(seed)
    d = int(x[0].numel())
    perms = [None if k == 0 and keep_first else torch.randperm(d, generator=g)
             for k in range(n_experiences)]
    return _domain_stream(x, y, x_test, y_test, nc,
                          [functools.partial(_permute, perm=p) for p in perms],
                          "permuted", name, seed, {})


def rotate(x: Tensor, angle: float, *, chunk: int = 4096) -> Tensor:
    """Rotate images ``(N, C, H, W)`` counter-clockwise by ``angle`` degrees.

    Bilinear sampling with zero padding around the centre; ``angle=0`` returns
    ``x`` itself. Non-square images keep their aspect ratio.
    """
    if float(angle) % 360.0 == 0.0:
        return x
    n, _, h, w = x.shape
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # affine_grid maps output to input coordinates, normalised per axis (hence
    # the aspect factors), with y pointing down: this theta turns the content
    # counter-clockwise on screen, as torch.rot90(x, 1, dims=(2, 3)) does.
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype)
    out = torch.empty_like(x)
    for i in range(0, n, chunk):
        part = x[i:i + chunk]
        grid = F.affine_grid(theta.expand(len(part), 2, 3), list(part.shape), align_corners=False)
        out[i:i + chunk] = F.grid_sample(part, grid, mode="bilinear", padding_mode="zeros",
                                         align_corners=False)
    return out


def rotated(
    x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, n_experiences: int = 5,
    max_angle: float = 180.0, angles: Sequence[float] | None = None, seed: int = 0,
    name: str = "rotated",
) -> Stream:
    """Every experience is the whole data set rotated by its own angle.

    Angles are ``k * max_angle / n_experiences`` (evenly spaced in
    ``[0, max_angle)``) unless ``angles`` lists one per experience.
    """
    where = f"rotated({name!r})"
    if isinstance(x, Tensor) and x.dim() != 4:
        raise DataError(f"{where}: inputs must be images shaped (N, C, H, W), got shape "
                        f"{tuple(x.shape)}; reshape them, e.g. x.reshape(-1, 1, 28, 28)")
    nc = check_data(x, y, x_test, y_test, where=where)
    check_n_experiences(n_experiences, where)
    if angles is None:
        angles = [k * max_angle / n_experiences for k in range(n_experiences)]
    elif len(angles) != n_experiences:
        raise ConfigError(f"{where}: angles has {len(angles)} entries but n_experiences="
                          f"{n_experiences}; pass n_experiences={len(angles)}")
    angles = [float(a) for a in angles]
    return _domain_stream(x, y, x_test, y_test, nc,
                          [functools.partial(rotate, angle=a) for a in angles],
                          "rotated", name, seed, {"angles": angles})


# ---------------------------------------------------------------------------
# Blurry / gradual class-incremental (task-free)
# ---------------------------------------------------------------------------


def blurry(
    x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, n_experiences: int = 5,
    blur: float = 0.1, mode: str = "blurry", seed: int = 0, name: str = "blurry",
) -> Stream:
    """Class-incremental without sharp boundaries; a task-free stream.

    Each nominal experience ``k`` has the major classes of
    :func:`class_incremental` (sorted order). Then, with ``generator(seed)``:

    * ``mode="blurry"`` (Blurry-M, Bang et al. 2021): exactly
      ``round(blur * n_k)`` random samples of every experience move to a
      uniformly drawn *other* experience, so about a fraction ``blur`` of each
      experience comes from other experiences' classes. Batches are shuffled
      within an experience.
    * ``mode="gradual"``: a sample of experience ``k`` gets the position
      ``k + u + e`` with ``u ~ U[0, 1)`` and ``e ~ U[-blur/2, blur/2]``
      (``0 <= blur <= 1``); the stream is every sample in order of position,
      experience ``j`` being the positions in ``[j, j + 1)`` (clamped at both
      ends). Around each boundary the share of the next experience's classes
      rises linearly from 0 to 1 over ``blur`` of an experience. These
      experiences keep their order (they never shuffle).

    Eval sets are the nominal experiences' test samples, ``classes`` their
    major classes.
    """
    where = f"blurry({name!r})"
    nc = check_data(x, y, x_test, y_test, where=where)
    if mode not in ("blurry", "gradual"):
        raise ConfigError(f"{where}: mode must be 'blurry' or 'gradual', got {mode!r}")
    if not 0.0 <= blur <= 1.0:
        raise ConfigError(f"{where}: blur is a fraction of an experience in [0, 1], got {blur}")
    split = _class_split(y, n_experiences, None, False, seed, where)
    lut = _experience_of_class(split, nc, y_test, where)
    home, n = lut[y], n_experiences
    g = torch.Generator().manual_seed(seed)
    if mode == "blurry":
        rank, counts = group_rank(home, n, g)
        moved = rank < torch.floor(counts * blur + 0.5).long()[home]
        if n > 1:
            home = torch.where(moved, (home + torch.randint(1, n, home.shape, generator=g)) % n,
                               home)
        train = groups(home, n)
    else:
        pos = home + torch.rand(len(y), generator=g, dtype=torch.float64)
        pos += (torch.rand(len(y), generator=g, dtype=torch.float64) - 0.5) * blur
        order = torch.argsort(pos, stable=True)
        sizes = torch.bincount(pos.floor().long().clamp(0, n - 1), minlength=n).tolist()
        train = list(torch.split(order, sizes))
    test = groups(lut[y_test], n)
    require_nonempty(train, test, where)
    classes = [tuple(sorted(c)) for c in split.tolist()]
    evals = [EvalSet(x_test[i], y_test[i], classes[k], name=f"{name}/{k}")
             for k, i in enumerate(test)] if len(y_test) else []
    return Stream(
        name, nc, tuple(x.shape[1:]),
        functools.partial(_tensor_experiences, x, y, train, [None] * n, [None] * n, False,
                          mode == "gradual"),
        evals, task_aware=False, n_experiences=n, seed=seed,
        meta={"scenario": f"blurry/{mode}", "blur": blur, "major_classes": classes,
              "change_points": change_points([len(i) for i in train])},
    )


# ---------------------------------------------------------------------------
# Task-free view
# ---------------------------------------------------------------------------


class _WithoutTask(Experience):
    """Any experience, its batches stripped of task ids."""

    def __init__(self, inner: Experience) -> None:
        self.inner = inner
        self.id, self.classes = inner.id, inner.classes
        self.task_id, self.n_samples = inner.task_id, inner.n_samples

    def batches(
        self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
        start: int = 0,
    ) -> Iterator[Batch]:
        for b in self.inner.batches(batch_size, epochs=epochs, shuffle=shuffle, seed=seed,
                                    start=start):
            predict = b.predict
            if predict is not None and predict.task is not None:
                predict = Batch(predict.x, predict.y)
            yield b if b.task is None and predict is b.predict else Batch(b.x, b.y, None, b.extras,
                                                                         predict, b.targets)


def _strip_task(exp: Experience) -> Experience:
    if isinstance(exp, TensorExperience):
        out = copy.copy(exp)  # same tensors, same class
        out._task = None
        return out
    return _WithoutTask(exp)


def _task_free_experiences(stream: Stream) -> Iterator[Experience]:
    for exp in stream.experiences():
        yield _strip_task(exp)


def task_free(stream: Stream) -> Stream:
    """The same stream, task-free: boundaries not announced, no task ids in batches or eval sets."""
    return dataclasses.replace(
        stream, make_experiences=functools.partial(_task_free_experiences, stream),
        test=[dataclasses.replace(e, task_id=None) for e in stream.test],
        task_aware=False, task_labels=False, meta={**stream.meta, "task_free": True},
    )


# ---------------------------------------------------------------------------
# A contiguous run of a stream's experiences (hyper-parameter tuning)
# ---------------------------------------------------------------------------


class _Renumbered(Experience):
    """Any experience under a new position ``id`` in a shorter stream (same batches)."""

    def __init__(self, inner: Experience, id: int) -> None:
        self.inner = inner
        self.id, self.classes = id, inner.classes
        self.task_id, self.n_samples = inner.task_id, inner.n_samples
        self.finite_checked = inner.finite_checked

    def batches(
        self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
        start: int = 0,
    ) -> Iterator[Batch]:
        return self.inner.batches(batch_size, epochs=epochs, shuffle=shuffle, seed=seed,
                                  start=start)


def _selected_experiences(stream: Stream, start: int, stop: int) -> Iterator[Experience]:
    for i, exp in enumerate(itertools.islice(stream.experiences(), stop)):  # no later one built
        if i < start:
            continue
        if i - start == exp.id:
            yield exp
        elif isinstance(exp, TensorExperience):
            out = copy.copy(exp)  # same tensors, new position
            out.id = i - start
            yield out
        else:
            yield _Renumbered(exp, i - start)


def select_experiences(stream: Stream, *, first: int | None = None, skip: int = 0,
                       where: str = "stream") -> Stream:
    """Experiences ``skip .. first-1`` of ``stream`` (``first=None``: to the end), renumbered from 0.

    The protocol of Chaudhry et al. (ICLR 2019) tunes hyper-parameters on the
    first experiences of a stream (``first=k``) and reports on the others
    (``skip=k``). The held-out sets, the true change points and
    ``n_experiences`` follow the selection; experiences after it are never
    built. With ``skip=0`` every kept experience keeps its id, so its batches
    are exactly those of the whole stream.

    >>> from lifelong.stream.synthetic import blobs
    >>> s = select_experiences(blobs(n_experiences=5), first=3)
    >>> [e.classes for e in s.experiences()], s.n_experiences, len(s.test)
    ([(0, 1), (2, 3), (4, 5)], 3, 3)
    >>> rest = select_experiences(blobs(n_experiences=5), skip=3)
    >>> [(e.id, e.classes) for e in rest.experiences()]
    [(0, (6, 7)), (1, (8, 9))]
    """
    n = stream.n_experiences
    if n is None:
        raise ConfigError(f"{where}: stream {stream.name!r} does not know its number of "
                          "experiences, so first_experiences / skip_experiences cannot select "
                          "from it; drop those keys")
    stop = n if first is None else first
    if first is not None and not 1 <= first <= n:
        raise ConfigError(f"{where}.first_experiences must be in 1..{n} (stream {stream.name!r} "
                          f"has {n} experiences), got {first}")
    if not 0 <= skip < stop:
        raise ConfigError(f"{where}.skip_experiences must be in 0..{stop - 1} (it must leave at "
                          f"least one of the {stop} experiences), got {skip}")
    if stream.test and len(stream.test) != n:
        raise ConfigError(f"{where}: stream {stream.name!r} has {len(stream.test)} held-out sets "
                          f"for {n} experiences, so its held-out sets cannot follow a selection "
                          "of experiences; drop first_experiences / skip_experiences")
    cps = stream.meta.get("change_points")
    meta = {**stream.meta, "experiences": [skip, stop]}
    if cps is not None and len(cps) == n - 1:
        base = cps[skip - 1] if skip else 0
        meta["change_points"] = [c - base for c in cps[skip:stop - 1]]
    name = stream.name if (skip, stop) == (0, n) else f"{stream.name}[{skip}:{stop}]"
    schedule = stream.experience_tasks  # tasks declared per experience follow the selection
    if schedule:  # the first kept experience has every task declared up to it
        seen = {t for names in schedule[:skip + 1] for t in names}
        schedule = (tuple(t.name for t in stream.tasks if t.name in seen),
                    *schedule[skip + 1:stop])
    return dataclasses.replace(
        stream, name=name, n_experiences=stop - skip, test=list(stream.test[skip:stop]), meta=meta,
        make_experiences=functools.partial(_selected_experiences, stream, skip, stop),
        experience_tasks=schedule)
