"""FitNet: a learned regressor maps a student layer onto a teacher's hint layer (L2), then KD.

The paper trains in two stages. Stage 1, hint training: the student's layers
up to the guided layer and a regressor ``r`` are trained to minimise
``1/2 ||u_h(x) - r(v_g(x))||^2`` (``u_h`` the teacher's hint layer, ``v_g``
the student's guided layer); the regressor is convolutional when both
layers are (kernel ``H_s - H_t + 1`` by ``W_s - W_t + 1``, so the output has
the hint's resolution), fully connected otherwise, and ends in the hint
layer's non-linearity. Stage 2: the whole student is trained with knowledge
distillation, ``H(y, P_S) + lambda * H(P_T^tau, P_S^tau)``, ``lambda``
annealed linearly from 4 to 1.

In a stream the stages are counted in training steps: for the first
``hint_steps`` steps the plugin contributes ``hint - ce`` (the label loss the
learner adds is cancelled, so only the hint trains the guided layers and the
regressor; layers above the guided layer get a zero gradient), afterwards
``lambda_t * KL(P_T^tau || P_S^tau)`` (the same gradient as the paper's
cross-entropy ``H(P_T^tau, P_S^tau)``, zero when they agree), ``lambda_t``
going linearly from ``kd_lambda`` to ``kd_lambda_final`` over
``anneal_steps`` steps. The regressor is the plugin's auxiliary module
(``auxiliary_``), trained by the learner's optimizer and saved in
``state_dict``.

Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for thin
deep nets", ICLR 2015. Defaults: ``kd_lambda=4.0`` to ``kd_lambda_final=1.0``
(the paper's annealing of lambda), ``regressor_relu=True`` (the regressor
has the hint layer's non-linearity; the backbones' ``body`` outputs are
rectified). ``hint_steps=100``, ``anneal_steps=1000`` and ``temperature=4.0``
are lifelong's (the paper trains stage 1 to convergence; its tau is not
restated here: the KD plugin's 4.0 is used). Set ``hint_steps`` to the
length of your stage 1 in batches.

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "teacher.pt"
>>> torch.save(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64]).state_dict(), path)
>>> fit = FitNet(teacher={"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(path)},
...              hint_steps=10)
>>> learner = make_learner([fit], stream).fit(stream)
>>> fit.auxiliary_
Sequential(
  (0): Linear(in_features=32, out_features=64, bias=True)
  (1): ReLU()
)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.distillation._common import TeacherPlugin, check_weight, forward_inputs

__all__ = ["FitNet", "hint_loss", "soft_cross_entropy_kl", "make_regressor", "kd_lambda_at"]


def hint_loss(regressed: Tensor, hint: Tensor) -> Tensor:
    """``1/2 ||u_h - r(v_g)||^2`` per sample (summed over its elements), averaged over rows.

    >>> import torch
    >>> float(hint_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])))
    2.5
    """
    return 0.5 * (regressed - hint).pow(2).flatten(1).sum(1).mean()


def soft_cross_entropy_kl(student: Tensor, teacher: Tensor, tau: float) -> Tensor:
    """``KL(P_T^tau || P_S^tau)`` averaged over rows: ``H(P_T^tau, P_S^tau)`` minus the teacher's
    entropy (same gradient, zero when the distributions agree)."""
    log_s = F.log_softmax(student / tau, dim=1)
    log_t = F.log_softmax(teacher / tau, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean()


def kd_lambda_at(k: int, start: float, end: float, steps: int) -> float:
    """Linear annealing from ``start`` to ``end`` over ``steps`` stage-2 steps (``end`` after).

    >>> kd_lambda_at(0, 4.0, 1.0, 10), kd_lambda_at(5, 4.0, 1.0, 10), kd_lambda_at(99, 4.0, 1.0, 10)
    (4.0, 2.5, 1.0)
    """
    if steps <= 0 or k >= steps:
        return end
    return start + (end - start) * k / steps


def make_regressor(student_shape: tuple[int, ...], hint_shape: tuple[int, ...], *, relu: bool,
                   owner: str = "fitnet") -> nn.Module:
    """The paper's regressor from a guided layer's per-sample shape to the hint's."""
    if len(student_shape) == 3 and len(hint_shape) == 3:
        (cs, hs, ws), (ct, ht, wt) = student_shape, hint_shape
        if hs < ht or ws < wt:
            raise ConfigError(f"plugin {owner!r}: the student layer's maps ({hs}x{ws}) are "
                              f"smaller than the hint's ({ht}x{wt}); the convolutional regressor "
                              "can only shrink them: guide a layer of at least the hint's size")
        layers: list[nn.Module] = [nn.Conv2d(cs, ct, (hs - ht + 1, ws - wt + 1))]
    elif len(hint_shape) == 1:
        layers = [nn.Flatten(), nn.Linear(int(torch.Size(student_shape).numel()), hint_shape[0])]
        if len(student_shape) == 1:
            layers = layers[1:]
    else:
        raise ConfigError(f"plugin {owner!r}: cannot regress a student layer of shape "
                          f"{student_shape} onto a hint of shape {hint_shape}; pair convolutional "
                          "layers with convolutional ones, or give a flat hint layer")
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FitNet(TeacherPlugin):
    """FitNet hints: regress a student layer onto a teacher layer (stage 1), then KD (stage 2)."""

    name = "fitnet"

    def __init__(self, *, teacher: dict[str, Any] | None = None, student_layer: str = "body",
                 teacher_layer: str = "body", hint_steps: int = 100, temperature: float = 4.0,
                 kd_lambda: float = 4.0, kd_lambda_final: float = 1.0, anneal_steps: int = 1000,
                 regressor_relu: bool = True, seed: int = 0) -> None:
        check_weight("fitnet", "temperature", temperature, positive=True)
        check_weight("fitnet", "kd_lambda", kd_lambda)
        check_weight("fitnet", "kd_lambda_final", kd_lambda_final)
        for key, v in (("hint_steps", hint_steps), ("anneal_steps", anneal_steps)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"plugin 'fitnet': {key} must be an integer >= 0, got {v!r}")
        self.teacher = teacher
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.hint_steps = hint_steps
        self.temperature = temperature
        self.kd_lambda = kd_lambda
        self.kd_lambda_final = kd_lambda_final
        self.anneal_steps = anneal_steps
        self.regressor_relu = regressor_relu
        self.seed = seed
        self.auxiliary_: nn.Module | None = None     # the regressor
        self.teacher_digest_: str | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        teacher = self.load_teacher(learner, stream)
        learner.features.request(self.student_layer, owner=self.name, key="student_layer")
        self.teacher_features_.request(self.teacher_layer, owner=self.name, key="teacher_layer")
        x = torch.zeros(2, *stream.input_shape, device=learner.device)
        was = learner.model.training
        learner.model.eval()
        with torch.no_grad():
            learner.model(x)
            teacher(x)
        learner.model.train(was)
        s_shape = tuple(learner.features[self.student_layer].shape[1:])
        t_shape = tuple(self.teacher_features_[self.teacher_layer].shape[1:])
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
            reg = make_regressor(s_shape, t_shape, relu=self.regressor_relu)
        self.auxiliary_ = reg.to(learner.device)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        assert self.auxiliary_ is not None and self.teacher_features_ is not None
        t_logits = self.teacher_logits(forward_inputs(step))
        if step.index < self.hint_steps:
            hint = self.teacher_features_[self.teacher_layer]
            guided = learner.features[self.student_layer]
            return {"fitnet": hint_loss(self.auxiliary_(guided), hint) - step.losses["ce"]}
        lam = kd_lambda_at(step.index - self.hint_steps, self.kd_lambda, self.kd_lambda_final,
                           self.anneal_steps)
        logits = step.logits
        return {"fitnet": lam * soft_cross_entropy_kl(logits, t_logits[:, : logits.shape[1]],
                                                      self.temperature)}

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self.close_teacher()

    def state_dict(self) -> dict[str, Any]:
        assert self.auxiliary_ is not None
        return {**self.teacher_state(),
                "regressor": {k: v.detach().clone() for k, v in self.auxiliary_.state_dict().items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self.auxiliary_ is not None
        self.load_teacher_state(state)
        self.auxiliary_.load_state_dict(state["regressor"])  # in place: the optimizer keeps them


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "fitnet", FitNet)
