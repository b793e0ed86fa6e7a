"""ADDA: adversarial discriminative domain adaptation with a separate target encoder.

Three stages, as in the paper. (1) **Pre-training**: a source encoder
``M_s`` and classifier ``C`` are trained on labeled source data: either a
finished model given as ``source`` (a teacher spec: ``{run: DIR}`` or
``{backbone: ..., checkpoint: FILE}``, :mod:`lifelong.teachers`; the
learner's model is then initialized from it and must have the same
architecture), or the run's own first ``pretrain_steps`` steps of plain
source training. (2) **Adversarial adaptation**: ``M_s`` is frozen (a copy
in eval mode); the learner's model, initialized from it, becomes the
target encoder ``M_t`` (its layers up to ``layer``) with the classifier
``C`` (the layers after it). A discriminator ``D`` (an MLP on the features
of ``layer``) learns, each step, ``source features M_s(x_s) -> 1``,
``target features M_t(x_t) -> 0`` (its own Adam optimizer); then ``M_t``
is trained with the inverted-label GAN loss ``-log D(M_t(x_t))`` (target
features labelled as source) against the updated ``D``. The source
cross-entropy is not part of this stage's loss (the plugin decides
``combine_losses``: every other plugin's terms are kept), so ``C`` gets no
gradient and stays the source classifier. (3) **Testing**: target inputs
go through ``M_t`` and the reused ``C``: the learner's model.

The learner's evaluation scores that model on both domains; its source
accuracy is the target encoder's on source data, not ``M_s``'s.

Tzeng, Hoffman, Saenko & Darrell, "Adversarial Discriminative Domain
Adaptation", CVPR 2017. Defaults: ``hidden=(500, 500)`` (the paper's
digit discriminator: two fully connected layers of 500 ReLU units and the
output); ``disc_lr=2e-4`` with Adam betas ``(0.5, 0.999)`` (the authors'
settings for the adversarial stage); ``layer="body"`` (the encoder's
output, the classifier's input); ``pretrain_steps=None``: half the run
when no ``source`` is given.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([ADDA(pretrain_steps=10)], stream).fit(stream)
>>> learner.plugins[0].source_ is not None
True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.features import FeatureCapture
from lifelong.hookspecs import hookimpl
from lifelong.plugins.domain._common import feature_dim, make_mlp, source_target, total_steps
from lifelong.teachers import load_teacher

__all__ = ["ADDA", "discriminator_loss", "inverted_label_loss"]


def discriminator_loss(d_source: Tensor, d_target: Tensor) -> Tensor:
    """``D``'s GAN loss: source features labelled 1, target features 0 (mean over each)."""
    return (F.binary_cross_entropy_with_logits(d_source, torch.ones_like(d_source))
            + F.binary_cross_entropy_with_logits(d_target, torch.zeros_like(d_target)))


def inverted_label_loss(d_target: Tensor) -> Tensor:
    """The target encoder's loss ``-log D(M_t(x_t))``: target features labelled as source."""
    return F.binary_cross_entropy_with_logits(d_target, torch.ones_like(d_target))


class ADDA:
    """Adversarial adaptation of a target encoder against a frozen source encoder."""

    name = "adda"
    requires = ("target",)

    def __init__(self, *, source: dict[str, Any] | None = None,
                 pretrain_steps: int | None = None, layer: str = "body",
                 hidden: Sequence[int] = (500, 500), disc_lr: float = 2e-4,
                 seed: int = 0) -> None:
        if pretrain_steps is not None and (not isinstance(pretrain_steps, int) or pretrain_steps < 0):
            raise ConfigError(f"plugin 'adda': pretrain_steps must be an integer >= 0, "
                              f"got {pretrain_steps!r}")
        if not (isinstance(disc_lr, (int, float)) and disc_lr > 0):
            raise ConfigError(f"plugin 'adda': disc_lr must be > 0, got {disc_lr!r}")
        self.source = source
        self.pretrain_steps = pretrain_steps
        self.layer = layer
        self.hidden = hidden
        self.disc_lr = disc_lr
        self.seed = seed
        self.start_: int = 0
        self.source_: nn.Module | None = None
        self.discriminator_: nn.Module | None = None
        self.optimizer_: torch.optim.Optimizer | None = None
        self._model: nn.Module | None = None

    # ------------------------------------------------------------------ assembly
    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        learner.features.request(self.layer, owner=self.name)
        self._model = learner.model  # the architecture a resumed run rebuilds M_s with
        if self.source is not None:
            teacher = load_teacher(self.source, input_shape=stream.input_shape,
                                   num_classes=stream.num_classes, device=learner.device,
                                   owner="plugin 'adda': source")
            try:
                learner.model.load_state_dict(teacher.state_dict())
            except RuntimeError as exc:
                raise ConfigError("plugin 'adda': the target encoder is initialized from the "
                                  "source model, so the backbone must be the source's: "
                                  f"{str(exc).splitlines()[0]}") from exc
            self.start_ = 0
            self._snapshot(learner.model)
        else:
            self.start_ = (self.pretrain_steps if self.pretrain_steps is not None
                           else total_steps(learner, stream, None, self.name) // 2)
            self.source_ = None
        self.discriminator_ = make_mlp(feature_dim(learner, self.layer), self.hidden, 1,
                                       seed=self.seed, device=learner.device)
        self.optimizer_ = torch.optim.Adam(self.discriminator_.parameters(), lr=self.disc_lr,
                                           betas=(0.5, 0.999))

    def _snapshot(self, model: nn.Module, state: dict[str, Tensor] | None = None) -> None:
        """Freeze a copy of ``model`` (with the weights ``state``) as the source encoder M_s."""
        src = copy.deepcopy(model)
        for m in src.modules():  # the copy must not feed the learner's feature capture
            m._forward_hooks.clear()
        if state is not None:
            src.load_state_dict(state)
        src.eval()  # nothing else puts it back in training mode
        for p in src.parameters():
            p.requires_grad_(False)
        self.source_ = src

    def _source_features(self, x: Tensor) -> Tensor:
        assert self.source_ is not None
        capture = FeatureCapture(self.source_, what="source model")
        try:
            capture.request(self.layer, owner=self.name)
            with torch.no_grad():
                self.source_(x)
            return capture[self.layer].flatten(1)
        finally:
            capture.close()

    # ------------------------------------------------------------------ one step
    def adapting(self, step: Any) -> bool:
        return step.index >= self.start_ and step.target_rows is not None

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        if not self.adapting(step):
            return None
        if self.source_ is None:  # pre-training just ended: M_s is the model as it is now
            self._snapshot(learner.model)
        assert self.discriminator_ is not None and self.optimizer_ is not None
        fs = self._source_features(step.batch.x)
        pair = source_target(learner, step, self.layer)
        assert pair is not None
        ft = pair[1]
        # the discriminator's step, on detached features
        self.optimizer_.zero_grad(set_to_none=True)
        d = self.discriminator_(torch.cat([fs, ft.detach()])).squeeze(1)
        discriminator_loss(d[: len(fs)], d[len(fs):]).backward()
        self.optimizer_.step()
        # the target encoder's inverted-label loss against the updated discriminator
        for p in self.discriminator_.parameters():
            p.requires_grad_(False)
        loss = inverted_label_loss(self.discriminator_(ft).squeeze(1))
        for p in self.discriminator_.parameters():
            p.requires_grad_(True)
        return {"adda": loss}

    @hookimpl
    def combine_losses(self, learner: Any, step: Any, losses: dict[str, Tensor]) -> Tensor | None:
        if not self.adapting(step):
            return None  # pre-training: the plain sum (source cross-entropy)
        return sum(v for k, v in losses.items() if k != "ce")  # type: ignore[return-value]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        assert self.discriminator_ is not None and self.optimizer_ is not None
        return {"discriminator": self.discriminator_.state_dict(),
                "optimizer": self.optimizer_.state_dict(), "start": self.start_,
                "source": None if self.source_ is None else self.source_.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.discriminator_ is not None and self.optimizer_ is not None
        self.discriminator_.load_state_dict(state["discriminator"])
        self.optimizer_.load_state_dict(state["optimizer"])
        self.start_ = int(state["start"])
        if state["source"] is None:
            self.source_ = None
        else:
            assert self._model is not None
            self._snapshot(self._model, state["source"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "adda", ADDA)
