"""DANN: domain-adversarial training through a gradient-reversal layer.

A domain classifier (an MLP on the features of ``layer``) learns to tell
the stream's (source) rows from the target rows of the learner's one
forward pass; between the features and the classifier sits the
gradient-reversal layer ``R_lambda`` (identity forward, gradient times
``-lambda`` backward), so one backward pass trains the classifier to
separate the domains and the feature extractor to confuse it. The loss
term is the domain classifier's logistic loss, averaged over the source
rows plus averaged over the target rows (the paper's objective). ``lambda``
follows the paper's schedule ``2 / (1 + exp(-gamma p)) - 1`` with ``p``
the training progress in [0, 1]; with ``lr_schedule`` the learning rate of
the learner's optimizer and of the domain classifier's follows
``mu_0 / (1 + alpha p)^beta`` (``mu_0`` the configured ``train.lr``).

The domain classifier is this plugin's module, in its ``state_dict``, and
has its own SGD optimizer with the learner's learning rate and momentum
(the paper trains all parts with one SGD), stepped after the learner's.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand &
Lempitsky, "Domain-Adversarial Training of Neural Networks", JMLR 17(59),
2016. Defaults, all from the paper (section 5.2.2): ``gamma=10``,
``alpha=10``, ``beta=0.75``, ``lr_schedule=True`` (use ``train.lr: 0.01``
and ``momentum: 0.9`` for the paper's mu_0 and momentum), ``hidden=(100,)``
(the domain classifier of the paper's MNIST architecture: one hidden layer
of 100 units); ``layer="body"`` (the feature extractor's output, the input
of the label predictor). ``total_steps`` (for ``p``) is counted from the
stream when not given.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([DANN()], stream).fit(stream)
>>> 0.0 < learner.plugins[0].lambda_ < 1.0
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.hookspecs import hookimpl
from lifelong.plugins.domain._common import (
    check_positive,
    dann_lambda,
    dann_lr_factor,
    feature_dim,
    grad_reverse,
    make_mlp,
    source_target,
    total_steps,
)

__all__ = ["DANN", "domain_loss"]


def domain_loss(source_logits: Tensor, target_logits: Tensor) -> Tensor:
    """Logistic loss of a domain classifier: mean over source (label 0) + mean over target (1)."""
    return (F.binary_cross_entropy_with_logits(source_logits, torch.zeros_like(source_logits))
            + F.binary_cross_entropy_with_logits(target_logits, torch.ones_like(target_logits)))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Each group's learning rate = its initial one (kept in ``initial_lr``) times ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


class DANN:
    """Domain-adversarial training (gradient reversal + domain classifier)."""

    name = "dann"
    requires = ("target",)

    def __init__(self, *, layer: str = "body", hidden: Sequence[int] = (100,),
                 gamma: float = 10.0, alpha: float = 10.0, beta: float = 0.75,
                 lr_schedule: bool = True, total_steps: int | None = None,
                 seed: int = 0) -> None:
        check_positive("dann", gamma=gamma, alpha=alpha, beta=beta)
        self.layer = layer
        self.hidden = hidden
        self.gamma = gamma
        self.alpha = alpha
        self.beta = beta
        self.lr_schedule = lr_schedule
        self.total_steps = total_steps
        self.seed = seed
        self.lambda_ = 0.0
        self.discriminator_: torch.nn.Module | None = None
        self.optimizer_: torch.optim.Optimizer | None = None
        self.total_ = 1

    @property
    def owns(self) -> tuple[str, ...]:
        """The learning-rate schedule of the learner's optimizer, when ``lr_schedule``."""
        return ("lr_schedule",) if self.lr_schedule else ()

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        learner.features.request(self.layer, owner=self.name)
        self.total_ = total_steps(learner, stream, self.total_steps, self.name)
        self.discriminator_ = make_mlp(feature_dim(learner, self.layer), self.hidden, 1,
                                       seed=self.seed, device=learner.device)
        self.optimizer_ = torch.optim.SGD(self.discriminator_.parameters(), lr=learner.lr,
                                          momentum=learner.momentum)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        pair = source_target(learner, step, self.layer)
        if pair is None:
            return None
        assert self.discriminator_ is not None and self.optimizer_ is not None
        p = min(step.index / self.total_, 1.0)
        self.lambda_ = dann_lambda(p, self.gamma)
        if self.lr_schedule:
            factor = dann_lr_factor(p, self.alpha, self.beta)
            set_lr(learner.optimizer, factor)
            set_lr(self.optimizer_, factor)
        self.optimizer_.zero_grad(set_to_none=True)
        fs, ft = pair
        d = self.discriminator_(grad_reverse(torch.cat([fs, ft]), self.lambda_)).squeeze(1)
        return {"dann": domain_loss(d[: len(fs)], d[len(fs):])}

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        if step.target_rows is not None and self.optimizer_ is not None:
            self.optimizer_.step()

    def state_dict(self) -> dict[str, Any]:
        assert self.discriminator_ is not None and self.optimizer_ is not None
        return {"discriminator": self.discriminator_.state_dict(),
                "optimizer": self.optimizer_.state_dict(), "lambda": self.lambda_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.discriminator_ is not None and self.optimizer_ is not None
        self.discriminator_.load_state_dict(state["discriminator"])
        self.optimizer_.load_state_dict(state["optimizer"])
        self.lambda_ = float(state["lambda"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "dann", DANN)
