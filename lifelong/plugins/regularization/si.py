"""SI: synaptic intelligence, importance from each parameter's contribution to the loss drop.

During training each parameter accumulates the path integral
``omega_i -= g_i * delta_theta_i`` at every update (``after_update``), where
``g`` is the gradient of the training objective *without SI's own
surrogate* (the reference code's ``unreg_grads``) and ``delta_theta`` the
update the optimizer actually made. At a consolidation (the end of an
experience, a detected boundary, or every ``consolidate_every`` batches)
it becomes importance, ``Omega_i <- max(0, Omega_i + omega_i / (Delta_i^2 + xi))``
with ``Delta`` the distance travelled since the previous consolidation, and
the parameters become the new anchor. Training then pays
``c * sum_i Omega_i (theta_i - anchor_i)^2``.

``p.grad`` is read in ``before_update`` (first, before any plugin that owns
the gradient stage rewrites it; read only) and SI's own surrogate gradient
``2 c Omega (theta - anchor)`` is subtracted analytically, so no second
backward pass is needed. Other plugins' loss terms stay in ``g``. State is
a fixed set of per-parameter tensors (omega, Omega, anchor, previous
parameters): nothing grows with the number of consolidations.

Zenke, Poole & Ganguli, "Continual learning through synaptic intelligence",
ICML 2017. Defaults: ``c=0.1``, ``xi=0.1`` (the paper's permuted-MNIST values;
its split-MNIST runs used ``xi=1e-3``).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([SI()], stream).fit(stream)
>>> bool(all((v >= 0).all() for v in learner.plugins[0].importance_.values()))
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.regularization._common import fit_to, grow_to, trainable
from lifelong.validation import check_number

__all__ = ["SI", "path_integral_step_", "si_importance", "si_penalty"]


def path_integral_step_(omega: Tensor, grad: Tensor, delta: Tensor) -> Tensor:
    """``omega -= grad * delta`` in place (one step of the path integral); returns ``omega``.

    >>> path_integral_step_(torch.zeros(2), torch.tensor([1.0, -2.0]), torch.tensor([-0.1, 0.1]))
    tensor([0.1000, 0.2000])
    """
    return omega.addcmul_(grad, delta, value=-1.0)


def si_importance(importance: Tensor, omega: Tensor, delta: Tensor, xi: float) -> Tensor:
    """``max(0, Omega + omega / (Delta^2 + xi))``: consolidate one experience's path integral.

    >>> si_importance(torch.zeros(2), torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0]), 0.25)
    tensor([0.4000, 0.0000])
    """
    return (importance + omega / (delta.square() + xi)).clamp_min(0.0)


class _Penalty(torch.autograd.Function):
    """``sum_i w_i (theta_i - a_i)^2`` with its gradient ``2 w (theta - a)`` written out.

    The same value and gradient as autograd through
    :func:`~lifelong.plugins.regularization._common.quadratic_penalty`,
    in fewer passes over the parameters: the forward keeps ``w (theta - a)``,
    which the backward scales and SI's ``before_update`` reuses. A parameter
    grown by an expansion plugin is penalized on its leading block.
    """

    @staticmethod
    def forward(ctx: Any, anchors: list[Tensor], weights: list[Tensor], names: list[str],
                keep: dict[str, Tensor], *params: Tensor) -> Tensor:
        total = params[0].new_zeros(())
        wds = []
        for name, p, a, w in zip(names, params, anchors, weights):
            diff = fit_to(p, w.shape, name) - a
            wd = w * diff
            total += torch.dot(wd.reshape(-1), diff.reshape(-1))
            keep[name] = wd
            wds.append(wd)
        ctx.wds = wds
        ctx.shapes = [p.shape for p in params]
        return total

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        grads = []
        for wd, shape in zip(ctx.wds, ctx.shapes):
            grad = wd * (2.0 * g)
            if grad.shape != shape:  # a grown parameter: zero beyond the penalized block
                grad = grow_to(grad, shape)
            grads.append(grad)
        return (None, None, None, None, *grads)


def si_penalty(params: Mapping[str, Tensor], anchors: Mapping[str, Tensor],
               weights: Mapping[str, Tensor], keep: dict[str, Tensor] | None = None) -> Tensor:
    """``quadratic_penalty`` (same value and gradient), keeping ``w (theta - a)`` per name.

    >>> p = {"w": torch.tensor([1.0, 2.0], requires_grad=True)}
    >>> v = si_penalty(p, {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.5])})
    >>> v.backward(); float(v.detach()), p["w"].grad.tolist()
    (3.0, [2.0, 2.0])
    """
    names = [n for n in weights if n in params]
    if not names:
        return torch.zeros(())
    return _Penalty.apply([anchors[n] for n in names], [weights[n] for n in names], names,
                          {} if keep is None else keep, *[params[n] for n in names])


class SI:
    """Synaptic intelligence: path-integral importance, a quadratic pull to the last anchor."""

    name = "si"
    owns = ()

    def __init__(self, *, c: float = 0.1, xi: float = 0.1, consolidate_every: int = 0) -> None:
        check_number(f"plugin {self.name!r}", "c", c, min=0.0)
        check_number(f"plugin {self.name!r}", "xi", xi, above=0.0)
        check_number(f"plugin {self.name!r}", "consolidate_every", consolidate_every, min=0, integer=True)
        if not c >= 0:
            raise ConfigError(f"plugin 'si': c must be >= 0, got {c}")
        if not xi > 0:
            raise ConfigError(f"plugin 'si': xi (damping) must be > 0, got {xi}")
        if consolidate_every < 0:
            raise ConfigError(f"plugin 'si': consolidate_every must be >= 0 (0: only at "
                              f"boundaries), got {consolidate_every}")
        self.c = c
        self.xi = xi
        self.consolidate_every = consolidate_every
        self.omega_: dict[str, Tensor] = {}       # path integral since the last consolidation
        self.importance_: dict[str, Tensor] = {}  # Omega
        self.anchor_: dict[str, Tensor] = {}      # parameters at the last consolidation
        self.prev_: dict[str, Tensor] = {}        # parameters before the current update
        self.n_consolidations_ = 0
        self._grad: dict[str, Tensor] = {}
        self._wd: dict[str, Tensor] = {}    # Omega (theta - anchor) from this step's penalty
        self._params: dict[str, Tensor] | None = None  # this step's parameters (before_update)
        self._device: torch.device | None = None

    @property
    def requires(self) -> tuple[str, ...]:
        """Boundaries are needed unless the plugin consolidates every N batches itself."""
        return () if self.consolidate_every else ("boundaries",)

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self._device = learner.device
        self._sync(learner.model)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        if not self.n_consolidations_:
            return None
        params = dict(learner.model.named_parameters())
        self._wd = {}  # w (theta - anchor) of this step, for before_update
        return {"si": self.c * si_penalty(params, self.anchor_, self.importance_, self._wd)}

    @hookimpl(tryfirst=True)
    def before_update(self, learner: Any, step: Any) -> None:
        params = self._sync(learner.model)
        self._params = params
        wds, self._wd = self._wd, {}
        for name, p in params.items():
            buf = self._grad[name]
            if p.grad is None:
                buf.zero_()
                continue
            w = self.importance_.get(name) if self.n_consolidations_ else None
            if w is None:
                buf.copy_(p.grad)
                continue
            # remove SI's own surrogate gradient, 2 c Omega (theta - anchor), from p.grad
            wd = wds.get(name)
            if wd is None or wd.shape != w.shape:  # not from this step's penalty (or grown since)
                wd = w * (fit_to(p.detach(), w.shape, name) - self.anchor_[name])
            if buf.shape == w.shape:
                torch.add(p.grad, wd, alpha=-2.0 * self.c, out=buf)
            else:
                buf.copy_(p.grad)
                fit_to(buf, w.shape, name).add_(wd, alpha=-2.0 * self.c)

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        params, self._params = self._params or trainable(learner.model), None
        with torch.no_grad():
            for name, p in params.items():
                prev = self.prev_[name]
                path_integral_step_(self.omega_[name], self._grad[name], p - prev)
                prev.copy_(p)
        if self.consolidate_every and (step.index + 1) % self.consolidate_every == 0:
            self.consolidate(learner.model)

    @hookimpl
    def after_experience(self, learner: Any, experience: Any) -> None:
        self.consolidate(learner.model)

    # ------------------------------------------------------------------ state
    def _sync(self, model: nn.Module) -> dict[str, Tensor]:
        """Per-parameter buffers matching the model (allocated, or grown after an expansion)."""
        params = trainable(model)
        for name, p in params.items():
            if name in self.prev_ and self.prev_[name].shape == p.shape:
                continue
            d = p.detach()
            self.omega_[name] = grow_to(self.omega_.get(name, torch.zeros_like(d)), d.shape)
            self.anchor_[name] = grow_to(self.anchor_.get(name, d.clone()), d.shape)
            if name in self.importance_:
                self.importance_[name] = grow_to(self.importance_[name], d.shape)
            self.prev_[name] = d.clone()
            self._grad[name] = torch.zeros_like(d)
        return params

    def consolidate(self, model: nn.Module) -> None:
        """Turn the path integral into importance; the current parameters become the anchor."""
        with torch.no_grad():
            for name, p in self._sync(model).items():
                theta = p.detach()
                imp = self.importance_.get(name, torch.zeros_like(theta))
                self.importance_[name] = si_importance(imp, self.omega_[name],
                                                       theta - self.anchor_[name], self.xi)
                self.anchor_[name].copy_(theta)
                self.omega_[name].zero_()
        self.n_consolidations_ += 1

    def state_dict(self) -> dict[str, Any]:
        def copy(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.clone() for k, v in d.items()}
        return {"omega": copy(self.omega_), "importance": copy(self.importance_),
                "anchor": copy(self.anchor_), "prev": copy(self.prev_),
                "n_consolidations": self.n_consolidations_}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from lifelong.plugins.regularization.ewc import _param_dict
        from lifelong.validation import state_number

        def load(key: str) -> dict[str, Tensor]:
            d: Mapping[str, Tensor] = _param_dict(state, key, self.name)
            return {k: v.to(self._device, copy=True) for k, v in d.items()}
        omega, importance, anchor, prev = (load(k) for k in ("omega", "importance", "anchor",
                                                             "prev"))
        n = state_number(state, "n_consolidations", owner=self.name, min=0, integer=True)
        self.omega_, self.importance_, self.anchor_, self.prev_ = omega, importance, anchor, prev
        self._grad = {k: torch.zeros_like(v) for k, v in self.prev_.items()}
        self.n_consolidations_ = n


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "si", SI)
