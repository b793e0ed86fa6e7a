"""Pieces shared by the regularization plugins (EWC, SI, MAS, LwF); not a plugin.

* :class:`RecentInputs`: a preallocated ring buffer of the last ``capacity``
  stream inputs (and task ids) on the learner's device, filled with slice
  copies in ``after_update``. It is the data EWC and MAS compute importance
  on at a boundary, announced or detected (in a task-free stream nothing
  else is there).
* :func:`functional`, :func:`chunk_size`, :func:`eval_mode`: per-sample
  gradients with :mod:`torch.func` (``functional_call`` + ``vmap``), in
  chunks whose size bounds the memory of the per-sample gradients.
* :func:`quadratic_penalty`: ``sum_i w_i (theta_i - anchor_i)^2``, the penalty
  EWC, SI and MAS share.
* :func:`sgd_instability`: whether plain or momentum SGD diverges on a
  quadratic penalty of the given per-parameter curvature (the check MAS
  runs at each consolidation).
* :func:`fit_to`, :func:`grow_to`: how stored per-parameter tensors meet a
  parameter that an expansion plugin grew (the old block is penalized, new
  units are free until the next consolidation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.errors import CompositionError

__all__ = ["RecentInputs", "functional", "chunk_size", "eval_mode", "quadratic_penalty",
           "fit_to", "grow_to", "trainable", "sgd_instability", "CHUNK_ELEMENTS"]

#: Per-sample gradient elements held at once (16 MiB of float32): small enough to stay
#: cache-friendly on CPU, large enough that per-chunk overhead does not dominate.
CHUNK_ELEMENTS = 2 ** 22

SampleFn = Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]


class RecentInputs:
    """The last ``capacity`` inputs seen (and their task ids), in a preallocated ring."""

    def __init__(self, capacity: int, input_shape: Sequence[int], *, dtype: torch.dtype,
                 device: torch.device, owner: str = "recent inputs", key: str = "capacity") -> None:
        from lifelong.validation import check_memory

        item = torch.empty((), dtype=dtype).element_size()
        check_memory(owner, key, capacity * (math.prod(input_shape) * item + 8), device=device,
                     fix=f"lower {key} (it keeps that many inputs of shape "
                         f"{tuple(input_shape)})")
        self.x = torch.zeros((capacity, *input_shape), dtype=dtype, device=device)
        self.task = torch.zeros(capacity, dtype=torch.long, device=device)
        self.pos = 0     # next slot to write
        self.count = 0   # samples written since the last clear (at most capacity)

    def add(self, x: Tensor, task: Tensor | None = None) -> None:
        """Append a batch (slice copies, no per-sample work)."""
        cap = self.x.shape[0]
        if task is None:
            task = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if x.shape[0] > cap:
            x, task = x[-cap:], task[-cap:]
        b = x.shape[0]
        end = self.pos + b
        first = min(end, cap) - self.pos
        self.x[self.pos:self.pos + first] = x[:first]
        self.task[self.pos:self.pos + first] = task[:first]
        if first < b:
            self.x[:b - first] = x[first:]
            self.task[:b - first] = task[first:]
        self.pos = end % cap
        self.count = min(self.count + b, cap)

    def contents(self) -> tuple[Tensor, Tensor]:
        """The samples written since the last :meth:`clear` (views, not copies)."""
        if self.count == self.x.shape[0]:
            return self.x, self.task
        return self.x[:self.count], self.task[:self.count]

    def clear(self) -> None:
        self.pos = 0
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x.clone(), "task": self.task.clone(), "pos": self.pos,
                "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any], owner: str = "recent inputs") -> None:
        from lifelong.validation import state_number, state_tensor

        cap = self.x.shape[0]
        x = state_tensor(state, "x", owner=owner, shape=tuple(self.x.shape), dtype=self.x.dtype,
                         finite=True)
        from lifelong.validation import loading_learner

        learner = loading_learner()
        n_tasks = getattr(getattr(learner, "stream", None), "n_experiences", None)
        task = state_tensor(state, "task", owner=owner, shape=tuple(self.task.shape),
                            dtype=self.task.dtype, min=0,
                            max=n_tasks - 1 if isinstance(n_tasks, int) else None)
        pos = state_number(state, "pos", owner=owner, min=0, max=cap - 1, integer=True)
        count = state_number(state, "count", owner=owner, min=0, max=cap, integer=True)
        self.x.copy_(x)
        self.task.copy_(task)
        self.pos, self.count = pos, count


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """The parameters a penalty covers: every one that requires grad, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def parameters_of(learner: Any) -> dict[str, Tensor]:
    """:func:`trainable` of ``learner.model``, from the learner's cache when it has one
    (:meth:`lifelong.Learner.trainable_parameters`): for work done at every step."""
    cached = getattr(learner, "trainable_parameters", None)
    return cached() if cached is not None else trainable(learner.model)


def functional(model: nn.Module) -> tuple[dict[str, Tensor], SampleFn]:
    """``(params, f)`` where ``f(params, x, task)`` is the model's output row for ONE sample.

    ``params`` are the trainable parameters, detached; frozen parameters and
    buffers are closed over. ``task`` is used only if the model is
    task-conditioned (``model.task_conditioned``). ``vmap`` ``f`` (or its
    ``grad``) over samples to get per-sample quantities. A multi-output model's
    ``f`` returns ``{task: row}``.
    """
    params = {n: p.detach() for n, p in trainable(model).items()}
    rest = {n: t.detach() for n, t in (*model.named_parameters(), *model.named_buffers())
            if n not in params}
    conditioned = bool(getattr(model, "task_conditioned", False))

    def f(ps: dict[str, Tensor], x: Tensor, task: Tensor) -> Tensor:
        args = (x.unsqueeze(0), task.unsqueeze(0)) if conditioned else (x.unsqueeze(0),)
        out = functional_call(model, {**ps, **rest}, args)
        if isinstance(out, dict):  # a multi-output model: one row per task's head
            return {k: v.squeeze(0) for k, v in out.items()}  # type: ignore[return-value]
        return out.squeeze(0)

    return params, f


def chunk_size(params: Mapping[str, Tensor], rows_per_sample: int = 1) -> int:
    """Samples per chunk so that their per-sample gradients hold ~:data:`CHUNK_ELEMENTS`."""
    numel = sum(p.numel() for p in params.values()) * max(rows_per_sample, 1)
    return max(1, CHUNK_ELEMENTS // max(numel, 1))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode (no dropout, BatchNorm on running statistics), restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def fit_to(p: Tensor, shape: torch.Size, name: str = "") -> Tensor:
    """``p`` itself, or its leading block of ``shape`` if an expansion plugin grew it."""
    if p.shape == shape:
        return p
    if p.dim() == len(shape) and all(a >= b for a, b in zip(p.shape, shape)):
        return p[tuple(slice(0, s) for s in shape)]
    raise CompositionError(f"parameter {name!r} changed shape from {tuple(shape)} to "
                           f"{tuple(p.shape)} (not by growing); a regularizer cannot follow it: "
                           "use an expansion method that only adds units")


def grow_to(t: Tensor, shape: torch.Size) -> Tensor:
    """``t`` zero-padded to ``shape`` (``t`` itself if the shape is unchanged)."""
    if t.shape == shape:
        return t
    out = t.new_zeros(shape)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def quadratic_penalty(params: Mapping[str, Tensor], anchors: Mapping[str, Tensor],
                      weights: Mapping[str, Tensor]) -> Tensor:
    """``sum_i w_i (theta_i - anchor_i)^2`` over the names in ``weights`` present in ``params``.

    >>> p = {"w": torch.tensor([1.0, 2.0])}
    >>> float(quadratic_penalty(p, {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.5])}))
    3.0
    """
    total: Tensor | None = None
    for name, w in weights.items():
        p = params.get(name)
        if p is None:
            continue
        term = (w * (fit_to(p, w.shape, name) - anchors[name]).square()).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def sgd_instability(optimizer: Any, model: nn.Module,
                    curvature: Mapping[str, Tensor]) -> tuple[str, float, float, float] | None:
    """The worst parameter on which SGD is unstable for a diagonal quadratic penalty, or ``None``.

    Gradient descent with step ``lr`` on ``h/2 * (theta - a)^2`` multiplies
    ``theta - a`` by ``1 - lr * h`` every step: it diverges once ``lr * h > 2``
    (heavy-ball momentum ``m``: ``lr * h > 2 (1 + m)``; Nesterov:
    ``lr * h > 2 (1 + m) / (1 + 2 m)``), whatever the rest of the loss does.
    ``curvature`` maps parameter names to ``h`` (weight decay is added). Returns
    ``(name, h, lr, largest stable lr)`` for the parameter with the largest
    ``lr * h`` relative to its limit. Adaptive optimizers (not ``torch.optim.SGD``)
    rescale steps per parameter and are not checked.

    >>> m = nn.Linear(1, 1, bias=False)
    >>> opt = torch.optim.SGD(m.parameters(), lr=0.1)
    >>> name, h, lr, safe = sgd_instability(opt, m, {"weight": torch.tensor([[30.0]])})
    >>> name, h, lr, round(safe, 4)
    ('weight', 30.0, 0.1, 0.0667)
    >>> sgd_instability(opt, m, {"weight": torch.tensor([[10.0]])}) is None
    True
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return None
    names = {id(p): n for n, p in model.named_parameters()}
    worst: tuple[float, tuple[str, float, float, float]] | None = None
    for group in optimizer.param_groups:
        lr, m = float(group["lr"]), float(group.get("momentum", 0.0))
        limit = 2 * (1 + m) / (1 + 2 * m) if group.get("nesterov") else 2 * (1 + m)
        for p in group["params"]:
            h = curvature.get(names.get(id(p), ""))
            if h is None or h.numel() == 0:
                continue
            hmax = float(h.max()) + float(group.get("weight_decay", 0.0))
            ratio = lr * hmax / limit
            if ratio >= 1 and (worst is None or ratio > worst[0]):
                worst = (ratio, (names[id(p)], hmax, lr, limit / hmax))
    return None if worst is None else worst[1]
