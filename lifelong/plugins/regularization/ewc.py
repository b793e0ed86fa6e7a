"""EWC and online EWC: a quadratic penalty weighted by the diagonal Fisher information.

At each consolidation (the end of an experience, a detected boundary, or
every ``consolidate_every`` batches) the diagonal Fisher information of the
model is computed on the last ``fisher_samples`` stream inputs, and later
training pays ``ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2`` for moving
the parameters that mattered.

The Fisher is the *true* Fisher, ``E_x E_{y ~ p_theta(y|x)} [g_y^2]`` with
``g_y = d log p_theta(y|x) / d theta``, from per-sample gradients computed
with ``torch.func`` (``vmap`` over samples): ``fisher="sample"`` draws one
``y ~ p_theta(y|x)`` per input (the Monte-Carlo estimate, one per-sample
gradient per input), ``"exact"`` takes the expectation over the classes
exactly (one per class: C times the cost).
Two common shortcuts are wrong and are not offered: the *empirical* Fisher
(the observed label instead of ``y ~ p_theta``), and squaring gradients
averaged over a mini-batch (``(mean g)^2`` is not ``mean(g^2)``: it vanishes
as the batch grows).

* ``ewc`` (``mode="separate"``): one penalty per past consolidation, as in
  the paper's multi-task form ``sum_t F_t (theta - theta*_t)^2``. The sum is
  kept as ONE quadratic ``W (theta - C)^2 + K`` (``W = sum_t F_t``,
  ``C = sum_t F_t theta*_t / W``, ``K`` the constant remainder), merged
  exactly at each consolidation: its cost per step and its memory do not
  grow with the number of consolidations.
* ``online_ewc``: Schwarz et al.'s running Fisher ``F* <- gamma F* + F`` with
  the latest parameters as the only anchor, penalty
  ``ewc_lambda / 2 * sum gamma F* (theta - theta*)^2``.

With plain SGD the penalty is stable while ``lr * ewc_lambda * max F < 2``;
a larger product diverges (the learner then stops with a non-finite loss):
lower the learning rate or use Adam. The same holds for SI and MAS.

**Multi-target streams** (one head per task): the model's predictive
distribution is the product of its heads', so the Fisher is the sum of the
heads' Fishers, each from the model's own distribution (a label drawn per
classification head; for a regression head the unit Gaussian ``y ~ N(f(x), I)``,
whose negative log-likelihood is half the squared error trained on, so its
score is ``eps J`` with ``eps ~ N(0, I)``): see :func:`head_picks`. A head that
arrives with a later experience is penalized from the next consolidation on.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks",
PNAS 2017. Schwarz et al., "Progress & Compress: a scalable framework for
continual learning", ICML 2018. Defaults: ``ewc_lambda=100`` (not from the
papers: the right strength depends on the Fisher's normalisation, the model
and the optimizer; 100 is what ``benchmarks/regularization.py`` uses on
permuted MNIST), ``gamma=1.0`` (no decay: the sum of all Fishers around the
latest anchor; Progress & Compress introduces ``gamma < 1`` to let old tasks
fade), ``fisher_samples=1024``, ``fisher="sample"``.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([EWC()], stream).fit(stream)
>>> plugin = learner.plugins[0]    # the last boundary is computed only if training goes on
>>> plugin.n_consolidations_, plugin.pending_
(2, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
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
    trainable,
)
from lifelong.stream.base import TaskSpec
from lifelong.validation import check_number

__all__ = ["EWC", "OnlineEWC", "ewc_penalty", "fisher_diagonal", "merge_quadratic"]

MODES = ("separate", "online")
FISHERS = ("exact", "sample")


def ewc_penalty(params: Mapping[str, Tensor], anchors: Mapping[str, Tensor],
                fisher: Mapping[str, Tensor]) -> Tensor:
    """``sum_i F_i (theta_i - theta*_i)^2`` (the EWC term without ``lambda / 2``).

    >>> p = {"w": torch.tensor([1.0, 3.0])}
    >>> float(ewc_penalty(p, {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([5.0, 0.5])}))
    2.0
    """
    return quadratic_penalty(params, anchors, fisher)


def merge_quadratic(weight: Tensor, center: Tensor, const: Tensor, new_weight: Tensor,
                    new_center: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Add ``new_weight (theta - new_center)^2`` to ``weight (theta - center)^2 + const``.

    The sum of two diagonal quadratics is one quadratic, exactly:
    ``W = w + w'``, ``C = c + (w'/W)(c' - c)``, ``K = k + sum (w w'/W)(c - c')^2``
    (where ``W = 0`` the centre is ``c'``). ``const`` is a scalar (summed over
    elements). Returns ``(W, C, K)``.

    >>> w, c, k = merge_quadratic(torch.zeros(1), torch.zeros(1), torch.zeros(()),
    ...                           torch.ones(1), torch.full((1,), 2.0))
    >>> w, c, k = merge_quadratic(w, c, k, torch.ones(1), torch.zeros(1))
    >>> [float(w), float(c), float(k)]   # (t-2)^2 + t^2 = 2 (t-1)^2 + 2
    [2.0, 1.0, 2.0]
    """
    total = weight + new_weight
    share = new_weight / total.clamp_min(torch.finfo(total.dtype).tiny)
    merged = torch.where(weight > 0, center + share * (new_center - center), new_center)
    const = const + (weight * share * (center - new_center).square()).sum()
    return total, merged, const


def sample_classes(probs: Tensor, u: Tensor) -> Tensor:
    """``y_n ~ probs[n]`` by inverse CDF from uniforms ``u`` (draws do not depend on chunking)."""
    cdf = probs.cumsum(1)
    y = torch.searchsorted(cdf, (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)).squeeze(1)
    return y.clamp_max(probs.shape[1] - 1)


def _fisher_vmap(model: nn.Module, x: Tensor, task: Tensor, u: Tensor | None) -> dict[str, Tensor]:
    """The reference path: per-sample gradients with ``torch.func.vmap``, chunked."""
    params, f = functional(model)
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}

    def log_prob_of(ps: dict[str, Tensor], xi: Tensor, ti: Tensor, pick: Tensor) -> Tensor:
        # sum_c pick_c log p_c: pick = onehot(y) (sampled) or sqrt(p_c) e_c (exact), a constant
        return (F.log_softmax(f(ps, xi, ti), dim=-1) * pick).sum()

    per_sample_grad = vmap(grad(log_prob_of), in_dims=(None, 0, 0, 0))
    step = chunk_size(params)
    for i in range(0, x.shape[0], step):
        xc, tc = x[i:i + step], task[i:i + step]
        with torch.no_grad():
            probs = vmap(f, in_dims=(None, 0, 0))(params, xc, tc).softmax(-1)
        if u is not None:
            y = sample_classes(probs, u[i:i + step])
            picks = [F.one_hot(y, probs.shape[1]).to(probs.dtype)]
        else:   # every class c: the gradient of sqrt(p_c) log p_c, squared, is p_c g_c^2
            eye = torch.eye(probs.shape[1], dtype=probs.dtype, device=probs.device)
            picks = [eye[c] * probs[:, c:c + 1].sqrt() for c in range(probs.shape[1])]
        for pick in picks:
            for name, g in per_sample_grad(params, xc, tc, pick).items():
                fisher[name] += g.square().sum(0)
    return fisher


def _fisher_one_backward(model: nn.Module, x: Tensor, task: Tensor, u: Tensor | None
                         ) -> dict[str, Tensor] | None:
    """Sum of squared per-sample gradients from one backward (``None``: model not covered)."""
    conditioned = bool(getattr(model, "task_conditioned", False))

    def forward() -> Tensor:
        return model(x, task) if conditioned else model(x)

    def scalars(logits: Tensor) -> list[Tensor]:
        logp = F.log_softmax(logits, dim=-1)
        probs = logp.detach().exp()
        if u is not None:
            return [logp.gather(1, sample_classes(probs, u).unsqueeze(1)).squeeze(1)]
        return [probs[:, c].sqrt() * logp[:, c] for c in range(logp.shape[1])]

    return reduce_per_sample_grads(model, forward, scalars, reduce="square")


def head_picks(out: Mapping[str, Tensor], tasks: Sequence[TaskSpec],
               draws: Mapping[str, Tensor] | None) -> list[tuple[str, Tensor]]:
    """The Fisher's passes over a multi-output model: ``(task, pick)`` pairs, one per backward.

    A pass's per-sample scalar is ``sum_k pick[n, k] h_k(out[task][n])`` with ``h`` the
    log-softmax for a classification head and the identity for a regression head,
    ``pick`` a constant; its per-sample gradient, squared and summed over passes,
    is the head-wise Fisher (:func:`fisher_diagonal`). Classification: ``pick =
    onehot(y)``, ``y ~ p(y|x)`` drawn from the uniforms ``draws[task]`` (sampled),
    or ``sqrt(p_c) e_c`` for every class ``c`` (exact). Regression, with the unit
    Gaussian ``y ~ N(f(x), I)`` (the likelihood whose negative log is half the
    squared error the learner trains on): the score is ``(y - f) J = eps J``, so
    ``pick = eps`` from the normal draws ``draws[task]`` (sampled), or ``e_k`` for
    every output ``k`` (exact: ``E[(eps J)^2] = sum_k J_k^2``).
    """
    picks: list[tuple[str, Tensor]] = []
    for t in tasks:
        o = out[t.name].detach()
        o = o.reshape(o.shape[0], -1)
        if t.kind == "classification":
            probs = o.softmax(-1)
            if draws is not None:
                y = sample_classes(probs, draws[t.name])
                picks.append((t.name, F.one_hot(y, probs.shape[1]).to(probs.dtype)))
            else:
                eye = torch.eye(probs.shape[1], dtype=probs.dtype, device=probs.device)
                picks += [(t.name, eye[c] * probs[:, c:c + 1].sqrt())
                          for c in range(probs.shape[1])]
        elif draws is not None:
            picks.append((t.name, draws[t.name].reshape(o.shape).to(o.dtype)))
        else:
            eye = torch.eye(o.shape[1], dtype=o.dtype, device=o.device)
            picks += [(t.name, eye[k].expand_as(o)) for k in range(o.shape[1])]
    return picks


def _head_scalar(out: Tensor, kind: str, pick: Tensor) -> Tensor:
    """``sum_k pick_k h_k(out)`` over the last dimension (``h``: log-softmax or identity)."""
    out = out.reshape(*pick.shape)
    h = F.log_softmax(out, dim=-1) if kind == "classification" else out
    return (h * pick).sum(-1)


def _task_draws(tasks: Sequence[TaskSpec], n: int, generator: torch.Generator | None,
                device: torch.device) -> dict[str, Tensor]:
    """Per task, in order: ``n`` uniforms (classification) or ``(n, size)`` normals."""
    return {t.name: (torch.rand(n, generator=generator, device=device)
                     if t.kind == "classification"
                     else torch.randn(n, t.size, generator=generator, device=device))
            for t in tasks}


def _fisher_tasks_vmap(model: nn.Module, x: Tensor, task: Tensor, tasks: Sequence[TaskSpec],
                       draws: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """The multi-output reference path: per-sample gradients of each pass with ``vmap``."""
    params, f = functional(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    kinds = {t.name: t.kind for t in tasks}
    step = chunk_size(params)
    for i in range(0, x.shape[0], step):
        xc, tc = x[i:i + step], task[i:i + step]
        with torch.no_grad():
            out = vmap(f, in_dims=(None, 0, 0))(params, xc, tc)
        chunk = None if draws is None else {k: v[i:i + step] for k, v in draws.items()}
        for name, pick in head_picks(out, tasks, chunk):

            def scalar(ps: dict[str, Tensor], xi: Tensor, ti: Tensor, pk: Tensor,
                       name: str = name) -> Tensor:
                return _head_scalar(f(ps, xi, ti)[name], kinds[name], pk)

            grads = vmap(grad(scalar), in_dims=(None, 0, 0, 0))(params, xc, tc, pick)
            for k, g in grads.items():
                total[k] += torch.square(g).sum(0)
    return total


def _fisher_tasks_one_backward(model: nn.Module, x: Tensor, task: Tensor,
                               tasks: Sequence[TaskSpec], draws: dict[str, Tensor] | None
                               ) -> dict[str, Tensor] | None:
    conditioned = bool(getattr(model, "task_conditioned", False))
    kinds = {t.name: t.kind for t in tasks}

    def forward() -> Any:
        return model(x, task) if conditioned else model(x)

    def scalars(out: Any) -> list[Tensor]:
        return [_head_scalar(out[name], kinds[name], pick)
                for name, pick in head_picks(out, tasks, draws)]

    return reduce_per_sample_grads(model, forward, scalars, reduce="square")


def fisher_diagonal(model: nn.Module, x: Tensor, task: Tensor | None = None, *,
                    sample: bool = False, generator: torch.Generator | None = None,
                    method: str = "auto", tasks: Sequence[TaskSpec] = ()) -> dict[str, Tensor]:
    """Diagonal Fisher ``mean_x E_{y ~ p(y|x)} [(d log p(y|x) / d theta)^2]`` per parameter.

    Per-sample gradients, never a mini-batch average; the model is put in
    evaluation mode meanwhile. ``sample=False``: the expectation over classes
    is exact (``sum_y p(y|x) g_y^2``, one pass per class); ``sample=True``: one
    ``y ~ p(y|x)`` per input, drawn by inverse CDF from uniforms of
    ``generator`` (so the draws do not depend on how the work is chunked).
    ``method``: ``"backward"`` sums the squares from one ordinary backward
    (:mod:`~lifelong.per_sample`; linear and conv
    layers), ``"vmap"`` is the exact ``torch.func`` reference, ``"auto"`` the
    faster of the two for the model (``lifelong.per_sample.fastest``). ``task``: task
    ids, used only by task-conditioned models.

    ``tasks`` (a multi-output model, one output per task of a multi-target
    stream): the model's predictive distribution is the product of its heads'
    (the targets are independent given ``x``), so the cross terms of the
    squared score have zero mean and the Fisher is the sum of the heads'
    Fishers, ``sum_t E_{y_t} [g_t^2]``, estimated head by head (a draw per
    head and input when sampled); see :func:`head_picks` for a regression
    head's unit-Gaussian Fisher.
    """
    if method not in ("auto", "backward", "vmap"):
        raise ValueError(f"method must be 'auto', 'backward' or 'vmap', got {method!r}")
    if task is None:
        task = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    n = x.shape[0]
    if n == 0:
        return {k: torch.zeros_like(p) for k, p in trainable(model).items()}
    if tasks:
        draws = _task_draws(tasks, n, generator, x.device) if sample else None
        with eval_mode(model):
            use = method == "backward" or (method == "auto" and fastest(model))
            fisher = _fisher_tasks_one_backward(model, x, task, tasks, draws) if use else None
            if fisher is None:
                if method == "backward":
                    raise ValueError("the model has layers the one-backward path does not "
                                     "cover; use method='vmap' or 'auto'")
                fisher = _fisher_tasks_vmap(model, x, task, tasks, draws)
        return {name: v / n for name, v in fisher.items()}
    u = torch.rand(n, generator=generator, device=x.device) if sample else None
    with eval_mode(model):
        use = method == "backward" or (method == "auto" and fastest(model))
        fisher = _fisher_one_backward(model, x, task, u) if use else None
        if fisher is None:
            if method == "backward":
                raise ValueError("the model has layers the one-backward path does not cover; "
                                 "use method='vmap' or 'auto'")
            fisher = _fisher_vmap(model, x, task, u)
    return {name: v / n for name, v in fisher.items()}


class EWC:
    """Elastic weight consolidation: a Fisher-weighted quadratic pull towards past solutions."""

    name = "ewc"
    owns = ()

    def __init__(self, *, ewc_lambda: float = 100.0, mode: str = "separate", gamma: float = 1.0,
                 fisher: str = "sample", fisher_samples: int = 1024, consolidate_every: int = 0,
                 seed: int = 0) -> None:
        check_number(f"plugin {self.name!r}", "ewc_lambda", ewc_lambda, min=0.0)
        check_number(f"plugin {self.name!r}", "gamma", gamma, above=0.0, max=1.0)
        check_number(f"plugin {self.name!r}", "fisher_samples", fisher_samples, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "consolidate_every", consolidate_every, min=0, integer=True)
        check_number(f"plugin {self.name!r}", "seed", seed, min=0, max=2**63 - 1, integer=True)
        if mode not in MODES:
            raise ConfigError(f"plugin {self.name!r}: mode must be one of {MODES}, got {mode!r}")
        if fisher not in FISHERS:
            raise ConfigError(f"plugin {self.name!r}: fisher must be one of {FISHERS}, got "
                              f"{fisher!r} (the empirical Fisher is deliberately not offered)")
        if not ewc_lambda >= 0:
            raise ConfigError(f"plugin {self.name!r}: ewc_lambda must be >= 0, got {ewc_lambda}")
        if not 0 < gamma <= 1:
            raise ConfigError(f"plugin {self.name!r}: gamma must be in (0, 1], got {gamma}")
        if mode == "separate" and gamma != 1.0:
            raise ConfigError(f"plugin {self.name!r}: gamma={gamma} applies only to "
                              "mode='online'; use plugin 'online_ewc' or set mode: online")
        if fisher_samples < 1:
            raise ConfigError(f"plugin {self.name!r}: fisher_samples must be >= 1, got "
                              f"{fisher_samples}")
        if consolidate_every < 0:
            raise ConfigError(f"plugin {self.name!r}: consolidate_every must be >= 0 (0: only "
                              f"at boundaries), got {consolidate_every}")
        self.ewc_lambda = ewc_lambda
        self.mode = mode
        self.gamma = gamma
        self.fisher = fisher
        self.fisher_samples = fisher_samples
        self.consolidate_every = consolidate_every
        self.seed = seed
        self.weight_: dict[str, Tensor] = {}   # sum_t F_t (separate) or F* (online)
        self.center_: dict[str, Tensor] = {}   # Fisher-weighted mean anchor, or theta*
        self.const_: Tensor | None = None      # constant remainder of the merged quadratic
        self.n_consolidations_ = 0
        self.pending_ = False   # a boundary passed; its consolidation is computed when needed
        self._recent: RecentInputs | None = None
        self._gen: torch.Generator | None = None

    @property
    def requires(self) -> tuple[str, ...]:
        """Boundaries are needed unless the plugin consolidates every N batches itself."""
        return () if self.consolidate_every else ("boundaries",)

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        dtype = next(learner.model.parameters()).dtype
        self._recent = RecentInputs(self.fisher_samples, stream.input_shape, dtype=dtype,
                                    owner=f"plugin {self.name!r}", key="fisher_samples",
                                    device=learner.device)
        self._gen = torch.Generator(device=learner.device).manual_seed(self.seed)
        self.const_ = torch.zeros((), dtype=dtype, device=learner.device)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        if self.pending_:  # a boundary without a following before_experience (direct use)
            self.consolidate(learner.model, getattr(learner, "tasks", ()))
        if not self.n_consolidations_:
            return None
        penalty = ewc_penalty(dict(learner.model.named_parameters()), self.center_, self.weight_)
        if self.mode == "online":
            penalty = self.gamma * penalty
        else:
            penalty = penalty + self.const_
        return {self.name: 0.5 * self.ewc_lambda * penalty}

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        assert self._recent is not None
        self._recent.add(step.batch.x, step.batch.task)
        if self.consolidate_every and (step.index + 1) % self.consolidate_every == 0:
            self.consolidate(learner.model, getattr(learner, "tasks", ()))

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

    # ------------------------------------------------------------------ state
    def consolidate(self, model: nn.Module, tasks: Sequence[TaskSpec] = ()) -> None:
        """Fold the Fisher at the current parameters into the running quadratic.

        ``tasks``: the learner's tasks on a multi-target stream (the Fisher sums their heads').
        """
        assert self._recent is not None and self.const_ is not None
        self.pending_ = False
        if self._recent.count == 0:
            return
        x, task = self._recent.contents()
        fisher = fisher_diagonal(model, x, task, sample=self.fisher == "sample",
                                 generator=self._gen, tasks=tasks)
        params = trainable(model)
        for name, f in fisher.items():
            theta = params[name].detach()
            w = grow_to(self.weight_.get(name, torch.zeros_like(f)), f.shape)
            c = grow_to(self.center_.get(name, torch.zeros_like(f)), f.shape)
            if self.mode == "online":
                self.weight_[name] = self.gamma * w + f
                self.center_[name] = theta.clone()
            else:
                self.weight_[name], self.center_[name], self.const_ = merge_quadratic(
                    w, c, self.const_, f, theta)
        self.n_consolidations_ += 1
        self.pending_ = False
        self._recent.clear()

    def state_dict(self) -> dict[str, Any]:
        assert self._recent is not None and self._gen is not None
        return {"weight": {k: v.clone() for k, v in self.weight_.items()},
                "center": {k: v.clone() for k, v in self.center_.items()},
                "const": None if self.const_ is None else self.const_.clone(),
                "n_consolidations": self.n_consolidations_, "pending": self.pending_,
                "recent": self._recent.state_dict(), "generator": self._gen.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self._recent is not None and self._gen is not None
        from lifelong.validation import state_get, state_number, state_rng, state_tensor

        dev = self._recent.x.device
        weight = _param_dict(state, "weight", self.name)
        center = _param_dict(state, "center", self.name)
        const = state_tensor(state, "const", owner=self.name, shape=(), dtype="float",
                             finite=True, allow_none=True)
        n = state_number(state, "n_consolidations", owner=self.name, min=0, integer=True)
        gen = state_rng(state, "generator", owner=self.name, generator=self._gen)
        pending = state.get("pending", False)
        if not isinstance(pending, bool):
            raise CheckpointError(f"checkpoint state of plugin {self.name!r}: pending must be "
                                  f"true or false, got {pending!r}; the checkpoint is corrupted")
        self._recent.load_state_dict(state_get(state, "recent", owner=self.name),
                                     owner=self.name)
        self.weight_ = {k: v.to(dev) for k, v in weight.items()}
        self.center_ = {k: v.to(dev) for k, v in center.items()}
        self.const_ = None if const is None else const.to(dev)
        self.n_consolidations_ = n
        self.pending_ = pending
        self._gen.set_state(gen)


def _param_dict(state: Mapping[str, Any], key: str, owner: str) -> dict[str, Any]:
    """A dict of per-parameter tensors (shapes are checked against the model by the learner)."""
    from lifelong.validation import check_tensor, state_get

    value = state_get(state, key, owner=owner)
    if not isinstance(value, dict):
        raise CheckpointError(f"checkpoint state of plugin {owner!r}: {key} must be a mapping of "
                              f"parameter names to tensors, got {type(value).__name__}")
    for k, v in value.items():
        check_tensor(v, f"{key}[{k!r}]", owner=owner, dtype="float", finite=True)
    return value


class OnlineEWC(EWC):
    """Online EWC (Progress & Compress): one running Fisher with decay gamma, latest anchor."""

    name = "online_ewc"

    def __init__(self, *, ewc_lambda: float = 100.0, gamma: float = 1.0, fisher: str = "sample",
                 fisher_samples: int = 1024, consolidate_every: int = 0, seed: int = 0) -> None:
        super().__init__(ewc_lambda=ewc_lambda, mode="online", gamma=gamma, fisher=fisher,
                         fisher_samples=fisher_samples, consolidate_every=consolidate_every,
                         seed=seed)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "ewc", EWC)
    registry.add("plugin", "online_ewc", OnlineEWC)
