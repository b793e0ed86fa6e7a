"""A-GEM: averaged gradient episodic memory, one constraint in closed form.

At every step a reference gradient ``g_ref`` is computed on a random batch
from memory; if the update ``g`` would increase that batch's loss
(``g . g_ref < 0``) it is projected onto the half-space where it does not:
``g~ = g - (g . g_ref / g_ref . g_ref) g_ref``. The stream batch then enters
the memory. The paper fills its memory per task; here the memory is a
reservoir, so A-GEM needs no task boundaries (the "A-GEM-R" variant of
Buzzega et al. 2020), which makes it GEM's task-free alternative.

On a multi-target stream ``g_ref`` is the gradient of the sum of every
task's loss on the memory batch (the memory stores every task's target).

Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient lifelong learning with
A-GEM", ICLR 2019. Defaults: ``mem_size=200, batch_size=128``, the best
Seq-MNIST setting of Buzzega et al. (NeurIPS 2020, appendix; lr 0.1).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([AGEM(mem_size=20, batch_size=8)], stream).fit(stream)
>>> len(learner.plugins[0].buffer_)
20
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.hookspecs import hookimpl
from lifelong.memory import Buffer, buffer_state, check_sizes, load_buffer_state
from lifelong.memory.buffer import check_fits
from lifelong.plugins.regularization._common import parameters_of
from lifelong.plugins.replay._gradients import flat_grad, flat_grad_of, set_flat_grad
from lifelong.plugins.replay._targets import (
    replay_losses,
    replay_targets,
    target_columns,
    target_payload_floats,
)
from lifelong.validation import check_number

if TYPE_CHECKING:
    from lifelong.learner import Learner, Step
    from lifelong.stream.base import Stream


def agem_project(g: Tensor, g_ref: Tensor) -> Tensor:
    """``g`` if ``g . g_ref >= 0``, else ``g - (g . g_ref / g_ref . g_ref) g_ref`` (no host sync)."""
    dot, ref_sq = g @ g_ref, g_ref @ g_ref
    coef = torch.where((dot < 0) & (ref_sq > 0), dot / ref_sq.clamp(min=torch.finfo(g.dtype).tiny),
                       torch.zeros_like(dot))
    return g - coef * g_ref


class AGEM:
    """A-GEM (Chaudhry et al. 2019): project the update when it conflicts with a memory gradient."""

    name = "agem"
    requires = ()
    owns = ("gradient",)

    def __init__(self, *, mem_size: int = 200, batch_size: int = 128, seed: int = 0):
        check_number(f"plugin {self.name!r}", "seed", seed, min=0, max=2**63 - 1, integer=True)
        check_sizes(self.name, mem_size, batch_size)
        self.mem_size = mem_size
        self.batch_size = batch_size
        self.seed = seed
        self.buffer_: Buffer | None = None
        self._tasks: tuple[Any, ...] = ()  # the stream's tasks (multi-target: stored targets)

    def rows_per_step(self, batch_size: int) -> int:
        """The reference batch's forward and backward at each step (for the threads rule)."""
        return self.batch_size

    @hookimpl
    def before_training(self, learner: Learner, stream: Stream) -> None:
        self._tasks = tuple(stream.tasks)
        check_fits(self.name, self.mem_size, stream, learner.device,
                   payload_floats=target_payload_floats(self._tasks))
        self.buffer_ = Buffer(self.mem_size, device=learner.device, seed=self.seed)

    @hookimpl
    def before_update(self, learner: Learner, step: Step) -> None:
        assert self.buffer_ is not None
        if not len(self.buffer_):
            return
        mem = self.buffer_.sample(self.batch_size)
        params = list(parameters_of(learner).values())
        g = flat_grad(params)
        if getattr(learner, "tasks", ()):  # multi-target: the sum of every task's loss on the memory batch
            targets, present = replay_targets(mem.extras)
            ref = sum(replay_losses(learner.forward(mem.x, mem.task), targets, present,
                                    learner.tasks).values())
            g_ref = flat_grad_of(ref, params)
        else:
            g_ref = flat_grad_of(F.cross_entropy(learner.forward(mem.x, mem.task), mem.y), params)
        if g.device.type == "cpu" and not float(g @ g_ref) < 0:
            return  # no conflict: the update stands (on CPU the check is a memory read, no sync)
        set_flat_grad(params, agem_project(g, g_ref))

    @hookimpl
    def after_update(self, learner: Learner, step: Step) -> None:
        assert self.buffer_ is not None
        self.buffer_.insert(step.batch.x, step.batch.y, step.batch.task,
                         **target_columns(step.batch, self._tasks))

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": buffer_state(self.buffer_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_get

        load_buffer_state(self.name, self.buffer_, state_get(state, "buffer", owner=self.name))


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "agem", AGEM)
