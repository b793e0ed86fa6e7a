"""MAS: memory aware synapses, unsupervised importance from the sensitivity of the output.

At each consolidation (the end of an experience, a detected boundary, or
every ``consolidate_every`` batches) the importance of every parameter is
``Omega_i = mean_k | d ||f(x_k)||_2^2 / d theta_i |`` over the last
``importance_samples`` stream inputs ``x_k`` (``f``: the logits). No labels
are used, so it works on any data the model sees. Importance accumulates
across consolidations (``Omega <- Omega + Omega_new``, as the reference
code does), the current parameters become the anchor, and training pays
``mas_lambda * sum_i Omega_i (theta_i - anchor_i)^2``. State is a fixed set of
per-parameter tensors: the cost per step does not grow with the number of
consolidations. It is the consolidation a task-free loss-plateau detector
(Aljundi et al., CVPR 2019) triggers through ``after_experience(None)``.

**SGD and the penalty's curvature.** The penalty's second derivative on
parameter i is ``2 * mas_lambda * Omega_i``, and plain SGD multiplies the
distance to the anchor by ``1 - 2 lr mas_lambda Omega_i`` each step: once
``lr * 2 * mas_lambda * max Omega > 2`` the parameter oscillates with growing
amplitude and the loss ends in NaN. ``Omega`` is the sensitivity of the
*squared* logit norm, so it scales with the logits' size: on split digits
(MLP 256-256, SGD 0.1, batch 10) the first consolidation gives
``max Omega = 15.3`` on the head's weights (curvature 30.6, ``lr * 30.6 = 3.1
> 2``) and the loss is NaN 59 batches into the second experience (split
MNIST: batch 101); that, not a wrong importance, is why the README's
settings diverged. At every consolidation the plugin checks this bound for
SGD (momentum and Nesterov included, per parameter group) and stops with a
:class:`~lifelong.errors.ConfigError` naming the largest stable ``lr`` and
``mas_lambda``, instead of training on into NaN. Adam rescales each
parameter's step and is not checked.

The gradients are per sample, as in the paper's equation, not the
reference code's shortcut of the gradient of a mini-batch sum
(``|sum_k g_k|`` is not ``sum_k |g_k|``). For models made of linear layers
``sum_k |g_k|`` comes from one ordinary backward (``|delta|^T |a|`` per
layer, :mod:`~lifelong.per_sample`); other models
use ``torch.func.vmap``, which a test checks the fast path against.

On a multi-target stream ``f`` is every task's head side by side: the
importance is the sensitivity of ``sum_t ||f_t(x)||_2^2`` (:func:`squared_norm`),
per sample, as above.

Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars, "Memory aware
synapses: learning what (not) to forget", ECCV 2018. Defaults:
``mas_lambda=1.0`` (the paper's value), ``importance_samples=1024``.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([MAS()], stream).fit(stream)
>>> plugin = learner.plugins[0]    # the last boundary is computed only if training goes on
>>> plugin.n_consolidations_, plugin.pending_
(2, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.per_sample import fastest, reduce_per_sample_grads
from lifelong.plugins.regularization._common import (
    RecentInputs,
    chunk_size,
    eval_mode,
    functional,
    grow_to,
    quadratic_penalty,
    sgd_instability,
    trainable,
)
from lifelong.stream.base import TaskSpec
from lifelong.validation import check_number

__all__ = ["MAS", "mas_importance", "squared_norm"]

REDUCE = "abs"  # MAS sums |g_n|, the absolute per-sample gradients


def squared_norm(out: Tensor | Mapping[str, Tensor], heads: Sequence[str] = ()) -> Tensor:
    """Each row's ``||f(x)||_2^2``; for a multi-output model the sum over ``heads`` of each
    head's squared norm (the squared norm of the heads' outputs side by side).

    >>> float(squared_norm({"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[3.0]])},
    ...                    ["a", "b"])[0])
    14.0
    """
    if isinstance(out, Tensor):
        return out.square().sum(-1)
    return torch.stack([out[h].reshape(out[h].shape[0], -1).square().sum(-1)
                        for h in heads]).sum(0)


def mas_importance(model: nn.Module, x: Tensor, task: Tensor | None = None, *,
                   method: str = "auto", heads: Sequence[str] = ()) -> dict[str, Tensor]:
    """``mean_k |d ||f(x_k)||^2 / d theta|`` per parameter, from per-sample gradients.

    The model is put in evaluation mode meanwhile; ``task`` is used only by
    task-conditioned models. ``method``: ``"backward"`` (``sum_k |g_k|`` from one
    ordinary backward, linear and conv layers), ``"vmap"`` (the ``torch.func``
    reference) or ``"auto"`` (the faster for the model), as in
    :func:`~lifelong.plugins.regularization.ewc.fisher_diagonal`. ``heads``: the
    task heads of a multi-output model whose outputs count (:func:`squared_norm`).
    """
    if method not in ("auto", "backward", "vmap"):
        raise ValueError(f"method must be 'auto', 'backward' or 'vmap', got {method!r}")
    if task is None:
        task = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    n = x.shape[0]
    if n == 0:
        return {k: torch.zeros_like(p) for k, p in trainable(model).items()}
    conditioned = bool(getattr(model, "task_conditioned", False))
    if heads:
        return _mas_heads(model, x, task, method, list(heads))
    with eval_mode(model):
        out = None
        if method == "backward" or (method == "auto" and fastest(model)):
            out = reduce_per_sample_grads(
                model, lambda: model(x, task) if conditioned else model(x),
                lambda logits: [logits.square().sum(1)], reduce="abs")
            if out is None and method == "backward":
                raise ValueError("the model has layers the one-backward path does not cover; "
                                 "use method='vmap' or 'auto'")
        if out is None:
            out = _mas_vmap(model, x, task)
    return {name: v / n for name, v in out.items()}


def _mas_vmap(model: nn.Module, x: Tensor, task: Tensor) -> dict[str, Tensor]:
    params, f = functional(model)
    out = {n: torch.zeros_like(p) for n, p in params.items()}

    def sq_norm(ps: dict[str, Tensor], xi: Tensor, ti: Tensor) -> Tensor:
        return f(ps, xi, ti).square().sum()

    per_sample = vmap(grad(sq_norm), in_dims=(None, 0, 0))
    step = chunk_size(params)
    for i in range(0, x.shape[0], step):
        for name, g in per_sample(params, x[i:i + step], task[i:i + step]).items():
            out[name] += g.abs().sum(0)
    return out


def _mas_heads(model: nn.Module, x: Tensor, task: Tensor, method: str, heads: list[str]
               ) -> dict[str, Tensor]:
    """:func:`mas_importance` of a multi-output model: the per-sample sensitivity of the sum
    over ``heads`` of their squared output norms (one backward, or ``vmap``)."""
    conditioned = bool(getattr(model, "task_conditioned", False))
    n = x.shape[0]
    with eval_mode(model):
        out = None
        if method == "backward" or (method == "auto" and fastest(model)):
            out = reduce_per_sample_grads(
                model, lambda: model(x, task) if conditioned else model(x),
                lambda o: [squared_norm(o, heads)], reduce=REDUCE)
            if out is None and method == "backward":
                raise ValueError("the model has layers the one-backward path does not cover; "
                                 "use method='vmap' or 'auto'")
        if out is None:
            params, f = functional(model)
            out = {k: torch.zeros_like(p) for k, p in params.items()}

            def norm_of(ps: dict[str, Tensor], xi: Tensor, ti: Tensor) -> Tensor:
                o = f(ps, xi, ti)
                return squared_norm({h: o[h].unsqueeze(0) for h in heads}, heads).sum()

            per_sample = vmap(grad(norm_of), in_dims=(None, 0, 0))
            step = chunk_size(params)
            for i in range(0, n, step):
                for k, g in per_sample(params, x[i:i + step], task[i:i + step]).items():
                    out[k] += torch.abs(g).sum(0)
    return {k: v / n for k, v in out.items()}


class MAS:
    """Memory aware synapses: output-sensitivity importance, a quadratic pull to the anchor."""

    name = "mas"
    owns = ()

    def __init__(self, *, mas_lambda: float = 1.0, importance_samples: int = 1024,
                 consolidate_every: int = 0) -> None:
        check_number(f"plugin {self.name!r}", "mas_lambda", mas_lambda, min=0.0)
        check_number(f"plugin {self.name!r}", "importance_samples", importance_samples, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "consolidate_every", consolidate_every, min=0, integer=True)
        if not mas_lambda >= 0:
            raise ConfigError(f"plugin 'mas': mas_lambda must be >= 0, got {mas_lambda}")
        if importance_samples < 1:
            raise ConfigError(f"plugin 'mas': importance_samples must be >= 1, got "
                              f"{importance_samples}")
        if consolidate_every < 0:
            raise ConfigError(f"plugin 'mas': consolidate_every must be >= 0 (0: only at "
                              f"boundaries), got {consolidate_every}")
        self.mas_lambda = mas_lambda
        self.importance_samples = importance_samples
        self.consolidate_every = consolidate_every
        self.importance_: dict[str, Tensor] = {}
        self.anchor_: dict[str, Tensor] = {}
        self.n_consolidations_ = 0
        self.pending_ = False   # a boundary passed; its consolidation is computed when needed
        self._recent: RecentInputs | None = None

    @property
    def requires(self) -> tuple[str, ...]:
        """Boundaries are needed unless the plugin consolidates every N batches itself."""
        return () if self.consolidate_every else ("boundaries",)

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        dtype = next(learner.model.parameters()).dtype
        self._recent = RecentInputs(self.importance_samples, stream.input_shape, dtype=dtype,
                                    owner="plugin 'mas'", key="importance_samples",
                                    device=learner.device)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        if self.pending_:  # a boundary without a following before_experience (direct use)
            self.consolidate(learner.model, getattr(learner, "tasks", ()))
            self.check_stable(learner)
        if not self.n_consolidations_:
            return None
        params = dict(learner.model.named_parameters())
        return {"mas": self.mas_lambda * quadratic_penalty(params, self.anchor_, self.importance_)}

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        assert self._recent is not None
        self._recent.add(step.batch.x, step.batch.task)
        if self.consolidate_every and (step.index + 1) % self.consolidate_every == 0:
            self.consolidate(learner.model, getattr(learner, "tasks", ()))
            self.check_stable(learner)

    @hookimpl
    def after_experience(self, learner: Any, experience: Any) -> None:
        # computed when a penalty first needs it (the next experience's start): the last
        # experience of a run is never consolidated for nothing; the parameters and the
        # recent inputs are the same then, so the result is too
        self.pending_ = True

    @hookimpl
    def before_experience(self, learner: Any, experience: Any) -> None:
        if self.pending_:
            self.consolidate(learner.model, getattr(learner, "tasks", ()))
            self.check_stable(learner)

    def check_stable(self, learner: Any) -> None:
        """Refuse to train on when SGD cannot be stable on the penalty (one sync per consolidation).

        The penalty's curvature on parameter i is ``2 * mas_lambda * Omega_i``; with SGD the
        distance to the anchor is multiplied by ``1 - 2 lr mas_lambda Omega_i`` at every step,
        so the next batch would start a divergence that ends in a NaN loss.
        """
        if not self.n_consolidations_ or not self.mas_lambda:
            return
        curvature = {n: 2 * self.mas_lambda * w for n, w in self.importance_.items()}
        bad = sgd_instability(learner.optimizer, learner.model, curvature)
        if bad is None:
            return
        name, h, lr, safe = bad
        raise ConfigError(
            f"plugin 'mas': after consolidation {self.n_consolidations_} the penalty's curvature "
            f"2 * mas_lambda * Omega reaches {h:.3g} on {name!r}, and SGD with lr {lr:g} diverges "
            f"on it (stable only while lr * curvature < 2, so lr < {safe:.3g}); lower train.lr "
            f"below {safe:.3g}, or mas_lambda below {self.mas_lambda * safe / lr:.3g}, "
            "or use optimizer: adam (Omega adds up at every consolidation: leave room)")

    # ------------------------------------------------------------------ state
    def consolidate(self, model: nn.Module, tasks: Sequence[TaskSpec] = ()) -> None:
        """Add the importance at the current parameters; they become the anchor.

        ``tasks``: the learner's tasks on a multi-target stream (their heads' outputs count).
        """
        assert self._recent is not None
        self.pending_ = False
        if self._recent.count == 0:
            return
        x, task = self._recent.contents()
        new = mas_importance(model, x, task, heads=[t.name for t in tasks])
        params = trainable(model)
        for name, omega in new.items():
            old = grow_to(self.importance_.get(name, torch.zeros_like(omega)), omega.shape)
            self.importance_[name] = old + omega
            self.anchor_[name] = params[name].detach().clone()
        self.n_consolidations_ += 1
        self.pending_ = False
        self._recent.clear()

    def state_dict(self) -> dict[str, Any]:
        assert self._recent is not None
        return {"importance": {k: v.clone() for k, v in self.importance_.items()},
                "anchor": {k: v.clone() for k, v in self.anchor_.items()},
                "n_consolidations": self.n_consolidations_, "pending": self.pending_,
                "recent": self._recent.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self._recent is not None
        from lifelong.plugins.regularization.ewc import _param_dict
        from lifelong.validation import state_get, state_number

        dev = self._recent.x.device
        importance = _param_dict(state, "importance", self.name)
        anchor = _param_dict(state, "anchor", self.name)
        n = state_number(state, "n_consolidations", owner=self.name, min=0, integer=True)
        pending = state.get("pending", False)
        if not isinstance(pending, bool):
            raise CheckpointError(f"checkpoint state of plugin 'mas': pending must be true or "
                                  f"false, got {pending!r}; the checkpoint is corrupted")
        self._recent.load_state_dict(state_get(state, "recent", owner=self.name), owner=self.name)
        self.importance_ = {k: v.to(dev, copy=True) for k, v in importance.items()}
        self.anchor_ = {k: v.to(dev, copy=True) for k, v in anchor.items()}
        self.n_consolidations_ = n
        self.pending_ = pending


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "mas", MAS)
