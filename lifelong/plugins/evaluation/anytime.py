"""Accuracy on held-out data of every experience
seen so far, every ``every`` batches (Koh et al. 2022, "Online continual
learning on class incremental blurry task configuration with anytime
inference").

Its ``summary() -> dict`` goes into ``metrics.json``: ``anytime_accuracy`` (samples seen,
mean Class-IL, mean Task-IL accuracy over the seen experiences) and
``anytime_per_experience`` (samples seen, the Class-IL accuracy of each seen experience),
the curves ``lifelong plot`` draws.
"""

from __future__ import annotations

from typing import Any

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.validation import check_number

__all__ = ["AnytimeAccuracy"]


class AnytimeAccuracy:
    """Every ``every`` batches, accuracy on the held-out data of all experiences seen so far."""

    name = "anytime"

    def __init__(self, *, every: int = 100) -> None:
        check_number(f"plugin {self.name!r}", "every", every, min=1, integer=True)
        if every < 1:
            raise ConfigError(f"eval.every must be >= 1, got {every}")
        self.every = every
        self.curve_: list[tuple[int, float, float]] = []
        self.per_experience_: list[tuple[int, list[float]]] = []

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        if (step.index + 1) % self.every:
            return
        stream = learner.stream
        if stream is None or not stream.test:
            return
        seen = stream.test[: learner.experience_index + 1]
        rep = learner.evaluate(seen, kind="anytime")
        self.curve_.append((learner.samples_seen, sum(rep.class_il) / len(seen),
                            sum(rep.task_il) / len(seen)))
        self.per_experience_.append((learner.samples_seen, list(rep.class_il)))

    def summary(self) -> dict[str, Any]:
        accs = [a for _, a, _ in self.curve_]
        return {"anytime_accuracy": [list(c) for c in self.curve_],
                "avg_anytime_accuracy": sum(accs) / len(accs) if accs else None,
                "anytime_per_experience": [[at, list(a)] for at, a in self.per_experience_]}

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve_,
                "per_experience": [[at, list(a)] for at, a in self.per_experience_]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.errors import CheckpointError
        from lifelong.validation import state_floats, state_get

        curve = state_floats(state, "curve", owner=self.name, min=0.0, depth=2)
        per = state_get(state, "per_experience", owner=self.name)
        ok = isinstance(per, list) and len(per) == len(curve) and all(
            isinstance(e, list | tuple) and len(e) == 2 and isinstance(e[1], list | tuple)
            for e in per)
        if ok:
            state_floats({"at": [e[0] for e in per]}, "at", owner=self.name, min=0.0)
            state_floats({"acc": [e[1] for e in per]}, "acc", owner=self.name, min=0.0,
                         max=1.0, depth=2)
        else:
            raise CheckpointError(f"checkpoint state of plugin {self.name!r}: per_experience "
                                  "must hold one (samples, [accuracy per experience]) pair per "
                                  "anytime evaluation; the checkpoint is corrupted")
        self.curve_ = [tuple(c) for c in curve]  # type: ignore[misc]
        self.per_experience_ = [(int(at), [float(a) for a in accs]) for at, accs in per]


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "anytime", AnytimeAccuracy)
