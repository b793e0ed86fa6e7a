"""Deep CORAL: align the second-order statistics of source and target features.

Each step the learner's forward carries the stream (source) rows and an
unlabeled target batch of the same size; the CORAL loss is the squared
Frobenius distance between the covariances of the two sets of features of
``layer``, scaled by ``1 / (4 d^2)`` (``d`` the feature width), weighted
by ``coral_weight`` and added to the classification loss. It needs at
least two rows per domain (a batch of one contributes nothing).

Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
Adaptation", ECCV 2016 Workshops (TASK-CV). Defaults: ``layer="head"``
(the paper adapts the last layer, fc8, the classifier's outputs);
``coral_weight=1.0`` (the paper picks lambda so that the classification
and CORAL losses are about equal at the end of training; 1.0 is the
starting point it describes, tune per pair).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([CORAL()], stream).fit(stream)
>>> learner.plugins[0].last_loss_ >= 0
True
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lifelong.hookspecs import hookimpl
from lifelong.plugins.domain._common import check_positive, source_target

__all__ = ["CORAL", "coral_loss", "covariance"]


def covariance(f: Tensor) -> Tensor:
    """Unbiased feature covariance ``(D^T D - (1^T D)^T (1^T D) / n) / (n - 1)`` of ``f`` (n, d).

    >>> import torch
    >>> covariance(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    tensor([[2., 0.],
            [0., 0.]])
    """
    n = f.shape[0]
    s = f.sum(0, keepdim=True)
    return (f.T @ f - s.T @ s / n) / (n - 1)


def coral_loss(source: Tensor, target: Tensor) -> Tensor:
    """``||C_S - C_T||_F^2 / (4 d^2)`` for features ``source`` (n_s, d) and ``target`` (n_t, d)."""
    d = source.shape[1]
    diff = covariance(source) - covariance(target)
    return (diff * diff).sum() / (4.0 * d * d)


class CORAL:
    """Deep CORAL loss between source and target features of one layer."""

    name = "coral"
    requires = ("target",)

    def __init__(self, *, layer: str = "head", coral_weight: float = 1.0) -> None:
        check_positive("coral", coral_weight=coral_weight)
        self.layer = layer
        self.coral_weight = coral_weight
        self.last_loss_ = 0.0

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        learner.features.request(self.layer, owner=self.name)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        pair = source_target(learner, step, self.layer)
        if pair is None or min(len(pair[0]), len(pair[1])) < 2:
            return None
        loss = coral_loss(*pair)
        if learner.device.type == "cpu":
            self.last_loss_ = float(loss.detach())
        return {"coral": self.coral_weight * loss}

    def state_dict(self) -> dict[str, Any]:
        return {"last_loss": self.last_loss_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_loss_ = float(state["last_loss"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "coral", CORAL)
