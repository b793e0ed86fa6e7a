"""CRD: contrastive representation distillation, NCE between student and teacher embeddings.

Linear embedding heads ``g_s``, ``g_t`` map the student's and the teacher's
penultimate features to ``feat_dim`` units, L2-normalised. A critic
``h(v_t, v_s) = e^{v_t . v_s / tau} / Z`` scores a pair; noise-contrastive
estimation tells the positive pair (the same input through both networks)
from ``K`` negatives drawn uniformly from a memory bank of ``M`` embeddings:

    L = - log( h+ / (h+ + K/M) ) - sum_K log( (K/M) / (h- + K/M) ),

averaged over the rows, for both directions (the student's embedding
against the teacher's memory, which trains ``g_s`` and the student, and the
teacher's embedding against the student's memory, which trains ``g_t``); the
memory side and the positive's counterpart are constants. ``Z`` is
estimated once, from the first batch (``Z = M * mean e^{score/tau}``). The
term is ``beta * (L_s + L_t)`` over the rows of the training forward.

The paper's bank holds one embedding per training sample, indexed by the
dataset index and updated with momentum 0.5, and a sample is never its own
negative. A stream has no sample index, so each bank slot also keeps a
fingerprint of its input (a fixed random projection of the pixels, float64):
a row whose input is already in the bank updates that slot with momentum
(``momentum=0.5``: ``normalize(m * old + (1 - m) * new)``), a new input is
written in place of the oldest slot (a ring of ``memory_size`` slots,
initialised uniformly at random like the paper's), and negatives that hold
the row's own input are left out of its NCE sum. On a dataset seen for
several epochs this is the paper's bank; on a stream seen once, a ring of
the most recent samples. Negatives are drawn uniformly from the whole bank
with a private generator; with ``negatives="other_classes"`` (the default)
those of the row's own class are left out as well, as the authors'
implementation does (it draws the K negatives among the samples of the
other classes; the label of each slot is kept with it; never-written slots
count as other classes), ``negatives="all"`` keeps them (a label-free
bank). The heads are the plugin's auxiliary module (``auxiliary_``); the
bank, its fingerprints and labels, ``Z`` and the generator are its state.

Tian, Krishnan & Isola, "Contrastive representation distillation", ICLR
2020. Defaults: ``feat_dim=128``, ``n_negatives=16384`` (K), ``nce_t=0.07``
(tau), ``beta=0.8`` (the paper's weight of the CRD term), ``momentum=0.5``
(the bank's update), all from its experimental setup; ``memory_size=16384``
is lifelong's (the paper's is the dataset size). The paper reports CRD alone
and CRD + KD: compose with the ``kd`` plugin for the second.

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "teacher.pt"
>>> torch.save(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64]).state_dict(), path)
>>> crd = CRD(teacher={"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(path)},
...           n_negatives=64, memory_size=256)
>>> learner = make_learner([crd], stream, epochs=2).fit(stream)
>>> tuple(crd.memory_t_.shape), int(crd.ptr_)   # 144 inputs, each written once, then updated
((256, 128), 144)
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

__all__ = ["CRD", "nce_loss", "critic_scores", "bank_scores", "same_input", "momentum_update"]

EPS = 1e-7
#: fingerprints closer than this (relative) are the same input
KEY_RTOL = 1e-9
NEGATIVES = ("other_classes", "all")


def critic_scores(anchor: Tensor, positive: Tensor, negatives: Tensor, tau: float) -> Tensor:
    """``exp(v . v' / tau)`` for the positive (column 0) and each negative: (N, 1 + K).

    ``anchor``, ``positive``: (N, D); ``negatives``: (N, K, D).
    """
    pos = (anchor * positive).sum(1, keepdim=True)
    neg = torch.einsum("nd,nkd->nk", anchor, negatives)
    return torch.exp(torch.cat([pos, neg], 1) / tau)


def bank_scores(anchor: Tensor, positive: Tensor, bank: Tensor, idx: Tensor, tau: float
                ) -> Tensor:
    """:func:`critic_scores` against the negatives ``bank[idx]`` (``idx``: (N, K) slots).

    When the bank has no more slots than ``K``, the anchors are scored against the
    whole bank once and the drawn slots picked (the same values, fewer operations).
    """
    if len(bank) > idx.shape[1]:
        return critic_scores(anchor, positive, bank[idx], tau)
    pos = (anchor * positive).sum(1, keepdim=True)
    neg = (anchor @ bank.T).gather(1, idx)
    return torch.exp(torch.cat([pos, neg], 1) / tau)


def same_input(keys: Tensor, bank_keys: Tensor) -> Tensor:
    """``[r, j]``: row ``r``'s input fingerprint equals ``bank_keys[..., j]`` (NaN: an empty slot).

    ``keys``: (N,); ``bank_keys``: (M,) or (N, K) (the fingerprints of each row's negatives).
    """
    if bank_keys.dim() == 1:
        bank_keys = bank_keys[None, :]
    return (bank_keys - keys[:, None]).abs() <= KEY_RTOL * (keys.abs()[:, None] + 1.0)


def momentum_update(old: Tensor, new: Tensor, momentum: float) -> Tensor:
    """The paper's bank update: ``normalize(momentum * old + (1 - momentum) * new)`` per row.

    >>> import torch
    >>> momentum_update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5)
    tensor([[0.7071, 0.7071]])
    """
    return F.normalize(momentum * old + (1 - momentum) * new, dim=1)


def nce_loss(scores: Tensor, z: Tensor | float, n_memory: int, keep: Tensor | None = None
             ) -> Tensor:
    """NCE on ``scores / Z`` (N, 1 + K; column 0 the positive) with uniform noise ``1 / M``.

    ``- log(h+ / (h+ + K/M)) - sum_k log((K/M) / (h-_k + K/M))``, averaged over the rows.
    ``keep`` (N, K; 1 or 0) leaves negatives out of the sum (those that hold the row's
    own input: a sample is not its own negative).

    >>> import torch
    >>> s = torch.tensor([[2.0, 1.0]])          # h+ = 2, h- = 1, K = 1, M = 1: K/M = 1
    >>> round(float(nce_loss(s, 1.0, 1)), 4)    # -log(2/3) - log(1/2)
    1.0986
    """
    k = scores.shape[1] - 1
    noise = k / n_memory
    h = scores / z
    log_pos = torch.log(h[:, 0] / (h[:, 0] + noise + EPS))
    log_neg = torch.log(noise / (h[:, 1:] + noise + EPS))
    if keep is not None:
        log_neg = log_neg * keep
    return -(log_pos + log_neg.sum(1)).mean()


class CRD(TeacherPlugin):
    """Contrastive representation distillation: embedding heads, a memory bank, NCE."""

    name = "crd"
    contract_params = {"n_negatives": 32, "memory_size": 64}

    def __init__(self, *, teacher: dict[str, Any] | None = None, student_layer: str = "body",
                 teacher_layer: str = "body", feat_dim: int = 128, n_negatives: int = 16384,
                 nce_t: float = 0.07, beta: float = 0.8, memory_size: int = 16384,
                 momentum: float = 0.5, negatives: str = "other_classes",
                 seed: int = 0) -> None:
        check_weight("crd", "nce_t", nce_t, positive=True)
        check_weight("crd", "beta", beta)
        check_weight("crd", "momentum", momentum)
        if negatives not in NEGATIVES:
            raise ConfigError(f"plugin 'crd': negatives must be one of {NEGATIVES}, "
                              f"got {negatives!r}")
        if momentum >= 1:
            raise ConfigError(f"plugin 'crd': momentum is the old embedding's share in a bank "
                              f"update, in [0, 1); got {momentum}")
        for key, v in (("feat_dim", feat_dim), ("n_negatives", n_negatives),
                       ("memory_size", memory_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"plugin 'crd': {key} must be an integer >= 1, got {v!r}")
        self.teacher = teacher
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.feat_dim = feat_dim
        self.n_negatives = n_negatives
        self.nce_t = nce_t
        self.beta = beta
        self.memory_size = memory_size
        self.momentum = momentum
        self.negatives = negatives
        self.seed = seed
        self.auxiliary_: nn.ModuleDict | None = None
        self.memory_s_: Tensor | None = None
        self.memory_t_: Tensor | None = None
        self.memory_key_: Tensor | None = None
        self.memory_label_: Tensor | None = None
        self.ptr_ = 0
        self.z_s_: float | None = None
        self.z_t_: float | None = None
        self.teacher_digest_: str | None = None
        self._g: torch.Generator | None = None
        self._proj: Tensor | None = None      # the fingerprints' projection (from the seed)

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        teacher = self.load_teacher(learner, stream)
        learner.features.request(self.student_layer, owner=self.name, key="student_layer")
        self.teacher_features_.request(self.teacher_layer, owner=self.name, key="teacher_layer")
        dev = learner.device
        x = torch.zeros(2, *stream.input_shape, device=dev)
        was = learner.model.training
        learner.model.eval()
        with torch.no_grad():
            learner.model(x)
            teacher(x)
        learner.model.train(was)
        d_s = learner.features[self.student_layer][0].numel()
        d_t = self.teacher_features_[self.teacher_layer][0].numel()
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
            heads = nn.ModuleDict({"student": nn.Linear(d_s, self.feat_dim),
                                   "teacher": nn.Linear(d_t, self.feat_dim)})
        self.auxiliary_ = heads.to(dev)
        stdv = 1.0 / math.sqrt(self.feat_dim / 3)
        shape = (self.memory_size, self.feat_dim)
        self.memory_s_ = (torch.rand(shape, generator=g) * 2 * stdv - stdv).to(dev)
        self.memory_t_ = (torch.rand(shape, generator=g) * 2 * stdv - stdv).to(dev)
        n_in = int(torch.Size(stream.input_shape).numel())
        self._proj = torch.randn(n_in, generator=g, dtype=torch.float64).to(dev)
        self.memory_key_ = torch.full((self.memory_size,), float("nan"), dtype=torch.float64,
                                      device=dev)
        self.memory_label_ = torch.full((self.memory_size,), -1, dtype=torch.long, device=dev)
        self.ptr_ = 0
        self.z_s_ = self.z_t_ = None
        self._g = torch.Generator(device=dev).manual_seed(self.seed + 1)

    def _keys(self, x: Tensor) -> Tensor:
        """Fingerprints of the inputs: a fixed random projection of each row, in float64."""
        assert self._proj is not None
        return x.flatten(1).double() @ self._proj

    def _embed(self, which: str, f: Tensor) -> Tensor:
        assert self.auxiliary_ is not None
        return F.normalize(self.auxiliary_[which](f.flatten(1)), dim=1)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        assert self.memory_s_ is not None and self.memory_t_ is not None
        assert self.memory_key_ is not None and self.memory_label_ is not None
        x = forward_inputs(step)
        self.teacher_logits(x)
        v_s = self._embed("student", learner.features[self.student_layer])
        v_t = self._embed("teacher", self.teacher_features_[self.teacher_layer])
        n = len(v_s)
        keys = self._keys(x)
        idx = torch.randint(self.memory_size, (n, self.n_negatives), generator=self._g,
                            device=v_s.device)
        drop = same_input(keys, self.memory_key_[idx])
        labels = torch.cat([step.batch.y, *[b.y for b in step.replays]])
        if self.negatives == "other_classes":
            drop = drop | (self.memory_label_[idx] == labels[:, None])
        keep = (~drop).to(v_s.dtype)
        s_scores = bank_scores(v_s, v_t.detach(), self.memory_t_, idx, self.nce_t)
        t_scores = bank_scores(v_t, v_s.detach(), self.memory_s_, idx, self.nce_t)
        if self.z_s_ is None or self.z_t_ is None:   # estimated once, on the first batch
            self.z_s_ = float(s_scores.detach().mean()) * self.memory_size
            self.z_t_ = float(t_scores.detach().mean()) * self.memory_size
        loss = nce_loss(s_scores, self.z_s_, self.memory_size, keep) + \
            nce_loss(t_scores, self.z_t_, self.memory_size, keep)
        step.scratch[self.name] = (v_s.detach(), v_t.detach(), keys, labels)
        return {"crd": self.beta * loss}

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        pending = step.scratch.get(self.name)
        if pending is None:
            return
        assert self.memory_s_ is not None and self.memory_t_ is not None
        assert self.memory_key_ is not None and self.memory_label_ is not None
        v_s, v_t, keys, labels = pending
        match = same_input(keys, self.memory_key_)            # (n, M)
        seen = match.any(1)
        slot = match.to(torch.float32).argmax(1)
        old = slot[seen]                                     # inputs already in the bank
        self.memory_s_[old] = momentum_update(self.memory_s_[old], v_s[seen], self.momentum)
        self.memory_t_[old] = momentum_update(self.memory_t_[old], v_t[seen], self.momentum)
        fresh = (~seen).nonzero().flatten()[-self.memory_size:]   # new inputs: the oldest slots
        slots = (self.ptr_ + torch.arange(len(fresh), device=v_s.device)) % self.memory_size
        self.memory_s_[slots] = v_s[fresh]
        self.memory_t_[slots] = v_t[fresh]
        self.memory_key_[slots] = keys[fresh]
        self.memory_label_[slots] = labels[fresh]
        self.ptr_ += len(fresh)

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self.close_teacher()

    def state_dict(self) -> dict[str, Any]:
        assert self.auxiliary_ is not None and self.memory_s_ is not None
        assert self.memory_t_ is not None and self._g is not None
        return {**self.teacher_state(),
                "heads": {k: v.detach().clone() for k, v in self.auxiliary_.state_dict().items()},
                "memory_s": self.memory_s_.clone(), "memory_t": self.memory_t_.clone(),
                "memory_key": self.memory_key_.clone(),
                "memory_label": self.memory_label_.clone(),
                "ptr": self.ptr_, "z_s": self.z_s_, "z_t": self.z_t_,
                "rng": self._g.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self.auxiliary_ is not None and self.memory_s_ is not None and self._g is not None
        self.load_teacher_state(state)
        self.auxiliary_.load_state_dict(state["heads"])
        dev = self.memory_s_.device
        self.memory_s_ = state["memory_s"].to(dev, copy=True)
        self.memory_t_ = state["memory_t"].to(dev, copy=True)
        self.memory_key_ = state["memory_key"].to(dev, copy=True)
        self.memory_label_ = state["memory_label"].to(dev, copy=True)
        self.ptr_ = int(state["ptr"])
        self.z_s_, self.z_t_ = state["z_s"], state["z_t"]
        self._g.set_state(state["rng"].cpu())

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_g"] = None if self._g is None else self._g.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        g = state.pop("_g")
        self.__dict__.update(state)
        self._g = None
        if g is not None:
            self._g = torch.Generator()
            self._g.set_state(g)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "crd", CRD)
