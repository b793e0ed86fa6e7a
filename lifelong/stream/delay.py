"""Delayed labels: predict each batch when it arrives, train on it ``k`` batches later.

:func:`label_delay` wraps any stream. Time runs in batches: at time ``t``
batch ``t`` arrives without its label and the learner must predict it
now; the labels of batch ``t - k`` arrive at the same time and the learner
trains on that batch. Order within a time step: predict first, then
train (with ``k = 0`` this is the usual test-then-train).

The wrapped stream yields, at step ``s``, the *original* stream's batch
``s`` to train on, carrying in ``Batch.predict`` the batch ``s + k`` —
the one arriving at that time. The learner predicts ``predict`` (eval
mode, no gradients) before it trains on ``x, y``, and
:class:`~lifelong.plugins.evaluation.Prequential` scores those arrival
predictions. So the training sequence, the experiences, the change points
and the samples counted are exactly the original stream's; only the
predictions run ``k`` batches ahead. Two ends:

* the first ``k`` arrivals come before any label, when the model cannot
  have changed: step 0 predicts batches ``0..k`` together;
* the last ``k`` steps train on the last labels and predict nothing
  (``Batch.predict`` has no rows): every batch is trained on once and
  predicted once.

Lookahead crosses experience boundaries (the learner does not see them in
a task-free stream): near the end of an experience the arrivals are the
next experience's first batches, generated from that experience with the
same seed. ``k = 0`` returns the stream itself.

Since the updates are those of the undelayed stream, so are the weights,
the losses and what a detector sees; what the delay changes is how stale
the model is when it must predict (prequential accuracy). Positions —
change points, detected boundaries, anytime evaluations — count samples
*trained on*; at that point ``k`` more batches have arrived. Prequential
windows count samples *predicted* (arrivals).

YAML: ``stream: {name: sea_drift, label_delay: 5}``.

Examples
--------
>>> from lifelong.stream.synthetic import blobs
>>> s = label_delay(blobs(n_experiences=2, n_per_class=10), 2)
>>> b = next(next(s.experiences()).batches(10))
>>> len(b), len(b.predict)  # train on batch 0, predict batches 0, 1 and 2
(10, 30)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections import deque
from collections.abc import Iterator

import torch

from lifelong.errors import ConfigError
from lifelong.stream.base import Batch, Experience, Stream

__all__ = ["label_delay", "DelayedExperience"]


class DelayedExperience(Experience):
    """One experience of a delayed stream: its own batches, plus the arrivals ``k`` ahead."""

    def __init__(self, inner: Experience, stream: Stream, position: int, k: int) -> None:
        self.inner = inner
        self.stream = stream
        self.position = position
        self.k = k
        self.id, self.classes = inner.id, inner.classes
        self.task_id, self.n_samples = inner.task_id, inner.n_samples

    def _following(self, batch_size: int, epochs: int, shuffle: bool,
                   seed: int) -> Iterator[Batch]:
        later = itertools.islice(self.stream.experiences(), self.position + 1, None)
        for exp in later:
            yield from exp.batches(batch_size, epochs=epochs, shuffle=shuffle, seed=seed)

    def batches(
        self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
        start: int = 0,
    ) -> Iterator[Batch]:
        k = self.k
        own = ((True, b) for b in self.inner.batches(batch_size, epochs=epochs, shuffle=shuffle,
                                                      seed=seed, start=start))
        later = ((False, b) for b in self._following(batch_size, epochs, shuffle, seed))
        ahead = itertools.chain(own, later)
        window: deque[tuple[bool, Batch]] = deque(itertools.islice(ahead, k + 1))
        first = self.position == 0 and start == 0
        while window and window[0][0]:
            _, train = window[0]
            if first:
                predict = _cat([b for _, b in window])
                first = False
            elif len(window) == k + 1:
                predict = window[k][1]
            else:
                predict = Batch(train.x[:0], train.y[:0],
                                None if train.task is None else train.task[:0])
            yield dataclasses.replace(train, predict=predict)
            window.popleft()
            window.extend(itertools.islice(ahead, 1))


def _cat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    task = (None if any(b.task is None for b in batches)
            else torch.cat([b.task for b in batches]))  # type: ignore[misc]
    return Batch(torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches]), task)


def _delayed_experiences(stream: Stream, k: int) -> Iterator[Experience]:
    for i, exp in enumerate(stream.experiences()):
        yield DelayedExperience(exp, stream, i, k)


def label_delay(stream: Stream, k: int) -> Stream:
    """``stream`` with labels revealed ``k`` batches after each prediction (0: unchanged)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ConfigError(f"stream.label_delay must be a non-negative integer (batches), got {k!r}")
    if k == 0:
        return stream
    if stream.tasks:
        raise ConfigError(f"stream.label_delay: stream {stream.name!r} has several targets per "
                          "sample (tasks: " + ", ".join(t.name for t in stream.tasks) + "); "
                          "delayed labels support single-target streams only: drop label_delay")
    return dataclasses.replace(
        stream, name=f"{stream.name}+delay{k}",
        make_experiences=functools.partial(_delayed_experiences, stream, k),
        meta={**stream.meta, "label_delay": k},
    )
