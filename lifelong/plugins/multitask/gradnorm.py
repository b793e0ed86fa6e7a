"""GradNorm: learned task weights that equalize the tasks' gradient norms at their training rates.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: gradient normalization
for adaptive loss balancing in deep multitask networks", ICML 2018. At
each step, on the weights ``W`` of the last shared layer (Sec. 3.1):
``G_i = ||grad_W w_i L_i||_2``, ``G_bar = mean_i G_i``, ``L~_i = L_i(t) /
L_i(0)``, the relative inverse training rate ``r_i = L~_i / mean_j L~_j``,
and (eq. 2) ``L_grad = sum_i |G_i - G_bar r_i^alpha|_1`` with the target
``G_bar r_i^alpha`` held constant. The network trains on ``sum_i w_i L_i``
(other loss terms added unweighted); ``w`` steps on ``grad_w L_grad`` and
is then renormalized to ``sum_i w_i = T`` (Algorithm 1). ``L_i(0)`` is the
loss of the first step.

Defaults: ``alpha=1.5`` (the paper's value for NYUv2, Sec. 5.4),
``w_i(0) = 1``. The weights are this plugin's own parameters, stepped by
Adam at ``lr=0.025``: the paper does not give a separate rate for them;
0.025 is ours (a rate the weights visibly move at within a few hundred
steps). They and the optimizer's state are in ``state_dict``.

Examples
--------
>>> from lifelong.testing import tiny_multitask_stream, make_learner
>>> stream = tiny_multitask_stream()
>>> plugin = GradNorm()
>>> _ = make_learner([plugin], stream).fit(stream)
>>> round(float(plugin.weights_.detach().sum()), 4)
3.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.multitask._gradients import (
    last_shared_parameters,
    other_terms,
    task_gradients,
    task_losses,
)

__all__ = ["GradNorm", "gradnorm_targets", "gradnorm_loss", "renormalize"]


def gradnorm_targets(norms: Tensor, losses: Tensor, initial: Tensor, alpha: float) -> Tensor:
    """``G_bar * r_i^alpha``, ``r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))`` (eq. 1-2)."""
    ratio = losses / initial
    return norms.mean() * (ratio / ratio.mean()) ** alpha


def gradnorm_loss(norms: Tensor, targets: Tensor) -> Tensor:
    """``L_grad = sum_i |G_i - target_i|`` (eq. 2), the targets taken as constants."""
    return (norms - targets.detach()).abs().sum()


def renormalize(weights: Tensor) -> Tensor:
    """Weights scaled so that they sum to the number of tasks (Algorithm 1)."""
    return weights * (len(weights) / weights.sum())


class GradNorm:
    """GradNorm (Chen et al. 2018) on the last shared layer, alpha 1.5."""

    name = "gradnorm"
    requires = ("multitask",)

    def __init__(self, *, alpha: float = 1.5, lr: float = 0.025) -> None:
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha >= 0:
            raise ConfigError(f"plugin 'gradnorm': alpha must be >= 0, got {alpha!r}")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise ConfigError(f"plugin 'gradnorm': lr must be > 0, got {lr!r}")
        self.alpha = alpha
        self.lr = lr
        self.weights_: Tensor | None = None
        self.initial_losses_: Tensor | None = None
        self._opt: torch.optim.Optimizer | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        if len(stream.tasks) < 2:
            only = stream.tasks[0].name if stream.tasks else "none"
            raise ConfigError(f"plugin 'gradnorm' balances two or more tasks; stream "
                              f"{stream.name!r} has one (task {only!r}): drop gradnorm")
        last_shared_parameters(learner.model, self.name)  # refuse a model without one, now
        self.weights_ = torch.ones(len(stream.tasks), device=learner.device, requires_grad=True)
        self._opt = torch.optim.Adam([self.weights_], lr=self.lr)

    @hookimpl
    def combine_losses(self, learner: Any, step: Any, losses: dict[str, Tensor]) -> Tensor:
        assert self.weights_ is not None and self._opt is not None
        task = task_losses(learner, losses)
        stacked = torch.stack(task)
        if self.initial_losses_ is None:
            self.initial_losses_ = stacked.detach().clone()
        w = self.weights_
        grads = task_gradients(task, last_shared_parameters(learner.model, self.name))
        norms = w * grads.norm(dim=1)  # ||grad_W w_i L_i|| = w_i ||grad_W L_i||
        target = gradnorm_targets(norms.detach(), stacked.detach(), self.initial_losses_,
                                  self.alpha)
        self._opt.zero_grad(set_to_none=True)
        w.grad = torch.autograd.grad(gradnorm_loss(norms, target), w)[0]
        total = (w.detach() * stacked).sum()
        for term in other_terms(learner, losses):
            total = total + term
        return total

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        assert self.weights_ is not None and self._opt is not None
        self._opt.step()
        with torch.no_grad():
            self.weights_.copy_(renormalize(self.weights_.clamp_min(1e-8)))

    def state_dict(self) -> dict[str, Any]:
        if self.weights_ is None or self._opt is None:
            return {}
        return {"weights": self.weights_.detach().clone(), "initial": self.initial_losses_,
                "optimizer": self._opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        assert self.weights_ is not None and self._opt is not None
        with torch.no_grad():
            self.weights_.copy_(state["weights"])
        from lifelong.validation import state_tensor

        self.initial_losses_ = state_tensor(state, "initial", owner=self.name, shape=(None,),
                                            dtype="float", finite=True, allow_none=True)
        self._opt.load_state_dict(state["optimizer"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "gradnorm", GradNorm)
