"""A replay memory updated only at experience ends (Avalanche's storage policies); not a plugin.

ER and DER in their papers insert every stream batch into a reservoir right
after the update (DER with the logits of that training step). Avalanche's
``ReplayPlugin`` (``ExperienceBalancedBuffer``) and ``DER``
(``ClassBalancedBufferWithLogits``) instead update the memory once, after
training on an experience: a random subset of that experience joins a
memory balanced by experience (ER) or by class (DER), DER's logits are
recomputed for it by the *trained* model in eval mode, and while an
experience trains the replay draws only from earlier experiences.

:class:`ExperienceEndMemory` is that policy on a stream: the current
experience's samples go into a ``pending`` reservoir as big as the memory
(a uniform random subset of the experience, the same distribution as
Avalanche's random pick from the whole experience, without holding the
experience), and :meth:`close` moves them into the balanced ``memory`` at
the boundary, with fresh eval-mode logits when asked. Replay reads
``memory`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import DataError
from lifelong.memory import Buffer, ClassBalanced, ExperienceBalanced, Reservoir

__all__ = ["ExperienceEndMemory", "refuse_end_memory"]


def refuse_end_memory(plugin: str, memory: str, stream: Any) -> None:
    """This memory keeps labels only: a multi-target stream is refused before training."""
    if stream.tasks and memory != "reservoir":
        from lifelong.errors import CompositionError

        raise CompositionError(f"plugin {plugin!r}: memory={memory!r} keeps one label per "
                               f"sample, but stream {stream.name!r} has tasks "
                               f"{', '.join(t.name for t in stream.tasks)}; use memory: "
                               "reservoir (it stores every task's target)")


class ExperienceEndMemory:
    """Pending reservoir for the current experience + balanced memory of the closed ones.

    :param balance: ``"experience"`` (equal share per experience) or ``"class"``.
    """

    def __init__(self, capacity: int, *, balance: str, device: torch.device, seed: int) -> None:
        self.capacity = capacity
        self.balance = balance
        selection = ExperienceBalanced() if balance == "experience" else ClassBalanced()
        self.memory = Buffer(capacity, selection=selection, device=device, seed=seed)
        self.pending = Buffer(capacity, device=device, seed=seed + 1)
        self.closed = 0  # experiences moved into the memory

    def __len__(self) -> int:
        return len(self.memory)

    def add(self, x: Tensor, y: Tensor, task: Tensor | None) -> None:
        """A stream batch of the current experience (it is not replayed before its end)."""
        self.pending.insert(x, y, task)

    def insert(self, x: Tensor, y: Tensor, task: Tensor | None, **payload: Tensor) -> None:
        """:meth:`add` under the name replay plugins call at every step (no payload columns:
        they are formed when the experience closes)."""
        if payload:
            raise DataError(f"the experience-end memory stores no per-sample columns at insert, "
                            f"got {sorted(payload)}")
        self.add(x, y, task)

    def close(self, logits_of: Callable[[Tensor, Tensor | None], Tensor] | None = None) -> None:
        """The experience ended: its pending samples join the memory (with fresh logits)."""
        if not len(self.pending):
            return
        b = self.pending.gather(self.pending.filled_slots())
        payload = {} if logits_of is None else {"logits": logits_of(b.x, b.task)}
        key = torch.full_like(b.y, self.closed) if self.balance == "experience" else b.task
        self.memory.add(b.x, b.y, key, **payload)
        self.closed += 1
        self.pending.selection = Reservoir()
        self.pending.columns = {}

    def sample(self, n: int) -> Any:
        return self.memory.sample(n)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "pending": self.pending.state_dict(),
                "closed": self.closed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.pending.load_state_dict(state["pending"])
        self.closed = int(state["closed"])
