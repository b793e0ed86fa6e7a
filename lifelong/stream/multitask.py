"""Multi-target streams: one target per task for every sample, generated from shipped data.

* :func:`multi_target` — any tensors with one target per task -> a stream
  (validated once; a missing target, an undeclared task or a NaN
  regression target is an error naming the task).
* :func:`multi_mnist` — MultiMNIST as in Sener & Koltun ("Multi-task
  learning as multi-objective optimization", NeurIPS 2018), after Sabour
  et al. 2017: two digits of the MNIST subset overlaid on a 36x36 canvas,
  one at the top-left and one at the bottom-right (8 pixels apart), the
  canvas resized to 28x28; tasks ``left`` and ``right`` (10 classes each).
* :func:`mixed_scale_mnist` — tasks of different kind and loss scale on
  the MNIST subset: ``digit`` (10 classes), ``parity`` (2 classes) and
  ``ink`` (regression: the image's ink mass, its summed intensity,
  standardized and multiplied by ``ink_scale``), so that at initialization
  the squared error of ``ink`` is about ``ink_scale**2`` while the
  cross-entropies are about 2.3 and 0.7: orders of magnitude apart.

Samples are shuffled with ``seed`` and cut into ``n_experiences``
consecutive experiences (the test data likewise, one evaluation set per
experience). Nothing is downloaded.

Examples
--------
>>> import torch
>>> from lifelong.stream.base import TaskSpec
>>> tasks = (TaskSpec("a", "classification", 3), TaskSpec("b", "regression", 1))
>>> x = torch.rand(12, 1, 2, 2)
>>> t = {"a": torch.arange(12) % 3, "b": torch.rand(12)}
>>> s = multi_target(x, t, x[:6], {"a": t["a"][:6], "b": t["b"][:6]}, tasks=tasks,
...                  n_experiences=2)
>>> b = next(next(s.experiences()).batches(4))
>>> sorted(b.targets), tuple(b.targets["b"].shape), [t.name for t in s.tasks]
(['a', 'b'], (4,), ['a', 'b'])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError, DataError
from lifelong.hookspecs import hookimpl
from lifelong.stream.base import (
    EvalSet,
    Experience,
    Stream,
    TaskSpec,
    TensorExperience,
    primary_target,
    validate_targets,
    validate_tensors,
)
from lifelong.stream.datasets import load_mnist_subset

__all__ = ["multi_target", "multi_mnist", "mixed_scale_mnist", "overlay_digits",
           "permuted_multitask_mnist"]

Targets = dict[str, Tensor]


def _chunks(n: int, k: int) -> list[slice]:
    return [slice(i * n // k, (i + 1) * n // k) for i in range(k)]


def multi_target(x: Tensor, targets: Targets, x_test: Tensor, targets_test: Targets, *,
                 tasks: Sequence[TaskSpec], n_experiences: int = 1, shuffle: bool = True,
                 seed: int = 0, name: str = "multi_target",
                 groups: tuple[Tensor, Tensor] | None = None,
                 experience_tasks: Sequence[Sequence[str | TaskSpec]] | None = None) -> Stream:
    """A multi-target stream: ``targets[task]`` for every sample, cut into experiences.

    ``groups``: the experience of every training and every test sample (two integer
    vectors); by default the (shuffled) samples are cut into consecutive chunks.
    ``experience_tasks``: per experience, the tasks (names, or TaskSpec objects equal
    to the declared ones) whose targets its batches carry; a task exists, with its
    head and its evaluation, from the first experience that lists it on (a new
    head arrives with it). Evaluation sets carry every task's targets.
    """
    tasks = tuple(tasks)
    if not tasks:
        raise ConfigError(f"{name}: a multi-target stream needs at least one task")
    if len({t.name for t in tasks}) != len(tasks):
        raise ConfigError(f"{name}: task names must be unique, got {[t.name for t in tasks]}")
    if not isinstance(n_experiences, int) or isinstance(n_experiences, bool) \
            or not 1 <= n_experiences <= min(len(x), max(len(x_test), 1)):
        raise ConfigError(f"{name}: n_experiences must be an integer in [1, {len(x)}], "
                          f"got {n_experiences!r}")
    for xs, ts, where in ((x, targets, f"{name} (training data)"),
                          (x_test, targets_test, f"{name} (test data)")):
        validate_targets(ts, tasks, int(xs.shape[0]), where=where)
        validate_tensors(xs, primary_target(tasks, ts, int(xs.shape[0])), num_classes=None,
                         input_shape=None, where=where)
    schedule = _check_schedule(experience_tasks, tasks, n_experiences, name)
    if groups is not None:
        groups = _check_groups(groups, len(x), len(x_test), n_experiences, name)
    if x.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{name}: training inputs have shape {tuple(x.shape[1:])}, test inputs "
                        f"{tuple(x_test.shape[1:])}")
    if shuffle:
        g = torch.Generator().manual_seed(seed)
        perm, perm_t = torch.randperm(len(x), generator=g), torch.randperm(len(x_test), generator=g)
        x, targets = x[perm], {k: v[perm] for k, v in targets.items()}
        x_test, targets_test = x_test[perm_t], {k: v[perm_t] for k, v in targets_test.items()}
        if groups is not None:
            groups = (groups[0][perm], groups[1][perm_t])
    if groups is not None:  # experience by experience, each in its shuffled order
        order = torch.sort(groups[0], stable=True).indices
        order_t = torch.sort(groups[1], stable=True).indices
        x, targets = x[order], {k: v[order] for k, v in targets.items()}
        x_test, targets_test = x_test[order_t], {k: v[order_t] for k, v in targets_test.items()}
    y = primary_target(tasks, targets, len(x))
    y_test = primary_target(tasks, targets_test, len(x_test))
    first = next((t for t in tasks if t.kind == "classification"), None)
    classes = tuple(range(first.size)) if first is not None else (0,)
    if groups is None:
        parts, test_parts = _chunks(len(x), n_experiences), _chunks(len(x_test), n_experiences)
    else:
        parts, test_parts = _group_slices(groups[0], n_experiences), \
            _group_slices(groups[1], n_experiences)

    def make() -> Iterator[Experience]:
        for e, sl in enumerate(parts):
            live = schedule[e] if schedule else [t.name for t in tasks]
            yield TensorExperience(e, x[sl], y[sl], task_id=e, classes=classes,
                                   targets={k: targets[k][sl] for k in live})

    test = [EvalSet(x_test[sl], y_test[sl], classes=classes, task_id=e, name=f"exp{e}",
                    targets={k: v[sl] for k, v in targets_test.items()})
            for e, sl in enumerate(test_parts)]
    return Stream(name, first.size if first is not None else 1, tuple(x.shape[1:]), make,
                  test=test, n_experiences=n_experiences, seed=seed, tasks=tasks,
                  meta={"change_points": [p.stop for p in parts[:-1]], "n_train": len(x)},
                  experience_tasks=schedule)


def _check_schedule(schedule: Any, tasks: tuple[TaskSpec, ...], n_experiences: int,
                    name: str) -> tuple[tuple[str, ...], ...]:
    """One non-empty list of declared tasks per experience (names or equal TaskSpecs)."""
    if schedule is None:
        return ()
    if not isinstance(schedule, (list, tuple)) or len(schedule) != n_experiences:
        raise ConfigError(f"{name}: experience_tasks must list the tasks of each of the "
                          f"{n_experiences} experiences, got {schedule!r}")
    declared = {t.name: t for t in tasks}
    out = []
    for e, entry in enumerate(schedule):
        if not isinstance(entry, (list, tuple)) or not entry:
            raise ConfigError(f"{name}: experience_tasks[{e}] must be a non-empty list of task "
                              f"names, got {entry!r}")
        names = []
        for t in entry:
            n = t.name if isinstance(t, TaskSpec) else t
            if n not in declared:
                raise ConfigError(f"{name}: experience {e} declares task {n!r}, which the "
                                  f"stream does not have (tasks: {', '.join(declared)})")
            if isinstance(t, TaskSpec) and t != declared[n]:
                d = declared[n]
                raise ConfigError(f"{name}: experience {e} declares task {n!r} as a {t.kind} of "
                                  f"size {t.size}, but it is a {d.kind} of size {d.size}; a "
                                  "task keeps its kind and size: give it another name")
            if n in names:
                raise ConfigError(f"{name}: experience {e} lists task {n!r} twice")
            names.append(n)
        out.append(tuple(names))
    never = [t for t in declared if not any(t in names for names in out)]
    if never:
        raise ConfigError(f"{name}: task {never[0]!r} is in no experience of experience_tasks; "
                          "list it where its targets are, or drop it from tasks")
    return tuple(out)


def _check_groups(groups: Any, n: int, n_test: int, n_experiences: int,
                  name: str) -> tuple[Tensor, Tensor]:
    """Two integer vectors (training, test) of experience ids, each experience non-empty."""
    if not (isinstance(groups, (tuple, list)) and len(groups) == 2):
        raise ConfigError(f"{name}: groups must be (training ids, test ids), got {groups!r}")
    out = []
    for g, size, what in ((groups[0], n, "training"), (groups[1], n_test, "test")):
        if not isinstance(g, Tensor) or g.shape != (size,) or g.is_floating_point():
            raise DataError(f"{name}: groups for the {what} data must be an integer vector of "
                            f"length {size}")
        counts = torch.bincount(g.long(), minlength=n_experiences) if len(g) else None
        if counts is None or int(g.min()) < 0 or len(counts) > n_experiences \
                or bool((counts == 0).any()):
            raise DataError(f"{name}: groups for the {what} data must give every experience "
                            f"0..{n_experiences - 1} at least one sample, and no other id")
        out.append(g.long())
    return out[0], out[1]


def _group_slices(g: Tensor, k: int) -> list[slice]:
    """Consecutive slices of a vector sorted by experience id: one per experience."""
    ends = torch.bincount(g, minlength=k).cumsum(0).tolist()
    return [slice(a, b) for a, b in zip([0, *ends[:-1]], ends)]


def overlay_digits(left: Tensor, right: Tensor, *, shift: int = 8, size: int = 28) -> Tensor:
    """Two batches of (N, 1, 28, 28) digits: ``left`` at the top-left, ``right`` shifted to the
    bottom-right by ``shift`` pixels on a (28 + shift)^2 canvas (pixel-wise max), resized to
    ``size``."""
    n, c, h, w = left.shape
    canvas = torch.zeros(n, c, h + shift, w + shift)
    canvas[..., :h, :w] = left
    canvas[..., shift:, shift:] = torch.maximum(canvas[..., shift:, shift:], right)
    return F.interpolate(canvas, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp_(0.0, 1.0)


def _pairs(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Targets]:
    partner = torch.randperm(len(x), generator=g)
    return overlay_digits(x, x[partner]), {"left": y.clone(), "right": y[partner].clone()}


def multi_mnist(*, n_experiences: int = 1, test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """MultiMNIST (Sener & Koltun 2018): two overlaid digits, tasks ``left`` and ``right``."""
    x, y, xt, yt = load_mnist_subset(test_fraction=test_fraction, seed=seed)
    g = torch.Generator().manual_seed(seed)
    xm, tm = _pairs(x, y, g)
    xmt, tmt = _pairs(xt, yt, g)
    tasks = (TaskSpec("left", "classification", 10), TaskSpec("right", "classification", 10))
    return multi_target(xm, tm, xmt, tmt, tasks=tasks, n_experiences=n_experiences, seed=seed,
                        name="multi_mnist")


def mixed_scale_mnist(*, n_experiences: int = 1, ink_scale: float = 30.0,
                      test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """MNIST subset with tasks ``digit`` (10 classes), ``parity`` (2) and ``ink`` (regression)."""
    if not isinstance(ink_scale, (int, float)) or isinstance(ink_scale, bool) or not ink_scale > 0:
        raise ConfigError(f"stream 'mixed_scale_mnist': ink_scale must be > 0, got {ink_scale!r}")
    x, y, xt, yt = load_mnist_subset(test_fraction=test_fraction, seed=seed)
    ink, ink_t = x.sum((1, 2, 3)), xt.sum((1, 2, 3))
    mean, std = ink.mean(), ink.std()

    def targets(y: Tensor, ink: Tensor) -> Targets:
        return {"digit": y.clone(), "parity": y % 2, "ink": (ink - mean) / std * ink_scale}

    tasks = (TaskSpec("digit", "classification", 10), TaskSpec("parity", "classification", 2),
             TaskSpec("ink", "regression", 1))
    return multi_target(x, targets(y, ink), xt, targets(yt, ink_t), tasks=tasks,
                        n_experiences=n_experiences, seed=seed, name="mixed_scale_mnist")


PERMUTED_TASKS = {"left": TaskSpec("left", "classification", 10),
                  "right": TaskSpec("right", "classification", 10),
                  "digit": TaskSpec("digit", "classification", 10),
                  "parity": TaskSpec("parity", "classification", 2),
                  "ink": TaskSpec("ink", "regression", 1)}
OVERLAY_TASKS = ("left", "right")


def permuted_multitask_mnist(*, n_experiences: int = 2, task_names: Sequence[str] = ("left", "right"),
                             experience_tasks: Sequence[Sequence[str]] | None = None,
                             ink_scale: float = 1.0, test_fraction: float = 0.2,
                             seed: int = 0) -> Stream:
    """A continual multi-task stream on permuted MNIST (Goodfellow et al. 2013; the EWC
    paper's benchmark): experience ``e`` holds its own share of the samples with the pixels
    shuffled by a fixed random permutation (none for experience 0), its test set likewise.
    Tasks (``task_names``): ``left`` and ``right`` on MultiMNIST images (as :func:`multi_mnist`), or any of
    ``digit``, ``parity`` and ``ink`` on the MNIST subset (as :func:`mixed_scale_mnist`,
    with ``ink_scale``). ``experience_tasks`` declares the tasks of each experience (see
    :func:`multi_target`): a task, and its head, may arrive with a later experience."""
    where = "stream 'permuted_multitask_mnist'"
    if not isinstance(n_experiences, int) or isinstance(n_experiences, bool) \
            or not 1 <= n_experiences <= 20:
        raise ConfigError(f"{where}: n_experiences must be an integer in [1, 20], got "
                          f"{n_experiences!r}")
    tasks = list(task_names) if isinstance(task_names, (list, tuple)) else [task_names]
    overlay = [t for t in tasks if t in OVERLAY_TASKS]
    bad = [t for t in tasks if t not in PERMUTED_TASKS]
    if bad or not tasks or len(set(tasks)) != len(tasks) or 0 < len(overlay) < len(tasks):
        raise ConfigError(f"{where}: task_names must be distinct names among left, right "
                          f"(MultiMNIST) or among digit, parity, ink (one digit), got {tasks!r}")
    if not isinstance(ink_scale, (int, float)) or isinstance(ink_scale, bool) or not ink_scale > 0:
        raise ConfigError(f"{where}: ink_scale must be > 0, got {ink_scale!r}")
    x, y, xt, yt = load_mnist_subset(test_fraction=test_fraction, seed=seed)
    g = torch.Generator().manual_seed(seed)
    if overlay:
        x, every = _pairs(x, y, g)
        xt, every_t = _pairs(xt, yt, g)
    else:
        ink, ink_t = x.sum((1, 2, 3)), xt.sum((1, 2, 3))
        mean, std = ink.mean(), ink.std()
        every, every_t = ({"digit": v.clone(), "parity": v % 2,
                           "ink": (m - mean) / std * ink_scale} for v, m in ((y, ink), (yt, ink_t)))
    pixels = [torch.arange(x[0].numel())] + [torch.randperm(x[0].numel(), generator=g)
                                             for _ in range(n_experiences - 1)]

    def permuted(x: Tensor) -> Tensor:
        out = x.reshape(len(x), -1).clone()
        for sl, p in zip(_chunks(len(x), n_experiences), pixels):
            out[sl] = out[sl][:, p]
        return out.reshape(x.shape)

    return multi_target(permuted(x), {t: every[t] for t in tasks}, permuted(xt),
                        {t: every_t[t] for t in tasks},
                        tasks=[PERMUTED_TASKS[t] for t in tasks], n_experiences=n_experiences,
                        shuffle=False, seed=seed, name="permuted_multitask_mnist",
                        experience_tasks=experience_tasks)


@hookimpl
def register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add("stream", "multi_mnist", multi_mnist)
    registry.add("stream", "mixed_scale_mnist", mixed_scale_mnist)
    registry.add("stream", "permuted_multitask_mnist", permuted_multitask_mnist)
