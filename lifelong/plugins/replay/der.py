"""DER and DER++: dark experience replay, matching the logits the model once gave.

Each stream sample enters a reservoir buffer together with the logits the
model produced for it at that step (online, before the update), and those
logits are never refreshed. DER adds ``alpha * MSE(model(x'), z')`` on a
replay batch ``(x', z')``; DER++ adds ``beta * CE(model(x''), y'')`` on a
second, independently drawn replay batch. Both need no boundaries.

Buzzega, Boschini, Porrello, Abati & Calderara, "Dark experience for
general continual learning: a strong, simple baseline", NeurIPS 2020.
Defaults are the paper's best Seq-MNIST hyper-parameters for a buffer of
200 (appendix, also ``utils/best_args.py`` of its code): DER ``alpha=0.2``,
replay batch 10; DER++ ``alpha=0.2, beta=1.0``, replay batch 128 (the paper
used SGD with lr 0.03 for both).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([DERpp(mem_size=20, batch_size=8)], stream).fit(stream)
>>> learner.plugins[0].buffer_.columns["logits"].shape[1]
6
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
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


def der_loss(logits: Tensor, stored: Tensor) -> Tensor:
    """DER's logit-matching term: mean squared error to the stored logits."""
    return F.mse_loss(logits, stored)


class DER:
    """Dark experience replay (Buzzega et al. 2020): match the logits stored at insertion."""

    name = "der"
    requires = ()
    owns = ()

    def __init__(self, *, mem_size: int = 200, batch_size: int = 10, alpha: float = 0.2,
                 seed: int = 0):
        check_number(f"plugin {self.name!r}", "alpha", alpha, min=0.0)
        check_number(f"plugin {self.name!r}", "seed", seed, min=0, max=2**63 - 1, integer=True)
        check_sizes(self.name, mem_size, batch_size)
        self.mem_size = mem_size
        self.batch_size = batch_size
        self.alpha = alpha
        self.seed = seed
        self.buffer_: Buffer | None = None

    @hookimpl
    def before_training(self, learner: Learner, stream: Stream) -> None:
        check_fits(self.name, self.mem_size, stream, learner.device, payload_floats=stream.num_classes)
        self.buffer_ = Buffer(self.mem_size, device=learner.device, seed=self.seed)

    @hookimpl
    def replay_batch(self, learner: Learner, step: Step) -> Batch | None:
        assert self.buffer_ is not None
        return self.buffer_.sample(self.batch_size) if len(self.buffer_) else None

    @hookimpl
    def loss_terms(self, learner: Learner, step: Step) -> dict[str, Tensor] | None:
        logits, replay = step.logits_of(self), step.replay_of(self)
        if logits is None or replay is None or replay.extras is None:
            return None
        return {"der": self.alpha * der_loss(logits, replay.extras["logits"])}

    @hookimpl
    def after_update(self, learner: Learner, step: Step) -> None:
        assert self.buffer_ is not None
        b = step.batch
        self.buffer_.add(b.x, b.y, b.task, logits=step.stream_logits.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": buffer_state(self.buffer_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_get

        load_buffer_state(self.name, self.buffer_, state_get(state, "buffer", owner=self.name))


class DERpp(DER):
    """DER++ (Buzzega et al. 2020): DER plus a label term on a second, independent replay batch."""

    name = "derpp"

    def __init__(self, *, mem_size: int = 200, batch_size: int = 128, alpha: float = 0.2,
                 beta: float = 1.0, seed: int = 0):
        check_number("plugin 'derpp'", "beta", beta, min=0.0)
        super().__init__(mem_size=mem_size, batch_size=batch_size, alpha=alpha, seed=seed)
        self.beta = beta

    @hookimpl
    def replay_batch(self, learner: Learner, step: Step) -> Batch | None:
        assert self.buffer_ is not None
        if not len(self.buffer_):
            return None
        first, second = self.buffer_.sample(self.batch_size), self.buffer_.sample(self.batch_size)
        assert first.extras is not None and second.extras is not None
        return Batch(torch.cat([first.x, second.x]), torch.cat([first.y, second.y]),
                     None if first.task is None or second.task is None
                     else torch.cat([first.task, second.task]),
                     {"logits": torch.cat([first.extras["logits"], second.extras["logits"]])})

    @hookimpl
    def loss_terms(self, learner: Learner, step: Step) -> dict[str, Tensor] | None:
        logits, replay = step.logits_of(self), step.replay_of(self)
        if logits is None or replay is None or replay.extras is None:
            return None
        h = len(replay) // 2  # first half: logits term; second half: label term
        return {"derpp_logits": self.alpha * der_loss(logits[:h], replay.extras["logits"][:h]),
                "derpp_labels": self.beta * F.cross_entropy(logits[h:], replay.y[h:])}


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "der", DER)
    registry.add("plugin", "derpp", DERpp)
