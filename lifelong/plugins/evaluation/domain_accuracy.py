"""Source and target accuracy after each experience (domain adaptation).

With a target stream (YAML ``target:``), every evaluation of the run also
scores the model on the target's held-out data (``EvalReport.target``);
this view records, after each experience, the mean accuracy on the
source's evaluation sets seen so far and on every target evaluation set.
``lifelong run`` adds it whenever a target is configured. Its ``summary()``
goes into ``metrics.json``: ``source_accuracy`` and ``target_accuracy``
(one entry per experience), ``final_source_accuracy`` and
``final_target_accuracy``.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner, shifted
>>> stream = tiny_stream()
>>> view = DomainAccuracy()
>>> _ = make_learner([view], stream, target=shifted(stream)).fit(stream)
>>> len(view.summary()["target_accuracy"])
3
"""

from __future__ import annotations

from typing import Any

from lifelong.hookspecs import hookimpl

__all__ = ["DomainAccuracy"]


class DomainAccuracy:
    """Record source and target accuracy per experience."""

    name = "domain_accuracy"

    def __init__(self) -> None:
        self.source_: list[float] = []
        self.target_: list[list[float]] = []

    @hookimpl
    def after_eval(self, learner: Any, report: Any) -> None:
        if report.kind != "experience_end":
            return
        seen = report.class_il[: (report.experience_index or 0) + 1]
        self.source_.append(sum(seen) / max(len(seen), 1))
        self.target_.append(list(report.target))

    def summary(self) -> dict[str, Any]:
        target = [sum(t) / len(t) if t else None for t in self.target_]
        return {
            "source_accuracy": list(self.source_),
            "target_accuracy": target,
            "target_accuracy_per_set": [list(t) for t in self.target_],
            "final_source_accuracy": self.source_[-1] if self.source_ else None,
            "final_target_accuracy": target[-1] if target else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"source": list(self.source_), "target": [list(t) for t in self.target_]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source_ = list(state["source"])
        self.target_ = [list(t) for t in state["target"]]


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "domain_accuracy", DomainAccuracy)
