"""Dynamic weight average: each task weighted by how slowly its loss has been falling.

Liu, Johns & Davison, "End-to-end multi-task learning with attention",
CVPR 2019, eq. 7: ``w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T)``
with ``r_k(t-1) = L_k(t-1) / L_k(t-2)``, ``L_k`` the loss of task k averaged
over one epoch, and ``w_k = 1`` for the first two epochs. Defaults: the
paper's temperature ``T = 2``. A stream has no epochs: ``period`` batches
stand for one (the average over them is the paper's epoch average). Other
loss terms are added unweighted. State: the running sums and the last two
period averages, on the learner's device (no host sync per step).

Examples
--------
>>> from lifelong.testing import tiny_multitask_stream, make_learner
>>> stream = tiny_multitask_stream()
>>> plugin = DWA(period=4)
>>> _ = make_learner([plugin], stream).fit(stream)
>>> round(float(plugin.weights_.sum()), 4)
3.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.multitask._gradients import other_terms, task_losses

__all__ = ["DWA", "dwa_weights"]


def dwa_weights(prev: Tensor, prev2: Tensor, temperature: float) -> Tensor:
    """``K softmax(r / T)`` with ``r = prev / prev2`` (Liu et al. 2019, eq. 7)."""
    return len(prev) * torch.softmax(prev / prev2 / temperature, 0)


class DWA:
    """Dynamic weight average (Liu, Johns & Davison 2019), temperature 2."""

    name = "dwa"
    requires = ("multitask",)

    def __init__(self, *, temperature: float = 2.0, period: int = 100) -> None:
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"plugin 'dwa': temperature must be > 0, got {temperature!r}")
        if not isinstance(period, int) or isinstance(period, bool) or period < 1:
            raise ConfigError(f"plugin 'dwa': period must be a positive integer (batches), got "
                              f"{period!r}")
        self.temperature = temperature
        self.period = period
        self.weights_: Tensor | None = None
        self._sum: Tensor | None = None
        self._count = 0
        self._history: list[Tensor] = []  # the last two period averages, oldest first

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        k = len(stream.tasks)
        self.weights_ = torch.ones(k, device=learner.device)
        self._sum = torch.zeros(k, device=learner.device)

    @hookimpl
    def combine_losses(self, learner: Any, step: Any, losses: dict[str, Tensor]) -> Tensor:
        assert self.weights_ is not None and self._sum is not None
        task = torch.stack(task_losses(learner, losses))
        total = (self.weights_ * task).sum()
        for term in other_terms(learner, losses):
            total = total + term
        self._sum += task.detach()
        self._count += 1
        if self._count == self.period:
            self._history = [*self._history[-1:], self._sum / self.period]
            self._sum = torch.zeros_like(self._sum)
            self._count = 0
            if len(self._history) == 2:
                self.weights_ = dwa_weights(self._history[1], self._history[0], self.temperature)
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights_, "sum": self._sum, "count": self._count,
                "history": list(self._history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights_, self._sum = state["weights"], state["sum"]
        self._count, self._history = state["count"], list(state["history"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "dwa", DWA)
