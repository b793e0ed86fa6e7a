"""What the distillation plugins share: the teacher's life cycle and the rows they distill.

:class:`TeacherPlugin` is the glue every teacher-guided plugin inherits:

* the ``teacher`` parameter is a spec for :func:`lifelong.teachers.load_teacher`
  (``{run: DIR}`` or ``{backbone: {...}, checkpoint: FILE}``); a plugin without
  one is a :class:`~lifelong.errors.ConfigError` before the first batch (it
  never silently trains without its teacher);
* the teacher is loaded in ``before_training`` (the device and the stream's
  shape are known), checked with one dry forward (its input and output sizes),
  and given a :class:`~lifelong.features.FeatureCapture` of its own;
* ``state_dict`` records the teacher's :func:`~lifelong.teachers.weights_digest`;
  resuming with a different teacher is a :class:`~lifelong.errors.CheckpointError`;
* the loaded teacher and its hooks are runtime objects: they are not pickled
  (``before_training`` rebuilds them).

Distillation is applied to every row of the learner's training forward (the
stream batch and any replayed rows, see :func:`forward_inputs`), so a fixed
teacher also guides the samples a replay plugin brings back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import CheckpointError, ConfigError
from lifelong.features import FeatureCapture
from lifelong.teachers import load_teacher, weights_digest

__all__ = ["TeacherPlugin", "forward_inputs", "check_weight", "probe"]

_RUNTIME = ("teacher_", "teacher_features_")


def check_weight(owner: str, key: str, value: Any, *, positive: bool = False) -> None:
    """A loss weight/temperature must be a finite number >= 0 (> 0 with ``positive``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > 0 if positive else value >= 0)
    if not ok:
        raise ConfigError(f"plugin {owner!r}: {key} must be a finite number "
                          f"{'> 0' if positive else '>= 0'}, got {value!r}")


def forward_inputs(step: Any) -> Tensor:
    """The inputs of the learner's training forward: stream rows, then each replay batch's."""
    if not step.replays:
        return step.batch.x
    return torch.cat([step.batch.x, *[b.x for b in step.replays]])


def probe(model: nn.Module, input_shape: Iterable[int], device: torch.device) -> Tensor:
    """One dry forward of ``model`` on a zero input in eval mode (shapes before training)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *input_shape, device=device))
    model.train(was)
    return out


class TeacherPlugin:
    """Base of the teacher-guided plugins (see the module docstring)."""

    name = "teacher"
    requires: tuple[str, ...] = ("teacher",)
    owns: tuple[str, ...] = ()
    teacher: Mapping[str, Any] | None = None

    teacher_: nn.Module | None = None
    teacher_features_: FeatureCapture | None = None
    teacher_digest_: str | None = None

    def load_teacher(self, learner: Any, stream: Any) -> nn.Module:
        """Load, freeze and check the teacher; called from ``before_training``."""
        if self.teacher is None:
            raise ConfigError(
                f"plugin {self.name!r}: teacher: missing; give teacher: {{run: DIR}} (the --out "
                "directory of a finished `lifelong run`) or teacher: {backbone: {name: ...}, "
                "checkpoint: FILE}")
        owner = f"plugin {self.name!r}: teacher"
        teacher = load_teacher(self.teacher, input_shape=stream.input_shape,
                               num_classes=stream.num_classes, device=learner.device, owner=owner)
        try:
            out = probe(teacher, stream.input_shape, learner.device)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{owner} cannot take the stream's inputs of shape "
                              f"{tuple(stream.input_shape)}: {str(exc).splitlines()[0]}") from exc
        if out.dim() != 2 or out.shape[1] < stream.num_classes:
            raise ConfigError(f"{owner} outputs shape {tuple(out.shape[1:])} per sample, but the "
                              f"stream has {stream.num_classes} classes; give a teacher whose "
                              "head covers the stream's classes")
        digest = weights_digest(teacher)
        if self.teacher_digest_ is not None and digest != self.teacher_digest_:
            raise CheckpointError(f"{owner} has weights {digest}, but this plugin was trained "
                                  f"with teacher {self.teacher_digest_}; resume with that teacher")
        self.teacher_ = teacher
        self.teacher_digest_ = digest
        self.teacher_features_ = FeatureCapture(teacher, what="teacher")
        return teacher

    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits on ``x`` (no gradient); its captured features are refreshed."""
        assert self.teacher_ is not None
        with torch.no_grad():
            return self.teacher_(x)

    def close_teacher(self) -> None:
        if self.teacher_features_ is not None:
            self.teacher_features_.close()

    # -------------------------------------------------------------- state helpers
    def teacher_state(self) -> dict[str, Any]:
        return {"teacher_digest": self.teacher_digest_}

    def load_teacher_state(self, state: Mapping[str, Any]) -> None:
        want = state.get("teacher_digest")
        if want is not None and self.teacher_digest_ is not None and want != self.teacher_digest_:
            raise CheckpointError(f"plugin {self.name!r}: the checkpoint was trained with teacher "
                                  f"{want}, this run's teacher has weights {self.teacher_digest_}; "
                                  "resume with the teacher the run started with")
        self.teacher_digest_ = want

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in _RUNTIME:  # rebuilt by before_training
            state.pop(k, None)
        return state
