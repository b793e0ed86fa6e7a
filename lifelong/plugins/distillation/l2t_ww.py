"""L2T-ww: learn what and where to transfer from frozen source networks, by meta-learned feature matching.

Each candidate pair (m, n) of a source layer m and a learner (target) layer n
gets a pointwise regressor r (1x1 convolution for feature maps, linear for
vectors) from target to source features, and two one-layer meta-networks
read the source feature's global average pool (GAP):

* what: channel weights ``w = softmax(f_phi(GAP(S^m(x))))``, summing to 1;
* where: a pair weight ``lambda = relu6(g_phi(GAP(S^m(x)))) >= 0`` per sample.

The weighted feature matching of a pair is
``L^{m,n} = (1/HW) sum_c w_c sum_ij (r(T^n(x))_cij - S^m(x)_cij)^2`` (the
source map resized bilinearly to the target's H x W when they differ), and
``L_wfm = mean_x sum_(m,n) lambda^{m,n}(x) L^{m,n}(x)``. The learner trains
its weights theta (and the regressors) on ``L_org + beta * L_wfm`` (the
cross-entropy plus the plugin's ``"l2t_ww"`` term). After each update the
meta step of the paper's Algorithm 1 runs on the same batch: from
``theta_0 = theta``, ``T`` plain gradient steps on ``L_wfm`` alone and one
on ``L_org`` (functional calls, :func:`torch.func.functional_call`, on
copies: the learner's weights, buffers and optimizer are untouched), then
phi is updated with the gradient of ``L_org(theta_{T+1})`` taken back
through the unrolled steps (:func:`lookahead_meta_gradient`). Several
sources at once (the paper's multi-source transfer) are a list of sources,
each with its own candidate layers, pairs, regressors and meta-networks.

Candidate pairs, by module path (``model.named_modules()``) per source:
``pairs: single`` (the last source layer with the last target layer),
``one_to_one`` (the i-th with the i-th), ``all_to_all`` (every source layer
with every target layer), or an explicit list of ``[source_layer,
target_layer]`` (``[source_index, source_layer, target_layer]`` with
several sources). ``what: false`` fixes the channel weights to 1/C and
``where: false`` fixes lambda to 1: with both off there is nothing to meta
-learn and the plugin is unweighted feature matching (FM, Romero et al.'s
FitNet hint loss with pointwise regressors, the paper's FM baseline);
``what: true, where: false`` on ``pairs: single`` is the paper's L2T-w.

Jang, Lee, Hwang & Shin, "Learning What and Where to Transfer", ICML 2019.
Defaults are those of the authors' reference implementation (the argument
defaults of ``train_l2t_ww.py`` in github.com/alinlab/L2T-ww, with which its
README says the paper's settings are reproduced):
``beta=0.5`` (``--beta``), ``T=2`` (``--T``), meta-optimizer Adam
(``--optimizer adam``) with ``meta_lr=1e-4`` (``--meta-lr``) and
``meta_weight_decay=1e-4`` (``--meta-wd``), a meta step after every batch
(``meta_every=1``, ``--meta-period``), pair weights through ReLU6 with the
bias of g initialised to ``lambda_init=1.0`` (``--loss-weight-type relu6``,
``--loss-weight-init``), f initialised to zero (uniform channel weights at
the start), ``pairs="all_to_all"`` (``--pairs``' default). The inner step
size alpha is the learner's learning rate for each parameter
(``inner_lr=None``), as the reference's look-ahead uses the target
optimizer's. Where the reference's look-ahead differs from Algorithm 1, this
module follows the paper: its inner steps are plain gradient steps on
``L_wfm`` (the reference replays its SGD with momentum and weight decay, on
``beta * L_wfm``).

The plugin owns its regressors and meta-networks (``regressors_``,
``what_nets_``, ``where_nets_``) and both of their optimizers: the
regressors are updated with the learner's optimizer settings after the
learner's step (they are part of theta), the meta-networks by the
meta-optimizer; all are in :meth:`L2TWW.state_dict`, so a run resumes
exactly. The meta step's functional forwards pass the learner's
:attr:`~lifelong.Learner.features` hooks, so after ``after_update`` the
captured features are those of the look-ahead, not of the training pass.

Examples
--------
>>> from lifelong.backbones import mlp
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> source = mlp(input_shape=(1, 4, 4), num_classes=3, hidden=[8])
>>> plugin = L2TWW(source=source, source_layers=["body.1", "body.2"],
...                target_layers=["body.1", "body.2"])
>>> learner = make_learner([plugin], stream).fit(stream)
>>> len(plugin.pair_names()), plugin.meta_steps_
(4, 18)
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.errors import ConfigError
from lifelong.features import FeatureCapture
from lifelong.hookspecs import hookimpl
from lifelong.teachers import load_teacher

__all__ = ["L2TWW", "pair_matching", "weighted_feature_matching", "channel_weights", "pair_weights",
           "global_average_pool", "match_spatial", "lookahead_meta_gradient", "candidate_pairs",
           "CONFIGURATIONS"]

CONFIGURATIONS = ("single", "one_to_one", "all_to_all")
_NAME = "l2t_ww"


# ---------------------------------------------------------------------------- the math


def global_average_pool(features: Tensor) -> Tensor:
    """(B, C, ...) -> (B, C): the mean over every position (vectors are returned as given)."""
    return features.flatten(2).mean(2) if features.dim() > 2 else features


def match_spatial(source: Tensor, target: Tensor) -> Tensor:
    """``source`` resized (bilinear) to ``target``'s H x W when the two differ."""
    if source.dim() == 4 and source.shape[2:] != target.shape[2:]:
        return F.interpolate(source, size=tuple(target.shape[2:]), mode="bilinear", align_corners=False)
    return source


def channel_weights(logits: Tensor) -> Tensor:
    """What to transfer: ``softmax`` over channels of ``f_phi(GAP(S))``; each row sums to 1."""
    return torch.softmax(logits, dim=1)


def pair_weights(out: Tensor) -> Tensor:
    """Where to transfer: ``relu6(g_phi(GAP(S)))`` (B, 1) -> (B,), each in [0, 6]."""
    return F.relu6(out).reshape(-1)


def pair_matching(regressed: Tensor, source: Tensor, weights: Tensor) -> Tensor:
    """Per-sample ``(1/HW) sum_c w_c sum_ij (r_cij - s_cij)^2`` -> (B,).

    ``regressed``, ``source``: (B, C, H, W) or (B, C) (then HW = 1);
    ``weights``: (B, C) or (C,).

    >>> r = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])      # (1, 2, 1, 2)
    >>> s = torch.zeros(1, 2, 1, 2)
    >>> pair_matching(r, s, torch.tensor([0.25, 0.75]))        # 0.25 * (1 + 4) / 2
    tensor([0.6250])
    """
    sq = (regressed - source).pow(2)
    if sq.dim() > 2:
        sq = sq.flatten(2).mean(2)
    return (sq * weights).sum(1)


def weighted_feature_matching(regressed: Sequence[Tensor], sources: Sequence[Tensor],
                              weights: Sequence[Tensor], lambdas: Sequence[Tensor]) -> Tensor:
    """``L_wfm = mean_x sum_pairs lambda(x) L^{m,n}(x)``; one entry per pair in each sequence.

    ``lambdas``: (B,) per pair (or scalars); sources already matched to the
    regressed maps' size (:func:`match_spatial`).
    """
    total = regressed[0].new_zeros(())
    for r, s, w, lam in zip(regressed, sources, weights, lambdas, strict=True):
        total = total + (lam * pair_matching(r, s, w)).mean()
    return total


def lookahead_meta_gradient(theta: Mapping[str, Tensor], phi: Sequence[Tensor],
                            wfm: Callable[[dict[str, Tensor]], Tensor],
                            org: Callable[[dict[str, Tensor]], Tensor], *, steps: int,
                            lr: float | Mapping[str, float]) -> tuple[list[Tensor], Tensor]:
    """The meta step of Algorithm 1: ``grad_phi L_org(theta_{T+1})`` through the unrolled steps.

    From ``theta_0 = theta`` (detached: the learner's tensors are never
    written), ``theta_{t+1} = theta_t - alpha grad L_wfm(theta_t)`` for
    ``t < steps``, then ``theta_{T+1} = theta_T - alpha grad L_org(theta_T)``;
    every gradient keeps its graph (``create_graph``), so the returned
    gradient of ``org(theta_{T+1})`` with respect to each tensor of ``phi``
    includes the second-order terms. ``wfm`` and ``org`` map a parameter
    dict to a scalar (``wfm`` depends on ``phi``); ``lr`` is alpha, one float
    or one per name. Returns the gradients (zeros where ``phi`` has no
    influence) and ``L_org(theta_{T+1})``.
    """
    names = list(theta)
    rate = {n: float(lr if not isinstance(lr, Mapping) else lr[n]) for n in names}
    params = {n: theta[n].detach().requires_grad_(True) for n in names}
    for t in range(steps + 1):
        loss = wfm(params) if t < steps else org(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True,
                                    allow_unused=True)
        params = {n: params[n] if g is None else params[n] - rate[n] * g
                  for n, g in zip(names, grads)}
    outer = org(params)
    meta = torch.autograd.grad(outer, list(phi), allow_unused=True) if phi else ()
    return [torch.zeros_like(p) if g is None else g for p, g in zip(phi, meta)], outer.detach()


def candidate_pairs(configuration: str | Sequence[Sequence[Any]], source_layers: Sequence[Sequence[str]],
                    target_layers: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(source_index, source_layer, target_layer)`` for each candidate pair.

    >>> candidate_pairs("all_to_all", [["a", "b"]], ["x", "y"])
    [(0, 'a', 'x'), (0, 'a', 'y'), (0, 'b', 'x'), (0, 'b', 'y')]
    >>> candidate_pairs("one_to_one", [["a", "b"]], ["x", "y"])
    [(0, 'a', 'x'), (0, 'b', 'y')]
    >>> candidate_pairs("single", [["a", "b"], ["c"]], ["x", "y"])
    [(0, 'b', 'y'), (1, 'c', 'y')]
    """
    who = f"plugin {_NAME!r}"
    if not isinstance(configuration, str):
        out = []
        for p in configuration:
            if not isinstance(p, (list, tuple)) or len(p) not in (2, 3):
                raise ConfigError(f"{who}: pairs entry {p!r} must be [source_layer, target_layer] "
                                  "(or [source_index, source_layer, target_layer])")
            if len(p) == 2:
                if len(source_layers) > 1:
                    raise ConfigError(f"{who}: pairs entry {list(p)!r} names no source; with "
                                      "several sources give [source_index, source_layer, target_layer]")
                p = (0, *p)
            k, m, n = p
            if not (isinstance(k, int) and 0 <= k < len(source_layers)):
                raise ConfigError(f"{who}: pairs entry {list(p)!r}: source index {k!r} is not one of "
                                  f"0..{len(source_layers) - 1}")
            out.append((k, str(m), str(n)))
        return out
    if configuration not in CONFIGURATIONS:
        raise ConfigError(f"{who}: pairs must be one of {', '.join(CONFIGURATIONS)} or a list of "
                          f"[source_layer, target_layer], got {configuration!r}")
    out = []
    for k, layers in enumerate(source_layers):
        if configuration == "single":
            if layers and target_layers:
                out.append((k, layers[-1], target_layers[-1]))
        elif configuration == "one_to_one":
            if len(layers) != len(target_layers):
                raise ConfigError(f"{who}: pairs 'one_to_one' needs as many source_layers as "
                                  f"target_layers; source {k} has {len(layers)}, the target "
                                  f"{len(target_layers)}")
            out.extend((k, m, n) for m, n in zip(layers, target_layers))
        else:
            out.extend((k, m, n) for m, n in itertools.product(layers, target_layers))
    return out


# ---------------------------------------------------------------------------- the plugin


class L2TWW:
    """L2T-ww: transfer from frozen sources by feature matching whose weights are meta-learned."""

    name = _NAME
    owns = ()

    def __init__(self, *, source: Any = None, source_layers: Sequence[Any] | None = None,
                 target_layers: Sequence[str] | None = None,
                 pairs: str | Sequence[Sequence[Any]] = "all_to_all", beta: float = 0.5, T: int = 2,
                 what: bool = True, where: bool = True, meta_lr: float = 1e-4,
                 meta_weight_decay: float = 1e-4, inner_lr: float | None = None,
                 lambda_init: float = 1.0, meta_every: int = 1, seed: int = 0) -> None:
        who = f"plugin {_NAME!r}"
        if source is None or (isinstance(source, (list, tuple)) and not source):
            raise ConfigError(f"{who}: source is required: {{run: DIR}}, {{backbone: ..., "
                              "checkpoint: FILE}}, or a list of them for several sources")
        n_sources = len(source) if isinstance(source, (list, tuple)) else 1
        if not (isinstance(T, int) and not isinstance(T, bool) and T >= 0):
            raise ConfigError(f"{who}: T (inner steps on L_wfm) must be an integer >= 0, got {T!r}")
        for key, v in (("beta", beta), ("meta_lr", meta_lr), ("meta_weight_decay", meta_weight_decay)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{who}: {key} must be a finite number >= 0, got {v!r}")
        if inner_lr is not None and not (isinstance(inner_lr, (int, float)) and math.isfinite(inner_lr)
                                         and inner_lr > 0):
            raise ConfigError(f"{who}: inner_lr must be a positive number, or null for the "
                              f"learner's learning rate, got {inner_lr!r}")
        if not (isinstance(lambda_init, (int, float)) and math.isfinite(lambda_init)):
            raise ConfigError(f"{who}: lambda_init must be a finite number, got {lambda_init!r}")
        if not (isinstance(meta_every, int) and meta_every >= 1):
            raise ConfigError(f"{who}: meta_every must be an integer >= 1, got {meta_every!r}")
        layers = _source_layer_lists(source_layers, n_sources, pairs)
        if isinstance(pairs, str) and target_layers is None:
            raise ConfigError(f"{who}: pairs {pairs!r} needs target_layers (module paths of the "
                              "learner's model), or give an explicit list of pairs")
        found = candidate_pairs(pairs, layers, list(target_layers or []))
        if not found:
            raise ConfigError(f"{who}: the configuration gives no pair to transfer through; name "
                              "source_layers and target_layers (or a non-empty list of pairs)")
        self.source = source
        self.source_layers = source_layers
        self.target_layers = target_layers
        self.pairs = pairs
        self.beta = beta
        self.T = T
        self.what = what
        self.where = where
        self.meta_lr = meta_lr
        self.meta_weight_decay = meta_weight_decay
        self.inner_lr = inner_lr
        self.lambda_init = lambda_init
        self.meta_every = meta_every
        self.seed = seed
        self.pairs_: list[tuple[int, str, str]] = found
        self.regressors_: nn.ModuleList | None = None
        self.what_nets_: nn.ModuleList | None = None
        self.where_nets_: nn.ModuleList | None = None
        self.meta_steps_ = 0
        self._reg_opt: torch.optim.Optimizer | None = None
        self._meta_opt: torch.optim.Optimizer | None = None
        self._sources: list[nn.Module] | None = None     # frozen; not pickled (rebuilt from `source`)
        self._captures: list[FeatureCapture] = []

    @staticmethod
    def contract_kwargs() -> dict[str, Any]:
        """Arguments for the contract suite's tiny stream: a small MLP source, all-to-all pairs."""
        from lifelong.backbones import mlp

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            source = mlp(input_shape=(1, 4, 4), num_classes=3, hidden=[8])
        return {"source": source, "source_layers": ["body.1", "body.2"],
                "target_layers": ["body.1", "body.2"]}

    # ------------------------------------------------------------------ assembly
    def pair_names(self) -> list[str]:
        """``"source_layer->target_layer"`` per pair (``"k:source_layer->..."`` with several sources)."""
        several = len(self._source_specs()) > 1
        return [(f"{k}:" if several else "") + f"{m}->{n}" for k, m, n in self.pairs_]

    def _source_specs(self) -> list[Any]:
        return list(self.source) if isinstance(self.source, (list, tuple)) else [self.source]

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        dev = learner.device
        specs = self._source_specs()
        if self._sources is None:
            self._sources = [
                load_teacher(copy.deepcopy(s) if isinstance(s, nn.Module) else s,
                             input_shape=stream.input_shape, num_classes=stream.num_classes,
                             device=dev,
                             owner=f"plugin {_NAME!r}: source" + (f"[{k}]" if len(specs) > 1 else ""))
                for k, s in enumerate(specs)]
        for c in self._captures:
            c.close()
        self._captures = [FeatureCapture(s, what="source" + (f" {k}" if len(specs) > 1 else ""))
                          for k, s in enumerate(self._sources)]
        for k, m, n in self.pairs_:
            self._captures[k].request(m, owner=_NAME, key="source layer")
            learner.features.request(n, owner=_NAME, key="target layer")
        shapes_s, shapes_t = self._dry_shapes(learner, stream)
        if self.regressors_ is None:
            self._build(shapes_s, shapes_t, dev)
        assert self.regressors_ is not None
        self._reg_opt = _optimizer_like(learner, list(self.regressors_.parameters()))
        meta = self._meta_parameters()
        self._meta_opt = torch.optim.Adam(meta, lr=self.meta_lr, weight_decay=self.meta_weight_decay) \
            if meta else None

    def _dry_shapes(self, learner: Any, stream: Any) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """One forward of zeros through the learner's model and each source: the feature shapes."""
        assert self._sources is not None
        x = torch.zeros(1, *stream.input_shape, device=learner.device)
        task = torch.zeros(1, dtype=torch.long, device=learner.device)
        was = learner.model.training
        learner.model.eval()
        try:
            with torch.no_grad():
                learner.forward(x, task)
                for k, src in enumerate(self._sources):
                    try:
                        _run_source(src, x, task)
                    except (RuntimeError, ValueError, TypeError) as exc:
                        raise ConfigError(f"plugin {_NAME!r}: source {k} cannot take the stream's "
                                          f"inputs of shape {tuple(stream.input_shape)}: "
                                          f"{str(exc).splitlines()[0]}") from exc
        finally:
            learner.model.train(was)
        s_shapes = [tuple(self._captures[k][m].shape[1:]) for k, m, _ in self.pairs_]
        t_shapes = [tuple(learner.features[n].shape[1:]) for _, _, n in self.pairs_]
        for (_, m, n), s, t in zip(self.pairs_, s_shapes, t_shapes):
            if len(s) != len(t) or len(s) not in (1, 3):
                raise ConfigError(f"plugin {_NAME!r}: pair {m}->{n}: source features {s} and target "
                                  f"features {t} must both be vectors (C,) or both maps (C, H, W); "
                                  "pick layers of the same kind")
        return s_shapes, t_shapes

    def _build(self, s_shapes: list[tuple[int, ...]], t_shapes: list[tuple[int, ...]],
               device: torch.device) -> None:
        with torch.random.fork_rng(devices=[]):  # the run's global RNG stays as it was
            torch.manual_seed(self.seed)
            regs, whats, wheres = [], [], []
            for s, t in zip(s_shapes, t_shapes):
                regs.append(nn.Conv2d(t[0], s[0], 1) if len(s) == 3 else nn.Linear(t[0], s[0]))
                if self.what:
                    f = nn.Linear(s[0], s[0])
                    nn.init.zeros_(f.weight)
                    nn.init.zeros_(f.bias)
                    whats.append(f)
                if self.where:
                    g = nn.Linear(s[0], 1)
                    nn.init.constant_(g.bias, float(self.lambda_init))
                    wheres.append(g)
        self.regressors_ = nn.ModuleList(regs).to(device)
        self.what_nets_ = nn.ModuleList(whats).to(device)
        self.where_nets_ = nn.ModuleList(wheres).to(device)

    def _meta_parameters(self) -> list[nn.Parameter]:
        assert self.what_nets_ is not None and self.where_nets_ is not None
        return [*self.what_nets_.parameters(), *self.where_nets_.parameters()]

    # ------------------------------------------------------------------ pieces of the loss
    def _source_features(self, x: Tensor, task: Tensor | None) -> list[Tensor]:
        assert self._sources is not None
        with torch.no_grad():
            for src in self._sources:
                _run_source(src, x, task)
        return [self._captures[k][m] for k, m, _ in self.pairs_]

    def transfer_weights(self, source_features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """(channel weights (B, C) per pair, lambda (B,) per pair) from the source features."""
        assert self.what_nets_ is not None and self.where_nets_ is not None
        ws, lams = [], []
        for i, s in enumerate(source_features):
            gap = global_average_pool(s)
            ws.append(channel_weights(self.what_nets_[i](gap)) if self.what
                      else gap.new_full(gap.shape, 1.0 / gap.shape[1]))
            lams.append(pair_weights(self.where_nets_[i](gap)) if self.where
                        else gap.new_ones(gap.shape[0]))
        return ws, lams

    def _wfm(self, targets: Sequence[Tensor], sources: Sequence[Tensor], ws: Sequence[Tensor],
             lams: Sequence[Tensor], reg_params: Mapping[str, Tensor] | None = None) -> Tensor:
        assert self.regressors_ is not None
        regressed = []
        for i, t in enumerate(targets):
            r = self.regressors_[i]
            if reg_params is None:
                regressed.append(r(t))
            else:
                regressed.append(functional_call(r, {k: reg_params[f"r.{i}.{k}"] for k, _ in
                                                     r.named_parameters()}, (t,)))
        matched = [match_spatial(s, r) for s, r in zip(sources, regressed)]
        return weighted_feature_matching(regressed, matched, ws, lams)

    @torch.no_grad()
    def lambdas(self, x: Tensor, task: Tensor | None = None) -> dict[str, float]:
        """The mean learned pair weight lambda of each pair on inputs ``x`` (the paper's Fig. 3d)."""
        _, lams = self.transfer_weights(self._source_features(x, task))
        return {name: float(lam.mean()) for name, lam in zip(self.pair_names(), lams)}

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        assert self._reg_opt is not None
        self._reg_opt.zero_grad(set_to_none=True)   # a skipped batch leaves no gradient behind
        n = step.n_stream
        batch = step.batch
        sources = self._source_features(batch.x, batch.task)
        targets = [learner.features[t][:n] for _, _, t in self.pairs_]
        with torch.no_grad():   # phi is constant in theta's step
            ws, lams = self.transfer_weights(sources)
        step.scratch[_NAME] = sources
        return {_NAME: self.beta * self._wfm(targets, sources, ws, lams)}

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        assert self._reg_opt is not None
        self._reg_opt.step()
        self._reg_opt.zero_grad(set_to_none=True)
        if self._meta_opt is None or step.index % self.meta_every != 0:
            return
        self.meta_step(learner, step.batch.x, step.batch.y, step.batch.task, step.scratch[_NAME])

    def meta_step(self, learner: Any, x: Tensor, y: Tensor, task: Tensor | None,
                  sources: Sequence[Tensor] | None = None) -> Tensor:
        """Algorithm 1's look-ahead on one batch and an update of phi; returns L_org(theta_{T+1})."""
        assert self._meta_opt is not None
        grads, outer = self.meta_gradient(learner, x, y, task, sources)
        self._meta_opt.zero_grad(set_to_none=True)
        for p, g in zip(self._meta_parameters(), grads):
            p.grad = g.detach()
        self._meta_opt.step()
        self._meta_opt.zero_grad(set_to_none=True)
        self.meta_steps_ += 1
        return outer

    def meta_gradient(self, learner: Any, x: Tensor, y: Tensor, task: Tensor | None = None,
                      sources: Sequence[Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        """``grad_phi L_org(theta_{T+1})`` from the learner's current theta, on one batch.

        theta is the learner's trainable weights and the regressors; the
        learner's tensors, buffers and optimizer are not changed. Returns one
        gradient per meta-parameter (``what_nets_`` then ``where_nets_``) and
        ``L_org(theta_{T+1})``.
        """
        assert self.regressors_ is not None
        if sources is None:
            sources = self._source_features(x, task)
        model = learner.model
        lr_of = {id(p): g["lr"] for g in learner.optimizer.param_groups for p in g["params"]}
        reg_lr = self._reg_opt.param_groups[0]["lr"] if self._reg_opt is not None else learner.lr
        theta: dict[str, Tensor] = {}
        rate: dict[str, float] = {}
        for name, p in model.named_parameters():
            if p.requires_grad and id(p) in lr_of:
                theta[f"m.{name}"] = p
                rate[f"m.{name}"] = lr_of[id(p)]
        for i, r in enumerate(self.regressors_):
            for k, p in r.named_parameters():
                theta[f"r.{i}.{k}"] = p
                rate[f"r.{i}.{k}"] = reg_lr
        if self.inner_lr is not None:
            rate = {k: float(self.inner_lr) for k in rate}
        buffers = {k: b.clone() for k, b in model.named_buffers()}   # BN statistics stay untouched
        conditioned = bool(getattr(model, "task_conditioned", False))
        args = (x, task) if conditioned else (x,)
        ws, lams = self.transfer_weights(sources)                   # these depend on phi

        def forward(params: dict[str, Tensor]) -> Tensor:
            weights = {k[2:]: v for k, v in params.items() if k.startswith("m.")}
            return functional_call(model, {**buffers, **weights}, args)

        def wfm(params: dict[str, Tensor]) -> Tensor:
            forward(params)
            targets = [learner.features[t] for _, _, t in self.pairs_]
            return self._wfm(targets, sources, ws, lams, params)

        def org(params: dict[str, Tensor]) -> Tensor:
            return F.cross_entropy(forward(params), y)

        return lookahead_meta_gradient(theta, self._meta_parameters(), wfm, org, steps=self.T, lr=rate)

    @hookimpl
    def after_training(self, learner: Any) -> None:
        for c in self._captures:
            c.clear()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        assert self.regressors_ is not None and self.what_nets_ is not None
        assert self.where_nets_ is not None and self._reg_opt is not None
        return {"regressors": _cloned(self.regressors_.state_dict()),
                "what": _cloned(self.what_nets_.state_dict()),
                "where": _cloned(self.where_nets_.state_dict()),
                "regressor_optimizer": copy.deepcopy(self._reg_opt.state_dict()),
                "meta_optimizer": (None if self._meta_opt is None
                                   else copy.deepcopy(self._meta_opt.state_dict())),
                "meta_steps": self.meta_steps_, "pairs": [list(p) for p in self.pairs_]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self.regressors_ is not None and self.what_nets_ is not None
        assert self.where_nets_ is not None and self._reg_opt is not None
        if [tuple(p) for p in state["pairs"]] != self.pairs_:
            raise ConfigError(f"plugin {_NAME!r}: the checkpoint was trained with pairs "
                              f"{state['pairs']}, this run has {[list(p) for p in self.pairs_]}")
        self.regressors_.load_state_dict(state["regressors"])
        self.what_nets_.load_state_dict(state["what"])
        self.where_nets_.load_state_dict(state["where"])
        self._reg_opt.load_state_dict(state["regressor_optimizer"])
        if self._meta_opt is not None and state["meta_optimizer"] is not None:
            self._meta_opt.load_state_dict(state["meta_optimizer"])
        self.meta_steps_ = int(state["meta_steps"])

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_sources"], d["_captures"] = None, []   # frozen copies and hooks: rebuilt in before_training
        return d


# ---------------------------------------------------------------------------- helpers


def _source_layer_lists(source_layers: Any, n_sources: int, pairs: Any) -> list[list[str]]:
    who = f"plugin {_NAME!r}"
    if source_layers is None:
        if isinstance(pairs, str):
            raise ConfigError(f"{who}: pairs {pairs!r} needs source_layers (module paths of the "
                              "source), or give an explicit list of pairs")
        return [[] for _ in range(n_sources)]
    if not isinstance(source_layers, (list, tuple)):
        raise ConfigError(f"{who}: source_layers must be a list of module paths, got {source_layers!r}")
    nested = bool(source_layers) and all(isinstance(s, (list, tuple)) for s in source_layers)
    if n_sources == 1 and not nested:
        return [[str(s) for s in source_layers]]
    if not nested or len(source_layers) != n_sources:
        raise ConfigError(f"{who}: with {n_sources} sources, source_layers must be {n_sources} lists "
                          "of module paths, one per source")
    return [[str(s) for s in layers] for layers in source_layers]


def _run_source(source: nn.Module, x: Tensor, task: Tensor | None) -> Tensor:
    if getattr(source, "task_conditioned", False):
        return source(x, task)
    return source(x)


def _optimizer_like(learner: Any, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """An optimizer with the learner's settings for parameters the learner's model does not hold."""
    spec = learner.optimizer_spec
    if callable(spec):
        return spec(params)
    if spec == "sgd":
        return torch.optim.SGD(params, lr=learner.lr, momentum=learner.momentum,
                               weight_decay=learner.weight_decay)
    cls = torch.optim.Adam if spec == "adam" else torch.optim.AdamW
    return cls(params, lr=learner.lr, weight_decay=learner.weight_decay)


def _cloned(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", _NAME, L2TWW)
