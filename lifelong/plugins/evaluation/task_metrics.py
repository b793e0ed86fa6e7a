"""Each task's metric per experience on a multi-target stream, and
Delta_MTL against single-task baselines (Maninis, Radosavovic & Kokkinos,
"Attentive single-tasking of multiple tasks", CVPR 2019).

After each experience it records, for every task, its metric on every
evaluation set (accuracy for a classification, mean squared error for a
regression). ``baselines`` (``{task: metric of a single-task model}``)
adds ``delta_mtl``: the mean relative change against them, in percent,
errors counted with a flipped sign. On single-target streams it records
nothing. Its ``summary() -> dict`` goes into ``metrics.json``; ``lifelong
run`` adds it to every multi-target run (``eval: {baselines: {...}}``).

Examples
--------
>>> from lifelong.testing import tiny_multitask_stream, make_learner
>>> stream = tiny_multitask_stream()
>>> view = TaskMetrics(baselines={"a": 0.5, "b": 0.5, "c": 1.0})
>>> s = make_learner([view], stream).fit(stream) and view.summary()
>>> sorted(s["final_task_metrics"]), s["task_metric_kinds"]["c"], s["delta_mtl"] is not None
(['a', 'b', 'c'], 'mse', True)
"""

from __future__ import annotations

import math
from typing import Any

from lifelong import metrics
from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl

__all__ = ["TaskMetrics"]


class TaskMetrics:
    """Per-task metric after each experience; Delta_MTL when single-task baselines are given."""

    name = "task_metrics"

    def __init__(self, *, baselines: dict[str, float] | None = None) -> None:
        if baselines is not None:
            if not isinstance(baselines, dict):
                raise ConfigError(f"plugin 'task_metrics': baselines must map task names to "
                                  f"metrics, got {type(baselines).__name__}")
            for k, v in baselines.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                        or v == 0:
                    raise ConfigError(f"plugin 'task_metrics': baseline of task {k!r} must be a "
                                      f"finite non-zero number, got {v!r}")
        self.baselines = baselines
        self.rows_: dict[str, list[list[float]]] = {}
        self.kinds_: dict[str, str] = {}

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        names = [t.name for t in stream.tasks]
        for k in self.baselines or {}:
            if k not in names:
                raise ConfigError(f"plugin 'task_metrics': baseline for task {k!r}, which stream "
                                  f"{stream.name!r} does not have (tasks: "
                                  f"{', '.join(names) or 'none, it is single-target'})")
        self.kinds_ = {t.name: "accuracy" if t.kind == "classification" else "mse"
                       for t in stream.tasks}

    @hookimpl
    def after_eval(self, learner: Any, report: Any) -> None:
        if report.kind == "experience_end":
            for task, values in report.tasks.items():
                self.rows_.setdefault(task, []).append(list(values))

    def final(self) -> dict[str, float]:
        """Each task's metric averaged over the evaluation sets, after the last experience."""
        return {t: sum(r[-1]) / len(r[-1]) for t, r in self.rows_.items() if r and r[-1]}

    def summary(self) -> dict[str, Any]:
        final = self.final()
        delta = None
        if self.baselines and all(k in final for k in self.baselines):
            errors = [t for t, k in self.kinds_.items() if k == "mse"]
            delta = metrics.delta_mtl(final, self.baselines, errors)
        return {"task_matrix": self.rows_, "final_task_metrics": final,
                "task_metric_kinds": dict(self.kinds_), "delta_mtl": delta}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows_, "kinds": self.kinds_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows_ = {k: [list(r) for r in v] for k, v in state["rows"].items()}
        self.kinds_ = dict(state["kinds"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "task_metrics", TaskMetrics)
