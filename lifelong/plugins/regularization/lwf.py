"""LwF: learning without forgetting, distillation of the previous model on the current data.

At each consolidation (the end of an experience, a detected boundary, or
every ``consolidate_every`` batches) the model is snapshotted (a frozen
copy in evaluation mode). Afterwards every stream batch is also fed to the
snapshot and training pays ``lwf_lambda * KL(softmax(old / T) || softmax(new / T))``
on the old model's output units, averaged over the batch. The KL divergence
is the paper's modified cross-entropy ``-sum p_old log p_new`` minus the
entropy of ``p_old``: the same gradient, and zero when the models agree.
Only the stream rows are distilled (replayed rows, if another plugin adds
them, are not). One snapshot is kept, whatever the number of consolidations.

Which output units are distilled (``heads_``, one id per class unit, -1 for
units not distilled yet) follows the labels seen before each snapshot:

* single head (``multihead=False``): every class seen so far forms one
  softmax, e.g. in class-incremental learning the old model's classes only
  (not the classes it never learned); in domain-incremental learning all.
* multi-head (``multihead=True``): the classes first seen in each
  consolidated experience form their own softmax (the paper's task-specific
  heads, as output-unit groups of the shared head); the losses of the heads
  are summed. Task labels are not needed to train this way.

On a multi-target stream every classification head the snapshot has is
distilled as its own softmax, and a regression head pays the squared error
to the snapshot's output (:func:`multitask_distillation`); ``multihead`` does
not apply there. A head that arrived after the snapshot is not distilled.

Li & Hoiem, "Learning without forgetting", ECCV 2016 (TPAMI 2017).
Defaults: ``lwf_lambda=1.0`` (the paper's loss balance lambda_o),
``temperature=2.0`` (the paper's T). The paper's warm-up step (training
the new head alone first) is not done.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([LwF()], stream).fit(stream)
>>> learner.plugins[0].heads_.tolist()
[0, 0, 0, 0, 0, 0]
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.stream.base import TaskSpec
from lifelong.validation import check_number

__all__ = ["LwF", "distillation_loss", "grouped_log_softmax", "multitask_distillation",
           "single_head_distillation_loss"]


def grouped_log_softmax(z: Tensor, groups: Tensor) -> Tensor:
    """Log-softmax of ``z`` (N, C) within each group of columns (``groups``: (C,) ids in [0, C]).

    >>> z = torch.tensor([[0.0, 0.0, 5.0]])
    >>> grouped_log_softmax(z, torch.tensor([0, 0, 1])).exp()
    tensor([[0.5000, 0.5000, 1.0000]])
    """
    n_slots = groups.shape[0] + 1
    idx = groups.expand_as(z)
    top = z.new_full((z.shape[0], n_slots), float("-inf"))
    top = top.scatter_reduce(1, idx, z.detach(), reduce="amax").gather(1, idx)
    shifted = z - top
    total = z.new_zeros((z.shape[0], n_slots)).scatter_add(1, idx, shifted.exp())
    return shifted - total.gather(1, idx).log()


def distillation_loss(new_logits: Tensor, old_logits: Tensor, heads: Tensor,
                      temperature: float) -> Tensor:
    """``sum_heads KL(p_old^T || p_new^T)`` over the distilled units, averaged over rows.

    ``heads``: (C,) head id per output unit, -1 for units not distilled; each
    head is its own softmax at temperature ``temperature``. Zero when the
    logits agree on the distilled units.

    >>> z = torch.randn(4, 3)
    >>> float(distillation_loss(z, z, torch.tensor([0, 0, -1]), 2.0))
    0.0
    """
    c = heads.shape[0]
    new, old = new_logits[:, :c], old_logits[:, :c]
    used = heads >= 0
    groups = torch.where(used, heads, c)   # units not distilled share a slot of their own
    lp_new = grouped_log_softmax(new / temperature, groups)
    lp_old = grouped_log_softmax(old / temperature, groups)
    kl = torch.where(used, lp_old.exp() * (lp_old - lp_new), 0.0)
    return kl.sum(1).mean()


def single_head_distillation_loss(new_logits: Tensor, old_logits: Tensor, units: Tensor,
                                  temperature: float) -> Tensor:
    """:func:`distillation_loss` when every distilled unit is in one head: ``units`` lists them.

    >>> z, o = torch.randn(4, 3), torch.randn(4, 3)
    >>> a = single_head_distillation_loss(z, o, torch.tensor([0, 1]), 2.0)
    >>> bool(torch.isclose(a, distillation_loss(z, o, torch.tensor([0, 0, -1]), 2.0)))
    True
    """
    lp_new = (new_logits.index_select(1, units) / temperature).log_softmax(1)
    lp_old = (old_logits.index_select(1, units) / temperature).log_softmax(1)
    return (lp_old.exp() * (lp_old - lp_new)).sum(1).mean()


def multitask_distillation(new: Mapping[str, Tensor], old: Mapping[str, Tensor],
                           tasks: Sequence[TaskSpec], n: int, temperature: float) -> Tensor:
    """LwF's term for a multi-output model, summed over the heads the snapshot ``old`` has.

    A classification head: ``KL(p_old^T || p_new^T)`` over all its units (one
    softmax; every class of a task's head is known from its start). A
    regression head: the squared error to the old output, ``mean (f_new -
    f_old)^2`` (not in the paper, whose heads all classify: the KL divergence
    between Gaussians of equal variance around the two outputs is this up to a
    constant factor). ``new`` holds every row of the forward pass; its first
    ``n`` (the stream rows) are distilled. A head the snapshot lacks (its task
    arrived later) is not.

    >>> from lifelong.stream.base import TaskSpec
    >>> z = {"a": torch.randn(3, 4), "b": torch.randn(3, 1)}
    >>> tasks = [TaskSpec("a", "classification", 4), TaskSpec("b", "regression", 1)]
    >>> float(multitask_distillation(z, z, tasks, 3, 2.0))
    0.0
    """
    total: Tensor | None = None
    for t in tasks:
        if t.name not in old:
            continue
        o_new, o_old = new[t.name][:n], old[t.name]
        if t.kind == "classification":
            heads = torch.zeros(o_new.shape[1], dtype=torch.long, device=o_new.device)
            term = distillation_loss(o_new, o_old, heads, temperature)
        else:
            term = (o_new - o_old).square().mean()
        total = term if total is None else total + term
    if total is None:
        return next(iter(new.values())).new_zeros(())
    return total


class LwF:
    """Learning without forgetting: distill the last snapshot's outputs on the stream batch."""

    name = "lwf"
    owns = ()

    def __init__(self, *, lwf_lambda: float = 1.0, temperature: float = 2.0,
                 multihead: bool = False, consolidate_every: int = 0) -> None:
        check_number(f"plugin {self.name!r}", "lwf_lambda", lwf_lambda, min=0.0)
        check_number(f"plugin {self.name!r}", "temperature", temperature, above=0.0)
        check_number(f"plugin {self.name!r}", "consolidate_every", consolidate_every, min=0, integer=True)
        if not lwf_lambda >= 0:
            raise ConfigError(f"plugin 'lwf': lwf_lambda must be >= 0, got {lwf_lambda}")
        if not temperature > 0:
            raise ConfigError(f"plugin 'lwf': temperature must be > 0, got {temperature}")
        if consolidate_every < 0:
            raise ConfigError(f"plugin 'lwf': consolidate_every must be >= 0 (0: only at "
                              f"boundaries), got {consolidate_every}")
        self.lwf_lambda = lwf_lambda
        self.temperature = temperature
        self.multihead = multihead
        self.consolidate_every = consolidate_every
        self.old_: nn.Module | None = None      # the frozen snapshot
        self.heads_: Tensor | None = None       # head id per class unit, -1: not distilled
        self.seen_: Tensor | None = None        # classes seen since the last snapshot
        self.n_consolidations_ = 0
        self._pending: dict[str, Tensor] | None = None  # snapshot weights loaded, not built yet
        self._units: Tensor | None = None  # distilled units when they form one head
        self._units_of: Tensor | None = None  # the heads_ tensor _units was derived from

    @property
    def requires(self) -> tuple[str, ...]:
        """Boundaries are needed unless the plugin consolidates every N batches itself."""
        return () if self.consolidate_every else ("boundaries",)

    def rows_per_step(self, batch_size: int) -> int:
        """The old model's forward over the batch, a third of a training row (threads rule)."""
        return batch_size // 3

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        if stream.tasks and self.multihead:
            raise ConfigError(f"plugin 'lwf': multihead splits one output into heads, but "
                              f"stream {stream.name!r} has one head per task "
                              f"({', '.join(t.name for t in stream.tasks)}), each distilled as "
                              "its own softmax already: remove multihead")
        c = stream.num_classes
        self.heads_ = torch.full((c,), -1, dtype=torch.long, device=learner.device)
        self.seen_ = torch.zeros(c, dtype=torch.bool, device=learner.device)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        if self._pending is not None:
            self.old_ = _snapshot(learner.model, self._pending)
            self._pending = None
        if self.old_ is None:
            return None
        assert self.heads_ is not None
        batch = step.batch
        with torch.no_grad():
            conditioned = bool(getattr(self.old_, "task_conditioned", False))
            old = self.old_(batch.x, batch.task) if conditioned else self.old_(batch.x)
        if getattr(step, "outputs", None) is not None:  # multi-target: every head it has
            return {"lwf": self.lwf_lambda * multitask_distillation(
                step.outputs, old, learner.tasks, step.n_stream, self.temperature)}
        if self._units_of is not self.heads_:  # heads_ changed (consolidation, load)
            self._units, self._units_of = _single_head_units(self.heads_), self.heads_
        if self._units is not None:
            loss = single_head_distillation_loss(step.stream_logits, old, self._units,
                                                 self.temperature)
        else:
            loss = distillation_loss(step.stream_logits, old, self.heads_, self.temperature)
        return {"lwf": self.lwf_lambda * loss}

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        assert self.seen_ is not None
        self.seen_.index_fill_(0, step.batch.y, True)
        if self.consolidate_every and (step.index + 1) % self.consolidate_every == 0:
            self.consolidate(learner.model)

    @hookimpl
    def after_experience(self, learner: Any, experience: Any) -> None:
        self.consolidate(learner.model)

    # ------------------------------------------------------------------ state
    def consolidate(self, model: nn.Module) -> None:
        """Snapshot the model; the classes seen since the last snapshot join the distilled heads."""
        assert self.heads_ is not None and self.seen_ is not None
        new = self.seen_ & (self.heads_ < 0)
        if self.multihead:
            # a new head is named after its lowest class unit: ids stay in [0, C)
            units = torch.arange(new.shape[0], device=new.device)
            head = torch.where(new, units, new.shape[0]).min()
            self.heads_ = torch.where(new, head, self.heads_)
        else:
            self.heads_ = torch.where(new, 0, self.heads_)
        self.seen_.zero_()
        self.old_ = _snapshot(model)
        self._pending = None
        self.n_consolidations_ += 1

    def state_dict(self) -> dict[str, Any]:
        assert self.heads_ is not None and self.seen_ is not None
        old = self._pending if self.old_ is None else self.old_.state_dict()
        return {"old": None if old is None else {k: v.clone() for k, v in old.items()},
                "heads": self.heads_.clone(), "seen": self.seen_.clone(),
                "n_consolidations": self.n_consolidations_}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self.heads_ is not None and self.seen_ is not None
        from lifelong.validation import (
            loading_learner,
            state_get,
            state_module,
            state_number,
            state_tensor,
        )

        c = self.heads_.shape[0]
        n = state_number(state, "n_consolidations", owner=self.name, min=0, integer=True)
        heads = state_tensor(state, "heads", owner=self.name, shape=(c,), dtype=torch.long,
                             min=-1)
        seen = state_tensor(state, "seen", owner=self.name, shape=(c,), dtype=torch.bool)
        old = state_get(state, "old", owner=self.name)
        if old is not None and not isinstance(old, Mapping):
            raise CheckpointError(f"checkpoint state of plugin {self.name!r}: old must be the "
                                  "previous model's state_dict; the checkpoint is corrupted")
        if old is not None and loading_learner() is not None:
            probe = loading_learner().model
            if _head_names(old) is not None:  # a task's head may have arrived since
                probe = _trim_heads(copy.deepcopy(probe), old)
            state_module(state, "old", owner=self.name, module=probe)
        self.heads_ = heads.to(self.heads_.device, copy=True)
        self.seen_ = seen.to(self.seen_.device, copy=True)
        self.n_consolidations_ = n
        self.old_ = None
        self._pending = None if old is None else dict(old)


def _single_head_units(heads: Tensor) -> Tensor | None:
    """Indices of the distilled units if they all share one head, else ``None`` (read on the
    host once per change of ``heads``, not per step)."""
    units = torch.nonzero(heads >= 0).flatten()
    h = heads[units]
    return units if len(h) == 0 or bool((h == h[0]).all()) else None


def _snapshot(model: nn.Module, weights: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A frozen copy of ``model`` in evaluation mode (with ``weights`` loaded, if given)."""
    old = copy.deepcopy(model)
    if weights is not None:
        old = _trim_heads(old, weights)
        old.load_state_dict(weights)
    old.eval()
    for p in old.parameters():
        p.grad = None
        p.requires_grad_(False)
    return old


def _head_names(weights: Mapping[str, Any]) -> set[str] | None:
    """The task heads (``heads.<task>.``) a saved multi-output model has, else ``None``."""
    names = {k.split(".")[1] for k in weights if k.startswith("heads.") and k.count(".") >= 2}
    return names or None


def _trim_heads(model: nn.Module, weights: Mapping[str, Any]) -> nn.Module:
    """``model`` without the task heads ``weights`` lacks (heads grown after the snapshot)."""
    keep = _head_names(weights)
    heads = getattr(model, "heads", None)
    if keep is not None and isinstance(heads, nn.ModuleDict):
        for name in [k for k in heads if k not in keep]:
            del heads[name]
    return model


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "lwf", LwF)
