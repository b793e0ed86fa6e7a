"""MGDA-UB: the shared update is the min-norm convex combination of the task gradients.

Sener & Koltun, "Multi-task learning as multi-objective optimization",
NeurIPS 2018. The task weights ``alpha`` minimize ``||sum_t alpha_t g_t||^2``
over the simplex (eq. 3): for two tasks in closed form (Algorithm 1,
``alpha = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1)``), for more by
Frank-Wolfe (Algorithm 2) started at the best pair, with the exact line
search between the iterate and the best vertex. MGDA-UB (Sec. 3.3) takes
``g_t`` on the shared representation ``z`` (the output of the model's
``representation`` module, its gradient for every row of the batch), an
upper bound whose min-norm point needs one backward per task through the
heads only; ``on="parameters"`` takes the gradients on the shared
parameters instead (the exact MGDA of Sec. 3.2; cross-stitch networks have
no shared representation). The shared parameters then step on
``sum_t alpha_t grad L_t`` and every head on its own task's gradient
(Algorithm 2). It owns the gradient stage: only the task gradients' sum
is replaced, other loss terms keep theirs; it refuses a loss-weighting
plugin. Defaults from the authors' solver: ``max_iter=250``,
``tol=1e-5``. No gradient normalization (the paper's algorithm has none).

Examples
--------
>>> from lifelong.testing import tiny_multitask_stream, make_learner
>>> stream = tiny_multitask_stream()
>>> plugin = MGDAUB()
>>> _ = make_learner([plugin], stream).fit(stream)
>>> round(float(plugin.alpha_.sum()), 4)
1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lifelong.errors import CompositionError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.multitask._gradients import (
    add_to_grads,
    refuse_decider,
    shared_parameters,
    task_gradients,
    task_losses,
)

__all__ = ["MGDAUB", "min_norm_weights", "min_norm_pair"]

ON = ("representation", "parameters")


def min_norm_pair(v11: Tensor, v12: Tensor, v22: Tensor) -> Tensor:
    """``gamma`` in [0, 1] minimizing ``||gamma v1 + (1 - gamma) v2||^2`` from the inner products."""
    denom = v11 + v22 - 2 * v12
    gamma = (v22 - v12) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, gamma.clamp(0.0, 1.0), torch.full_like(gamma, 0.5))


def min_norm_weights(gram: Tensor, *, max_iter: int = 250, tol: float = 1e-5) -> Tensor:
    """``alpha`` on the simplex minimizing ``alpha^T gram alpha`` (``gram = G G^T``).

    Two tasks: closed form. More: Frank-Wolfe from the best pair, stopping once
    ``alpha`` moves less than ``tol`` (L1). On the CPU the (T, T) problem is
    solved with numpy (a tiny matrix: numpy's per-operation cost is far lower);
    on an accelerator the same steps run in torch, ``max_iter`` of them, with
    nothing read back.
    """
    n = gram.shape[0]
    if n == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    d = gram.diagonal()
    if n == 2:
        g = min_norm_pair(d[0], gram[0, 1], d[1])
        return torch.stack([g, 1 - g])
    if gram.device.type == "cpu":
        return torch.from_numpy(_frank_wolfe_numpy(gram.double().numpy(), max_iter, tol)).to(
            gram.dtype)
    return _frank_wolfe_torch(gram, max_iter)


def _best_pair_cost(gam: Any, d: Any, gram: Any) -> Any:
    return gam ** 2 * d[:, None] + 2 * gam * (1 - gam) * gram + (1 - gam) ** 2 * d[None, :]


def _frank_wolfe_numpy(gram: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    n = len(gram)
    d = np.diag(gram)
    denom = d[:, None] + d[None, :] - 2 * gram
    safe = np.where(denom > 0, denom, 1.0)
    gam = np.where(denom > 0, np.clip((d[None, :] - gram) / safe, 0.0, 1.0), 0.5)
    cost = _best_pair_cost(gam, d, gram) + np.diag(np.full(n, np.inf))
    i, j = divmod(int(np.argmin(cost)), n)
    alpha = np.zeros(n)
    alpha[i], alpha[j] = gam[i, j], 1 - gam[i, j]
    for _ in range(max_iter):
        m_alpha = gram @ alpha
        t = int(np.argmin(m_alpha))
        v11, v12, v22 = alpha @ m_alpha, m_alpha[t], gram[t, t]
        den = v11 + v22 - 2 * v12
        gamma = min(max((v22 - v12) / den, 0.0), 1.0) if den > 0 else 0.5
        new = gamma * alpha
        new[t] += 1 - gamma
        if np.abs(new - alpha).sum() < tol:
            return new
        alpha = new
    return alpha


def _frank_wolfe_torch(gram: Tensor, max_iter: int) -> Tensor:
    n = gram.shape[0]
    d = gram.diagonal()
    gam = min_norm_pair(d[:, None], gram, d[None, :])  # weight on i for the pair (i, j)
    cost = _best_pair_cost(gam, d, gram)
    cost = cost + torch.diag(torch.full((n,), float("inf"), dtype=gram.dtype, device=gram.device))
    flat = torch.argmin(cost)
    i, j = flat // n, flat % n
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    alpha = gam[i, j] * eye[i] + (1 - gam[i, j]) * eye[j]
    for _ in range(max_iter):
        m_alpha = gram @ alpha
        t = torch.argmin(m_alpha)
        gamma = min_norm_pair(alpha @ m_alpha, m_alpha[t], gram[t, t])
        alpha = gamma * alpha + (1 - gamma) * eye[t]
    return alpha


class MGDAUB:
    """MGDA-UB (Sener & Koltun 2018): min-norm task weights; owns the gradient stage."""

    name = "mgda_ub"
    requires = ("multitask", "task_gradients")
    owns = ("gradient",)

    def __init__(self, *, on: str = "representation", max_iter: int = 250,
                 tol: float = 1e-5) -> None:
        if on not in ON:
            raise ConfigError(f"plugin 'mgda_ub': on must be one of {ON}, got {on!r}")
        if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
            raise ConfigError(f"plugin 'mgda_ub': max_iter must be a positive integer, got "
                              f"{max_iter!r}")
        if not isinstance(tol, (int, float)) or not tol > 0:
            raise ConfigError(f"plugin 'mgda_ub': tol must be > 0, got {tol!r}")
        self.on = on
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_: Tensor | None = None
        self._layer: str | None = None

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        refuse_decider(learner, self.name)
        shared_parameters(learner.model, self.name)
        if self.on == "representation":
            layer = getattr(learner.model, "representation", None)
            if not layer:
                raise CompositionError(f"plugin 'mgda_ub': {type(learner.model).__name__} has no "
                                       "shared representation (representation = None); set "
                                       "on: parameters for the exact MGDA on the shared weights")
            learner.features.request(layer, owner=self.name)
            self._layer = layer

    @hookimpl
    def before_update(self, learner: Any, step: Any) -> None:
        losses = task_losses(learner, step.losses)
        params = shared_parameters(learner.model, self.name)
        if self._layer is not None:
            z = learner.features[self._layer]
            grads = task_gradients(losses, [z])
        else:
            grads = task_gradients(losses, params)
        alpha = min_norm_weights((grads @ grads.T).double(), max_iter=self.max_iter,
                                 tol=self.tol).to(grads.dtype)
        self.alpha_ = alpha.detach()
        if self._layer is None:
            add_to_grads(params, alpha @ grads - grads.sum(0))
            return
        # the shared weights step on sum_t alpha_t grad L_t: add sum_t (alpha_t - 1) grad L_t
        extra = sum((a - 1) * loss for a, loss in zip(alpha, losses))
        delta = torch.autograd.grad(extra, params, retain_graph=True, allow_unused=True)
        add_to_grads(params, torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                        for g, p in zip(delta, params)]))

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_tensor

        self.alpha_ = state_tensor(state, "alpha", owner=self.name, shape=(None,), dtype="float",
                                   finite=True, min=0.0, allow_none=True)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "mgda_ub", MGDAUB)
