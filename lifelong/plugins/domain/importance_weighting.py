"""Importance weighting for covariate shift: weight each source loss by p_target(x) / p_source(x).

Under covariate shift (the same p(y | x), different p(x)) the target risk
is the source risk with each sample weighted by the density ratio
``w(x) = p_target(x) / p_source(x)``. The ratio is estimated with a
probabilistic domain classifier (``x`` from the source: label 0, from the
target: 1) trained online on each step's stream and target inputs, which
have the same size, so the class prior cancels and
``w(x) = P(target | x) / P(source | x) = exp(logit(x))``. The weights of a
stream batch are ``w^flatten``, clipped to ``[0, clip]`` and normalized to
mean 1 over the batch; the learner's cross-entropy becomes
``mean(w_i * ce_i)`` (hook ``sample_weights``). The weights of a step come
from the classifier as it stands before that step's update of it.

The domain classifier is this plugin's module (a logistic regression on
the flattened inputs with ``hidden=()``, else an MLP), in its
``state_dict``, trained with its own SGD optimizer (``lr``, the logistic
loss of :func:`~lifelong.plugins.domain.dann.domain_loss`).

Shimodaira, "Improving predictive inference under covariate shift by
weighting the log-likelihood function", Journal of Statistical Planning
and Inference 90(2), 2000; the domain-classifier estimate of the ratio as
in Bickel, Brückner & Scheffer, "Discriminative learning under covariate
shift", JMLR 10, 2009. Defaults: ``flatten=1.0`` (Shimodaira's exponent
lambda; 1 is the asymptotically optimal weighting, smaller values trade
variance for bias); ``clip=10.0`` and ``lr=0.1`` are not from the papers
(a cap on the largest weight, and the domain classifier's step size).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([ImportanceWeighting()], stream).fit(stream)
>>> round(float(learner.plugins[0].last_weights_.mean()), 4)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.domain._common import check_positive, make_mlp
from lifelong.plugins.domain.dann import domain_loss

__all__ = ["ImportanceWeighting", "density_ratio", "clip_normalize"]


def density_ratio(logits: Tensor, prior_ratio: float = 1.0) -> Tensor:
    """``p_t(x) / p_s(x)`` from a domain classifier's logit: ``exp(logit) * n_s / n_t``.

    >>> density_ratio(torch.tensor([0.0, math.log(3.0)])).tolist()
    [1.0, 3.0]
    """
    return torch.exp(logits) * prior_ratio


def clip_normalize(w: Tensor, *, clip: float, flatten: float = 1.0) -> Tensor:
    """``w^flatten`` clipped to ``[0, clip]``, then scaled to mean 1.

    >>> clip_normalize(torch.tensor([1.0, 3.0, 100.0]), clip=4.0).tolist()
    [0.375, 1.125, 1.5]
    """
    w = w.pow(flatten).clamp(0.0, clip)
    return w / w.mean().clamp_min(1e-12)


class ImportanceWeighting:
    """Weight source losses by a domain classifier's density-ratio estimate."""

    name = "importance_weighting"
    requires = ("target",)

    def __init__(self, *, clip: float = 10.0, flatten: float = 1.0, hidden: Sequence[int] = (),
                 lr: float = 0.1, seed: int = 0) -> None:
        check_positive("importance_weighting", flatten=flatten)
        if not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
            raise ConfigError(f"plugin 'importance_weighting': clip must be a finite number > 0, "
                              f"got {clip!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"plugin 'importance_weighting': lr must be > 0, got {lr!r}")
        self.clip = clip
        self.flatten = flatten
        self.hidden = hidden
        self.lr = lr
        self.seed = seed
        self.classifier_: torch.nn.Module | None = None
        self.optimizer_: torch.optim.Optimizer | None = None
        self.last_weights_: Tensor | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        d = math.prod(stream.input_shape)
        self.classifier_ = make_mlp(d, self.hidden, 1, seed=self.seed, device=learner.device)
        self.optimizer_ = torch.optim.SGD(self.classifier_.parameters(), lr=self.lr)

    def ratio(self, x: Tensor) -> Tensor:
        """The estimated ``p_target(x) / p_source(x)`` (no gradient)."""
        assert self.classifier_ is not None
        with torch.no_grad():
            return density_ratio(self.classifier_(x.flatten(1)).squeeze(1))

    @hookimpl
    def sample_weights(self, learner: Any, step: Any) -> Tensor | None:
        if step.target is None:
            return None
        w = clip_normalize(self.ratio(step.batch.x), clip=self.clip, flatten=self.flatten)
        self.last_weights_ = w
        return w

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        if step.target is None:
            return
        assert self.classifier_ is not None and self.optimizer_ is not None
        self.optimizer_.zero_grad(set_to_none=True)
        xs, xt = step.batch.x.flatten(1), step.target.flatten(1)
        d = self.classifier_(torch.cat([xs, xt])).squeeze(1)
        domain_loss(d[: len(xs)], d[len(xs):]).backward()
        self.optimizer_.step()

    def state_dict(self) -> dict[str, Any]:
        assert self.classifier_ is not None and self.optimizer_ is not None
        return {"classifier": self.classifier_.state_dict(),
                "optimizer": self.optimizer_.state_dict(), "last_weights": self.last_weights_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.classifier_ is not None and self.optimizer_ is not None
        self.classifier_.load_state_dict(state["classifier"])
        self.optimizer_.load_state_dict(state["optimizer"])
        from lifelong.validation import state_tensor

        self.last_weights_ = state_tensor(state, "last_weights", owner=self.name, shape=(None,),
                                          dtype="float", finite=True, min=0.0, allow_none=True)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "importance_weighting", ImportanceWeighting)
