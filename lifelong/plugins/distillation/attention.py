"""AT: attention transfer, the student matches the teacher's spatial attention maps.

For a layer's activations ``A`` (N, C, H, W) the activation-based spatial
attention map is ``Q = vec(sum_c |A_c|^p)``, L2-normalised per sample. For each
pair ``(student layer, teacher layer)`` of equal resolution the student pays the
squared distance between the two normalised maps, averaged over the batch and
the map's positions; the term is ``beta / 2`` times the sum over the pairs.
Maps are taken on every row of the training forward (stream and replay rows).

Zagoruyko & Komodakis, "Paying more attention to attention: improving the
performance of convolutional neural networks via attention transfer", ICLR
2017. Defaults: ``p=2`` (the paper's choice, section 3.1), ``beta=1000`` (section
4.1: "beta = 10^3 divided by the number of elements in attention map and batch
size for each layer", i.e. the distance is averaged over those, as here).
The paper writes the distance as the p-norm of the difference; its published
experiments square it, which is what is computed here. ``layers`` pairs the
outputs of the two conv blocks of the ``cnn`` backbone (the paper pairs the
outputs of groups of residual blocks).

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import cnn
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "teacher.pt"
>>> torch.save(cnn(input_shape=stream.input_shape, num_classes=6, channels=[8, 16]).state_dict(), path)
>>> at = AT(teacher={"backbone": {"name": "cnn", "channels": [8, 16]}, "checkpoint": str(path)})
>>> learner = make_learner([at], stream)   # the contract backbone: cnn, channels [4, 8]
>>> _ = learner.fit(stream)
>>> tuple(learner.model.body[0].weight.shape)
(4, 1, 3, 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.distillation._common import TeacherPlugin, check_weight, forward_inputs

__all__ = ["AT", "attention_map", "at_loss"]


def attention_map(a: Tensor, p: float = 2.0) -> Tensor:
    """``vec(sum_c |A_c|^p)`` of (N, C, H, W) activations, L2-normalised per row: (N, H*W).

    >>> import torch
    >>> a = torch.tensor([[[[3.0, 0.0]], [[0.0, 4.0]]]])    # N=1, C=2, H=1, W=2
    >>> [round(v, 4) for v in attention_map(a)[0].tolist()]     # (9, 16) / sqrt(9^2 + 16^2)
    [0.4903, 0.8716]
    """
    q = a.abs().pow(p).sum(1).flatten(1)
    return F.normalize(q, dim=1)


def at_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], *, beta: float,
            p: float = 2.0) -> Tensor:
    """``beta/2 * sum_j mean((Q_S^j/||Q_S^j|| - Q_T^j/||Q_T^j||)^2)`` over layer pairs ``j``."""
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        total = total + (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
    return beta / 2 * total


class AT(TeacherPlugin):
    """Attention transfer: match normalised spatial attention maps of paired conv layers."""

    name = "at"
    contract_backbone = {"name": "cnn", "channels": [4, 8]}

    def __init__(self, *, teacher: dict[str, Any] | None = None,
                 layers: list[list[str]] | None = None, beta: float = 1000.0,
                 p: float = 2.0) -> None:
        check_weight("at", "beta", beta)
        check_weight("at", "p", p, positive=True)
        self.teacher = teacher
        self.layers = layers
        self.beta = beta
        self.p = p
        self.teacher_digest_: str | None = None

    def _pairs(self) -> list[tuple[str, str]]:
        pairs = self.layers if self.layers is not None else [["body.2", "body.2"],
                                                            ["body.5", "body.5"]]
        if not pairs or not all(isinstance(q, (list, tuple)) and len(q) == 2 for q in pairs):
            raise ConfigError("plugin 'at': layers must be a non-empty list of "
                              f"[student_layer, teacher_layer] pairs, got {pairs!r}")
        return [(str(s), str(t)) for s, t in pairs]

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        teacher = self.load_teacher(learner, stream)
        pairs = self._pairs()
        for s, t in pairs:
            learner.features.request(s, owner=self.name, key="layers (student)")
            self.teacher_features_.request(t, owner=self.name, key="layers (teacher)")
        x = torch.zeros(2, *stream.input_shape, device=learner.device)
        was = learner.model.training
        learner.model.eval()
        with torch.no_grad():
            learner.model(x)
            teacher(x)
        learner.model.train(was)
        for s, t in pairs:
            fs, ft = learner.features[s], self.teacher_features_[t]
            if fs.dim() != 4 or ft.dim() != 4:
                raise ConfigError(f"plugin 'at': layers [{s!r}, {t!r}] give outputs of shape "
                                  f"{tuple(fs.shape[1:])} and {tuple(ft.shape[1:])}; attention "
                                  "maps need convolutional (C, H, W) outputs: pick conv layers")
            if fs.shape[2:] != ft.shape[2:]:
                raise ConfigError(f"plugin 'at': layers [{s!r}, {t!r}] have maps of "
                                  f"{tuple(fs.shape[2:])} and {tuple(ft.shape[2:])}; pair layers "
                                  "of the same spatial resolution")
        self._pairs_ = pairs

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        assert self.teacher_features_ is not None
        self.teacher_logits(forward_inputs(step))
        s = [learner.features[a] for a, _ in self._pairs_]
        t = [self.teacher_features_[b] for _, b in self._pairs_]
        return {"at": at_loss(s, t, beta=self.beta, p=self.p)}

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self.close_teacher()

    def state_dict(self) -> dict[str, Any]:
        return self.teacher_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.load_teacher_state(state)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "at", AT)
