"""PCGrad: project each task's gradient off the gradients it conflicts with.

Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient surgery for
multi-task learning", NeurIPS 2020, Algorithm 1: for each task i,
``g_i^PC = g_i``; for every other task j, in random order, if ``g_i^PC . g_j
< 0`` then ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j``; the update is
``sum_i g_i^PC``. Applied to the shared parameters (each head keeps its own
task's gradient). It owns the gradient stage: the shared parameters'
``p.grad`` (the sum of the task gradients plus any other loss term's) has
the sum of the task gradients replaced by the PCGrad direction, so other
terms (a regularizer, replay) keep their gradient. It needs the plain sum
of the task losses, so it refuses a loss-weighting plugin. No
hyper-parameters besides ``seed`` (the random order).

Examples
--------
>>> from lifelong.testing import tiny_multitask_stream, make_learner
>>> stream = tiny_multitask_stream()
>>> learner = make_learner([PCGrad()], stream).fit(stream)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.hookspecs import hookimpl
from lifelong.plugins.multitask._gradients import (
    add_to_grads,
    refuse_decider,
    shared_parameters,
    task_gradients,
    task_losses,
)

__all__ = ["PCGrad", "project_conflicting", "random_orders"]


def project_conflicting(grads: Tensor, orders: list[list[int]]) -> Tensor:
    """The projected gradients ``g_i^PC`` (T, P); ``orders[i]``: the other tasks, in order."""
    out = []
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            gj = grads[j]
            dot = g @ gj
            g = g - dot.clamp(max=0.0) / (gj @ gj).clamp_min(1e-20) * gj
        out.append(g)
    return torch.stack(out)


def random_orders(n: int, generator: torch.Generator) -> list[list[int]]:
    """For each task, the other tasks in a random order (drawn on the host, no device sync)."""
    orders = []
    for i in range(n):
        perm = torch.randperm(n, generator=generator).tolist()
        orders.append([j for j in perm if j != i])
    return orders


class PCGrad:
    """Gradient surgery (Yu et al. 2020) on the shared parameters; owns the gradient stage."""

    name = "pcgrad"
    requires = ("multitask", "task_gradients")
    owns = ("gradient",)

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        refuse_decider(learner, self.name)
        shared_parameters(learner.model, self.name)

    @hookimpl
    def before_update(self, learner: Any, step: Any) -> None:
        params = shared_parameters(learner.model, self.name)
        grads = task_gradients(task_losses(learner, step.losses), params)
        projected = project_conflicting(grads, random_orders(len(grads), self._gen))
        add_to_grads(params, projected.sum(0) - grads.sum(0))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["generator"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "pcgrad", PCGrad)
