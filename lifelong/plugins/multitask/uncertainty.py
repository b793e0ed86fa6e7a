"""Uncertainty weighting: each task's loss scaled by a learned homoscedastic variance.

Kendall, Gal & Cipolla, "Multi-task learning using uncertainty to weigh
losses for scene geometry and semantics", CVPR 2018. With ``s_t = log
sigma_t^2`` learned per task (the paper's eq. 7 and 10, in the log-variance
form of its Sec. 3.2 for numerical stability), the combined loss is

* regression (Gaussian likelihood, eq. 5): ``1 / (2 sigma^2) L_t + log sigma
  = 0.5 exp(-s_t) L_t + 0.5 s_t``;
* classification (scaled softmax, eq. 10): ``1 / sigma^2 L_t + log sigma
  = exp(-s_t) L_t + 0.5 s_t``.

Other loss terms (regularizers, replay) are added unweighted. Defaults:
``init_log_var=0.0`` (sigma = 1, every task at weight 1 or 1/2 at the
start). The log-variances are this plugin's own parameters, trained on
the same loss by an optimizer of the learner's kind (SGD, or Adam/AdamW)
at ``lr`` (the learner's rate when ``None``); they are part of its
``state_dict``, with that optimizer's state.

Examples
--------
>>> from lifelong.testing import tiny_multitask_stream, make_learner
>>> stream = tiny_multitask_stream()
>>> plugin = UncertaintyWeighting()
>>> _ = make_learner([plugin], stream).fit(stream)
>>> plugin.log_vars_.shape
torch.Size([3])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.multitask._gradients import other_terms, task_losses

__all__ = ["UncertaintyWeighting", "uncertainty_loss", "task_optimizer"]


def uncertainty_loss(losses: Tensor, log_vars: Tensor, regression: Tensor) -> Tensor:
    """``sum_t c_t exp(-s_t) L_t + s_t / 2`` with ``c_t = 1/2`` for regression, 1 for
    classification (Kendall et al. 2018, eq. 7 and 10 with ``s = log sigma^2``)."""
    scale = torch.where(regression, 0.5, 1.0).to(losses.dtype)
    return (scale * torch.exp(-log_vars) * losses + 0.5 * log_vars).sum()


def task_optimizer(learner: Any, params: list[Tensor], lr: float | None) -> torch.optim.Optimizer:
    """An optimizer of the learner's kind for a plugin's own parameters."""
    rate = learner.lr if lr is None else lr
    if learner.optimizer_spec in ("adam", "adamw"):
        return torch.optim.Adam(params, lr=rate)
    return torch.optim.SGD(params, lr=rate, momentum=learner.momentum)


class UncertaintyWeighting:
    """Weigh each task's loss by a learned homoscedastic uncertainty (Kendall et al. 2018)."""

    name = "uncertainty"
    requires = ("multitask",)

    def __init__(self, *, init_log_var: float = 0.0, lr: float | None = None) -> None:
        if not isinstance(init_log_var, (int, float)) or not init_log_var == init_log_var:
            raise ConfigError(f"plugin 'uncertainty': init_log_var must be a number, got "
                              f"{init_log_var!r}")
        if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
            raise ConfigError(f"plugin 'uncertainty': lr must be > 0 (or null), got {lr!r}")
        self.init_log_var = init_log_var
        self.lr = lr
        self.log_vars_: Tensor | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._regression: Tensor | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self.log_vars_ = torch.full((len(stream.tasks),), float(self.init_log_var),
                                    device=learner.device, requires_grad=True)
        self._regression = torch.tensor([t.kind == "regression" for t in stream.tasks],
                                        device=learner.device)
        self._opt = task_optimizer(learner, [self.log_vars_], self.lr)

    @hookimpl
    def combine_losses(self, learner: Any, step: Any, losses: dict[str, Tensor]) -> Tensor:
        assert self.log_vars_ is not None and self._opt is not None
        self._opt.zero_grad(set_to_none=True)
        total = uncertainty_loss(torch.stack(task_losses(learner, losses)), self.log_vars_,
                                 self._regression)
        for term in other_terms(learner, losses):
            total = total + term
        return total

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        assert self._opt is not None
        self._opt.step()

    def weights(self) -> Tensor:
        """The current weight of each task's loss, ``c_t exp(-s_t)``."""
        assert self.log_vars_ is not None and self._regression is not None
        return torch.where(self._regression, 0.5, 1.0) * torch.exp(-self.log_vars_.detach())

    def state_dict(self) -> dict[str, Any]:
        if self.log_vars_ is None or self._opt is None:
            return {}
        return {"log_vars": self.log_vars_.detach().clone(), "optimizer": self._opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        assert self.log_vars_ is not None and self._opt is not None
        with torch.no_grad():
            self.log_vars_.copy_(state["log_vars"])
        self._opt.load_state_dict(state["optimizer"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "uncertainty", UncertaintyWeighting)
