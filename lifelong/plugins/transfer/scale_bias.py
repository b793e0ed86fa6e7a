"""Scale-and-bias patch: train only the normalisation layers' scales and biases and the head.

A model patch in the sense of Mudrakarta et al.: to transfer a network to a
new task, only a small set of its parameters is learned. The scale-and-bias
patch is the scale (gamma) and bias (beta) of every normalisation layer
(batch, layer, group and instance norm); with the last layer (``head``)
it is the paper's transfer set-up. Every other parameter's learning-rate
multiplier is 0 (frozen) through the ``parameter_groups`` hook. Compose with
``finetune`` to start from a source network's weights. A model without
normalisation layers that have a scale and bias is refused before training
(e.g. use ``backbone: {name: mlp, norm: layer}`` or ``resnet``).

Mudrakarta, Sandler, Zhmoginov & Howard, "K for the price of 1:
parameter-efficient multi-task and transfer learning", ICLR 2019. Default:
the patch plus the head (``head="head"``), the paper's transfer setting.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([ScaleBiasPatch()], stream)     # contract backbone: mlp with LayerNorm
>>> sorted(n for n, p in learner.model.named_parameters() if p.requires_grad)
['body.2.bias', 'body.2.weight', 'head.bias', 'head.weight']
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lifelong.errors import ConfigError
from lifelong.features import check_layer
from lifelong.hookspecs import hookimpl

__all__ = ["ScaleBiasPatch", "patch_parameters"]

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
         nn.modules.instancenorm._InstanceNorm)


def patch_parameters(model: nn.Module) -> list[str]:
    """Names of the scales and biases of every normalisation layer of ``model``."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, NORMS):
            out += [f"{name}.{p}" for p, _ in m.named_parameters(recurse=False)]
    return out


class ScaleBiasPatch:
    """Train only the normalisation scales/biases (the patch) and the head; freeze the rest."""

    name = "scale_bias"
    owns = ()
    contract_backbone = {"name": "mlp", "hidden": [32], "norm": "layer"}

    def __init__(self, *, head: str | None = "head") -> None:
        self.head = head

    @hookimpl
    def parameter_groups(self, learner: Any, model: nn.Module) -> dict[str, float]:
        patch = set(patch_parameters(model))
        if not patch:
            raise ConfigError("plugin 'scale_bias': the model has no normalisation layer with a "
                              "scale and bias to train; use a backbone with them (mlp with "
                              "norm: layer, or resnet)")
        head: set[str] = set()
        if self.head is not None:
            check_layer(model, self.head, owner=self.name, key="head")
            head = {n for n, _ in model.named_parameters()
                    if n == self.head or n.startswith(self.head + ".")}
        return {n: 0.0 for n, _ in model.named_parameters() if n not in patch | head}


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "scale_bias", ScaleBiasPatch)
