"""MMD / DAN: multi-kernel maximum mean discrepancy between source and target features.

Each step the features of every layer in ``layers`` are taken for the
stream (source) rows and the target rows of the learner's one forward
pass; the loss adds ``mmd_weight * sum_l MK-MMD^2(source_l, target_l)``.
The kernel is DAN's convex combination of Gaussian kernels
``k_u(a, b) = exp(-||a - b||^2 / gamma_u)`` whose bandwidths ``gamma_u``
run from ``2^-8 gamma`` to ``2^8 gamma`` in steps of ``2^(1/2)`` (17
kernels with the defaults), ``gamma`` being the median pairwise squared
distance of the joint batch (the median heuristic; taken without
gradient, recomputed each step and layer). The estimator is the paper's
unbiased linear-time one (``estimator="linear"``, eq. 6: a sum over
quadruples) or the quadratic biased one (``"quadratic"``, always >= 0).

Long, Cao, Wang & Jordan, "Learning Transferable Features with Deep
Adaptation Networks", ICML 2015. Defaults: ``layers=("body", "head")``
(DAN adapts the task-specific last layers, fc6-fc8; here the last hidden
layer and the output layer); ``mmd_weight=1.0`` (the paper's penalty
lambda; it is chosen per task in the paper); ``octaves=8`` and
``step=0.5`` (bandwidths ``2^-8 .. 2^8`` times ``gamma`` with steps of
``2^(1/2)``); ``estimator="linear"``.

Not as in the paper: DAN learns the kernel weights beta by a quadratic
program that maximizes the test power; here they are uniform
(``beta_u = 1 / m``).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([MMD()], stream).fit(stream)
>>> learner.plugins[0].layers
('body', 'head')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.domain._common import check_positive, source_target

__all__ = ["MMD", "mk_mmd", "kernel_scales", "median_gamma"]

ESTIMATORS = ("linear", "quadratic")


def kernel_scales(octaves: float = 8.0, step: float = 0.5) -> Tensor:
    """Bandwidth multipliers ``2^k`` for ``k`` in ``-octaves, -octaves + step, ..., octaves``.

    >>> kernel_scales(1.0, 0.5).tolist()
    [0.5, 0.7071067690849304, 1.0, 1.4142135381698608, 2.0]
    """
    n = int(round(2 * octaves / step)) + 1
    return 2.0 ** torch.linspace(-octaves, octaves, n)


def median_gamma(z: Tensor) -> Tensor:
    """The median of the pairwise squared distances between distinct rows of ``z`` (no gradient).

    >>> median_gamma(torch.tensor([[0.0], [1.0], [3.0]]))
    tensor(4.)
    """
    with torch.no_grad():
        d2 = torch.cdist(z, z).pow(2)
        n = z.shape[0]
        off = d2[~torch.eye(n, dtype=torch.bool, device=z.device)]
        return off.median().clamp_min(1e-12)


def _kernel(d2: Tensor, gammas: Tensor) -> Tensor:
    """Mean over the kernel family of ``exp(-d2 / gamma_u)`` (uniform beta)."""
    return torch.exp(-d2.unsqueeze(-1) / gammas).mean(-1)


def mk_mmd(source: Tensor, target: Tensor, *, scales: Tensor | None = None,
           estimator: str = "linear", gamma: Tensor | float | None = None) -> Tensor:
    """Multi-kernel MMD^2 between rows of ``source`` and ``target`` (same width).

    ``gamma`` defaults to :func:`median_gamma` of both sets together. The
    linear-time estimator uses ``n = 2 * floor(min(n_s, n_t) / 2)`` rows of each.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"mmd: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    scales = kernel_scales() if scales is None else scales
    if gamma is None:
        gamma = median_gamma(torch.cat([source, target]))
    gammas = torch.as_tensor(gamma, dtype=source.dtype, device=source.device) * scales.to(source)
    if estimator == "quadratic":
        kss = _kernel(torch.cdist(source, source).pow(2), gammas).mean()
        ktt = _kernel(torch.cdist(target, target).pow(2), gammas).mean()
        kst = _kernel(torch.cdist(source, target).pow(2), gammas).mean()
        return kss + ktt - 2 * kst
    m = min(len(source), len(target)) // 2 * 2
    x1, x2, y1, y2 = source[0:m:2], source[1:m:2], target[0:m:2], target[1:m:2]

    def k(a: Tensor, b: Tensor) -> Tensor:
        return _kernel((a - b).pow(2).sum(1), gammas)

    return (k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)).mean()


class MMD:
    """DAN's multi-kernel MMD between source and target features of chosen layers."""

    name = "mmd"
    requires = ("target",)

    def __init__(self, *, layers: Sequence[str] = ("body", "head"), mmd_weight: float = 1.0,
                 octaves: float = 8.0, step: float = 0.5, estimator: str = "linear") -> None:
        check_positive("mmd", mmd_weight=mmd_weight, octaves=octaves)
        if not (isinstance(step, (int, float)) and step > 0):
            raise ConfigError(f"plugin 'mmd': step must be > 0, got {step!r}")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"plugin 'mmd': estimator must be one of {ESTIMATORS}, "
                              f"got {estimator!r}")
        if isinstance(layers, str) or not layers:
            raise ConfigError("plugin 'mmd': layers must be a non-empty list of module names, "
                              f"got {layers!r}")
        self.layers = layers
        self.mmd_weight = mmd_weight
        self.octaves = octaves
        self.step = step
        self.estimator = estimator

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        for name in self.layers:
            learner.features.request(name, owner=self.name)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        if step.target_rows is None or step.n_stream < 2:
            return None
        scales = kernel_scales(self.octaves, self.step).to(learner.device)
        total = None
        for name in self.layers:
            pair = source_target(learner, step, name)
            assert pair is not None
            term = mk_mmd(*pair, scales=scales, estimator=self.estimator)
            total = term if total is None else total + term
        assert total is not None
        return {"mmd": self.mmd_weight * total}


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "mmd", MMD)
