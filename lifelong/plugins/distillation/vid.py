"""VID: variational information distillation, a Gaussian likelihood of teacher features.

VID maximises a variational lower bound of the mutual information between a
teacher layer ``t`` and a student layer ``s`` by minimising the negative
log-likelihood of ``t`` under a Gaussian whose mean is a learned function of
``s`` and whose variance is learned per channel, independent of the input:

    -log q(t | s) = sum_c [ log sigma_c + (t_c - mu_c(s))^2 / (2 sigma_c^2) ] + const,
    sigma_c^2 = softplus(alpha_c) + eps.

Between CNNs, ``t`` and ``s`` are (C, H, W) maps of one resolution, ``mu`` is
three 1x1 convolutions with ReLUs between them, and ``sigma_c`` is shared
over the positions of channel ``c``; between MLPs (or a CNN teacher layer
that is flat), ``mu`` is three linear layers and every unit is a channel.
The term is ``beta`` times the negative log-likelihood (the constant
dropped) summed over positions and channels and averaged over the rows (the
paper's expectation), summed over the layer pairs. The mean
networks and the ``alpha_c`` are the plugin's auxiliary module
(``auxiliary_``), trained by the learner's optimizer and saved in
``state_dict``.

Ahn, Hu, Damianou, Lawrence & Dai, "Variational information distillation
for knowledge transfer", CVPR 2019. Defaults: ``eps=1e-5`` and
``sigma^2`` initialised to ``init_variance=5.0`` (the values of the authors'
description of their implementation), hidden width of ``mu`` equal to the
teacher's channels. ``beta=1.0`` is lifelong's: the paper weighs the negative
log-likelihood of the whole layer (summed over its positions and channels,
as here) with a lambda it sets per experiment. Note that the public
implementations (the authors', and Tian et al.'s benchmark, ICLR 2020, whose
VID weight is 1) average the NLL over the elements instead, i.e. they weigh
it ``1 / (C H W)`` of this term; on the few-label MNIST benchmark
(``benchmarks/distillation.py``) that weight leaves the student where it is
alone (0.761 / 0.888 at 10 / 50 labels per class, alone 0.763 / 0.889, 3
seeds), the summed NLL with ``beta=1`` lifts it (0.793 / 0.891).

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "teacher.pt"
>>> torch.save(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64]).state_dict(), path)
>>> vid = VID(teacher={"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(path)})
>>> learner = make_learner([vid], stream).fit(stream)
>>> tuple(vid.auxiliary_["0"].alpha.shape)
(64,)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.distillation._common import TeacherPlugin, check_weight, forward_inputs

__all__ = ["VID", "VIDHead", "vid_nll"]


def vid_nll(mean: Tensor, target: Tensor, variance: Tensor) -> Tensor:
    """``sum over positions and channels of log sigma + (t - mu)^2 / (2 sigma^2)``, mean over rows.

    ``variance`` is (C,), broadcast over the positions of (N, C, H, W) maps or
    the rows of (N, C) features.

    >>> import torch
    >>> float(vid_nll(torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1)))   # log 1 + 1/2
    0.5
    """
    shape = (1, -1) + (1,) * (target.dim() - 2)
    var = variance.reshape(shape)
    nll = 0.5 * torch.log(var) + (target - mean).pow(2) / (2 * var)
    return nll.flatten(1).sum(1).mean()


class VIDHead(nn.Module):
    """One layer pair's mean network ``mu`` and per-channel variance parameters ``alpha``."""

    def __init__(self, c_student: int, c_teacher: int, *, conv: bool, init_variance: float,
                 eps: float) -> None:
        super().__init__()
        hidden = c_teacher
        if conv:
            self.mean = nn.Sequential(nn.Conv2d(c_student, hidden, 1), nn.ReLU(),
                                      nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                      nn.Conv2d(hidden, c_teacher, 1))
        else:
            self.mean = nn.Sequential(nn.Linear(c_student, hidden), nn.ReLU(),
                                      nn.Linear(hidden, hidden), nn.ReLU(),
                                      nn.Linear(hidden, c_teacher))
        self.eps = eps
        # softplus(alpha) + eps == init_variance
        self.alpha = nn.Parameter(torch.full((c_teacher,),
                                             math.log(math.expm1(init_variance - eps))))

    def variance(self) -> Tensor:
        return F.softplus(self.alpha) + self.eps

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        return vid_nll(self.mean(s), t, self.variance())


class VID(TeacherPlugin):
    """Variational information distillation: Gaussian NLL of teacher features given the student's."""

    name = "vid"

    def __init__(self, *, teacher: dict[str, Any] | None = None,
                 layers: list[list[str]] | None = None, beta: float = 1.0,
                 init_variance: float = 5.0, eps: float = 1e-5, seed: int = 0) -> None:
        check_weight("vid", "beta", beta)
        check_weight("vid", "init_variance", init_variance, positive=True)
        check_weight("vid", "eps", eps, positive=True)
        if init_variance <= eps:
            raise ConfigError(f"plugin 'vid': init_variance ({init_variance}) must exceed eps "
                              f"({eps})")
        self.teacher = teacher
        self.layers = layers
        self.beta = beta
        self.init_variance = init_variance
        self.eps = eps
        self.seed = seed
        self.auxiliary_: nn.ModuleDict | None = None
        self.teacher_digest_: str | None = None

    def _pairs(self) -> list[tuple[str, str]]:
        pairs = self.layers if self.layers is not None else [["body", "body"]]
        if not pairs or not all(isinstance(q, (list, tuple)) and len(q) == 2 for q in pairs):
            raise ConfigError(f"plugin 'vid': layers must be a non-empty list of "
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
        heads = {}
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
            for i, (s, t) in enumerate(pairs):
                fs, ft = learner.features[s], self.teacher_features_[t]
                conv = fs.dim() == 4 and ft.dim() == 4
                if conv and fs.shape[2:] != ft.shape[2:]:
                    raise ConfigError(f"plugin 'vid': layers [{s!r}, {t!r}] have maps of "
                                      f"{tuple(fs.shape[2:])} and {tuple(ft.shape[2:])}; pair "
                                      "layers of the same spatial resolution")
                if not conv and (fs.dim() != 2 or ft.dim() != 2):
                    raise ConfigError(f"plugin 'vid': layers [{s!r}, {t!r}] give outputs of shape "
                                      f"{tuple(fs.shape[1:])} and {tuple(ft.shape[1:])}; pair two "
                                      "conv (C, H, W) layers or two flat layers")
                heads[str(i)] = VIDHead(fs.shape[1], ft.shape[1], conv=conv,
                                        init_variance=self.init_variance, eps=self.eps)
        self._pairs_ = pairs
        self.auxiliary_ = nn.ModuleDict(heads).to(learner.device)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        assert self.auxiliary_ is not None and self.teacher_features_ is not None
        self.teacher_logits(forward_inputs(step))
        total = step.logits.new_zeros(())
        for i, (s, t) in enumerate(self._pairs_):
            total = total + self.auxiliary_[str(i)](learner.features[s], self.teacher_features_[t])
        return {"vid": self.beta * total}

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self.close_teacher()

    def state_dict(self) -> dict[str, Any]:
        assert self.auxiliary_ is not None
        return {**self.teacher_state(),
                "heads": {k: v.detach().clone() for k, v in self.auxiliary_.state_dict().items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self.auxiliary_ is not None
        self.load_teacher_state(state)
        self.auxiliary_.load_state_dict(state["heads"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "vid", VID)
