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

__all__ = ["multi_target", "multi_mnist", "mixed_scale_mnist", "overlay_digits"]

Targets = dict[str, Tensor]


def _chunks(n: int, k: int) -> list[slice]:
    return [slice(i * n // k, (i + 1) * n // k) for i in range(k)]


def multi_target(x: Tensor, targets: Targets, x_test: Tensor, targets_test: Targets, *,
                 tasks: Sequence[TaskSpec], n_experiences: int = 1, shuffle: bool = True,
                 seed: int = 0, name: str = "multi_target") -> Stream:
    """A multi-target stream: ``targets[task]`` for every sample, cut into experiences."""
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
    if x.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{name}: training inputs have shape {tuple(x.shape[1:])}, test inputs "
                        f"{tuple(x_test.shape[1:])}")
    if shuffle:
        g = torch.Generator().manual_seed(seed)
        perm, perm_t = torch.randperm(len(x), generator=g), torch.randperm(len(x_test), generator=g)
        x, targets = x[perm], {k: v[perm] for k, v in targets.items()}
        x_test, targets_test = x_test[perm_t], {k: v[perm_t] for k, v in targets_test.items()}
    y = primary_target(tasks, targets, len(x))
    y_test = primary_target(tasks, targets_test, len(x_test))
    first = next((t for t in tasks if t.kind == "classification"), None)
    classes = tuple(range(first.size)) if first is not None else (0,)
    parts, test_parts = _chunks(len(x), n_experiences), _chunks(len(x_test), n_experiences)

    def make() -> Iterator[Experience]:
        for e, sl in enumerate(parts):
            yield TensorExperience(e, x[sl], y[sl], task_id=e, classes=classes,
                                   targets={k: v[sl] for k, v in targets.items()})

    test = [EvalSet(x_test[sl], y_test[sl], classes=classes, task_id=e, name=f"exp{e}",
                    targets={k: v[sl] for k, v in targets_test.items()})
            for e, sl in enumerate(test_parts)]
    return Stream(name, first.size if first is not None else 1, tuple(x.shape[1:]), make,
                  test=test, n_experiences=n_experiences, seed=seed, tasks=tasks,
                  meta={"change_points": [p.stop for p in parts[:-1]], "n_train": len(x)})


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


@hookimpl
def register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add("stream", "multi_mnist", multi_mnist)
    registry.add("stream", "mixed_scale_mnist", mixed_scale_mnist)
