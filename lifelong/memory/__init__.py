"""Replay memories: preallocated tensor buffers with pluggable selection and retrieval.

* :class:`Buffer` — columns ``x``, ``y``, ``task`` and named payloads, on one device.
* Selection (what enters): :class:`Reservoir`, :class:`ClassBalanced`,
  :class:`ExperienceBalanced`, :class:`Episodic`.
* Retrieval (what is replayed): :class:`RandomRetrieval`, or any callable
  ``(buffer, n, generator, **context) -> slots``.
"""

from lifelong.memory.buffer import (
    Buffer,
    buffer_state,
    check_sizes,
    last_writer_wins,
    load_buffer_state,
)
from lifelong.memory.selection import (
    ClassBalanced,
    Episodic,
    ExperienceBalanced,
    RandomRetrieval,
    Reservoir,
    Retrieval,
    Selection,
    reservoir_slots,
)

__all__ = ["Buffer", "ClassBalanced", "Episodic", "ExperienceBalanced", "RandomRetrieval",
           "Reservoir", "Retrieval",
           "Selection", "buffer_state", "check_sizes", "last_writer_wins", "load_buffer_state",
           "reservoir_slots"]
