"""Helpers shared by the domain-adaptation plugins: feature pairs, gradient reversal, schedules.

The learner appends the target rows to its one training forward pass
(stream rows first, then replay rows, then the target rows,
``step.target_rows``), so BatchNorm layers normalize source and target
together, as in the papers' joint mini-batches; the features of a layer,
captured once (:mod:`lifelong.features`), hold both domains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError

__all__ = ["grad_reverse", "GradientReversal", "source_target", "feature_dim", "make_mlp",
           "total_steps", "dann_lambda", "dann_lr_factor", "check_layers"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-lambda_`` backward (Ganin et al. 2016, eq. 12)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """The gradient-reversal layer R_lambda.

    >>> x = torch.ones(2, requires_grad=True)
    >>> grad_reverse(x, 0.5).sum().backward()
    >>> x.grad
    tensor([-0.5000, -0.5000])
    """
    return GradientReversal.apply(x, float(lambda_))


def source_target(learner: Any, step: Any, layer: str) -> tuple[Tensor, Tensor] | None:
    """Flattened features of ``layer`` for the stream rows and the target rows (``None`` if no target)."""
    if step.target_rows is None:
        return None
    f = learner.features[layer]
    return f[: step.n_stream].flatten(1), f[step.target_rows].flatten(1)


def check_layers(learner: Any, layers: Sequence[str], owner: str) -> None:
    for name in layers:
        learner.features.request(name, owner=owner, key="layer")


@torch.no_grad()
def feature_dim(learner: Any, layer: str) -> int:
    """Width of ``layer``'s (flattened) output, from one forward of a target sample in eval mode."""
    assert learner.target is not None
    exp = next(iter(learner.target.experiences()))
    x = exp.x[:1].to(learner.device)
    was = learner.model.training
    learner.model.eval()
    learner.forward(x, None if not learner._task_conditioned else
                    torch.zeros(1, dtype=torch.long, device=learner.device))
    learner.model.train(was)
    return int(learner.features[layer][:1].flatten(1).shape[1])


def make_mlp(in_features: int, hidden: Sequence[int], out_features: int, *, seed: int,
             device: torch.device | str) -> nn.Sequential:
    """A ReLU MLP initialized from ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, out_features))
        return nn.Sequential(*layers).to(device)


def total_steps(learner: Any, stream: Any, given: int | None, owner: str) -> int:
    """Steps in the run (for progress p in [0, 1]): ``given``, else counted from the stream."""
    if given is not None:
        if given < 1:
            raise ConfigError(f"plugin {owner!r}: total_steps must be >= 1, got {given}")
        return int(given)
    n = 0
    for exp in stream.experiences():
        k = exp.n_batches(learner.batch_size, learner.epochs)
        if k is None:
            raise ConfigError(f"plugin {owner!r}: stream {stream.name!r} does not say how long "
                              "it is; set total_steps (the number of training batches)")
        n += k
    return max(n, 1)


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s adaptation factor 2 / (1 + exp(-gamma p)) - 1 (0 at p=0, towards 1).

    >>> dann_lambda(0.0), round(dann_lambda(1.0), 4)
    (0.0, 0.9999)
    """
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def dann_lr_factor(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Ganin et al.'s learning-rate annealing mu_p / mu_0 = 1 / (1 + alpha p)^beta.

    >>> dann_lr_factor(0.0), round(dann_lr_factor(1.0), 4)
    (1.0, 0.1656)
    """
    return 1.0 / (1.0 + alpha * p) ** beta


def check_positive(owner: str, **values: float) -> None:
    for k, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"plugin {owner!r}: {k} must be a finite number >= 0, got {v!r}")
