"""PNN: progressive neural networks, one frozen column per past task, lateral adapters.

Each new task gets a fresh column (a copy of the backbone's architecture,
freshly initialized); the columns of earlier tasks are frozen (no gradient,
no optimizer state, evaluation mode: BatchNorm statistics and dropout do
not change). Every layer ``i >= 2`` of the new column ``k`` also receives the
activations of layer ``i-1`` of every earlier column through the paper's
non-linear adapter (eq. 2)::

    h_i^(k) = f( W_i^(k) h_{i-1}^(k) + U_i^(k) relu( V_i^(k) (alpha_i^(k) h_{i-1}^(<k)) ) )

``h^(<k)`` is the concatenation of the earlier columns' activations, ``alpha``
a learned scalar, ``V`` a projection from ``(k-1) n_{i-1}`` down to ``n_{i-1}``
units (a 1x1 convolution on feature maps), ``U`` the lateral weights, shaped
like the layer ``W`` they add to (a convolution with ``W``'s kernel and
stride on feature maps). Predictions for task ``t`` are read from task
``t``'s column (task-conditioned inference: the stream must give task ids).
A task without a column yet (a future task in the accuracy matrix) is
answered by the newest column.

Backbones: ``mlp`` (one stage per linear layer), ``cnn`` (one per
conv-ReLU-pool block, then the head) and ``resnet`` (the stem, one stage
per residual block: the lateral joins the block's sum before its ReLU, then
the head on the pooled features).

Rusu, Rabinowitz, Desjardins, Soyer, Kirkpatrick, Kavukcuoglu, Pascanu &
Hadsell, "Progressive Neural Networks", arXiv:1606.04671, 2016. Parameters:
``alpha_init=0.1``: the paper initializes each alpha "by a random small
value" and gives no number; alpha is drawn uniformly from ``[0, alpha_init]``.
``adapters=True`` (the paper's non-linear adapters; ``False`` gives its plain
linear laterals ``U h^(<k)``, eq. 1). ``seed``: the new columns'
initialization (a private generator; the global RNG is never touched).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_labels=True)
>>> learner = make_learner([PNN()], stream).fit(stream)
>>> learner.model.n_columns
3
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lifelong.backbones import MLP, ReducedResNet18, SmallCNN, _BasicBlock
from lifelong.errors import CompositionError, ConfigError
from lifelong.hookspecs import hookimpl

__all__ = ["PNN", "ProgressiveNet", "Adapter", "column_stages", "reinit_"]


class _Stage(nn.Module):
    """One layer of a column: ``layer`` gives the pre-activation, ``post`` the activation after."""

    def __init__(self, layer: nn.Module, post: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.layer = layer
        self.post = nn.Sequential(*post)


class _BlockPre(nn.Module):
    """A residual block up to (not including) its final ReLU: the lateral joins that sum."""

    def __init__(self, block: _BasicBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        b = self.block
        return b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))) + b.shortcut(x)


class _PoolFlatten(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def column_stages(backbone: nn.Module) -> nn.ModuleList:
    """Split a built-in backbone into the stages a column is made of (its modules, not copies)."""
    if isinstance(backbone, MLP | SmallCNN):
        stages: list[_Stage] = []
        pre: list[nn.Module] = []
        for m in backbone.body:
            if isinstance(m, nn.Linear | nn.Conv2d):
                stages.append(_Stage(nn.Sequential(*pre, m)))
                pre = []
            elif stages:
                stages[-1].post.append(m)
            else:
                pre.append(m)
        if pre:  # a Flatten before the head and no parametric layer before it
            stages.append(_Stage(nn.Sequential(*pre, backbone.head)))
        else:
            stages.append(_Stage(backbone.head))
        return nn.ModuleList(stages)
    if isinstance(backbone, ReducedResNet18):
        stages = [_Stage(backbone.stem)]
        blocks = list(backbone.layers)
        for j, b in enumerate(blocks):
            post: list[nn.Module] = [nn.ReLU()]
            if j == len(blocks) - 1:
                post.append(_PoolFlatten())
            stages.append(_Stage(_BlockPre(b), post))
        stages.append(_Stage(backbone.head))
        return nn.ModuleList(stages)
    raise ConfigError(f"plugin 'pnn' builds its columns from the backbones mlp, cnn and resnet; "
                      f"got {type(backbone).__name__}: use one of those backbones")


def _last_param_layer(layer: nn.Module) -> nn.Module:
    """The module whose shape the lateral weights ``U`` copy (linear, conv or residual block)."""
    if isinstance(layer, _BlockPre):
        return layer.block
    if isinstance(layer, nn.Sequential):
        params = [m for m in layer if isinstance(m, nn.Linear | nn.Conv2d)]
        return params[-1] if params else layer[-1]
    return layer


def _in_width(layer: nn.Module) -> int:
    m = _last_param_layer(layer)
    if isinstance(m, nn.Linear):
        return m.in_features
    if isinstance(m, nn.Conv2d):
        return m.in_channels
    if isinstance(m, _BasicBlock):
        return m.conv1.in_channels
    if isinstance(m, nn.Sequential):  # the resnet stem
        return m[0].in_channels
    raise ConfigError(f"plugin 'pnn': cannot find the input width of {type(m).__name__}")


def _lateral_weights(layer: nn.Module) -> nn.Module:
    """``U``: maps ``n_{i-1}`` units to the layer's output, shaped like the layer's own weights."""
    m = _last_param_layer(layer)
    if isinstance(m, nn.Linear):
        return nn.Linear(m.in_features, m.out_features, bias=False)
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                         bias=False)
    if isinstance(m, _BasicBlock):
        c = m.conv1
        return nn.Conv2d(c.in_channels, m.conv2.out_channels, c.kernel_size, c.stride,
                         c.padding, bias=False)
    raise ConfigError(f"plugin 'pnn': no lateral connection for a {type(m).__name__} layer")


class Adapter(nn.Module):
    """The non-linear lateral adapter ``U relu(V (alpha h^(<k)))`` into one layer (eq. 2).

    ``h^(<k)`` has ``n_prev * width`` features (or channels, on feature maps);
    ``V`` projects them to ``width`` (a 1x1 convolution on maps). With
    ``nonlinear=False`` it is the plain lateral ``U h^(<k)`` of eq. 1 (``U`` then
    takes all ``n_prev * width`` inputs).
    """

    def __init__(self, layer: nn.Module, n_prev: int, *, nonlinear: bool = True) -> None:
        super().__init__()
        width = _in_width(layer)
        u = _lateral_weights(layer)
        conv = isinstance(u, nn.Conv2d)
        self.nonlinear = nonlinear
        if nonlinear:
            self.alpha = nn.Parameter(torch.ones(()))
            self.V = (nn.Conv2d(n_prev * width, width, 1) if conv
                      else nn.Linear(n_prev * width, width))
            self.U = u
        else:
            if conv:
                self.U = nn.Conv2d(n_prev * width, u.out_channels, u.kernel_size, u.stride,
                                   u.padding, bias=False)
            else:
                self.U = nn.Linear(n_prev * width, u.out_features, bias=False)

    def forward(self, h_prev: Tensor) -> Tensor:
        if not self.nonlinear:
            return self.U(h_prev)
        return self.U(F.relu(self.V(self.alpha * h_prev)))


def reinit_(module: nn.Module, generator: torch.Generator, *, alpha_init: float = 0.1) -> None:
    """Fresh weights for ``module`` from ``generator`` (PyTorch's default init, seeded).

    Linear / conv weights: Kaiming-uniform with ``a = sqrt(5)``, biases uniform in
    ``+-1/sqrt(fan_in)`` (``nn.Linear.reset_parameters``); BatchNorm: ones, zeros and
    fresh running statistics; adapter scalars ``alpha ~ U[0, alpha_init]``.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in = m.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.reset_parameters()
            if isinstance(m, Adapter) and m.nonlinear:
                m.alpha.copy_(torch.rand((), generator=generator, device=m.alpha.device)
                              * alpha_init)


class ProgressiveNet(nn.Module):
    """Columns (one per task) with lateral adapters; ``forward(x, task)`` reads task's column.

    ``columns[k]`` is a list of stages; ``adapters[k-1][i-1]`` feeds the earlier
    columns' stage ``i-1`` output into column ``k``'s stage ``i``. ``column_tasks[k]``
    is the task id column ``k`` was trained for. Only the newest column and its
    adapters train (``lr_multipliers`` freezes the rest; ``train()`` keeps them in
    evaluation mode).
    """

    task_conditioned = True

    def __init__(self, columns: Sequence[nn.ModuleList], adapters: Sequence[nn.ModuleList],
                 column_tasks: Sequence[int]) -> None:
        super().__init__()
        if len(columns) != len(column_tasks) or len(adapters) != max(len(columns) - 1, 0):
            raise ValueError("one task per column and one adapter list per column after the first")
        self.columns = nn.ModuleList(columns)
        self.adapters = nn.ModuleList(adapters)
        self.column_tasks = [int(t) for t in column_tasks]
        self.register_buffer("_route", self._routing(), persistent=False)

    def _routing(self) -> Tensor:
        """``route[task] = column`` for every task id up to the largest seen (-1: none)."""
        n = max(self.column_tasks) + 1 if self.column_tasks else 0
        route = torch.full((n + 1,), -1, dtype=torch.long)
        for k, t in enumerate(self.column_tasks):  # a recurring task id reads its newest column
            route[t] = k
        return route

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    def lr_multipliers(self) -> dict[str, float]:
        """Every column but the newest (and their adapters) frozen: multiplier 0."""
        out = {f"columns.{k}": 0.0 for k in range(self.n_columns - 1)}
        out.update({f"adapters.{k}": 0.0 for k in range(len(self.adapters) - 1)})
        return out

    def train(self, mode: bool = True) -> ProgressiveNet:
        super().train(mode)
        for k in range(self.n_columns - 1):  # frozen columns: no BN statistics, no dropout
            self.columns[k].eval()
        for k in range(len(self.adapters) - 1):
            self.adapters[k].eval()
        return self

    def column_outputs(self, x: Tensor) -> list[Tensor]:
        """Every column's output for ``x`` (a list, column order)."""
        hs: list[list[Tensor]] = []
        outs = []
        for k, col in enumerate(self.columns):
            h = x
            hk: list[Tensor] = []
            for i, stage in enumerate(col):
                z = stage.layer(h)
                if k > 0 and i > 0:
                    prev = torch.cat([hs[j][i - 1] for j in range(k)], 1)
                    z = z + self.adapters[k - 1][i - 1](prev)
                h = stage.post(z)
                hk.append(h)
            hs.append(hk)
            outs.append(h)
        return outs

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        outs = self.column_outputs(x)
        if len(outs) == 1:
            return outs[0]
        stacked = torch.stack(outs)
        newest = len(outs) - 1
        if task is None:
            return stacked[newest]
        route = self._route
        t = torch.where((task >= 0) & (task < route.numel() - 1), task, route.numel() - 1)
        col = route[t]
        col = torch.where(col < 0, newest, col)
        return stacked[col, torch.arange(x.shape[0], device=x.device)]


def new_column(template: nn.Module, generator: torch.Generator | None) -> nn.ModuleList:
    """A column shaped like ``template``: its own weights (``generator is None``) or fresh ones."""
    backbone = copy.deepcopy(template)
    if generator is not None:
        reinit_(backbone, generator)
    return column_stages(backbone)


def new_adapters(column: nn.ModuleList, n_prev: int, generator: torch.Generator, *,
                 nonlinear: bool, alpha_init: float) -> nn.ModuleList:
    """The adapters into stages 1.. of ``column`` from ``n_prev`` earlier columns."""
    ads = nn.ModuleList([Adapter(stage.layer, n_prev, nonlinear=nonlinear)
                         for stage in list(column)[1:]])
    reinit_(ads, generator, alpha_init=alpha_init)
    return ads


class PNN:
    """Progressive networks: a new column per task, earlier columns frozen, lateral adapters."""

    name = "pnn"
    requires = ("boundaries", "task_labels")
    requires_hint = "progressive networks add one column per announced task and need task ids"
    owns = ()

    def __init__(self, *, alpha_init: float = 0.1, adapters: bool = True, seed: int = 0) -> None:
        if not (alpha_init >= 0 and math.isfinite(alpha_init)):
            raise ConfigError(f"plugin 'pnn': alpha_init must be a finite number >= 0, got "
                              f"{alpha_init}")
        self.alpha_init = alpha_init
        self.adapters = adapters
        self.seed = seed
        self.column_tasks_: list[int] = []
        self._template: nn.Module | None = None
        self._gen: torch.Generator | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        if not stream.task_aware:
            raise CompositionError(f"plugin 'pnn' adds one column per announced task; stream "
                                   f"{stream.name!r} is task-free: use a task-aware stream with "
                                   "task labels")
        model = learner.model
        if isinstance(model, ProgressiveNet):
            raise CompositionError("plugin 'pnn': the model is already a progressive network; "
                                   "start from a plain backbone")
        column_stages(copy.deepcopy(model))  # unsupported backbones fail here, before any batch
        self._template = copy.deepcopy(model).cpu()
        self._gen = torch.Generator().manual_seed(self.seed)

    @hookimpl
    def expand_model(self, learner: Any, experience: Any) -> nn.Module | None:
        task = experience.task_id if experience is not None else None
        if task is None:
            raise CompositionError(f"plugin 'pnn': experience {getattr(experience, 'id', '?')} "
                                   "has no task id; progressive networks need task labels")
        old = learner.model
        self.column_tasks_.append(int(task))
        return self._grow(old if isinstance(old, ProgressiveNet) else None, self._gen,
                          learner.model)

    def _grow(self, old: ProgressiveNet | None, gen: torch.Generator | None,
              current: nn.Module) -> ProgressiveNet:
        assert self._template is not None
        if old is None:  # the first column is the backbone itself, with its own weights
            first = column_stages(current)
            return ProgressiveNet([first], [], self.column_tasks_[:1])
        assert gen is not None
        dev = next(old.parameters()).device
        # building nn.Linear runs its default init on the global generator before reinit_
        # overwrites it from ``gen``: fork it, so the run's global RNG is not advanced
        with torch.random.fork_rng(devices=[]):
            col = new_column(self._template, gen).to(dev)
            ads = new_adapters(col, old.n_columns, gen, nonlinear=self.adapters,
                               alpha_init=self.alpha_init).to(dev)
        return ProgressiveNet([*old.columns, col], [*old.adapters, ads],
                              self.column_tasks_[:old.n_columns + 1])

    def grown_model(self, learner: Any) -> nn.Module | None:
        """The network with ``len(column_tasks_)`` columns (weights: the checkpoint's, loaded next)."""
        if not self.column_tasks_:
            return None
        assert self._template is not None
        scratch = torch.Generator().manual_seed(0)  # placeholder weights, overwritten on load
        net = self._grow(None, None, copy.deepcopy(self._template))
        for _ in range(1, len(self.column_tasks_)):
            net = self._grow(net, scratch, net)
        return net

    def state_dict(self) -> dict[str, Any]:
        gen = self._gen.get_state() if self._gen is not None else torch.Generator().get_state()
        return {"column_tasks": list(self.column_tasks_), "generator": gen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.column_tasks_ = [int(t) for t in state["column_tasks"]]
        if self._gen is None:
            self._gen = torch.Generator()
        self._gen.set_state(state["generator"])


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "pnn", PNN)
