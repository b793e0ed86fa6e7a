"""Named strategies: presets that bundle plugins with their papers' defaults.

A strategy factory returns a :class:`Strategy`; its plugins are composed
with any listed under ``plugins:`` in the config. Built-in here:

* ``naive`` — fine-tuning: plain SGD on the stream, no protection against
  forgetting (the lower bound).
* ``cumulative`` — at experience i, trains on the union of experiences
  0..i (an upper bound that keeps all data).
* ``joint`` — trains once on all experiences together, iid (the upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lifelong.hookspecs import hookimpl


@dataclass(frozen=True)
class Strategy:
    """A preset: plugin specs (``{"name": ..., **params}``), a stream transform, train defaults."""

    plugins: list[dict[str, Any]] = field(default_factory=list)
    stream_transform: str | None = None
    train: dict[str, Any] = field(default_factory=dict)


def naive() -> Strategy:
    """Fine-tuning: train on the stream as it comes (the lower bound)."""
    return Strategy()


def cumulative() -> Strategy:
    """Train experience i on the union of experiences 0..i (keeps all data; an upper bound)."""
    return Strategy(stream_transform="cumulative")


def joint() -> Strategy:
    """Train on all experiences at once, shuffled together (the iid upper bound)."""
    return Strategy(stream_transform="joint")


@hookimpl
def register(registry: Any) -> None:
    registry.add("strategy", "naive", naive)
    registry.add("strategy", "cumulative", cumulative)
    registry.add("strategy", "joint", joint)
