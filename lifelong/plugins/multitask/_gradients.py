"""What every multi-task method reads: the task losses, the shared parameters, per-task gradients.

:func:`task_gradients` is the one place per-task gradients are computed
(GradNorm on the last shared layer, PCGrad on the shared parameters,
MGDA-UB on the shared representation): one ``torch.autograd.grad`` per task,
keeping the graph so that the learner's backward (or the next task) can
still use it. The gradient methods then change only the shared
parameters' ``p.grad`` by :func:`add_to_grads`, so every other term of
the loss (a regularizer, replay) keeps its gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import CompositionError

__all__ = ["task_names", "task_losses", "task_gradients", "shared_parameters",
           "last_shared_parameters", "add_to_grads", "other_terms", "refuse_decider"]


def task_names(learner: Any) -> list[str]:
    """The names of the task losses in ``step.losses`` (``ce/<task>``, ``mse/<task>``)."""
    return [t.loss_name for t in learner.tasks]


def task_losses(learner: Any, losses: dict[str, Tensor]) -> list[Tensor]:
    """The task losses in the stream's task order."""
    return [losses[n] for n in task_names(learner)]


def other_terms(learner: Any, losses: dict[str, Tensor]) -> list[Tensor]:
    """Every loss term that is not a task loss (regularizers, replay), added unweighted."""
    names = set(task_names(learner))
    return [v for k, v in losses.items() if k not in names]


def _model_attr(model: nn.Module, attr: str, owner: str) -> Any:
    fn = getattr(model, attr, None)
    if not callable(fn):
        raise CompositionError(f"plugin {owner!r} needs a multi-task backbone that exposes "
                               f"{attr}() (shared_bottom or cross_stitch); "
                               f"{type(model).__name__} does not")
    return fn()


def shared_parameters(model: nn.Module, owner: str) -> list[nn.Parameter]:
    """The parameters that every task's loss reaches (the model's ``shared_parameters()``)."""
    return list(_model_attr(model, "shared_parameters", owner))


def last_shared_parameters(model: nn.Module, owner: str) -> list[nn.Parameter]:
    """The weights of the last shared layer (the model's ``last_shared_parameters()``)."""
    return list(_model_attr(model, "last_shared_parameters", owner))


def task_gradients(losses: Sequence[Tensor], inputs: Sequence[Tensor]) -> Tensor:
    """``G[t]`` = the gradient of ``losses[t]`` w.r.t. ``inputs``, flattened: shape (T, P).

    ``inputs`` are parameters or activations (a shared representation); an
    input a loss does not reach gets zeros. The graph is kept.
    """
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, list(inputs), retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(x)).reshape(-1)
                               for g, x in zip(grads, inputs)]))
    return torch.stack(rows)


def add_to_grads(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    """``p.grad += flat[slice of p]`` for each parameter (a missing grad counts as zero)."""
    i = 0
    for p in params:
        n = p.numel()
        d = flat[i:i + n].view_as(p)
        p.grad = d.clone() if p.grad is None else p.grad.add_(d)
        i += n


def refuse_decider(learner: Any, owner: str) -> None:
    """A gradient method replaces the sum of the task losses: no other plugin may weight them."""
    impls = learner.pm.hook.combine_losses.get_hookimpls()
    if impls:
        from lifelong.learner import plugin_name

        raise CompositionError(f"plugin {owner!r} sets the shared gradient from the unweighted "
                               f"task losses; plugin {plugin_name(impls[0].plugin)!r} weights "
                               "them (combine_losses): keep one of the two")
