"""Jacobian matching: the student matches the teacher's input gradients (double backprop).

For each training row ``x`` and one output unit ``i`` (its label, or the
teacher's top class), both networks' input gradients ``J_T = d T_i / d x`` and
``J_S = d S_i / d x`` are taken and L2-normalised per row; the student pays
``jacobian_lambda * ||J_T / ||J_T|| - J_S / ||J_S|| ||^2``, averaged over the
rows. ``J_S`` is computed with ``create_graph=True`` so the penalty's
gradient reaches the student's weights (double back-propagation). Labels or
soft targets are matched by the label loss and, if configured, the KD
plugin: the paper's full objective is ``ce (+ KD) + jacobian term``.

The input gradients need an input that requires grad, so the plugin runs one
extra forward of the student on the training rows, in evaluation mode (each
row's Jacobian is that of the network as a function of that row alone:
batch-norm statistics of the batch do not couple the rows, and no running
statistics are updated); its captured features equal those of the
learner's forward.

Srinivas & Fleuret, "Knowledge transfer with Jacobian matching", ICML 2018.
Defaults: normalised Jacobians and the squared error (their Proposition: the
loss that matches distillation with input noise); one output unit per row,
``unit="label"`` (the paper matches a single output's Jacobian to keep the
cost at one extra backward). ``jacobian_lambda=1.0`` is lifelong's: the
paper tunes the weight per experiment.

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "teacher.pt"
>>> torch.save(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64]).state_dict(), path)
>>> jm = JacobianMatching(teacher={"backbone": {"name": "mlp", "hidden": [64]},
...                                "checkpoint": str(path)})
>>> learner = make_learner([jm], stream).fit(stream)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.distillation._common import TeacherPlugin, check_weight, forward_inputs

__all__ = ["JacobianMatching", "jacobian_loss", "input_gradient"]

UNITS = ("label", "teacher_top")


def jacobian_loss(j_student: Tensor, j_teacher: Tensor) -> Tensor:
    """``mean_rows ||J_T / ||J_T|| - J_S / ||J_S|| ||^2`` of per-row input gradients.

    >>> import torch
    >>> float(jacobian_loss(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])))   # |(.6,.8)-(1,0)|^2
    0.8000...
    """
    s = F.normalize(j_student.flatten(1), dim=1)
    t = F.normalize(j_teacher.flatten(1), dim=1)
    return (s - t).pow(2).sum(1).mean()


def input_gradient(model: Any, x: Tensor, unit: Tensor, *, create_graph: bool) -> Tensor:
    """``d model(x)[r, unit[r]] / d x[r]`` for every row ``r`` (rows are independent)."""
    x = x.detach().requires_grad_(True)
    out = model(x)
    picked = out.gather(1, unit[:, None]).sum()
    (grad,) = torch.autograd.grad(picked, x, create_graph=create_graph)
    return grad


class JacobianMatching(TeacherPlugin):
    """Jacobian matching: normalised input gradients of one output unit, squared error."""

    name = "jacobian"

    def __init__(self, *, teacher: dict[str, Any] | None = None, jacobian_lambda: float = 1.0,
                 unit: str = "label") -> None:
        check_weight("jacobian", "jacobian_lambda", jacobian_lambda)
        if unit not in UNITS:
            raise ConfigError(f"plugin 'jacobian': unit must be one of {UNITS}, got {unit!r}")
        self.teacher = teacher
        self.jacobian_lambda = jacobian_lambda
        self.unit = unit
        self.teacher_digest_: str | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self.load_teacher(learner, stream)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        assert self.teacher_ is not None
        x = forward_inputs(step)
        if self.unit == "label":
            unit = torch.cat([step.batch.y, *[b.y for b in step.replays]])
        else:
            unit = self.teacher_logits(x).argmax(1)
        with torch.enable_grad():
            j_t = input_gradient(self.teacher_, x, unit, create_graph=False)
            model = learner.model
            was = model.training
            model.eval()
            try:
                j_s = input_gradient(model, x, unit, create_graph=True)
            finally:
                model.train(was)
        return {"jacobian": self.jacobian_lambda * jacobian_loss(j_s, j_t)}

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self.close_teacher()

    def state_dict(self) -> dict[str, Any]:
        return self.teacher_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.load_teacher_state(state)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "jacobian", JacobianMatching)
