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
is subtracted: the penalty forms ``2 c Omega (theta - anchor)`` in its
forward and records what its backward handed autograd, so no second
backward pass is needed and the subtraction is exact whatever weight the
loss gives the term. Other plugins' loss terms stay in ``g``. The per-step
arithmetic is batched over the parameter tensors (``torch._foreach_*``).
State is a fixed set of per-parameter tensors (omega, Omega, anchor,
previous parameters): nothing grows with the number of consolidations.

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
from lifelong.plugins.regularization._common import fit_to, grow_to, parameters_of, trainable
from lifelong.validation import check_number

__all__ = ["SI", "path_integral_step_", "si_importance", "si_penalty"]


def path_integral_step_(omega: Tensor | list[Tensor], grad: Tensor | list[Tensor],
                        prev: Tensor | list[Tensor], theta: Tensor | list[Tensor]
                        ) -> Tensor | list[Tensor]:
    """One step of the path integral in place: ``omega -= grad * (theta - prev)``, then
    ``prev := theta``; returns ``omega``. Tensors, or equal-length lists of tensors (one per
    parameter, batched with ``torch._foreach_*``; nothing is allocated).

    >>> path_integral_step_(torch.zeros(2), torch.tensor([1.0, -2.0]), torch.zeros(2),
    ...                     torch.tensor([-0.1, 0.1]))
    tensor([0.1000, 0.2000])
    """
    one = isinstance(omega, Tensor)
    om, g, pv, th = ([t] for t in (omega, grad, prev, theta)) if one else (omega, grad, prev, theta)
    torch._foreach_sub_(pv, th)  # prev - theta: minus this update's step
    torch._foreach_addcmul_(om, g, pv)
    torch._foreach_copy_(pv, th)
    return omega


def si_importance(importance: Tensor, omega: Tensor, delta: Tensor, xi: float) -> Tensor:
    """``max(0, Omega + omega / (Delta^2 + xi))``: consolidate one experience's path integral.

    >>> si_importance(torch.zeros(2), torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0]), 0.25)
    tensor([0.4000, 0.0000])
    """
    return (importance + omega / (delta.square() + xi)).clamp_min(0.0)


class _Penalty(torch.autograd.Function):
    """``1/2 sum_i s_i (theta_i - a_i)^2``, its gradient ``s (theta - a)`` formed in the forward.

    With slopes ``s = 2 w`` this is ``sum_i w_i (theta_i - a_i)^2``, the same
    value and gradient as autograd through
    :func:`~lifelong.plugins.regularization._common.quadratic_penalty`, in
    fewer passes over the parameters: the forward computes the gradient
    itself (one subtraction, one product, per parameter tensor, batched with
    ``torch._foreach``), the backward only scales it (not at all for an
    upstream gradient of exactly 1 on the CPU, the usual case), and ``keep``
    receives, per name, the gradient the backward handed to autograd, which
    SI's ``before_update`` subtracts from ``p.grad``. A parameter grown by an
    expansion plugin is penalized on its leading block.
    """

    @staticmethod
    def forward(ctx: Any, anchors: list[Tensor], slopes: list[Tensor], names: list[str],
                keep: dict[str, Tensor], *params: Tensor) -> Tensor:
        grown = not all(p.shape == s.shape for p, s in zip(params, slopes))
        if grown:  # a grown parameter: its leading block
            diffs = [fit_to(p, s.shape, n) - a for n, p, a, s in zip(names, params, anchors, slopes)]
        else:
            diffs = torch._foreach_sub(list(params), anchors)
        grads = torch._foreach_mul(diffs, slopes)
        total = torch.stack([torch.dot(g.view(-1), d.view(-1))
                             for g, d in zip(grads, diffs)]).sum().mul_(0.5)
        keep.update(zip(names, grads))
        ctx.grads, ctx.names, ctx.keep = grads, names, keep
        ctx.shapes = [p.shape for p in params] if grown else None
        return total

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        grads = ctx.grads
        if not (g.device.type == "cpu" and float(g) == 1.0):  # the scalar read syncs nothing on CPU
            grads = torch._foreach_mul(grads, g)
        ctx.keep.update(zip(ctx.names, grads))  # what autograd adds to p.grad
        if ctx.shapes is not None:  # zero beyond a grown block
            grads = [grow_to(t, shape) for t, shape in zip(grads, ctx.shapes)]
        return (None, None, None, None, *grads)


def si_penalty(params: Mapping[str, Tensor], anchors: Mapping[str, Tensor],
               weights: Mapping[str, Tensor], keep: dict[str, Tensor] | None = None, *,
               slopes: Mapping[str, Tensor] | None = None) -> Tensor:
    """``quadratic_penalty`` (same value and gradient) with the gradient written out.

    ``keep`` (optional) receives, per name, the gradient this term adds to
    ``p.grad`` in the backward (``2 w (theta - a)`` times the upstream
    gradient). ``slopes``, if given, are ``2 w`` precomputed (``weights`` then
    only names the parameters): the plugin keeps them from one
    consolidation to the next.

    >>> p = {"w": torch.tensor([1.0, 2.0], requires_grad=True)}
    >>> v = si_penalty(p, {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.5])})
    >>> v.backward(); float(v.detach()), p["w"].grad.tolist()
    (3.0, [2.0, 2.0])
    """
    names = [n for n in weights if n in params]
    if not names:
        return torch.zeros(())
    s = [slopes[n] for n in names] if slopes is not None else [2.0 * weights[n] for n in names]
    return _Penalty.apply([anchors[n] for n in names], s, names,
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
        self._slopes: dict[str, tuple[Tensor, Tensor]] = {}  # name -> (Omega, 2 c Omega)
        self._grad: dict[str, Tensor] = {}    # this step's task gradient (before_update)
        self._keep: dict[str, Tensor] = {}    # the gradient this step's penalty gave autograd
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
        self._sync(parameters_of(learner))

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        if not self.n_consolidations_:
            return None
        self._keep = {}  # filled by the penalty: what it adds to p.grad, for before_update
        return {"si": si_penalty(parameters_of(learner), self.anchor_, self.importance_,
                                 self._keep, slopes=self._current_slopes())}

    @hookimpl(tryfirst=True)
    def before_update(self, learner: Any, step: Any) -> None:
        """Read the task gradient: ``p.grad`` less SI's own surrogate gradient."""
        params = self._sync(parameters_of(learner))
        self._params = params
        keep, self._keep = self._keep, {}
        names = list(params)
        grads = [params[n].grad for n in names]
        bufs = [self._grad.get(n) for n in names]
        if all(g is not None and b is not None and b.shape == g.shape and b.dtype == g.dtype
               for g, b in zip(grads, bufs)):  # into last step's buffers: no allocation
            given = [keep.get(n) for n in names] if self.n_consolidations_ else []
            if not self.n_consolidations_ or all(t is not None and t.shape == g.shape
                                                 for t, g in zip(given, grads)):
                torch._foreach_copy_(bufs, grads)
                if given:
                    torch._foreach_sub_(bufs, given)
                return
        self._grad = {n: self._task_gradient(n, params[n], keep.get(n)) for n in names}

    def _task_gradient(self, name: str, p: Tensor, given: Tensor | None) -> Tensor:
        """``p.grad`` less the surrogate's gradient on (the leading block of) ``p``; zeros when
        ``p`` got no gradient. ``given``: what this step's penalty handed autograd, if known."""
        if p.grad is None:
            return torch.zeros_like(p)
        out = p.grad.clone()
        slope = self._current_slopes().get(name) if self.n_consolidations_ else None
        if slope is None:
            return out
        if given is None or given.shape != slope.shape:  # not from this step's penalty (or grown since)
            given = slope * (fit_to(p.detach(), slope.shape, name) - self.anchor_[name])
        fit_to(out, slope.shape, name).sub_(given)
        return out

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        params, self._params = self._params or self._sync(parameters_of(learner)), None
        names = list(params)
        with torch.no_grad():
            path_integral_step_([self.omega_[n] for n in names], [self._grad[n] for n in names],
                                [self.prev_[n] for n in names], [params[n].detach() for n in names])
        if self.consolidate_every and (step.index + 1) % self.consolidate_every == 0:
            self.consolidate(learner.model)

    @hookimpl
    def after_experience(self, learner: Any, experience: Any) -> None:
        self.consolidate(learner.model)

    # ------------------------------------------------------------------ state
    def _sync(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-parameter buffers matching ``params`` (allocated, or grown after an expansion)."""
        for name, p in params.items():
            if name in self.prev_ and self.prev_[name].shape == p.shape:
                continue
            d = p.detach()
            self.omega_[name] = grow_to(self.omega_.get(name, torch.zeros_like(d)), d.shape)
            self.anchor_[name] = grow_to(self.anchor_.get(name, d.clone()), d.shape)
            if name in self.importance_:
                self.importance_[name] = grow_to(self.importance_[name], d.shape)
            self.prev_[name] = d.clone()
        return params

    def consolidate(self, model: nn.Module) -> None:
        """Turn the path integral into importance; the current parameters become the anchor."""
        with torch.no_grad():
            for name, p in self._sync(trainable(model)).items():
                theta = p.detach()
                imp = self.importance_.get(name, torch.zeros_like(theta))
                self.importance_[name] = si_importance(imp, self.omega_[name],
                                                       theta - self.anchor_[name], self.xi)
                self.anchor_[name].copy_(theta)
                self.omega_[name].zero_()
        self.n_consolidations_ += 1

    def _current_slopes(self) -> dict[str, Tensor]:
        """``2 c Omega`` per parameter (the penalty's gradient per unit of distance), formed
        once per importance tensor: again only after a consolidation, a growth or a load."""
        out = {}
        for n, w in self.importance_.items():
            cached = self._slopes.get(n)
            if cached is None or cached[0] is not w:
                cached = self._slopes[n] = (w, (2.0 * self.c) * w)
            out[n] = cached[1]
        return out

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
        self._grad, self._keep, self._slopes = {}, {}, {}
        self.n_consolidations_ = n


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "si", SI)
