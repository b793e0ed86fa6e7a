"""DEN: dynamically expandable networks (selective retraining, expansion, split, timestamps).

One network is shared by all tasks, with one output head per task. On the
first task the whole network trains with an L1 penalty (a proximal
soft-threshold after every optimizer step) and an L2 penalty. For each later
task ``t`` the experience's training steps run four parts of the method:

1. **Selective retraining.** A new head for task ``t`` trains alone, with
   L1, for the first tenth of the steps (the reference code's
   ``early_training = max_iter / 10``). A breadth-first search from the
   head's non-zero weights down the layers selects the sub-network that
   reaches it (a unit is selected when a non-zero weight connects it to a
   selected unit above; every input is kept); then only that sub-network
   retrains, with L1, L2 and ``regular_lambda/2 ||W - W^{t-1}||^2``
   towards the previous task's weights.
2. **Dynamic expansion.** If the training loss (mean of the last 10 steps
   of the selective part) is still ``>= loss_thr``, ``ex_k`` new units are
   added to every hidden layer and only they (and the task's head) train,
   with L1 and a proximal group-lasso step over each new unit's incoming
   weights (``gl_lambda``); new units whose incoming weights all reached
   zero are removed.
3. **Split / duplication.** After expansion, each old unit's drift
   ``rho_i = ||w_i^t - w_i^{t-1}||_2`` (incoming weights) is measured; units
   with ``rho_i > spl_thr`` (the ``ex_k`` largest per layer, the reference's
   cap) are duplicated: the copy takes the unit's current weights, the
   original gets its previous weights back, and the network retrains (L2
   towards the previous weights) for the rest of the experience.
4. **Timestamped inference.** Every unit records the stage (task) that added
   it; predictions for task ``t`` use only units with stamp ``<= t`` and
   task ``t``'s head. The stream must give task ids.

Where this differs from the reference code, and why: its head-only part
is meant to last ``max_iter / 10`` iterations but, as written, stops after
one (here: a tenth of the steps); it caps the split at ``ex_k`` units per
layer but keeps the ``ex_k`` *least* drifted of those above ``spl_thr``
(here: the most drifted, as the paper's criterion intends); it also applies
the group lasso to the new units' outgoing weights (here: the incoming
groups only: one group per new unit). As in the reference, the L1 step covers
the weights and biases of the part being trained, the task's head included,
the earlier heads are frozen, and after a split everything but the earlier
heads retrains under the pull towards ``W^{t-1}``; a copy receives the
copies of the units below rather than their restored originals.

Steps of an experience after the head-only tenth are shared equally by
selective retraining, expansion and split retraining (the reference gives
each the same iteration budget); without expansion, selective retraining
runs to the end. Capacity for the new units is reserved, with zero weights,
when the experience starts (a zero unit is exactly inert: it gets no
gradient and changes no output) and what was not used is removed when the
experience ends, so ``params_per_experience`` counts only units in use.

Yoon, Yang, Lee & Hwang, "Lifelong Learning with Dynamically Expandable
Networks", ICLR 2018. Defaults are those of the authors' reference code
(``DEN_run.py`` of github.com/jaehong31/DEN): ``l1_lambda=1e-5``,
``l2_lambda=1e-4``, ``gl_lambda=1e-3``, ``regular_lambda=0.5``, ``ex_k=10``,
``loss_thr=0.01``, ``spl_thr=0.05``; its proximal steps subtract the
thresholds as given (not scaled by the learning rate), as here. The
reference uses Adam at lr 1e-3 with sigmoid outputs; here the loss is the
learner's softmax cross-entropy. Backbones: ``mlp`` (no dropout) and
``cnn`` (units are channels; group lasso over each new channel's kernel).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_labels=True)
>>> learner = make_learner([DEN()], stream).fit(stream)
>>> len(learner.model.heads_w)
3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lifelong.backbones import MLP, SmallCNN
from lifelong.errors import CompositionError, ConfigError
from lifelong.hookspecs import hookimpl

__all__ = ["DEN", "DENNet", "soft_threshold", "group_lasso_rows", "select_units", "unit_drift"]

#: regularizers whose per-parameter state cannot follow pruned and duplicated units
_PER_PARAMETER = ("ewc", "online_ewc", "si", "mas")
LOSS_WINDOW = 10  # the reference's loss window


# ---------------------------------------------------------------------------- the math


def soft_threshold(t: Tensor, lam: float) -> Tensor:
    """The L1 proximal step: ``sign(t) max(|t| - lam, 0)``.

    >>> soft_threshold(torch.tensor([0.5, -0.2, 0.05]), 0.1).tolist()
    [0.4000000059604645, -0.10000000149011612, 0.0]
    """
    return torch.sign(t) * (t.abs() - lam).clamp_min(0)


def group_lasso_rows(w: Tensor, lam: float) -> Tensor:
    """The group-lasso proximal step, one group per row (a unit's incoming weights).

    ``w_j <- w_j max(0, 1 - lam / ||w_j||_2)``: a row whose norm is below
    ``lam`` becomes zero.

    >>> group_lasso_rows(torch.tensor([[3.0, 4.0], [0.03, 0.04]]), 0.1).tolist()
    [[2.940000057220459, 3.9200000762939453], [0.0, 0.0]]
    """
    flat = w.reshape(w.shape[0], -1)
    norm = flat.norm(dim=1, keepdim=True)
    scale = (1 - lam / norm.clamp_min(torch.finfo(w.dtype).tiny)).clamp_min(0)
    return (flat * scale).reshape(w.shape)


def select_units(weights: Sequence[Tensor], head: Tensor) -> list[Tensor]:
    """Breadth-first from the head's non-zero weights down: the selected units of each layer.

    ``weights[l]`` is layer ``l``'s weight viewed ``[n_l, n_{l-1}, extra]`` (extra:
    kernel or 1), ``head`` ``[classes, n_last, positions]``. A unit of layer ``l`` is
    selected when a non-zero weight connects it to a selected unit of layer
    ``l+1`` (the head's units for the last layer). Returns one bool vector per layer.

    >>> w1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).unsqueeze(-1)  # 3 units, 2 in
    >>> w2 = torch.tensor([[0.0, 2.0, 0.0]]).unsqueeze(-1)                      # 1 unit
    >>> head = torch.tensor([[1.0]]).unsqueeze(-1)
    >>> [s.tolist() for s in select_units([w1, w2], head)]
    [[False, True, False], [True]]
    """
    sel = (head != 0).any(dim=2).any(dim=0)
    out = [sel]
    for w in reversed(weights[1:]):
        sel = ((w != 0).any(dim=2) & sel[:, None]).any(dim=0)
        out.append(sel)
    return out[::-1]


def unit_drift(current: Tensor, previous: Tensor) -> Tensor:
    """``rho_i = ||w_i^t - w_i^{t-1}||_2`` over each old unit's incoming weights from old units.

    >>> unit_drift(torch.tensor([[1.0, 2.0, 9.0], [0.0, 0.0, 9.0]]), torch.tensor([[1.0, 0.0]]))
    tensor([2.])
    """
    n, m = previous.shape[0], previous.shape[1]
    return (current[:n, :m] - previous).reshape(n, -1).norm(dim=1)


# ---------------------------------------------------------------------------- the network


class DENNet(nn.Module):
    """A shared MLP/CNN with per-task heads and per-unit timestamps; ``forward(x, task)``.

    ``weights[l]``: ``[n_l, n_{l-1}]`` (linear) or ``[n_l, n_{l-1}, 3, 3]`` (conv, padding 1,
    then ReLU and 2x2 max-pooling); ``heads_w[s]``: ``[classes, n_last * positions]``
    for the task of stage ``s``. ``stamps[l][i]`` is the stage that added unit ``i``
    of layer ``l``; a sample of task ``t`` (stage ``s``) uses the units stamped ``<= s``.
    """

    task_conditioned = True

    def __init__(self, *, in_features: int, widths: Sequence[int], num_classes: int,
                 conv: bool, positions: int, stamps: Sequence[Sequence[int]],
                 head_tasks: Sequence[int]) -> None:
        super().__init__()
        self.conv, self.positions, self.num_classes = conv, positions, num_classes
        self.in_features = in_features
        k = (3, 3) if conv else ()
        dims = [in_features, *widths]
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(dims[i + 1], dims[i], *k))
                                         for i in range(len(widths))])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in widths])
        self.heads_w = nn.ParameterList([nn.Parameter(torch.zeros(num_classes,
                                                                  widths[-1] * positions))
                                         for _ in head_tasks])
        self.heads_b = nn.ParameterList([nn.Parameter(torch.zeros(num_classes))
                                         for _ in head_tasks])
        self.head_tasks = [int(t) for t in head_tasks]
        self.set_stamps(stamps)

    def set_stamps(self, stamps: Sequence[Sequence[int]]) -> None:
        dev = self.biases[0].device
        for i, s in enumerate(stamps):
            self.register_buffer(f"stamps_{i}", torch.tensor(list(s), dtype=torch.long,
                                                             device=dev), persistent=False)
        n = max(self.head_tasks) + 1 if self.head_tasks else 0
        route = torch.full((n + 1,), -1, dtype=torch.long, device=dev)
        for s, t in enumerate(self.head_tasks):
            route[t] = s
        self.register_buffer("_route", route, persistent=False)

    @property
    def widths(self) -> list[int]:
        return [int(b.shape[0]) for b in self.biases]

    def stamps(self) -> list[list[int]]:
        return [getattr(self, f"stamps_{i}").tolist() for i in range(len(self.biases))]

    def lr_multipliers(self) -> dict[str, float]:
        """Heads of earlier tasks are frozen (as in the reference code)."""
        return {f"heads_{p}.{s}": 0.0 for s in range(len(self.heads_w) - 1) for p in "wb"}

    def stage_of(self, task: Tensor | None, n: int, device: torch.device) -> Tensor:
        newest = len(self.heads_w) - 1
        if task is None:
            return torch.full((n,), newest, dtype=torch.long, device=device)
        r = self._route
        t = torch.where((task >= 0) & (task < r.numel() - 1), task, r.numel() - 1)
        s = r[t]
        return torch.where(s < 0, newest, s)

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        stage = self.stage_of(task, x.shape[0], x.device)
        h = x if self.conv else x.flatten(1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if self.conv:
                h = F.max_pool2d(F.relu(F.conv2d(h, w, b, padding=1)), 2)
            else:
                h = F.relu(F.linear(h, w, b))
            live = (getattr(self, f"stamps_{i}")[None, :] <= stage[:, None]).to(h.dtype)
            h = h * live.reshape(*live.shape, *([1] * (h.dim() - 2)))
        h = h.flatten(1)
        heads = torch.stack(list(self.heads_w))             # [S, C, F]
        logits = torch.einsum("bf,scf->bsc", h, heads) + torch.stack(list(self.heads_b))
        return logits[torch.arange(x.shape[0], device=x.device), stage]

    # views used by the plugin: every weight as [out_units, in_units, extra]
    def unit_view(self, i: int) -> Tensor:
        w = self.weights[i]
        return w.reshape(w.shape[0], w.shape[1], -1)

    def head_view(self, s: int) -> Tensor:
        return self.heads_w[s].reshape(self.num_classes, -1, self.positions)


def _check_backbone(model: nn.Module) -> dict[str, Any]:
    """The architecture of a built-in backbone that DEN can grow, and its layers."""
    if isinstance(model, MLP):
        layers = [m for m in model.body if isinstance(m, nn.Linear)]
        if any(isinstance(m, nn.Dropout) for m in model.body):
            raise ConfigError("plugin 'den': the mlp backbone must have dropout: 0")
        return {"conv": False, "in_features": layers[0].in_features, "positions": 1,
                "layers": layers, "head": model.head}
    if isinstance(model, SmallCNN):
        layers = [m for m in model.body if isinstance(m, nn.Conv2d)]
        c = layers[-1].out_channels
        return {"conv": True, "in_features": layers[0].in_channels,
                "positions": model.head.in_features // c, "layers": layers, "head": model.head}
    raise ConfigError(f"plugin 'den' grows the mlp and cnn backbones; got "
                      f"{type(model).__name__}: use one of those")


def _init_like_linear(w: Tensor, fan_in: int, generator: torch.Generator) -> Tensor:
    """PyTorch's default Linear/Conv init (uniform in +-1/sqrt(fan_in)), from ``generator``."""
    bound = 1 / math.sqrt(max(fan_in, 1))
    return (torch.rand(w.shape, generator=generator) * 2 - 1).mul_(bound).to(w)


# ---------------------------------------------------------------------------- the plugin


class DEN:
    """Dynamically expandable networks: selective retraining, expansion, split, timestamps."""

    name = "den"
    requires = ("boundaries", "task_labels")
    requires_hint = "DEN adds a head and a stage per announced task and needs task ids"
    owns = ()

    def __init__(self, *, l1_lambda: float = 1e-5, l2_lambda: float = 1e-4,
                 gl_lambda: float = 1e-3, regular_lambda: float = 0.5, ex_k: int = 10,
                 loss_thr: float = 0.01, spl_thr: float = 0.05, seed: int = 0) -> None:
        for key, v in (("l1_lambda", l1_lambda), ("l2_lambda", l2_lambda),
                       ("gl_lambda", gl_lambda), ("regular_lambda", regular_lambda),
                       ("loss_thr", loss_thr), ("spl_thr", spl_thr)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"plugin 'den': {key} must be a finite number >= 0, got {v!r}")
        if not (isinstance(ex_k, int) and ex_k >= 0):
            raise ConfigError(f"plugin 'den': ex_k must be an integer >= 0, got {ex_k!r}")
        self.l1_lambda, self.l2_lambda, self.gl_lambda = l1_lambda, l2_lambda, gl_lambda
        self.regular_lambda, self.ex_k = regular_lambda, ex_k
        self.loss_thr, self.spl_thr, self.seed = loss_thr, spl_thr, seed
        self._arch: dict[str, Any] | None = None
        self._gen: torch.Generator | None = None
        self._reset()

    def _reset(self) -> None:
        self.head_tasks_: list[int] = []
        self.widths_: list[int] = []
        self.stamps_: list[list[int]] = []
        self.n_old_: list[int] = []          # units per layer when this stage began
        self.prev_: list[Tensor] = []        # W^{t-1}, b^{t-1} of every hidden layer
        self.masks_: dict[str, Tensor] = {}  # trainable entries in the current part
        self.n_steps_ = 0
        self.step_ = 0
        self.ce_sum_: Tensor = torch.zeros(())
        self.ce_count_ = 0
        self.expanded_ = False
        self.dead_: list[list[int]] = []     # units to remove when the experience ends
        self.history_: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ assembly
    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        if not stream.task_aware:
            raise CompositionError(f"plugin 'den' adds a stage per announced task; stream "
                                   f"{stream.name!r} is task-free: use a task-aware stream with "
                                   "task labels")
        from lifelong.learner import plugin_name

        clash = [plugin_name(p) for p in learner.plugins if plugin_name(p) in _PER_PARAMETER]
        if clash:
            raise CompositionError(
                f"plugins 'den' and {clash[0]!r} cannot compose: DEN prunes and duplicates "
                f"units, and {clash[0]!r}'s per-parameter importances cannot follow a pruned "
                "unit; DEN already pulls the weights towards the previous task's "
                "(regular_lambda): drop one of them")
        if isinstance(learner.model, DENNet):
            raise CompositionError("plugin 'den': the model is already a DEN network; start "
                                   "from a plain backbone")
        arch = _check_backbone(learner.model)
        self._arch = {k: arch[k] for k in ("conv", "in_features", "positions")}
        self._arch["num_classes"] = arch["head"].out_features
        self._gen = torch.Generator().manual_seed(self.seed)

    def _net(self, widths: Sequence[int], stamps: Sequence[Sequence[int]],
             head_tasks: Sequence[int]) -> DENNet:
        assert self._arch is not None
        return DENNet(in_features=self._arch["in_features"], widths=widths,
                      num_classes=self._arch["num_classes"], conv=self._arch["conv"],
                      positions=self._arch["positions"], stamps=stamps, head_tasks=head_tasks)

    @hookimpl
    def expand_model(self, learner: Any, experience: Any) -> nn.Module | None:
        task = experience.task_id if experience is not None else None
        if task is None:
            raise CompositionError(f"plugin 'den': experience {getattr(experience, 'id', '?')} "
                                   "has no task id; DEN needs task labels")
        n = experience.n_batches(learner.batch_size, learner.epochs)
        if n is None:
            raise CompositionError("plugin 'den' splits each experience's steps between its "
                                   "parts and needs experiences of known length")
        assert self._gen is not None
        old = learner.model
        stage = len(self.head_tasks_)
        self.head_tasks_.append(int(task))
        self.n_steps_, self.step_, self.expanded_ = n, 0, False
        self.ce_sum_, self.ce_count_ = torch.zeros((), device=learner.device), 0
        if stage == 0:
            arch = _check_backbone(old)
            self.widths_ = [m.out_channels if self._arch["conv"] else m.out_features  # type: ignore[index]
                            for m in arch["layers"]]
            self.stamps_ = [[0] * w for w in self.widths_]
            net = self._net(self.widths_, self.stamps_, self.head_tasks_)
            with torch.no_grad():
                for i, m in enumerate(arch["layers"]):
                    net.weights[i].copy_(m.weight)
                    net.biases[i].copy_(m.bias)
                net.heads_w[0].copy_(arch["head"].weight)
                net.heads_b[0].copy_(arch["head"].bias)
            self.n_old_, self.prev_, self.masks_ = list(self.widths_), [], {}
            self.dead_ = [[] for _ in self.widths_]
            return net
        assert isinstance(old, DENNet)
        k = self.ex_k
        self.n_old_ = old.widths
        self.prev_ = [t.detach().clone() for pair in zip(old.weights, old.biases) for t in pair]
        self.widths_ = [w + 2 * k for w in self.n_old_]  # k expansion + k split slots, zero
        self.stamps_ = [s + [stage] * (2 * k) for s in old.stamps()]
        net = self._net(self.widths_, self.stamps_, self.head_tasks_).to(learner.device)
        with torch.no_grad():
            prev_in = self._arch["in_features"]  # type: ignore[index]
            for i, n_old in enumerate(self.n_old_):
                net.weights[i][:n_old, :prev_in] = old.weights[i]
                net.biases[i][:n_old] = old.biases[i]
                prev_in = n_old
            last = self.n_old_[-1]
            for s in range(stage):
                net.head_view(s)[:, :last] = old.head_view(s)
                net.heads_b[s].copy_(old.heads_b[s])
            hv = net.head_view(stage)
            hv[:, :last] = _init_like_linear(hv[:, :last], last * self._arch["positions"],
                                             self._gen)
            net.heads_b[stage].copy_(_init_like_linear(net.heads_b[stage], last *
                                                       self._arch["positions"], self._gen))
        self.dead_ = [[] for _ in self.widths_]
        self.masks_ = self._head_only(net, stage)
        return net

    # ------------------------------------------------------------------ masks
    def _names(self, net: DENNet) -> list[tuple[str, nn.Parameter]]:
        s = len(net.heads_w) - 1
        return [*((f"weights.{i}", w) for i, w in enumerate(net.weights)),
                *((f"biases.{i}", b) for i, b in enumerate(net.biases)),
                (f"heads_w.{s}", net.heads_w[s]), (f"heads_b.{s}", net.heads_b[s])]

    def _head_only(self, net: DENNet, stage: int) -> dict[str, Tensor]:
        masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in self._names(net)}
        masks[f"heads_w.{stage}"][:] = True
        masks[f"heads_b.{stage}"][:] = True
        self._no_reserve(net, masks)
        return masks

    def _no_reserve(self, net: DENNet, masks: dict[str, Tensor],
                    keep: Sequence[Tensor] | None = None) -> None:
        """Reserved units (``keep`` False) stay exactly zero: never trainable."""
        s = len(net.heads_w) - 1
        for i, n_old in enumerate(self.n_old_):
            unused = torch.ones(net.widths[i], dtype=torch.bool, device=masks["biases.0"].device)
            unused[:n_old] = False
            if keep is not None:
                unused &= ~keep[i]
            masks[f"weights.{i}"][unused] = False
            masks[f"biases.{i}"][unused] = False
            if i + 1 < len(net.weights):
                masks[f"weights.{i + 1}"][:, unused] = False
            else:
                view = masks[f"heads_w.{s}"].view(net.num_classes, -1, net.positions)
                view[:, unused] = False

    # ------------------------------------------------------------------ training step
    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        net = learner.model
        if not isinstance(net, DENNet):
            return None
        terms = {"den_l2": self.l2_lambda / 2 * sum(p.square().sum() for _, p in self._names(net))}
        if self.prev_:
            drift = []
            for i in range(len(net.weights)):
                pw, pb = self.prev_[2 * i], self.prev_[2 * i + 1]
                w = net.weights[i][:pw.shape[0], :pw.shape[1]]
                drift.append((w - pw).square().sum() + (net.biases[i][:pb.shape[0]] - pb)
                             .square().sum())
            terms["den_drift"] = self.regular_lambda / 2 * sum(drift)
        return terms

    @hookimpl
    def before_update(self, learner: Any, step: Any) -> None:
        if self.masks_ and isinstance(learner.model, DENNet):
            step.scratch["den"] = [p.detach().clone() for _, p in self._names(learner.model)]

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        net = learner.model
        if not isinstance(net, DENNet):
            return
        snaps = step.scratch.get("den")
        with torch.no_grad():
            for j, (name, p) in enumerate(self._names(net)):
                p.copy_(soft_threshold(p, self.l1_lambda) if self.l1_lambda else p)
                if snaps is not None:  # entries outside the current part keep their values
                    p.copy_(torch.where(self.masks_[name], p, snaps[j]))
            if self._part() == "expand":
                for i, n_old in enumerate(self.n_old_):
                    rows = slice(n_old, n_old + self.ex_k)
                    net.weights[i][rows] = group_lasso_rows(net.weights[i][rows], self.gl_lambda)
        if self._part() == "selective" and self.step_ >= self._bounds()[1] - LOSS_WINDOW:
            self.ce_sum_ = self.ce_sum_ + step.losses["ce"].detach()
            self.ce_count_ += 1
        self.step_ += 1
        self._transition(learner, net)

    def _bounds(self) -> tuple[int, int, int]:
        """Ends of the head-only, selective and expansion parts (in steps of the experience)."""
        n = self.n_steps_
        b1 = max(1, n // 10)
        r = (n - b1) // 3
        if r < 1:
            return b1, n, n
        return b1, b1 + r, b1 + 2 * r

    def _part(self) -> str:
        if len(self.head_tasks_) <= 1:
            return "first"
        b1, b2, b3 = self._bounds()
        if self.step_ < b1:
            return "head"
        if self.step_ < b2 or not self.expanded_:
            return "selective"
        return "expand" if self.step_ < b3 else "split"

    def _transition(self, learner: Any, net: DENNet) -> None:
        if len(self.head_tasks_) <= 1:
            return
        b1, b2, b3 = self._bounds()
        if self.step_ == b1:
            self._select(net)
        elif self.step_ == b2 and b2 < self.n_steps_:
            loss = float(self.ce_sum_) / max(self.ce_count_, 1)  # once per experience
            if loss >= self.loss_thr and self.ex_k > 0:
                self.expanded_ = True
                self._expand(net)
            self.history_.append({"stage": len(self.head_tasks_) - 1, "loss": loss,
                                  "expanded": self.expanded_})
        elif self.step_ == b3 and self.expanded_:
            self._prune_and_split(net)

    # ------------------------------------------------------------------ the parts
    def _select(self, net: DENNet) -> None:
        """Part 1: BFS from the new head's non-zero weights; only that sub-network trains."""
        s = len(net.heads_w) - 1
        sel = select_units([net.unit_view(i) for i in range(len(net.weights))], net.head_view(s))
        masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in self._names(net)}
        below = torch.ones(net.weights[0].shape[1], dtype=torch.bool, device=sel[0].device)
        for i, units in enumerate(sel):
            m = masks[f"weights.{i}"]
            m.view(m.shape[0], m.shape[1], -1)[:] = (units[:, None] & below[None, :])[..., None]
            masks[f"biases.{i}"][:] = units
            below = units
        masks[f"heads_w.{s}"][:] = True
        masks[f"heads_b.{s}"][:] = True
        self._no_reserve(net, masks)
        self.masks_ = masks
        self.selected_ = [int(u.sum()) for u in sel]

    def _expand(self, net: DENNet) -> None:
        """Part 2: ``ex_k`` fresh units per layer; only they and the task's head train."""
        assert self._gen is not None
        k, s = self.ex_k, len(net.heads_w) - 1
        new = []
        with torch.no_grad():
            for i, n_old in enumerate(self.n_old_):
                w = net.unit_view(i)
                unit = torch.zeros(net.widths[i], dtype=torch.bool, device=w.device)
                unit[n_old:n_old + k] = True
                new.append(unit)
                src = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
                if i > 0:  # inputs: the layer below's old and expansion units, not split slots
                    src[self.n_old_[i - 1] + k:] = False
                fan_in = int(src.sum()) * w.shape[2]
                rows = w[n_old:n_old + k]
                rows[:, src] = _init_like_linear(rows[:, src], fan_in, self._gen)
                net.biases[i][n_old:n_old + k] = _init_like_linear(
                    net.biases[i][n_old:n_old + k], fan_in, self._gen)
                if i > 0:  # outgoing from the layer below's new units into this layer's units
                    out = w[:self.n_old_[i] + k, self.n_old_[i - 1]:self.n_old_[i - 1] + k]
                    out[:self.n_old_[i]] = _init_like_linear(out[:self.n_old_[i]], fan_in,
                                                             self._gen)
            last = self.n_old_[-1]
            hv = net.head_view(s)
            hv[:, last:last + k] = _init_like_linear(hv[:, last:last + k],
                                                     hv.shape[1] * hv.shape[2], self._gen)
        masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in self._names(net)}
        for i, unit in enumerate(new):
            masks[f"weights.{i}"][unit] = True
            masks[f"biases.{i}"][unit] = True
            if i + 1 < len(net.weights):
                masks[f"weights.{i + 1}"][:, unit] = True
        masks[f"heads_w.{s}"][:] = True
        masks[f"heads_b.{s}"][:] = True
        keep = [torch.arange(net.widths[i], device=unit.device) < n + k
                for i, n in enumerate(self.n_old_)]
        self._no_reserve(net, masks, keep)
        self.masks_ = masks

    def _prune_and_split(self, net: DENNet) -> None:
        """Dead new units out; drifted old units duplicated, originals restored; all retrain."""
        k, s = self.ex_k, len(net.heads_w) - 1
        L = len(net.weights)
        with torch.no_grad():
            dead, drifted, slots = [], [], []
            for i, n_old in enumerate(self.n_old_):
                rows = net.unit_view(i)[n_old:n_old + k]
                d = n_old + torch.nonzero((rows == 0).reshape(k, -1).all(1)).flatten()
                dead.append(d)
                pw = self.prev_[2 * i]
                rho = unit_drift(net.weights[i], pw)
                cand = torch.nonzero(rho > self.spl_thr).flatten()
                top = cand[torch.argsort(rho[cand], descending=True)[:k]]
                drifted.append(top)
                slots.append(n_old + k + torch.arange(len(top), device=top.device))
            for i in range(L):  # dead units: exactly inert
                self._zero_units(net, i, dead[i], s)
            # outgoing weights (columns of the layer above / the task's head) first
            for i in range(L):
                d, c = drifted[i], slots[i]
                if not len(d):
                    continue
                if i + 1 < L:
                    w = net.unit_view(i + 1)
                    pw = self.prev_[2 * (i + 1)]
                    pv = pw.reshape(pw.shape[0], pw.shape[1], -1)
                    w[:, c] = w[:, d]
                    w[:, d] = 0
                    w[:pv.shape[0], d] = pv[:, d]
                else:
                    hv = net.head_view(s)
                    hv[:, c] = hv[:, d]
                    hv[:, d] = 0
            # incoming weights: the copy keeps the current row, the original gets W^{t-1} back
            for i in range(L):
                d, c = drifted[i], slots[i]
                if not len(d):
                    continue
                w = net.unit_view(i)
                pw, pb = self.prev_[2 * i], self.prev_[2 * i + 1]
                pv = pw.reshape(pw.shape[0], pw.shape[1], -1)
                w[c] = w[d]
                if i > 0 and len(drifted[i - 1]):  # the copy listens to the copies below
                    w[c.unsqueeze(1), drifted[i - 1].unsqueeze(0)] = 0
                net.biases[i][c] = net.biases[i][d]
                w[d] = 0
                w[d, :pv.shape[1]] = pv[d]
                net.biases[i][d] = pb[d]
        self.dead_ = [d.tolist() for d in dead]
        self.splits_ = [len(d) for d in drifted]
        masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self._names(net)}
        keep = []
        for i, n_old in enumerate(self.n_old_):
            kp = torch.arange(net.widths[i], device=masks["biases.0"].device) < n_old + k
            kp[n_old + k:n_old + k + len(slots[i])] = True
            kp[dead[i]] = False
            keep.append(kp)
        self._no_reserve(net, masks, keep)
        self.masks_ = masks

    def _zero_units(self, net: DENNet, i: int, units: Tensor, s: int) -> None:
        net.weights[i][units] = 0
        net.biases[i][units] = 0
        if i + 1 < len(net.weights):
            net.weights[i + 1][:, units] = 0
        else:
            for j in range(len(net.heads_w)):
                net.head_view(j)[:, units] = 0

    # ------------------------------------------------------------------ boundary
    @hookimpl(tryfirst=True)  # before the observers count parameters
    def after_experience(self, learner: Any, experience: Any) -> None:
        net = learner.model
        if not isinstance(net, DENNet) or len(self.head_tasks_) <= 1:
            self.masks_ = {}
            return
        k = self.ex_k
        keep = []
        for i, n_old in enumerate(self.n_old_):
            kp = torch.ones(net.widths[i], dtype=torch.bool)
            kp[n_old:] = False
            if self.expanded_:
                kp[n_old:n_old + k] = True
                kp[n_old + k:n_old + k + self.splits_[i]] = True
                kp[list(self.dead_[i])] = False
            keep.append(kp)
        if self.history_:
            split = self.splits_ if self.expanded_ else [0] * len(keep)
            self.history_[-1]["expanded_units"] = [int(kp[n:].sum()) - c for kp, n, c in
                                                   zip(keep, self.n_old_, split)]
            self.history_[-1]["split_units"] = list(split)
        self._compact(net, keep)
        self.masks_, self.prev_ = {}, []

    def _compact(self, net: DENNet, keep: Sequence[Tensor]) -> None:
        """Remove the units not kept (unused reserve, dead new units), in place."""
        dev = net.biases[0].device
        keep = [kp.to(dev) for kp in keep]
        with torch.no_grad():
            below = None
            for i, kp in enumerate(keep):
                w = net.weights[i][kp]
                if below is not None:
                    w = w[:, below]
                net.weights[i] = nn.Parameter(w.clone())
                net.biases[i] = nn.Parameter(net.biases[i][kp].clone())
                below = kp
            for s in range(len(net.heads_w)):
                hv = net.head_view(s)[:, below]
                net.heads_w[s] = nn.Parameter(hv.reshape(net.num_classes, -1).clone())
        self.widths_ = [int(kp.sum()) for kp in keep]
        self.stamps_ = [[st for st, kk in zip(stamps, kp.tolist()) if kk]
                        for stamps, kp in zip(self.stamps_, keep)]
        net.set_stamps(self.stamps_)

    # ------------------------------------------------------------------ resume
    def grown_model(self, learner: Any) -> nn.Module | None:
        """The network ``widths_`` / ``stamps_`` / ``head_tasks_`` describe (weights load next)."""
        if not self.head_tasks_:
            return None
        return self._net(self.widths_, self.stamps_, self.head_tasks_)

    def summary(self) -> dict[str, Any]:
        return {"den_stages": list(self.history_), "den_widths": list(self.widths_)}

    def state_dict(self) -> dict[str, Any]:
        gen = self._gen.get_state() if self._gen is not None else torch.Generator().get_state()
        return {"head_tasks": list(self.head_tasks_), "widths": list(self.widths_),
                "stamps": [list(s) for s in self.stamps_], "n_old": list(self.n_old_),
                "prev": [t.clone() for t in self.prev_],
                "masks": {k: v.clone() for k, v in self.masks_.items()},
                "n_steps": self.n_steps_, "step": self.step_, "ce_sum": self.ce_sum_.clone(),
                "ce_count": self.ce_count_, "expanded": self.expanded_,
                "dead": [list(d) for d in self.dead_], "splits": list(getattr(self, "splits_", [])),
                "selected": list(getattr(self, "selected_", [])),
                "history": [dict(h) for h in self.history_], "generator": gen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head_tasks_ = [int(t) for t in state["head_tasks"]]
        self.widths_ = [int(w) for w in state["widths"]]
        self.stamps_ = [[int(x) for x in s] for s in state["stamps"]]
        self.n_old_ = [int(n) for n in state["n_old"]]
        self.prev_ = [t.clone() for t in state["prev"]]
        self.masks_ = {k: v.clone() for k, v in state["masks"].items()}
        self.n_steps_, self.step_ = int(state["n_steps"]), int(state["step"])
        self.ce_sum_, self.ce_count_ = state["ce_sum"].clone(), int(state["ce_count"])
        self.expanded_ = bool(state["expanded"])
        self.dead_ = [[int(x) for x in d] for d in state["dead"]]
        self.splits_ = [int(x) for x in state["splits"]]
        self.selected_ = [int(x) for x in state["selected"]]
        self.history_ = [dict(h) for h in state["history"]]
        if self._gen is None:
            self._gen = torch.Generator()
        self._gen.set_state(state["generator"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "den", DEN)
