"""ER: experience replay from a reservoir memory.

Every stream batch is trained together with an equal-size batch drawn at
random from a reservoir buffer; the stream batch then enters the buffer.
The replay loss is added to the stream loss (the sum of the two batch
means, i.e. the paper's step on the joint batch with twice its step size).

Chaudhry, Rohrbach, Elhoseiny, Ajanthan, Dokania, Torr & Ranzato, "On tiny
episodic memories in continual learning" (arXiv:1902.10486, 2019).
Defaults: ``batch_size=None`` (equal to the stream batch, as in the paper);
``mem_size=200``, the smallest buffer in the Seq-MNIST comparison of
Buzzega et al. (NeurIPS 2020, Table 2), which ``benchmarks/replay.py``
reproduces. Needs no boundaries.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([ER(mem_size=20)], stream).fit(stream)
>>> len(learner.plugins[0].buffer_)
20
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor

from lifelong.hookspecs import hookimpl
from lifelong.memory import Buffer, buffer_state, check_sizes, load_buffer_state
from lifelong.memory.buffer import check_fits
from lifelong.stream.base import Batch
from lifelong.validation import check_number

if TYPE_CHECKING:
    from lifelong.learner import Learner, Step
    from lifelong.stream.base import Stream


class ER:
    """Experience replay (Chaudhry et al. 2019): an equal-size reservoir replay batch per step."""

    name = "er"
    requires = ()
    owns = ()

    def __init__(self, *, mem_size: int = 200, batch_size: int | None = None, seed: int = 0):
        check_number(f"plugin {self.name!r}", "seed", seed, min=0, max=2**63 - 1, integer=True)
        check_sizes(self.name, mem_size, batch_size)
        self.mem_size = mem_size
        self.batch_size = batch_size
        self.seed = seed
        self.buffer_: Buffer | None = None

    @hookimpl
    def before_training(self, learner: Learner, stream: Stream) -> None:
        if self.batch_size is None:  # equal to the stream batch
            check_sizes(self.name, self.mem_size, learner.batch_size, "the stream's batch_size")
        check_fits(self.name, self.mem_size, stream, learner.device, payload_floats=0)
        self.buffer_ = Buffer(self.mem_size, device=learner.device, seed=self.seed)

    @hookimpl
    def replay_batch(self, learner: Learner, step: Step) -> Batch | None:
        assert self.buffer_ is not None
        if len(self.buffer_) == 0:
            return None
        return self.buffer_.sample(self.batch_size or step.n_stream)

    @hookimpl
    def loss_terms(self, learner: Learner, step: Step) -> dict[str, Tensor] | None:
        logits, replay = step.logits_of(self), step.replay_of(self)
        if logits is None:
            return None
        return {"er": F.cross_entropy(logits, replay.y)}

    @hookimpl
    def after_update(self, learner: Learner, step: Step) -> None:
        assert self.buffer_ is not None
        self.buffer_.add(step.batch.x, step.batch.y, step.batch.task)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": buffer_state(self.buffer_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_get

        load_buffer_state(self.name, self.buffer_, state_get(state, "buffer", owner=self.name))


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "er", ER)
