"""A boundary every ``every`` training batches: the fixed-schedule baseline detector.

No statistics: after batches ``every``, ``2 * every``, ... the learner fires
``after_experience(None)`` / ``before_experience(None)``. The usual
baseline for detectors in task-free continual learning (e.g. the periodic
consolidation of online EWC variants); it needs no host sync and is exact.
The schedule follows the learner's global step count, so a resumed run
fires at the same batches. There is no paper default; 100 batches is a
round number (1000 samples at the default batch size of 10).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_aware=False)
>>> make_learner([EveryN(every=5)], stream).fit(stream).boundaries_detected
[40, 80, 120]
"""

from __future__ import annotations

from typing import Any

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl

__all__ = ["EveryN"]


class EveryN:
    """Fire a boundary after every ``every`` batches."""

    name = "every_n"
    requires: tuple[str, ...] = ()
    owns: tuple[str, ...] = ()

    def __init__(self, *, every: int = 100) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"plugin 'every_n': every must be a positive integer (batches), "
                              f"got {every!r}")
        self.every = every

    @hookimpl
    def detect_boundary(self, learner: Any, step: Any) -> bool:
        return (step.index + 1) % self.every == 0


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "every_n", EveryN)
