"""KD: knowledge distillation, the student matches the teacher's softened outputs.

Each training row's logits are softened at temperature ``T``; the student pays
``T^2 * KL(softmax(t / T) || softmax(s / T))`` (averaged over rows; the ``T^2``
keeps the soft gradients' scale independent of ``T``), mixed with the label
loss as Hinton et al.'s weighted average: the total is
``(1 - alpha) * ce + alpha * T^2 * KL``. The learner already adds the label
loss ``ce``, so the term this plugin contributes is
``alpha * (T^2 * KL - ce)``. Rows distilled: every row of the training
forward (the stream batch and any replayed rows), on the teacher's first
``C`` outputs, ``C`` the student's.

Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network",
NIPS 2014 Deep Learning Workshop (arXiv:1503.02531, 2015). Defaults:
``temperature=4.0`` (section 3: on MNIST, temperatures of 2.5 to 4 worked
best for small students), ``alpha=0.9`` (the paper puts "a considerably
lower weight" on the hard targets; 0.9 is the weight Tian et al., ICLR 2020,
use for KD in their benchmark).

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "teacher.pt"
>>> torch.save(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64]).state_dict(), path)
>>> kd = KD(teacher={"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(path)})
>>> learner = make_learner([kd], stream).fit(stream)
>>> len(kd.teacher_digest_)
16
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.distillation._common import TeacherPlugin, check_weight, forward_inputs, probe

__all__ = ["KD", "kd_loss"]


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over rows.

    >>> import torch
    >>> z = torch.randn(3, 4)
    >>> float(kd_loss(z, z, 4.0))
    0.0
    """
    t = temperature
    log_p_s = F.log_softmax(student / t, dim=1)
    log_p_t = F.log_softmax(teacher / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
    return t * t * kl


class KD(TeacherPlugin):
    """Knowledge distillation: softened KL to a frozen teacher's outputs, mixed with the labels."""

    name = "kd"

    def __init__(self, *, teacher: dict[str, Any] | None = None, temperature: float = 4.0,
                 alpha: float = 0.9) -> None:
        check_weight("kd", "temperature", temperature, positive=True)
        check_weight("kd", "alpha", alpha)
        if alpha > 1:
            raise ConfigError(f"plugin 'kd': alpha is the soft targets' share of the loss, in "
                              f"[0, 1]; got {alpha}")
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.teacher_digest_: str | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        teacher = self.load_teacher(learner, stream)
        n_student = probe(learner.model, stream.input_shape, learner.device).shape[1]
        n_teacher = probe(teacher, stream.input_shape, learner.device).shape[1]
        if n_teacher < n_student:
            raise ConfigError(f"plugin 'kd': teacher has {n_teacher} outputs, the student "
                              f"{n_student}; KD needs a teacher output for every student output")

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        logits = step.logits
        target = self.teacher_logits(forward_inputs(step))[:, : logits.shape[1]]
        soft = kd_loss(logits, target, self.temperature)
        return {"kd": self.alpha * (soft - step.losses["ce"])}

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self.close_teacher()

    def state_dict(self) -> dict[str, Any]:
        return self.teacher_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.load_teacher_state(state)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "kd", KD)
