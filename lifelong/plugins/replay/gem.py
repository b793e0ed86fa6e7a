"""GEM: gradient episodic memory, the update projected so no past task's loss rises.

Each task keeps an episodic memory (its last m samples; m = mem_size / T
when the number of tasks T is known, shrinking as tasks appear otherwise).
At every step the gradient ``g_k`` of each past task's memory loss is
computed; if the update ``g`` conflicts with one (``<g, g_k> < 0``) it is
replaced by the closest ``g~`` with ``<g~, g_k> >= 0`` for every k. With
``G`` the matrix of the ``g_k`` (one per row), that projection is solved in
its dual, a QP with one variable per past task (the paper's Eq. 11-12):

    min_v  1/2 v' G G' v + g' G' v   s.t.  v >= 0,      g~ = G' v + g.

``memory_strength`` (gamma) is the paper's "small constant added to v*" that
biases the update towards backward transfer; it is applied as the bound
``v >= gamma``, which keeps every constraint satisfied. ``eps`` adds
``eps * I`` to ``G G'`` so that the QP stays strictly convex when two task
gradients are parallel (solver: ``quadprog``, Goldfarb & Idnani 1983).

On a multi-target stream each past task's memory gradient is that of the
sum of every task's loss on its memory (all targets are stored).

Lopez-Paz & Ranzato, "Gradient episodic memory for continual learning",
NeurIPS 2017. Defaults: ``memory_strength=0.5`` and 256 memories per task
(``mem_size=5120`` = 256 x the 20 tasks of its MNIST experiments), both
from the paper's experiment script (``run_experiments.sh``). Needs task
boundaries (announced, or from a detector); each step syncs with the host
once (to learn whether a constraint is violated) and, only then, solves the
QP on the ``K x K`` Gram matrix. The past tasks' gradients come from one
forward and backward over all memories where the model allows it
(:func:`lifelong.per_sample.grouped_grads`: linear and conv layers, no
batch normalization in training mode), else one backward per task.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([GEM(mem_size=30)], stream).fit(stream)
>>> learner.plugins[0].task_
2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import quadprog
import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.memory import Buffer, Episodic, buffer_state, check_sizes, load_buffer_state
from lifelong.memory.buffer import check_fits
from lifelong.per_sample import grouped_grads
from lifelong.plugins.regularization._common import parameters_of
from lifelong.plugins.replay._gradients import flat_grad, flat_grad_of, set_flat_grad
from lifelong.plugins.replay._targets import (
    grouped_task_losses,
    replay_losses,
    replay_targets,
    target_columns,
    target_payload_floats,
)
from lifelong.stream.base import Batch
from lifelong.validation import check_number

if TYPE_CHECKING:
    from lifelong.learner import Learner, Step
    from lifelong.stream.base import Experience, Stream


def gem_dual(GG: Tensor, Gg: Tensor, memory_strength: float = 0.0, eps: float = 1e-3) -> Tensor:
    """The dual variables ``v`` of the projection QP from the small Gram matrices (host, float64).

    :param GG: ``G G'``, shape ``(K, K)``; :param Gg: ``G g``, shape ``(K,)``.
    """
    P = GG.detach().double().cpu().numpy()
    q = Gg.detach().double().cpu().numpy()
    k = P.shape[0]
    P = 0.5 * (P + P.T) + eps * np.eye(k)
    v = quadprog.solve_qp(P, -q, np.eye(k), np.full(k, float(memory_strength)))[0]
    return torch.from_numpy(v)


def gem_project(g: Tensor, G: Tensor, memory_strength: float = 0.0, eps: float = 1e-3,
                Gg: Tensor | None = None) -> Tensor:
    """The gradient closest to ``g`` with ``G @ g~ >= 0``, via the dual QP.

    Only the ``K x K`` Gram matrix and ``G g`` leave the device (in float64 for
    the solver); ``g~ = G' v + g`` is formed on the device in ``g``'s precision.

    :param g: the update, shape ``(P,)``.
    :param G: one past-task gradient per row, shape ``(K, P)``.
    :param memory_strength: lower bound gamma on the dual variables (0: the exact projection).
    :param eps: ridge added to ``G G'`` for strict convexity; the constraints then hold up
        to ``eps * v`` (negligible next to ``G G'`` for real gradients; 0 for the exact one).
    :param Gg: ``G @ g`` if the caller has it already.
    """
    v = gem_dual(G @ G.T, G @ g if Gg is None else Gg, memory_strength, eps)
    return g + v.to(device=g.device, dtype=g.dtype) @ G


class GEM:
    """Gradient episodic memory (Lopez-Paz & Ranzato 2017): per-task memories, QP projection."""

    name = "gem"
    requires = ("boundaries",)
    owns = ("gradient",)
    requires_hint = ("GEM keeps one memory per task and needs to know where tasks end: use "
                     "plugin 'agem' (A-GEM, one averaged constraint over a reservoir memory, no "
                     "boundaries needed) or add a boundary detector")

    def __init__(self, *, mem_size: int = 5120, memory_strength: float = 0.5, eps: float = 1e-3,
                 seed: int = 0):
        check_number(f"plugin {self.name!r}", "memory_strength", memory_strength, min=0.0)
        check_number(f"plugin {self.name!r}", "eps", eps, min=0.0)
        check_number(f"plugin {self.name!r}", "seed", seed, min=0, max=2**63 - 1, integer=True)
        check_sizes(self.name, mem_size, None)
        if not memory_strength >= 0 or not eps >= 0:
            raise ConfigError(f"plugin 'gem': memory_strength and eps must be >= 0, got "
                              f"{memory_strength!r} and {eps!r}")
        self.mem_size = mem_size
        self.memory_strength = memory_strength
        self.eps = eps
        self.seed = seed
        self.buffer_: Buffer | None = None
        self.task_ = -1
        self._tasks: tuple[Any, ...] = ()  # the stream's tasks (multi-target: stored targets)

    def rows_per_step(self, batch_size: int) -> int:
        """Past tasks' memories, forward and backward at each step (for the threads rule).

        From none (first task) to all ``mem_size`` rows (last); half of it is the
        average over a stream of equal tasks.
        """
        return self.mem_size // 2

    @hookimpl
    def before_training(self, learner: Learner, stream: Stream) -> None:
        n_tasks = stream.n_experiences if stream.task_aware else None
        self._tasks = tuple(stream.tasks)
        check_fits(self.name, self.mem_size, stream, learner.device,
                   payload_floats=target_payload_floats(self._tasks))
        self.buffer_ = Buffer(self.mem_size, selection=Episodic(n_tasks), device=learner.device,
                              seed=self.seed)
        self.task_ = -1

    @hookimpl
    def before_experience(self, learner: Learner, experience: Experience | None) -> None:
        self.task_ += 1

    @hookimpl
    def before_update(self, learner: Learner, step: Step) -> None:
        buf = self.buffer_
        assert buf is not None and isinstance(buf.selection, Episodic)
        params = list(parameters_of(learner).values())
        past = self._past_memories(buf)
        if past is None:
            return
        G = (self._task_gradients(learner, *past, params) if not getattr(learner, "tasks", ())
             else self._multitask_gradients(learner, *past, params))
        g = flat_grad(params)
        Gg = G @ g
        # one host sync for both checks; a non-finite loss is the learner's nan_policy's
        finite, violated = torch.stack([torch.isfinite(Gg).all(), (Gg < 0).any()]).tolist()
        if finite and violated:
            set_flat_grad(params, gem_project(g, G, self.memory_strength, self.eps, Gg=Gg))

    def _past_memories(self, buf: Buffer) -> tuple[Batch, list[int]] | None:
        """Every past task's memory as one batch (task by task), and each task's size.

        The episodic memory keeps each task in a contiguous run of slots, the
        tasks in order, so the past tasks are usually one run: the batch is then
        a view of the buffer, not a copy of up to ``mem_size`` samples per step.
        """
        sel = buf.selection
        assert isinstance(sel, Episodic)
        spans = [sp for sp in (sel.span_of(buf, k) for k in range(self.task_)) if sp[1] > sp[0]]
        if not spans:
            return None
        sizes = [b - a for a, b in spans]
        if all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1)):
            return buf.rows(spans[0][0], spans[-1][1]), sizes
        return buf.gather(torch.cat([torch.arange(a, b, device=buf.device) for a, b in spans])), sizes

    @staticmethod
    def _split(mem: Batch, sizes: list[int]) -> list[Batch]:
        """``mem`` cut back into its tasks' memories."""
        out, start = [], 0
        for n in sizes:
            sl = slice(start, start + n)
            out.append(Batch(mem.x[sl], mem.y[sl], None if mem.task is None else mem.task[sl],
                             None if mem.extras is None else {k: v[sl] for k, v in mem.extras.items()}))
            start += n
        return out

    @staticmethod
    def _task_gradients(learner: Learner, mem: Batch, sizes: list[int], params: list[Any]) -> Tensor:
        """Each past task's memory-loss gradient, one per row (one backward for all if possible)."""
        x, y, task = mem.x, mem.y, mem.task
        weight = torch.cat([torch.full((n,), 1.0 / n, device=x.device) for n in sizes])
        G = grouped_grads(learner.model, lambda: learner.forward(x, task),
                          lambda out: F.cross_entropy(out, y, reduction="none") * weight, sizes)
        if G is not None:
            return G
        return torch.stack([flat_grad_of(F.cross_entropy(learner.forward(m.x, m.task), m.y), params)
                            for m in GEM._split(mem, sizes)])

    @staticmethod
    def _multitask_gradients(learner: Learner, mem: Batch, sizes: list[int],
                             params: list[Any]) -> Tensor:
        """Multi-target streams: each past task's memory gradient of the sum of every task's
        loss on that memory (one backward for all if possible)."""
        targets, present = replay_targets(mem.extras)
        G = grouped_grads(learner.model, lambda: learner.forward(mem.x, mem.task),
                          lambda out: grouped_task_losses(out, targets, present, learner.tasks,
                                                          sizes), sizes)
        if G is not None:
            return G
        rows = []
        for m in GEM._split(mem, sizes):
            tg, has = replay_targets(m.extras)
            loss = sum(replay_losses(learner.forward(m.x, m.task), tg, has, learner.tasks).values())
            rows.append(flat_grad_of(loss, params))
        return torch.stack(rows)

    @hookimpl
    def after_update(self, learner: Learner, step: Step) -> None:
        assert self.buffer_ is not None
        b = step.batch
        self.buffer_.add(b.x, b.y, torch.full_like(b.y, max(self.task_, 0)),
                         **target_columns(b, self._tasks))

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task_,
                "buffer": buffer_state(self.buffer_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_get, state_number

        task = state_number(state, "task", owner=self.name, min=-1, integer=True)
        load_buffer_state(self.name, self.buffer_, state_get(state, "buffer", owner=self.name))
        self.task_ = task


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "gem", GEM)
