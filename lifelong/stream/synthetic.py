"""Synthetic streams generated in memory: fast, seeded, no data files.

``blobs``: Gaussian class clusters split class-incrementally. Small enough
for tests and doctests, hard enough that fine-tuning forgets in Class-IL.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.stream.base import EvalSet, Experience, Stream, TensorExperience


def blobs(*, n_experiences: int = 3, classes_per_experience: int = 2, n_per_class: int = 60,
          n_test_per_class: int = 20, input_shape: list[int] | None = None,
          separation: float = 3.0, task_aware: bool = True, task_labels: bool = False,
          seed: int = 0) -> Stream:
    """Gaussian class clusters, class-incremental (``classes_per_experience`` new classes each)."""
    if n_experiences < 1 or classes_per_experience < 1 or n_per_class < 1:
        raise ConfigError("blobs: n_experiences, classes_per_experience and n_per_class "
                          "must be >= 1")
    shape = tuple(input_shape or (1, 4, 4))
    dim = math.prod(shape)
    C = n_experiences * classes_per_experience
    from lifelong.validation import check_memory, check_number

    for key, value in (("n_experiences", n_experiences), ("n_per_class", n_per_class),
                       ("classes_per_experience", classes_per_experience)):
        check_number("stream 'blobs'", key, value, min=1, integer=True)
    check_number("stream 'blobs'", "n_test_per_class", n_test_per_class, min=0, integer=True)
    check_number("stream 'blobs'", "separation", separation, min=0.0)
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
        raise ConfigError(f"stream 'blobs': input_shape must be positive integers, got {shape}")
    check_memory("stream 'blobs'", "n_per_class", 2 * 4 * C * (n_per_class + n_test_per_class)
                 * (dim + 2), fix="lower n_per_class (or n_experiences, input_shape)")
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, dim, generator=g) * separation / math.sqrt(dim) * 2

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(C).repeat_interleave(n)
        x = means[y] + torch.randn(len(y), dim, generator=g)
        return x.reshape(len(y), *shape), y

    x, y = draw(n_per_class)
    xt, yt = draw(n_test_per_class)
    groups = [list(range(e * classes_per_experience, (e + 1) * classes_per_experience))
              for e in range(n_experiences)]

    def make() -> Iterator[Experience]:
        for e, cls in enumerate(groups):
            m = (y >= cls[0]) & (y <= cls[-1])
            yield TensorExperience(e, x[m], y[m], task_id=e, classes=cls,
                                   with_task_labels=task_labels)

    test = [EvalSet(xt[(yt >= c[0]) & (yt <= c[-1])], yt[(yt >= c[0]) & (yt <= c[-1])],
                    classes=tuple(c), task_id=e, name=f"exp{e}") for e, c in enumerate(groups)]
    per = classes_per_experience * n_per_class
    return Stream("blobs", C, shape, make, test=test, task_aware=task_aware,
                  n_experiences=n_experiences, task_labels=task_labels, seed=seed,
                  meta={"change_points": [per * (i + 1) for i in range(n_experiences - 1)],
                        "n_train": per * n_experiences})


@hookimpl
def register(registry: object) -> None:
    registry.add("stream", "blobs", blobs)  # type: ignore[attr-defined]
