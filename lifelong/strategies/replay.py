"""Replay presets: each one plugin with its paper's defaults (see the plugin's docstring).

* ``er`` — experience replay from a reservoir (Chaudhry et al. 2019).
* ``gem`` — gradient episodic memory (Lopez-Paz & Ranzato, NeurIPS 2017).
* ``agem`` — averaged GEM (Chaudhry et al., ICLR 2019), reservoir memory.
* ``der`` / ``derpp`` — dark experience replay and DER++ (Buzzega et al., NeurIPS 2020).

A parameter left as ``None`` keeps the plugin's default; the learning rate
stays the run's (``train.lr``).
"""

from __future__ import annotations

from typing import Any

from lifelong.hookspecs import hookimpl
from lifelong.strategies import Strategy


def _preset(name: str, **params: Any) -> Strategy:
    return Strategy(plugins=[{"name": name, **{k: v for k, v in params.items() if v is not None}}])


def er(*, mem_size: int | None = None, batch_size: int | None = None) -> Strategy:
    """Experience replay: an equal-size reservoir replay batch with every stream batch."""
    return _preset("er", mem_size=mem_size, batch_size=batch_size)


def gem(*, mem_size: int | None = None, memory_strength: float | None = None) -> Strategy:
    """GEM: per-task episodic memories; the update projected by a QP (needs boundaries)."""
    return _preset("gem", mem_size=mem_size, memory_strength=memory_strength)


def agem(*, mem_size: int | None = None, batch_size: int | None = None) -> Strategy:
    """A-GEM: the update projected against one averaged memory gradient (closed form)."""
    return _preset("agem", mem_size=mem_size, batch_size=batch_size)


def der(*, mem_size: int | None = None, batch_size: int | None = None,
        alpha: float | None = None) -> Strategy:
    """DER: replay matching the logits stored with each sample."""
    return _preset("der", mem_size=mem_size, batch_size=batch_size, alpha=alpha)


def derpp(*, mem_size: int | None = None, batch_size: int | None = None,
          alpha: float | None = None, beta: float | None = None) -> Strategy:
    """DER++: DER plus a label term on a second, independent replay batch."""
    return _preset("derpp", mem_size=mem_size, batch_size=batch_size, alpha=alpha, beta=beta)


@hookimpl
def register(registry: Any) -> None:
    for factory in (er, gem, agem, der, derpp):
        registry.add("strategy", factory.__name__, factory)
