"""Stream transforms used by the upper-bound strategies (cumulative, joint)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch

from lifelong.errors import CompositionError
from lifelong.stream.base import Experience, Stream, TensorExperience


def _tensor_experiences(stream: Stream, what: str) -> list[TensorExperience]:
    exps = list(stream.experiences())
    for e in exps:
        if not isinstance(e, TensorExperience):
            raise CompositionError(f"strategy {what!r} needs a stream held in memory; "
                                   f"{stream.name!r} is fed by an iterator")
    return exps  # type: ignore[return-value]


def cumulative(stream: Stream) -> Stream:
    """Experience i trains on the union of the stream's experiences 0..i."""

    def make() -> Iterator[Experience]:
        exps = _tensor_experiences(stream, "cumulative")
        for i, e in enumerate(exps):
            xs = torch.cat([p.x for p in exps[: i + 1]])
            ys = torch.cat([p.y for p in exps[: i + 1]])
            yield TensorExperience(e.id, xs, ys, task_id=e.task_id)

    return replace(stream, name=f"{stream.name}+cumulative", make_experiences=make)


def joint(stream: Stream) -> Stream:
    """One experience holding every experience's training data, shuffled together."""

    def make() -> Iterator[Experience]:
        exps = _tensor_experiences(stream, "joint")
        yield TensorExperience(0, torch.cat([e.x for e in exps]), torch.cat([e.y for e in exps]))

    return replace(stream, name=f"{stream.name}+joint", make_experiences=make, n_experiences=1,
                   task_aware=True, task_labels=False, meta={**stream.meta, "change_points": []})


TRANSFORMS = {"cumulative": cumulative, "joint": joint}
