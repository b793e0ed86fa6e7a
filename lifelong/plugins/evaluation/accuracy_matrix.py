"""Rows after each experience, Class-IL and Task-IL
(logit masking), ACC, BWT, FWT, forgetting (Lopez-Paz & Ranzato 2017;
Chaudhry et al. 2018).

Its ``summary() -> dict`` goes into ``metrics.json``.
"""

from __future__ import annotations

from typing import Any

from lifelong import metrics
from lifelong.hookspecs import hookimpl

__all__ = ["AccuracyMatrix"]


class AccuracyMatrix:
    """Record the accuracy matrix and derive ACC, BWT, FWT and forgetting."""

    name = "accuracy_matrix"

    def __init__(self) -> None:
        self.rows_: list[list[float]] = []
        self.rows_task_il_: list[list[float]] = []
        self.initial_: list[float] | None = None

    @hookimpl
    def after_eval(self, learner: Any, report: Any) -> None:
        if report.kind == "initial":
            self.initial_ = list(report.class_il)
        elif report.kind == "experience_end":
            self.rows_.append(list(report.class_il))
            self.rows_task_il_.append(list(report.task_il))

    def summary(self) -> dict[str, Any]:
        R, Rt = self.rows_, self.rows_task_il_
        return {
            "accuracy_matrix": R,
            "accuracy_matrix_task_il": Rt,
            "final_avg_accuracy": metrics.average_accuracy(R),
            "final_avg_accuracy_task_il": metrics.average_accuracy(Rt),
            "avg_forgetting": metrics.average_forgetting(R),
            "avg_forgetting_task_il": metrics.average_forgetting(Rt),
            "bwt": metrics.backward_transfer(R),
            "fwt": metrics.forward_transfer(R, self.initial_),
            "random_init_accuracy": self.initial_,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows_, "rows_task_il": self.rows_task_il_, "initial": self.initial_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_floats

        rows = state_floats(state, "rows", owner=self.name, min=0.0, max=1.0, depth=2)
        rows_t = state_floats(state, "rows_task_il", owner=self.name, min=0.0, max=1.0, depth=2)
        initial = state_floats(state, "initial", owner=self.name, min=0.0, max=1.0,
                               allow_none=True)
        self.rows_ = [list(r) for r in rows]
        self.rows_task_il_ = [list(r) for r in rows_t]
        self.initial_ = None if initial is None else list(initial)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "accuracy_matrix", AccuracyMatrix)
