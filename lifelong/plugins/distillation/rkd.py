"""RKD: relational knowledge distillation, the student keeps the teacher's distances and angles.

On the embeddings ``t`` (teacher) and ``s`` (student) of one batch:

* distance-wise: ``psi_D(t_i, t_j) = ||t_i - t_j|| / mu``, ``mu`` the mean
  distance over the batch's pairs ``i != j``; the loss is the Huber loss
  between ``psi_D`` of the teacher and of the student, over those pairs;
* angle-wise: ``psi_A(t_i, t_j, t_k) = <e_ij, e_kj>``, ``e_ij = (t_i - t_j) /
  ||t_i - t_j||`` (the cosine of the angle at ``t_j``); Huber loss over the
  batch's triplets.

The term is ``lambda_d * L_D + lambda_a * L_A`` on the rows of the training
forward (stream and replay); Huber (``delta = 1``) averaged over the pairs
and triplets. The embeddings are the outputs of ``student_layer`` and
``teacher_layer`` (flattened); they may differ in width.

Park, Kim, Lu & Cho, "Relational knowledge distillation", CVPR 2019.
Defaults: ``lambda_d=25``, ``lambda_a=50`` (section 4.3, image classification;
the paper's metric-learning runs use 1 and 2), Huber loss with ``delta=1``
(eq. 5), embeddings from the penultimate layers (``body``).

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "teacher.pt"
>>> torch.save(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64]).state_dict(), path)
>>> rkd = RKD(teacher={"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(path)})
>>> learner = make_learner([rkd], stream).fit(stream)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.hookspecs import hookimpl
from lifelong.plugins.distillation._common import TeacherPlugin, check_weight, forward_inputs

__all__ = ["RKD", "rkd_distance_loss", "rkd_angle_loss", "normalized_distances", "angles"]


def normalized_distances(e: Tensor) -> tuple[Tensor, Tensor]:
    """``(psi_D, mask)``: pairwise distances over their mean on ``i != j`` (N, N), and that mask."""
    d = torch.cdist(e, e)
    mask = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    mu = (d * mask).sum() / mask.sum().clamp(min=1)
    return d / mu.clamp(min=1e-12), mask


def angles(e: Tensor) -> Tensor:
    """``psi_A[i, j, k] = <e_ij, e_kj>`` with ``e_ij = (e_i - e_j) / ||e_i - e_j||``: (N, N, N)."""
    diff = e[:, None, :] - e[None, :, :]            # [i, j] = e_i - e_j
    unit = F.normalize(diff, p=2, dim=2)
    return torch.einsum("ijd,kjd->ijk", unit, unit)


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Huber loss between the teacher's and student's normalised distances, over pairs ``i != j``.

    >>> import torch
    >>> e = torch.randn(5, 3)
    >>> float(rkd_distance_loss(2 * e, e))     # distances are scale-free
    0.0
    """
    if len(student) < 2:
        return student.sum() * 0.0
    ps, mask = normalized_distances(student.flatten(1))
    with torch.no_grad():
        pt, _ = normalized_distances(teacher.flatten(1))
    return F.smooth_l1_loss(ps[mask], pt[mask], beta=1.0)


def rkd_angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Huber loss between the teacher's and student's angle cosines, over triplets (i, j, k).

    Triplets with a repeated index have a zero difference vector (its cosine is 0 for both).
    """
    if len(student) < 3:
        return student.sum() * 0.0
    a_s = angles(student.flatten(1))
    with torch.no_grad():
        a_t = angles(teacher.flatten(1))
    return F.smooth_l1_loss(a_s, a_t, beta=1.0)


class RKD(TeacherPlugin):
    """Relational KD: distance-wise and angle-wise Huber losses between embeddings."""

    name = "rkd"

    def __init__(self, *, teacher: dict[str, Any] | None = None, student_layer: str = "body",
                 teacher_layer: str = "body", lambda_d: float = 25.0,
                 lambda_a: float = 50.0) -> None:
        check_weight("rkd", "lambda_d", lambda_d)
        check_weight("rkd", "lambda_a", lambda_a)
        self.teacher = teacher
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.lambda_d = lambda_d
        self.lambda_a = lambda_a
        self.teacher_digest_: str | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self.load_teacher(learner, stream)
        learner.features.request(self.student_layer, owner=self.name, key="student_layer")
        self.teacher_features_.request(self.teacher_layer, owner=self.name, key="teacher_layer")

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        assert self.teacher_features_ is not None
        self.teacher_logits(forward_inputs(step))
        s = learner.features[self.student_layer]
        t = self.teacher_features_[self.teacher_layer]
        return {"rkd": self.lambda_d * rkd_distance_loss(s, t)
                + self.lambda_a * rkd_angle_loss(s, t)}

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self.close_teacher()

    def state_dict(self) -> dict[str, Any]:
        return self.teacher_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.load_teacher_state(state)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "rkd", RKD)
