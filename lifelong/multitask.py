"""Multi-output backbones: one output per task of a multi-target stream.

* :class:`SharedBottom` — hard parameter sharing (Caruana 1997): the body of
  an ``mlp``, ``cnn`` or ``resnet`` shared by every task, one linear head per
  task.
* :class:`CrossStitch` — cross-stitch networks (Misra, Shrivastava, Gupta &
  Hebert, "Cross-stitch networks for multi-task learning", CVPR 2016): one
  copy of the base network per task; after each chosen stage a cross-stitch
  unit mixes the tasks' activations channel by channel,
  ``x~_t[c] = sum_s alpha[c, t, s] x_s[c]``. Paper defaults: ``alpha_same=0.9``,
  ``alpha_diff=0.1`` (Sec. 4.1, the initialization that worked best), and a
  learning rate for the units ``10^3`` times the base rate (Sec. 4.1, their
  ablation of 1 to 10^3), given through :meth:`CrossStitch.lr_multipliers`.

Both return ``{task name: output}`` and expose what the per-task gradient
methods (:mod:`lifelong.plugins.multitask`) need: ``shared_parameters()``
(parameters every task's loss reaches), ``last_shared_parameters()``
(GradNorm's last shared layer) and ``representation`` (the module whose
output is the shared representation ``z`` of MGDA-UB; ``None`` for
cross-stitch networks, which have none).

Examples
--------
>>> import torch
>>> from lifelong.stream.base import TaskSpec
>>> tasks = (TaskSpec("digit", "classification", 10), TaskSpec("ink", "regression", 1))
>>> model = shared_bottom(input_shape=(1, 8, 8), num_classes=10, tasks=tasks, hidden=[16])
>>> {k: tuple(v.shape) for k, v in model(torch.rand(3, 1, 8, 8)).items()}
{'digit': (3, 10), 'ink': (3, 1)}
>>> net = cross_stitch(input_shape=(1, 8, 8), num_classes=10, tasks=tasks, hidden=[16, 16])
>>> net.lr_multipliers(), tuple(net.stitch["0"].alpha.shape)
({'stitch': 1000.0}, (16, 2, 2))
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lifelong.backbones import cnn, mlp, resnet
from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.stream.base import TaskSpec

__all__ = ["SharedBottom", "CrossStitch", "CrossStitchUnit", "shared_bottom", "cross_stitch",
           "grow_heads"]

BASES = ("mlp", "cnn", "resnet")


def _base(base: str, input_shape: Sequence[int], hidden: list[int] | None,
          channels: list[int] | None, nf: int, where: str) -> nn.Module:
    if base not in BASES:
        raise ConfigError(f"backbone {where!r}: base must be one of {', '.join(BASES)}, "
                          f"got {base!r}")
    if base == "mlp":
        return mlp(input_shape=input_shape, num_classes=1, hidden=hidden)
    if base == "cnn":
        return cnn(input_shape=input_shape, num_classes=1, channels=channels)
    return resnet(input_shape=input_shape, num_classes=1, nf=nf)


def _tasks(tasks: Sequence[TaskSpec] | None, where: str) -> tuple[TaskSpec, ...]:
    tasks = tuple(tasks or ())
    if not tasks:
        raise ConfigError(f"backbone {where!r} has one head per task, but the stream has one "
                          "target per sample; use it with a multi-target stream "
                          "(e.g. multi_mnist) or use backbone mlp/cnn/resnet")
    return tasks


def _last_layer(module: nn.Module) -> nn.Module:
    last = None
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    assert last is not None, "the shared body has no linear or convolutional layer"
    return last


class SharedBottom(nn.Module):
    """Hard parameter sharing: ``shared`` body, then one linear head per task."""

    representation = "shared"

    def __init__(self, body: nn.Module, width: int, tasks: Sequence[TaskSpec]) -> None:
        super().__init__()
        self.shared = body
        self.heads = nn.ModuleDict({t.name: nn.Linear(width, t.size) for t in tasks})

    def features(self, x: Tensor) -> Tensor:
        return self.shared(x)

    def add_head(self, task: TaskSpec, *, seed: int) -> None:
        """A new task's linear head, initialized as ``nn.Linear`` does, from a generator seeded
        with ``seed`` (the global RNG is left as it was), on the body's device."""
        ref = next(iter(self.heads.values())).weight
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = nn.Linear(ref.shape[1], task.size)
        self.heads[task.name] = head.to(device=ref.device, dtype=ref.dtype)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.shared(x)
        return {name: head(z) for name, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.shared.parameters() if p.requires_grad]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [_last_layer(self.shared).weight]


class CrossStitchUnit(nn.Module):
    """``out_t[:, c] = sum_s alpha[c, t, s] * x_s[:, c]`` for every channel ``c``."""

    def __init__(self, channels: int, n_tasks: int, *, alpha_same: float, alpha_diff: float) -> None:
        super().__init__()
        eye = torch.eye(n_tasks, dtype=torch.bool)
        alpha = torch.where(eye, alpha_same, alpha_diff).expand(channels, n_tasks, n_tasks)
        self.alpha = nn.Parameter(alpha.clone().float())

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        x = torch.stack(xs, 1)  # (B, T, C, ...)
        flat = x.reshape(x.shape[0], x.shape[1], x.shape[2], -1)
        out = torch.einsum("cts,bscl->btcl", self.alpha, flat).reshape(x.shape)
        return list(out.unbind(1))


def _stages(net: nn.Module, base: str) -> tuple[list[nn.Module], list[int], nn.Module]:
    """Split a base network into stages (with their output channels) and a tail."""
    if base == "resnet":
        stages: list[nn.Module] = [net.stem]
        chans = [net.stem[0].out_channels]
        group: list[nn.Module] = []
        for block in net.layers:
            if group and block.conv1.stride != (1, 1):
                stages.append(nn.Sequential(*group))
                chans.append(group[-1].conv2.out_channels)
                group = []
            group.append(block)
        stages.append(nn.Sequential(*group))
        chans.append(group[-1].conv2.out_channels)
        tail: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return stages, chans, tail
    layers = list(net.body)
    if base == "cnn":
        layers, tail = layers[:-1], layers[-1]  # the trailing Flatten
        kind: type = nn.Conv2d
    else:
        tail, kind = nn.Identity(), nn.Linear
    stages, chans, cur = [], [], []
    for m in layers:
        if isinstance(m, kind) and any(isinstance(c, kind) for c in cur):
            stages.append(nn.Sequential(*cur))
            cur = []
        cur.append(m)
        if isinstance(m, kind):
            chans.append(m.out_channels if kind is nn.Conv2d else m.out_features)
    stages.append(nn.Sequential(*cur))
    return stages, chans, tail


class CrossStitch(nn.Module):
    """One column per task; cross-stitch units after the stages in ``stitch_after``."""

    representation = None

    def __init__(self, net: nn.Module, base: str, width: int, tasks: Sequence[TaskSpec], *,
                 stitch_after: Sequence[int], alpha_same: float, alpha_diff: float,
                 stitch_lr: float) -> None:
        super().__init__()
        stages, chans, tail = _stages(net, base)
        self.columns = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(s) for s in stages) for _ in tasks)
        self.tail = tail
        self.stitch = nn.ModuleDict({
            str(i): CrossStitchUnit(chans[i], len(tasks), alpha_same=alpha_same,
                                    alpha_diff=alpha_diff) for i in stitch_after})
        self.heads = nn.ModuleDict({t.name: nn.Linear(width, t.size) for t in tasks})
        self.stitch_lr = stitch_lr

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        xs = [x] * len(self.columns)
        for i in range(len(self.columns[0])):
            xs = [col[i](h) for col, h in zip(self.columns, xs)]
            unit = self.stitch[str(i)] if str(i) in self.stitch else None
            if unit is not None:
                xs = unit(xs)
        return {name: head(self.tail(h)) for (name, head), h in zip(self.heads.items(), xs)}

    def lr_multipliers(self) -> dict[str, float]:
        """The cross-stitch units learn at ``stitch_lr`` times the base rate (paper: 10^3)."""
        return {"stitch": float(self.stitch_lr)} if len(self.stitch) else {}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters()
                if not n.startswith("heads.") and p.requires_grad]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [_last_layer(col[-1]).weight for col in self.columns]


def grow_heads(model: nn.Module, tasks: Sequence[TaskSpec], *, seed: int) -> list[str]:
    """Give ``model`` a head for each task of ``tasks`` it has none for (a task arriving with
    a new experience); returns their names. Existing heads are never touched. Task ``k`` of
    the stream's list gets its initialization from seed ``seed * 1_000_003 + k`` (the same
    head whenever it grows, so a resumed run rebuilds it before loading its weights)."""
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict):
        return []
    grown = []
    for k, t in enumerate(tasks):
        if t.name in heads:
            continue
        if not hasattr(model, "add_head"):
            raise ConfigError(f"task {t.name!r} arrives, but the model "
                              f"({type(model).__name__}) cannot grow a head for it; use "
                              "backbone shared_bottom")
        model.add_head(t, seed=(seed * 1_000_003 + k) % 2**63)
        grown.append(t.name)
    return grown


def _width(net: nn.Module) -> int:
    return int(net.head.in_features)


def shared_bottom(*, input_shape: Sequence[int], num_classes: int,
                  tasks: Sequence[TaskSpec] | None = None, base: str = "mlp",
                  hidden: list[int] | None = None, channels: list[int] | None = None,
                  nf: int = 20) -> SharedBottom:
    """Hard parameter sharing: the body of ``base`` (mlp, cnn, resnet) and one head per task."""
    del num_classes
    tasks = _tasks(tasks, "shared_bottom")
    net = _base(base, input_shape, hidden, channels, nf, "shared_bottom")
    width = _width(net)
    net.head = nn.Identity()
    return SharedBottom(net, width, tasks)


def cross_stitch(*, input_shape: Sequence[int], num_classes: int,
                 tasks: Sequence[TaskSpec] | None = None, base: str = "mlp",
                 hidden: list[int] | None = None, channels: list[int] | None = None,
                 nf: int = 20, stitch_after: list[int] | None = None, alpha_same: float = 0.9,
                 alpha_diff: float = 0.1, stitch_lr: float = 1000.0) -> CrossStitch:
    """Cross-stitch network (Misra et al. 2016): one ``base`` column per task, stitched."""
    del num_classes
    tasks = _tasks(tasks, "cross_stitch")
    net = _base(base, input_shape, hidden, channels, nf, "cross_stitch")
    stages, _, _ = _stages(net, base)
    after = list(range(len(stages))) if stitch_after is None else list(stitch_after)
    bad = [i for i in after if not isinstance(i, int) or isinstance(i, bool)
           or not 0 <= i < len(stages)]
    if bad or len(set(after)) != len(after):
        raise ConfigError(f"backbone 'cross_stitch': stitch_after={after!r} must list distinct "
                          f"stage indices in [0, {len(stages) - 1}] ({base} has {len(stages)} "
                          "stages)")
    for key, v in (("alpha_same", alpha_same), ("alpha_diff", alpha_diff)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v == v:
            raise ConfigError(f"backbone 'cross_stitch': {key} must be a number, got {v!r}")
    if not isinstance(stitch_lr, (int, float)) or not stitch_lr >= 0:
        raise ConfigError(f"backbone 'cross_stitch': stitch_lr must be >= 0, got {stitch_lr!r}")
    return CrossStitch(net, base, _width(net), tasks, stitch_after=after,
                       alpha_same=float(alpha_same), alpha_diff=float(alpha_diff),
                       stitch_lr=float(stitch_lr))


@hookimpl
def register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add("backbone", "shared_bottom", shared_bottom)
    registry.add("backbone", "cross_stitch", cross_stitch)
