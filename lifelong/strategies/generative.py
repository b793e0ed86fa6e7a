"""Generative-replay strategies.

* ``dgr`` — Deep Generative Replay (Shin et al., NeurIPS 2017): a VAE
  generator replays old inputs, the previous solver labels them
  (:class:`lifelong.plugins.replay.generative_replay.GenerativeReplay`; the
  parameters here are that plugin's, with its defaults).
"""

from __future__ import annotations

from typing import Any

from lifelong.hookspecs import hookimpl
from lifelong.strategies import Strategy


def dgr(*, ratio: float | None = None, generator_steps: int = 10, replay_size: int | None = None,
        latent_dim: int = 32, hidden: int = 256) -> Strategy:
    """Deep Generative Replay: VAE generator + previous solver as labeller (Shin et al. 2017)."""
    return Strategy(plugins=[{"name": "generative_replay", "ratio": ratio,
                              "generator_steps": generator_steps, "replay_size": replay_size,
                              "latent_dim": latent_dim, "hidden": hidden}])


@hookimpl
def register(registry: Any) -> None:
    registry.add("strategy", "dgr", dgr)
