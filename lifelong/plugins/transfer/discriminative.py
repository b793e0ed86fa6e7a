"""Discriminative fine-tuning: each layer below the top trains at the rate of the one above / 2.6.

The layers that hold parameters, in ``named_modules()`` order (the forward
order of the built-in backbones), get learning-rate multipliers
``decay^-(L-1-l)``: the top layer (the head) trains at the learner's rate,
the one below at ``lr / decay``, and so on down, through the
``parameter_groups`` hook. Composes with ``finetune`` (start from a source,
freeze some layers) and ``scale_bias``; multipliers multiply.

Howard & Ruder, "Universal language model fine-tuning for text
classification", ACL 2018 (section 3.2, discriminative fine-tuning:
``eta^{l-1} = eta^l / 2.6``). Default: ``decay=2.6``, the paper's. Its
slanted triangular schedule and gradual unfreezing are not part of this
plugin.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([DiscriminativeLR()], stream)
>>> sorted(round(g["lr"] / learner.lr, 4) for g in learner.optimizer.param_groups)
[0.3846, 1.0]
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.transfer._layers import parameter_layers

__all__ = ["DiscriminativeLR", "layer_multipliers"]


def layer_multipliers(n_layers: int, decay: float) -> list[float]:
    """``[decay^-(L-1), ..., decay^-1, 1]`` for ``L`` layers, bottom to top.

    >>> layer_multipliers(3, 2.0)
    [0.25, 0.5, 1.0]
    """
    return [decay ** -(n_layers - 1 - i) for i in range(n_layers)]


class DiscriminativeLR:
    """Layer-wise learning rates: each layer's is the next layer up's divided by ``decay``."""

    name = "discriminative_lr"
    owns = ()

    def __init__(self, *, decay: float = 2.6) -> None:
        if not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 1):
            raise ConfigError(f"plugin 'discriminative_lr': decay must be a number >= 1 (the "
                              f"ratio of a layer's rate to the one below), got {decay!r}")
        self.decay = decay

    @hookimpl
    def parameter_groups(self, learner: Any, model: nn.Module) -> dict[str, float]:
        layers = parameter_layers(model)
        mult = layer_multipliers(len(layers), float(self.decay))
        return {p: m for (_, params), m in zip(layers, mult) for p in params}


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "discriminative_lr", DiscriminativeLR)
