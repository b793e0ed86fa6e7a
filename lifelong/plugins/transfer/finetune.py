"""FineTune: start from a source network's weights; optionally freeze up to a layer, new head.

Transfer by fine-tuning: in ``before_training`` every weight of the model is
copied from the source network (``source``: ``{run: DIR}`` — a finished
``lifelong run --out DIR`` — or ``{backbone: ..., checkpoint: FILE}``, loaded
with ``weights_only``), then

* ``new_head=True`` re-initialises the ``head`` module (seeded) instead of
  copying it (the source's head may then have another number of classes);
* ``freeze_upto="body.3"`` freezes that layer and every layer registered
  before it (``named_modules()`` order, the forward order of the built-in
  backbones) through the ``parameter_groups`` hook: their learning-rate
  multiplier is 0 (no gradient, no optimizer state); the layers above train.

Composes with the other presets (``discriminative_lr``, ``scale_bias``),
whose multipliers multiply with these. The source's weights digest is in
``state_dict``: resuming with another source is refused. Copying the weights
is this plugin's one change to the learner's model, made before the first
batch (a resumed run then loads its own weights over them).

Yosinski, Clune, Bengio & Lipson, "How transferable are features in deep
neural networks?", NIPS 2014 (freezing the first n layers vs fine-tuning
them); the usual practice of a new classifier head for a new label set.
Defaults: copy everything, freeze nothing (plain fine-tuning).

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "source.pt"
>>> torch.save(mlp(input_shape=stream.input_shape, num_classes=10, hidden=[32]).state_dict(), path)
>>> ft = FineTune(source={"backbone": {"name": "mlp", "hidden": [32]}, "checkpoint": str(path),
...                       "num_classes": 10}, new_head=True, freeze_upto="body.1")
>>> learner = make_learner([ft], stream).fit(stream)
>>> learner.model.body[1].weight.requires_grad, learner.model.head.weight.requires_grad
(False, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lifelong.errors import CheckpointError, ConfigError
from lifelong.features import check_layer
from lifelong.hookspecs import hookimpl
from lifelong.plugins.transfer._layers import params_up_to
from lifelong.teachers import load_teacher, weights_digest

__all__ = ["FineTune", "copy_weights"]


def copy_weights(model: nn.Module, source: nn.Module, *, skip: str | None = None,
                 owner: str = "finetune") -> None:
    """Copy every parameter and buffer of ``source`` into ``model`` (names and shapes must
    match), except those under module ``skip``."""
    own = model.state_dict()
    theirs = source.state_dict()
    keep = [k for k in own if not (skip and (k == skip or k.startswith(skip + ".")))]
    bad = [k for k in keep if k not in theirs or theirs[k].shape != own[k].shape]
    if bad:
        detail = ", ".join(f"{k} {tuple(own[k].shape)} vs "
                           f"{tuple(theirs[k].shape) if k in theirs else 'missing'}"
                           for k in bad[:3])
        raise ConfigError(f"plugin {owner!r}: source: its weights do not fit the model ({detail}); "
                          "give a source of the same backbone (new_head: true lets only the head "
                          "differ)")
    with torch.no_grad():
        for k in keep:
            own[k].copy_(theirs[k])


class FineTune:
    """Fine-tuning from a source network: copy its weights, optionally freeze layers, new head."""

    name = "finetune"
    requires = ("teacher",)
    teacher_param = "source"
    owns = ()
    contract_params = {"new_head": True}   # the contract's streams vary their number of classes

    def __init__(self, *, source: dict[str, Any] | None = None, freeze_upto: str | None = None,
                 new_head: bool = False, head: str = "head", seed: int = 0) -> None:
        self.source = source
        self.freeze_upto = freeze_upto
        self.new_head = new_head
        self.head = head
        self.seed = seed
        self.source_digest_: str | None = None

    @hookimpl
    def parameter_groups(self, learner: Any, model: nn.Module) -> dict[str, float] | None:
        if self.freeze_upto is None:
            return None
        check_layer(model, self.freeze_upto, owner=self.name, key="freeze_upto")
        return {n: 0.0 for n in params_up_to(model, self.freeze_upto)}

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        if self.source is None:
            raise ConfigError("plugin 'finetune': source: missing; give source: {run: DIR} (a "
                              "finished `lifelong run --out DIR`) or {backbone: ..., checkpoint: "
                              "FILE}")
        owner = f"plugin {self.name!r}: source"
        src = load_teacher(self.source, input_shape=stream.input_shape,
                           num_classes=stream.num_classes, device=learner.device, owner=owner)
        digest = weights_digest(src)
        if self.source_digest_ is not None and digest != self.source_digest_:
            raise CheckpointError(f"{owner} has weights {digest}, the run started from "
                                  f"{self.source_digest_}; resume with that source")
        self.source_digest_ = digest
        model = learner.model
        if self.new_head:
            head = check_layer(model, self.head, owner=self.name, key="head")
            copy_weights(model, src, skip=self.head, owner=self.name)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                for m in head.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        else:
            copy_weights(model, src, owner=self.name)

    def state_dict(self) -> dict[str, Any]:
        return {"source_digest": self.source_digest_}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        want = state.get("source_digest")
        if want is not None and self.source_digest_ is not None and want != self.source_digest_:
            raise CheckpointError(f"plugin 'finetune': the checkpoint started from source {want}, "
                                  f"this run's source has weights {self.source_digest_}; resume "
                                  "with the same source")
        self.source_digest_ = want


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "finetune", FineTune)
