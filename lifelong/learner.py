"""The event-driven learner: one model, one optimizer, a list of plugins.

One training step (see DESIGN.md)::

    replay  = hooks.replay_batch(step)          # collected, concatenated
    logits  = model(x [, task])                 # one forward for all
    losses  = {"ce": ...} | hooks.loss_terms()   # collected, names unique
    loss    = hooks.combine_losses(losses) or sum(losses)
    loss.backward(); hooks.before_update(); optimizer.step(); hooks.after_update()
    hooks.detect_boundary()                     # task-free boundaries

The learner checks the composition of its plugins when a run is assembled
(before the first batch): two deciders, two owners of the gradient stage,
or a plugin whose needs the stream cannot meet are a
:class:`~lifelong.errors.CompositionError`, never a warning mid-run.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong import _state_check, hookspecs
from lifelong.errors import (
    CheckpointError,
    CompositionError,
    ConfigError,
    DataError,
    NonFiniteLossError,
)
from lifelong.features import FeatureCapture
from lifelong.predictions import wants_eval_logits
from lifelong.stream.base import Batch, EvalSet, Experience, Stream, TaskSpec
from lifelong.stream.target import TargetSampler

__all__ = ["Learner", "Step", "EvalReport", "resolve_device", "HookFacade"]

NAN_POLICIES = ("raise", "skip")
OPTIMIZERS = ("sgd", "adam", "adamw")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given (checked)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device: {str(device)!r} is not a device; use auto, cpu, cuda or "
                          "cuda:N") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {str(device)!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and dev.index is not None and torch.cuda.is_available() and \
            dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {str(device)!r} asked for, but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but CUDA is not available here; "
                          "use device: auto or cpu")
    return dev


class Step:
    """Per-step scratch shared by the hooks of one training step.

    ``batch`` is the stream batch on the learner's device; after the forward
    pass ``logits`` holds the stream rows first (``n_stream`` of them) and then
    each replay batch's rows, then (when a plugin requires a target) the target
    rows, ``step.target_rows`` of them. ``step.target`` holds the inputs of
    the unlabeled target batch (no labels: see :mod:`lifelong.stream.target`).
    ``losses`` maps term names to scalars.
    ``scratch`` is per-plugin storage: use your own key. ``predict_logits``
    holds the logits of ``batch.predict`` (samples that arrived at this step
    and whose labels come later; see :class:`~lifelong.stream.base.Batch`),
    computed in eval mode before the update; ``None`` when there are none.

    Multi-target streams (``Stream.tasks``): ``outputs`` maps each task name
    to the model's output for it (all rows, like ``logits``), ``losses`` holds
    one loss per task (``ce/<task>``, ``mse/<task>``; no ``"ce"``) and
    ``logits`` is the output of the stream's first classification task
    (``None`` if every task is a regression). ``outputs`` is ``None`` otherwise.
    ``eval_logits``: the stream rows' eval-mode logits before the update, when a
    plugin scores the stream and the model has a train/eval-dependent module
    (read them through :func:`lifelong.predictions.prequential_logits`).
    """

    __slots__ = ("index", "batch", "experience", "n_stream", "logits", "losses", "loss",
                 "replays", "_owners", "scratch", "predict_logits", "target", "target_rows",
                 "outputs", "eval_logits")

    def __init__(self, index: int, batch: Batch, experience: Experience | None) -> None:
        self.index = index
        self.batch = batch
        self.experience = experience
        self.n_stream = len(batch)
        self.logits: Tensor | None = None
        self.losses: dict[str, Tensor] = {}
        self.loss: Tensor | None = None
        self.replays: list[Batch] = []
        self._owners: list[tuple[Any, slice]] = []
        self.scratch: dict[str, Any] = {}
        self.predict_logits: Tensor | None = None
        self.target: Tensor | None = None
        self.target_rows: slice | None = None
        self.outputs: dict[str, Tensor] | None = None
        self.eval_logits: Tensor | None = None

    @property
    def stream_logits(self) -> Tensor:
        assert self.logits is not None
        return self.logits[: self.n_stream]

    @property
    def target_logits(self) -> Tensor | None:
        """Logits of the target rows of the forward pass (``None`` without a target batch)."""
        if self.target_rows is None or self.logits is None:
            return None
        return self.logits[self.target_rows]

    def _slice_of(self, plugin: Any) -> slice | None:
        for owner, sl in self._owners:
            if owner is plugin:
                return sl
        return None

    def logits_of(self, plugin: Any) -> Tensor | None:
        """Logits of the replay rows contributed by ``plugin`` (``None`` if it gave none)."""
        sl = self._slice_of(plugin)
        return None if sl is None or self.logits is None else self.logits[sl]

    def outputs_of(self, plugin: Any) -> dict[str, Tensor] | None:
        """Multi-target streams: each task's output on the replay rows of ``plugin``."""
        sl = self._slice_of(plugin)
        if sl is None or self.outputs is None:
            return None
        return {k: v[sl] for k, v in self.outputs.items()}

    def replay_of(self, plugin: Any) -> Batch | None:
        """The replay batch ``plugin`` contributed this step, if any."""
        for (owner, _), b in zip(self._owners, self.replays):
            if owner is plugin:
                return b
        return None


@dataclass
class EvalReport:
    """Accuracies on held-out data at one moment of the run.

    ``class_il[j]`` / ``task_il[j]``: accuracy on evaluation set j without /
    with the logits masked to that experience's classes. ``kind`` is
    ``"initial"`` (before training), ``"experience_end"`` (after the stream's
    experience ``experience_index``) or ``"anytime"``. ``target[j]``: accuracy
    on the target stream's evaluation set j (domain adaptation; empty without
    a target stream). Multi-target streams: ``tasks[name][j]`` is that task's
    metric on evaluation set j (accuracy for a classification, mean squared
    error for a regression), and ``class_il`` / ``task_il`` are those of the
    first classification task; a task arriving with a later experience is
    reported from that experience on.
    """

    kind: str
    class_il: list[float]
    task_il: list[float]
    samples_seen: int
    step: int
    experience_index: int | None = None
    eval_sets: Sequence[EvalSet] = field(default_factory=list, repr=False)
    target: list[float] = field(default_factory=list)
    tasks: dict[str, list[float]] = field(default_factory=dict)


class HookFacade:
    """Typed calls into the plugin manager; skips hooks nobody implements."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        h = pm.hook
        self._h = h
        self.has = {name: bool(getattr(h, name).get_hookimpls())
                    for name in ("replay_batch", "loss_terms", "combine_losses", "before_update",
                                 "after_update", "detect_boundary", "expand_model", "after_eval",
                                 "parameter_groups", "sample_weights")}

    def before_training(self, learner: Learner, stream: Stream) -> None:
        self._h.before_training(learner=learner, stream=stream)

    def after_training(self, learner: Learner) -> None:
        self._h.after_training(learner=learner)

    def before_experience(self, learner: Learner, experience: Experience | None) -> None:
        self._h.before_experience(learner=learner, experience=experience)

    def after_experience(self, learner: Learner, experience: Experience | None) -> None:
        self._h.after_experience(learner=learner, experience=experience)

    def parameter_groups(self, learner: Learner, model: nn.Module) -> list[dict[str, float]]:
        return self._h.parameter_groups(learner=learner, model=model)

    def expand_model(self, learner: Learner, experience: Experience | None) -> nn.Module | None:
        if not self.has["expand_model"]:
            return None
        return self._h.expand_model(learner=learner, experience=experience)

    def replay_batch(self, learner: Learner, step: Step) -> list[tuple[Any, Batch]]:
        """(plugin, batch) pairs, so each plugin can find its own rows later."""
        out = []
        for impl in self._h.replay_batch.get_hookimpls():
            args = {"learner": learner, "step": step}
            b = impl.function(*[args[a] for a in impl.argnames])
            if b is not None:
                out.append((impl.plugin, b))
        return out

    def loss_terms(self, learner: Learner, step: Step) -> list[dict[str, Tensor]]:
        return self._h.loss_terms(learner=learner, step=step)

    def sample_weights(self, learner: Learner, step: Step) -> Tensor | None:
        return self._h.sample_weights(learner=learner, step=step)

    def combine_losses(self, learner: Learner, step: Step, losses: dict[str, Tensor]) -> Tensor | None:
        return self._h.combine_losses(learner=learner, step=step, losses=losses)

    def before_update(self, learner: Learner, step: Step) -> None:
        self._h.before_update(learner=learner, step=step)

    def after_update(self, learner: Learner, step: Step) -> None:
        self._h.after_update(learner=learner, step=step)

    def detect_boundary(self, learner: Learner, step: Step) -> bool:
        return any(v for v in self._h.detect_boundary(learner=learner, step=step))

    def after_eval(self, learner: Learner, report: EvalReport) -> None:
        self._h.after_eval(learner=learner, report=report)


def _fusable(params: list[Any]) -> bool:
    """Whether torch's fused optimizer kernels apply to ``params`` (tensors, or parameter
    groups): floating tensors on CPU or CUDA. torch checks this only at the first step."""
    ts = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
    return bool(ts) and all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in ts)


class Learner:
    """Trains ``model`` on a stream, letting ``plugins`` contribute at each event.

    :param model: the backbone (``nn.Module``). If it has ``task_conditioned =
        True`` it is called as ``model(x, task)``.
    :param plugins: plugin instances (objects with ``@hookimpl`` methods).
    :param optimizer: ``"sgd"``, ``"adam"``, ``"adamw"`` or a callable
        ``params -> torch.optim.Optimizer``.
    :param lr, momentum, weight_decay: optimizer settings.
    :param batch_size: stream batch size (online learning: small, one epoch).
    :param epochs: passes over each experience.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    :param seed: seeds the model init (if built here), the shuffles and the plugins.
    :param nan_policy: ``"raise"`` (stop, naming the batch) or ``"skip"`` (drop the
        update, count it in ``learner.skipped_batches``).
    :param check_every: steps between non-finite-loss checks that sync with the
        device (1 on CPU; on CUDA a larger value avoids per-step host syncs).
    :param detect_in_task_aware: also ask ``detect_boundary`` in task-aware streams.
    :param target: an unlabeled target stream (domain adaptation): plugins that
        declare ``requires = ("target",)`` get a target batch each step
        (:mod:`lifelong.stream.target`), and every evaluation also reports the
        accuracy on its held-out data (``EvalReport.target``).
    :param compile: run each training step through ``torch.compile``: the whole
        step (forward, loss terms, gradients, the SGD/Adam/AdamW update) as one graph where the
        optimizer and plugins allow, else the forward and backward alone
        (:mod:`lifelong.compiled` says what is compiled, when, and what differs); a
        model that cannot be compiled trains eager, said in one line.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        plugins: Iterable[Any] = (),
        optimizer: str | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        batch_size: int = 10,
        epochs: int = 1,
        device: str | torch.device = "auto",
        seed: int = 0,
        nan_policy: str = "raise",
        check_every: int | None = None,
        detect_in_task_aware: bool = False,
        target: Stream | None = None,
        compile: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
        if epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {epochs}")
        if nan_policy not in NAN_POLICIES:
            raise ConfigError(f"train.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        if isinstance(optimizer, str) and optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"train.lr must be a positive number, got {lr}")
        from lifelong.validation import check_number

        check_number("train", "lr", lr, above=0.0, max=100.0)
        check_number("train", "momentum", momentum, min=0.0, max=1.0)
        if momentum == 1.0:
            raise ConfigError("train: momentum must be below 1 (1 never forgets a gradient), got 1")
        check_number("train", "weight_decay", weight_decay, min=0.0, max=100.0)
        check_number("train", "check_every", check_every, min=1, integer=True, allow_none=True)
        check_number("", "seed", seed, min=0, max=2**63 - 1, integer=True)
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.plugins = list(plugins)
        self.optimizer_spec = optimizer
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.batch_size, self.epochs = batch_size, epochs
        self.seed = seed
        self.nan_policy = nan_policy
        self.check_every = check_every or (1 if self.device.type == "cpu" else 100)
        self.detect_in_task_aware = detect_in_task_aware
        if not isinstance(compile, bool):
            raise ConfigError(f"train.compile must be true or false, got {compile!r}")
        self.compile = compile
        self._named_params: tuple[tuple[str, nn.Parameter], ...] | None = None
        self._named_of: nn.Module | None = None  # the model _named_params were read from
        self._compiled: Any = None  # lifelong.compiled.CompiledForward, built on first use
        self._whole: Any = None  # (optimizer, lifelong.compiled.CompiledStep or None, why not)
        from lifelong.compiled import ShapeHistory

        self._step_history = ShapeHistory()  # the compiled whole step's shapes (checkpointed)
        self.pm = pluggy.PluginManager("lifelong")
        self.pm.add_hookspecs(hookspecs)
        for i, p in enumerate(self.plugins):
            self.pm.register(p, name=f"{i}:{plugin_name(p)}")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise CompositionError(f"plugin {exc.plugin!r}: {exc}") from exc
        self._check_composition()
        self.hooks = HookFacade(self.pm)
        self.optimizer = self._make_optimizer()
        # run state (part of a checkpoint)
        self.step_index = 0
        self.samples_seen = 0
        self.experience_index = 0
        self.batch_in_experience = 0
        self._stop_after: int | None = None
        self.skipped_batches = 0
        self.boundaries_detected: list[int] = []
        self.eval_time_s = 0.0
        # whole-run time across resumed segments (part of a checkpoint)
        self._time_prev = (0.0, 0.0)  # wall, eval seconds of earlier segments
        self.segments = 1
        self._t_begin: float | None = None
        self.stream: Stream | None = None
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._task_conditioned = bool(getattr(self.model, "task_conditioned", False))
        self._features: FeatureCapture | None = None
        self.target = target
        self._target: TargetSampler | None = None
        self._needs_target = any("target" in getattr(p, "requires", ()) for p in self.plugins)
        self._eval_stream = wants_eval_logits(self.model, self.plugins)
        self._tasks: tuple[TaskSpec, ...] = ()  # the stream's tasks (multi-target streams)
        # per-task gradient methods read the graph after backward (lifelong.plugins.multitask)
        self._retain_graph = any("task_gradients" in getattr(p, "requires", ())
                                 for p in self.plugins)

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        """The tasks of the stream being trained on (empty for single-target streams); on a
        stream declaring tasks per experience, those that exist at the current experience."""
        return self._tasks

    @property
    def features(self) -> FeatureCapture:
        """Activations of named modules of the model, captured in the training forward pass.

        Request layers in ``before_training`` (``learner.features.request("body.1")``) and
        read them in ``loss_terms`` (``learner.features["body.1"]``); see
        :mod:`lifelong.features`. Hooks are removed when :meth:`fit` returns or raises.
        """
        if self._features is None:
            self._features = FeatureCapture(self.model)
        return self._features

    # ------------------------------------------------------------------ assembly
    def lr_multipliers(self) -> dict[str, float]:
        """Each parameter's learning-rate multiplier (``parameter_groups`` hook and the model's own)."""
        sources = []
        own = getattr(self.model, "lr_multipliers", None)
        if callable(own):
            sources.append(own())
        if self.hooks.has["parameter_groups"]:
            sources.extend(self.hooks.parameter_groups(self, self.model))
        mult = {n: 1.0 for n, _ in self.model.named_parameters()}
        for groups in sources:
            for prefix, m in (groups or {}).items():
                if not (isinstance(m, (int, float)) and math.isfinite(m) and m >= 0):
                    raise ConfigError(f"learning-rate multiplier for {prefix!r} must be a finite "
                                      f"number >= 0, got {m!r}")
                hit = [n for n in mult if not prefix or n == prefix or n.startswith(prefix + ".")]
                if not hit:
                    raise ConfigError(f"no parameter of the model is named {prefix!r} or below it; "
                                      f"parameters: {', '.join(list(mult)[:30])}")
                for n in hit:
                    mult[n] *= float(m)
        return mult

    def auxiliary_parameters(self) -> list[list[nn.Parameter]]:
        """The trainable parameters of the plugins' auxiliary modules, one list per plugin.

        Why: methods that learn a module of their own beside the model (FitNet's
        regressor, VID's mean networks and variances, CRD's embedding heads, the
        critics of domain adaptation, L2T-ww's meta-networks) are trained on the
        same loss, step and schedule as the model. A plugin exposes such a module
        as its attribute ``auxiliary_`` (an ``nn.Module`` on ``learner.device``,
        built in ``before_training``; ``None`` when it has none); the learner puts
        its parameters in their own optimizer group(s) at the learner's learning
        rate, after the model's, whenever it builds its optimizer, so their
        optimizer state is checkpointed with the learner's. The plugin saves the
        module's weights in its ``state_dict`` and loads them in place
        (``module.load_state_dict``) so a resumed run is exact.
        """
        out = []
        for p in self.plugins:
            module = getattr(p, "auxiliary_", None)
            if module is None:
                continue
            if not isinstance(module, nn.Module):
                raise CompositionError(f"plugin {plugin_name(p)!r}: auxiliary_ must be an "
                                       f"nn.Module or None, got {type(module).__name__}")
            ps = [q for q in module.parameters() if q.requires_grad]
            if ps:
                out.append(ps)
        return out

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The model's parameters that require grad, by name, for plugins' per-step work.

        Cached: every change of the model (an expansion, a grown head, a resumed
        growth) goes through the optimizer's rebuild, which clears the cache, as
        do experience boundaries (where plugins rebuild layers in place); a
        parameter frozen since (``requires_grad_(False)``) drops out at the next
        call, and so does a model assigned to ``learner.model`` directly.
        Walking the modules at every step costs more than a small model's arithmetic.
        """
        named = self._named_params
        if named is None or self._named_of is not self.model:
            named = self._named_params = tuple(self.model.named_parameters())
            self._named_of = self.model
        return {n: p for n, p in named if p.requires_grad}

    def _make_optimizer(self) -> torch.optim.Optimizer:
        self._named_params = None  # the model may have changed: trainable_parameters re-walks it
        mult = self.lr_multipliers()
        groups: dict[float, list[nn.Parameter]] = {}
        for n, p in self.model.named_parameters():
            if mult[n] == 0.0:
                p.requires_grad_(False)
            elif p.requires_grad:
                groups.setdefault(mult[n], []).append(p)
        aux = self.auxiliary_parameters()
        if set(groups) <= {1.0} and not aux:
            params: Any = groups.get(1.0, [])
        else:
            params = [{"params": ps, "lr": self.lr * m} for m, ps in groups.items()]
            params += [{"params": ps, "lr": self.lr} for ps in aux]
        spec = self.optimizer_spec
        if callable(spec):
            return spec(params)
        if spec == "sgd":
            cls: Any = torch.optim.SGD
            kw: dict[str, Any] = {"lr": self.lr, "momentum": self.momentum,
                                  "weight_decay": self.weight_decay}
        else:
            cls = torch.optim.Adam if spec == "adam" else torch.optim.AdamW
            kw = {"lr": self.lr, "weight_decay": self.weight_decay}
        if spec == "sgd" and self.momentum == 0 and _fusable(params):
            # plain SGD: one kernel over every tensor instead of one call per tensor (~18 us
            # a step for the MLP), the same bits as the per-tensor loop. Not with momentum
            # (torch's fused SGD fails on a parameter that gets its first gradient later, a
            # grown head) nor for Adam (it rounds the last bit differently)
            kw["fused"] = True
        return cls(params, **kw)

    def _check_composition(self) -> None:
        for hook in ("combine_losses", "expand_model", "sample_weights"):
            impls = getattr(self.pm.hook, hook).get_hookimpls()
            if len(impls) > 1:
                names = ", ".join(plugin_name(i.plugin) for i in impls)
                raise CompositionError(f"plugins {names} all decide {hook!r}; only one plugin "
                                       f"may implement it in a run: remove all but one")
        owners: dict[str, list[str]] = {}
        for p in self.plugins:
            for stage in getattr(p, "owns", ()):
                owners.setdefault(stage, []).append(plugin_name(p))
        for stage, names in owners.items():
            if len(names) > 1:
                raise CompositionError(f"plugins {', '.join(names)} all own the {stage} stage; "
                                       "they cannot compose: keep one of them")

    def _check_stream(self, stream: Stream) -> None:
        detectors = [plugin_name(i.plugin) for i in self.pm.hook.detect_boundary.get_hookimpls()]
        for p in self.plugins:
            needs = set(getattr(p, "requires", ()))
            name = plugin_name(p)
            if "boundaries" in needs and not stream.task_aware and not detectors:
                raise CompositionError(
                    f"plugin {name!r} needs experience boundaries, but stream {stream.name!r} is "
                    "task-free and no boundary detector is configured: add one (e.g. plugin "
                    "'every_n' or a drift detector) or use a method that needs none"
                    + (f" ({p.requires_hint})" if getattr(p, "requires_hint", None) else ""))
            if stream.tasks and getattr(p, "single_target", False):
                raise CompositionError(f"plugin {name!r} works on one output and one target per "
                                       f"sample, but stream {stream.name!r} has tasks "
                                       f"{', '.join(t.name for t in stream.tasks)}: use it on a "
                                       "single-target stream")
            if "multitask" in needs and not stream.tasks:
                raise CompositionError(f"plugin {name!r} balances several tasks, but stream "
                                       f"{stream.name!r} has one target per sample; use a "
                                       "multi-target stream (e.g. multi_mnist)")
            if "multitask" in needs and any(len(e) != len(stream.tasks)
                                            for e in stream.experience_tasks):
                raise CompositionError(f"plugin {name!r} balances a fixed set of tasks, but "
                                       f"stream {stream.name!r} declares tasks per experience "
                                       f"({[list(e) for e in stream.experience_tasks]}); use "
                                       "it on a stream whose experiences all have every task")
            if "task_labels" in needs and not stream.task_labels:
                raise CompositionError(f"plugin {name!r} needs task labels, but stream "
                                       f"{stream.name!r} gives none (set task_labels: true)")
        if stream.tasks and self.hooks.has["sample_weights"]:
            impl = self.pm.hook.sample_weights.get_hookimpls()[0]
            raise CompositionError(f"plugin {plugin_name(impl.plugin)!r} weighs the samples of one "
                                   f"loss, but stream {stream.name!r} has one loss per task "
                                   f"({', '.join(t.name for t in stream.tasks)}); use it on a "
                                   "single-target stream")
        self._check_target(stream)
        # one dry forward: input shape and head size are checked before the first batch
        # (on a held-out sample, or on zeros of the stream's input shape without a test set)
        probes: list[tuple[Tensor, Tensor | None]] = [
            (exp.x[:1].to(self.device), self._task_of(exp, 1)) for exp in stream.test[:1]]
        if not probes and stream.input_shape is not None:
            task = (torch.zeros(1, dtype=torch.long, device=self.device)
                    if self._task_conditioned else None)
            probes.append((torch.zeros((1, *stream.input_shape), device=self.device), task))
        for x, task in probes:
            try:
                with torch.no_grad():
                    was = self.model.training
                    self.model.eval()
                    out = self.forward(x, task)
                    self.model.train(was)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise DataError(f"the model cannot take inputs of shape {tuple(x.shape[1:])} from "
                                f"stream {stream.name!r}: {str(exc).splitlines()[0]}") from exc
            if stream.tasks or isinstance(out, dict):
                self._check_task_outputs(out, stream)
                continue
            if out.dim() != 2 or out.shape[1] < stream.num_classes:
                raise DataError(f"the model outputs shape {tuple(out.shape)} but stream "
                                f"{stream.name!r} has {stream.num_classes} classes; size the head "
                                f"to num_classes={stream.num_classes}")

        self._tasks = tuple(stream.tasks_at(0))

    def _check_task_outputs(self, out: Any, stream: Stream) -> None:
        """A multi-output model has exactly one output of the right size per task (tasks that
        arrive with a later experience: a head of the right size, or a model that grows one)."""
        names = [t.name for t in stream.tasks]
        if isinstance(out, dict) and stream.experience_tasks:
            later = [t for t in stream.tasks if t not in stream.tasks_at(0)]
            if any(t.name not in out for t in later) and not hasattr(self.model, "add_head"):
                raise ConfigError(f"stream {stream.name!r} adds task(s) "
                                  f"{', '.join(t.name for t in later if t.name not in out)} "
                                  f"with a later experience, but the model "
                                  f"({type(self.model).__name__}) cannot grow a head; use "
                                  "backbone shared_bottom, or build the model with every head")
            stream = Stream(stream.name, stream.num_classes, stream.input_shape,
                            stream.make_experiences,
                            tasks=tuple(t for t in stream.tasks if t.name in out
                                        or t in stream.tasks_at(0)))
        if not stream.tasks:
            raise DataError(f"the model returns one output per task ({', '.join(map(str, out))}) "
                            f"but stream {stream.name!r} has one target per sample; use a "
                            "single-output backbone or a multi-target stream")
        if not isinstance(out, dict):
            raise DataError(f"stream {stream.name!r} has tasks {', '.join(names)}, but the model "
                            "returns a single output; use a multi-task backbone "
                            "(shared_bottom or cross_stitch) that returns one output per task")
        for t in stream.tasks:
            if t.name not in out:
                raise DataError(f"the model has no output (head) for task {t.name!r} of stream "
                                f"{stream.name!r}; it has heads for {', '.join(map(str, out))}")
            o = out[t.name]
            if o.dim() != 2 or o.shape[1] != t.size:
                raise DataError(f"the model's head for task {t.name!r} outputs shape "
                                f"{tuple(o.shape)}; the task is a {t.kind} of size {t.size}: "
                                f"size the head to {t.size}")
        extra = [k for k in out if k not in names]
        if extra:
            raise DataError(f"the model has a head for task {extra[0]!r}, which stream "
                            f"{stream.name!r} does not have (tasks: {', '.join(names)}); "
                            f"build the model for the stream's tasks")

    def _check_target(self, stream: Stream) -> None:
        need = [plugin_name(p) for p in self.plugins if "target" in getattr(p, "requires", ())]
        target = self.target
        if target is None:
            if need:
                raise CompositionError(f"plugin {need[0]!r} adapts to a target domain, but no "
                                       "target stream is configured: add target: {name: ...} "
                                       "next to stream: (the same stream names)")
            return
        if tuple(target.input_shape) != tuple(stream.input_shape):
            raise DataError(f"target stream {target.name!r} has inputs of shape "
                            f"{tuple(target.input_shape)}, the stream {stream.name!r} has "
                            f"{tuple(stream.input_shape)}; give the target a transform that maps "
                            "it (e.g. digits_domain with size: 28) or a stream of the same shape")
        if target.num_classes > stream.num_classes:
            raise DataError(f"target stream {target.name!r} has {target.num_classes} classes, the "
                            f"stream {stream.name!r} only {stream.num_classes}; the target's "
                            "labels (used only to evaluate) must be classes of the stream")
        self._target = TargetSampler(target, seed=self.seed)
        if need:
            self._target.experiences()  # an iterable target is refused before the first batch

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        """The model's logits (task-conditioned models also get the task ids)."""
        if self._task_conditioned:
            return self.model(x, task)
        return self.model(x)

    def _whole_step(self) -> Any:
        """The compiled whole step (lifelong.compiled.CompiledStep), or ``None`` where something
        keeps the step off it; decided once per optimizer and said in one line."""
        if self._whole is not None and self._whole[0] is self.optimizer:
            return self._whole[1]
        from lifelong.compiled import CompiledStep, failure, whole_step_blocker

        why, whole = whole_step_blocker(self), None
        if why is None:
            try:
                whole = CompiledStep(self)
            except Exception as exc:  # noqa: BLE001 - a compiler that cannot start falls back, loudly
                why = f"torch.compile could not start ({failure(exc)})"
        if whole is not None:
            if self._whole is None or self._whole[1] is None:  # once, not at every model growth
                print(whole.note(), file=sys.stderr)
        elif self._whole is None or self._whole[2] != why:
            print(f"train.compile: the training step cannot run as one compiled graph: {why}",
                  file=sys.stderr)
        self._whole = (self.optimizer, whole, why)
        return whole

    def _train_forward(self, x: Tensor, task: Tensor | None) -> Tensor:
        """:meth:`forward` through ``torch.compile`` (``train.compile``; see lifelong.compiled)."""
        if self._compiled is None or self._compiled.model is not self.model:
            from lifelong.compiled import CompiledForward

            self._compiled = CompiledForward(self.model, self.device)
        return self._compiled(x, task) if self._task_conditioned else self._compiled(x)

    def _task_of(self, eval_set: EvalSet, n: int) -> Tensor | None:
        if not self._task_conditioned:
            return None
        tid = eval_set.task_id if eval_set.task_id is not None else 0
        return torch.full((n,), tid, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ training
    def fit(self, stream: Stream, *, progress: Callable[[int], None] | None = None,
            evaluate: bool = True, state: dict[str, Any] | None = None,
            stop_after: int | None = None) -> Learner:
        """Train on every experience of ``stream``; evaluate after each one.

        :param progress: called with the number of samples of each batch.
        :param state: a :meth:`state_dict` to resume from: the run continues at the
            exact batch where that state was taken.
        :param stop_after: return (without closing the experience) once this many
            steps have been taken in total; the state can then be saved and resumed.
        """
        try:
            self.begin(stream, evaluate=evaluate and state is None)
            if state is not None:
                self.load_state_dict(state)
            self.model.train()
            self._stop_after = stop_after
            for i, exp in enumerate(stream.experiences()):
                if i < self.experience_index:
                    continue
                try:
                    self.train_experience(exp, progress=progress, start=self.batch_in_experience)
                except _StopRun:
                    return self
                if evaluate and stream.test:
                    self.evaluate(kind="experience_end")
                self.experience_index += 1
                self.batch_in_experience = 0
            self.end()
            return self
        finally:
            if self._features is not None:  # nothing stays attached after the run or on error
                self._features.close()

    def begin(self, stream: Stream, *, evaluate: bool = True) -> None:
        """Assemble the run on ``stream``: checks, ``before_training``, baseline eval."""
        self.stream = stream
        self._t_begin = time.perf_counter()
        self._check_stream(stream)
        torch.manual_seed(self.seed)
        self.hooks.before_training(self, stream)
        # plugins may decide their groups from the stream, or build auxiliary modules
        if self.hooks.has["parameter_groups"] or self.auxiliary_parameters():
            self.optimizer = self._make_optimizer()
        if evaluate and stream.test and self.step_index == 0:
            self.evaluate(kind="initial")

    def end(self) -> None:
        self._check_nonfinite(force=True)
        self.hooks.after_training(self)

    def _announce(self) -> bool:
        assert self.stream is not None
        return self.stream.task_aware

    def train_experience(self, experience: Experience, *, progress: Callable[[int], None] | None = None,
                         start: int = 0) -> None:
        """Train on one experience (from batch ``start`` on, when resuming)."""
        announce = self._announce()
        stop = self._stop_after
        if stop is not None and self.step_index >= stop:
            raise _StopRun  # before the boundary hooks, so a resume runs them exactly once
        if start == 0 and (announce or self.experience_index == 0):
            self.start_experience(experience if announce else None)
        batches = experience.batches(self.batch_size, epochs=self.epochs,
                                     seed=self.seed, start=start)
        check_inputs = not experience.finite_checked
        for batch in batches:
            if stop is not None and self.step_index >= stop:
                raise _StopRun
            if check_inputs and not self._inputs_ok(batch, experience):
                self.batch_in_experience += 1
                continue
            self.train_batch(batch, experience)
            self.batch_in_experience += 1
            if progress is not None:
                progress(len(batch))
        if announce or self._is_last(experience):
            self.end_experience(experience if announce else None)

    def _is_last(self, experience: Experience) -> bool:
        n = self.stream.n_experiences if self.stream is not None else None
        return n is not None and experience.id == n - 1

    def start_experience(self, experience: Experience | None) -> None:
        self.model.train()
        self._named_params = None  # boundary hooks may rebuild layers in place (DEN's compaction)
        self.hooks.before_experience(self, experience)
        new = self.hooks.expand_model(self, experience)
        if new is not None:
            self._install_model(new)
        if self.stream is not None and self.stream.experience_tasks:
            self._enter_tasks(self.experience_index)

    def _enter_tasks(self, experience_index: int) -> None:
        """A stream declaring tasks per experience: the tasks existing at ``experience_index``;
        a new task's head grows (``lifelong.multitask.grow_heads``); the optimizer gets its
        parameters and keeps the state of the others. A head the model has is kept as it is."""
        from lifelong.multitask import grow_heads

        assert self.stream is not None
        self._tasks = tuple(self.stream.tasks_at(experience_index))
        if grow_heads(self.model, self._tasks, seed=self.seed):
            old = self.optimizer
            self._install_model(self.model)
            for p, st in old.state.items():
                self.optimizer.state[p] = st

    def _install_model(self, new: nn.Module) -> None:
        """Train ``new`` from now on (grown by the expansion plugin): features, optimizer follow."""
        self.model = new.to(self.device).train()
        if self._features is not None:
            self._features.rebind(self.model)
        self._task_conditioned = bool(getattr(self.model, "task_conditioned", False))
        self._eval_stream = wants_eval_logits(self.model, self.plugins)
        self.optimizer = self._make_optimizer()

    def _regrow(self, state: dict[str, Any]) -> set[str]:
        """Before loading a checkpoint's weights: let the expansion plugin rebuild the grown model.

        The plugin implementing ``expand_model`` loads its own state first and, through
        its ``grown_model(learner)`` method, returns the architecture that state
        describes (or ``None`` when nothing has grown yet). Returns the plugin keys
        whose state is already loaded.
        """
        done: set[str] = set()
        for impl in self.pm.hook.expand_model.get_hookimpls():
            p = impl.plugin
            key = next((f"{i}:{plugin_name(q)}" for i, q in enumerate(self.plugins) if q is p), None)
            if key is None or not hasattr(p, "load_state_dict") or key not in state["plugins"]:
                continue
            _state_check.load_plugin(self, p, key, state["plugins"])
            done.add(key)
            grown = p.grown_model(self) if hasattr(p, "grown_model") else None
            if grown is not None:
                self._install_model(grown)
        c = state.get("counters")
        if self.stream is not None and self.stream.experience_tasks and isinstance(c, dict) \
                and isinstance(c.get("experience_index"), int) \
                and isinstance(c.get("batch_in_experience"), int):
            # the heads of the tasks of the last experience started (batch 0: not started yet)
            started = c["experience_index"] - (c["batch_in_experience"] == 0)
            self._enter_tasks(max(started, 0))
        return done

    def end_experience(self, experience: Experience | None) -> None:
        self.hooks.after_experience(self, experience)
        self._named_params = None

    def train_batch(self, batch: Batch, experience: Experience | None = None) -> Step:
        """One training step on ``batch`` (CPU or device tensors)."""
        dev = self.device
        if batch.x.device != dev:
            batch = batch.to(dev, non_blocking=True)
        hooks = self.hooks
        step = Step(self.step_index, batch, experience)
        if batch.predict is not None and len(batch.predict):
            step.predict_logits = self.predict(batch.predict)
        if self._eval_stream:  # test-then-train scoring (predictions.py)
            step.eval_logits = self.predict(batch)
            if isinstance(step.eval_logits, dict):  # multi-target: the first classification's
                step.eval_logits = next((step.eval_logits[t.name] for t in self._tasks
                                         if t.kind == "classification"), None)
        x, y, task = batch.x, batch.y, batch.task
        if hooks.has["replay_batch"]:
            pairs = hooks.replay_batch(self, step)
            if pairs:
                x, task = self._concat_replay(step, pairs)
        if self._needs_target and self._target is not None:
            x, task = self._concat_target(step, x, task)
        whole = self._whole_step() if self.compile and batch.targets is None else None
        fused = whole.run(step, x, y, task) if whole is not None else None
        if fused is not None:  # forward, losses, gradients and update as one compiled graph
            step.loss, step.logits, terms = fused
            step.losses.update(terms)
            if self._loss_ok(step.loss) and hooks.has["after_update"]:
                hooks.after_update(self, step)
            return self._step_done(step)
        self.optimizer.zero_grad(set_to_none=True)
        if self.compile and (whole is None or whole.failed):
            logits = self._train_forward(x, task)
        else:  # eager, or a step shape the compiled whole step leaves eager
            logits = self.forward(x, task)
        losses = step.losses
        if batch.targets is None:
            step.logits = logits
            own = logits[: step.n_stream] if len(logits) != step.n_stream else logits
            weights = hooks.sample_weights(self, step) if hooks.has["sample_weights"] else None
            if weights is None:
                ce = F.cross_entropy(own, y)
            else:
                if weights.shape != (step.n_stream,):
                    raise DataError(f"sample_weights returned shape {tuple(weights.shape)}; "
                                    f"expected one weight per stream sample, ({step.n_stream},)")
                ce = (F.cross_entropy(own, y, reduction="none") * weights).mean()
            losses["ce"] = ce
        else:
            ce = self._task_losses(step, logits)
        if hooks.has["loss_terms"]:
            for terms in hooks.loss_terms(self, step):
                for k, v in (terms or {}).items():
                    if k in losses:
                        raise CompositionError(f"two plugins contribute a loss term named {k!r}; "
                                               "term names must be unique")
                    losses[k] = v
        loss = hooks.combine_losses(self, step, losses) if hooks.has["combine_losses"] else None
        if loss is None:
            loss = ce
            if len(losses) > 1:  # the terms in order, without sum()'s leading 0 + (one node less)
                terms = iter(losses.values())
                loss = next(terms)
                for v in terms:
                    loss = loss + v
        step.loss = loss
        if self._loss_ok(loss):  # a non-finite loss never reaches backward or the plugins
            loss.backward(retain_graph=self._retain_graph)
            if hooks.has["before_update"]:
                hooks.before_update(self, step)
            self.optimizer.step()
            if hooks.has["after_update"]:
                hooks.after_update(self, step)
        return self._step_done(step)

    def _step_done(self, step: Step) -> Step:
        hooks = self.hooks
        self.samples_seen += step.n_stream
        self.step_index += 1
        if hooks.has["detect_boundary"] and (not self._announce() or self.detect_in_task_aware):
            if hooks.detect_boundary(self, step):
                self.boundaries_detected.append(self.samples_seen)
                self.end_experience(None)
                self.start_experience(None)
        return step

    def _task_losses(self, step: Step, out: Any) -> Tensor:
        """One named loss per task (``ce/<task>``, ``mse/<task>``) on the stream rows."""
        if not isinstance(out, dict):
            raise DataError("the stream has several targets per sample but the model returned "
                            "one output; use a multi-task backbone (shared_bottom, cross_stitch)")
        if not self._tasks:
            raise DataError("a batch with several targets, but the learner knows no tasks: start "
                            "the run with fit(stream) or begin(stream) on a multi-target stream")
        step.outputs = out
        targets = step.batch.targets
        assert targets is not None
        n = step.n_stream
        first = None
        for t in self._tasks:
            if t.name not in targets:  # a task this experience does not train (declared earlier)
                continue
            o = out[t.name]
            o = o[:n] if len(o) != n else o
            if t.kind == "classification":
                loss = F.cross_entropy(o, targets[t.name])
                if step.logits is None:
                    step.logits = out[t.name]
            else:
                target = targets[t.name]
                loss = F.mse_loss(o.reshape(target.shape), target)
            step.losses[t.loss_name] = loss
            first = loss if first is None else first
        assert first is not None
        return first

    @torch.no_grad()
    def predict(self, batch: Batch) -> Tensor:
        """Logits for ``batch.x`` from the current model, in eval mode, without gradients."""
        was = self.model.training
        self.model.eval()
        out = self.forward(batch.x, batch.task)
        self.model.train(was)
        return out

    def _concat_replay(self, step: Step, pairs: list[tuple[Any, Batch]]) -> tuple[Tensor, Tensor | None]:
        xs, tasks = [step.batch.x], [step.batch.task]
        start = step.n_stream
        for plugin, b in pairs:
            if b.x.shape[1:] != step.batch.x.shape[1:]:
                raise DataError(f"plugin {plugin_name(plugin)!r} replays inputs of shape "
                                f"{tuple(b.x.shape[1:])}, the stream has {tuple(step.batch.x.shape[1:])}")
            if b.x.device != self.device:
                b = b.to(self.device)
            step.replays.append(b)
            step._owners.append((plugin, slice(start, start + len(b))))
            start += len(b)
            xs.append(b.x)
            tasks.append(b.task)
        task = None
        if self._task_conditioned:
            task = torch.cat([t if t is not None else torch.zeros(len(x_), dtype=torch.long,
                                                                 device=self.device)
                              for t, x_ in zip(tasks, xs)])
        return torch.cat(xs), task

    def _concat_target(self, step: Step, x: Tensor, task: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Append this step's target rows (inputs only) to the forward pass."""
        assert self._target is not None
        xt = self._target.draw(self.experience_index, self.batch_in_experience, step.n_stream,
                               batch_size=self.batch_size).to(self.device, non_blocking=True)
        step.target = xt
        step.target_rows = slice(len(x), len(x) + len(xt))
        if self._task_conditioned:
            tid = step.experience.task_id if step.experience is not None else None
            tt = torch.full((len(xt),), tid or 0, dtype=torch.long, device=self.device)
            base = task if task is not None else torch.zeros(len(x), dtype=torch.long,
                                                             device=self.device)
            task = torch.cat([base, tt])
        return torch.cat([x, xt]), task

    def _inputs_ok(self, batch: Batch, experience: Experience) -> bool:
        """Host-side NaN/inf check for batches of streams not checked up front."""
        x = batch.x
        if bool(torch.isfinite(x).all()):
            return True
        if self.nan_policy == "skip":
            self.skipped_batches += 1
            return False
        rows = (~torch.isfinite(x.reshape(len(x), -1))).any(1).nonzero().flatten()
        raise DataError(f"batch {self.batch_in_experience} of experience {experience.id} "
                        f"(step {self.step_index}) has NaN/inf inputs in {rows.numel()} row(s), "
                        f"first row {int(rows[0])}; clean the stream or set "
                        "train.nan_policy: skip to drop such batches (they are counted)")

    def _loss_ok(self, loss: Tensor) -> bool:
        """Non-finite loss handling; syncs with the device only every ``check_every`` steps."""
        if self.nan_policy == "skip" or self.check_every == 1:
            # on CPU reading the scalar is a memory load, not a device sync
            if math.isfinite(loss.item()):
                return True
            if self.nan_policy == "skip":
                self.skipped_batches += 1
                return False
            self._raise_nonfinite(self.step_index, loss)
        bad = ~torch.isfinite(loss.detach())
        self._bad_step = torch.where(bad & (self._bad_step < 0), self.step_index, self._bad_step)
        self._check_nonfinite()
        return True

    def _check_nonfinite(self, force: bool = False) -> None:
        if self.check_every == 1 and not force:
            return
        if force or self.step_index % self.check_every == 0:
            bad = int(self._bad_step)
            if bad >= 0:
                self._raise_nonfinite(bad, None)

    def _raise_nonfinite(self, index: int, loss: Tensor | None) -> None:
        del loss
        raise NonFiniteLossError(f"the training loss is NaN or infinite at batch {index} "
                                 f"(experience {self.experience_index}); lower the "
                                 "learning rate, check the inputs, or set train.nan_policy: skip")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, eval_sets: Sequence[EvalSet] | None = None, *, kind: str = "anytime",
                 batch_size: int = 1000) -> EvalReport:
        """Accuracy on each evaluation set, Class-IL and Task-IL, from one forward pass each."""
        with_target = eval_sets is None  # the run's own evaluation also scores the target
        if eval_sets is None:
            eval_sets = self.stream.test if self.stream is not None else []
        t0 = time.perf_counter()
        was = self.model.training
        self.model.eval()
        target_sets = list(self.target.test) if with_target and self.target is not None else []
        class_il, task_il = [], []
        task_sums: dict[str, list[Tensor]] = {t.name: [] for t in self._tasks}
        for es in [*eval_sets, *target_sets]:
            correct_c = torch.zeros((), dtype=torch.long, device=self.device)
            correct_t = torch.zeros((), dtype=torch.long, device=self.device)
            mask = None
            sums = ({t.name: torch.zeros((), device=self.device) for t in self._tasks}
                    if es.targets is not None else None)
            for i in range(0, len(es), batch_size):
                x = es.x[i:i + batch_size].to(self.device, non_blocking=True)
                y = es.y[i:i + batch_size].to(self.device, non_blocking=True)
                logits = self.forward(x, self._task_of(es, len(y)))
                if sums is not None:  # multi-target: every task scored, then the first class. one
                    logits = self._score_tasks(logits, es, slice(i, i + batch_size), sums)
                    if logits is None:
                        continue
                correct_c += (logits.argmax(1) == y).sum()
                if mask is None:
                    mask = torch.full((logits.shape[1],), float("-inf"), device=self.device)
                    mask[list(es.classes)] = 0.0
                correct_t += ((logits + mask).argmax(1) == y).sum()
            class_il.append(correct_c)
            task_il.append(correct_t)
            for name, v in (sums or {}).items():
                task_sums[name].append(v)
        k, kt = len(eval_sets), len(target_sets)
        per_task: dict[str, list[float]] = {}
        if any(task_sums.values()):
            names = [n for n, v in task_sums.items() if v]
            flat = torch.stack([v for n in names for v in task_sums[n]]).tolist()
            with_targets = [max(len(es), 1) for es in eval_sets if es.targets is not None]
            m = len(with_targets)
            per_task = {n: [s / c for s, c in zip(flat[j * m:(j + 1) * m], with_targets)]
                        for j, n in enumerate(names)}
        counts = torch.stack(class_il + task_il).tolist() if k + kt else []
        sizes = [max(len(es), 1) for es in [*eval_sets, *target_sets]]
        target = [c / n for c, n in zip(counts[k:k + kt], sizes[k:])]
        counts = counts[:k] + counts[k + kt:k + kt + k]
        report = EvalReport(
            kind=kind,
            class_il=[c / n for c, n in zip(counts[:k], sizes)],
            task_il=[c / n for c, n in zip(counts[k:], sizes)],
            samples_seen=self.samples_seen,
            step=self.step_index,
            experience_index=self.experience_index if kind == "experience_end" else None,
            eval_sets=eval_sets,
            target=target,
            tasks=per_task,
        )
        self.model.train(was)
        self.eval_time_s += time.perf_counter() - t0
        if self.hooks.has["after_eval"]:
            self.hooks.after_eval(self, report)
        return report

    def _score_tasks(self, out: Any, es: EvalSet, rows: slice,
                     sums: dict[str, Tensor]) -> Tensor | None:
        """Add each task's hits (classification) or squared error (regression) to ``sums``."""
        assert es.targets is not None
        if not isinstance(out, dict):
            raise DataError(f"evaluation set {es.name!r} has several targets per sample but the "
                            "model returned one output; use a multi-task backbone")
        first = None
        for t in self._tasks:
            o = out[t.name]
            target = es.targets[t.name][rows].to(self.device, non_blocking=True)
            if t.kind == "classification":
                sums[t.name] += (o.argmax(1) == target).sum()
                first = o if first is None else first
            else:
                sums[t.name] += (o.reshape(target.shape) - target).pow(2).sum() / t.size
        return first

    # ------------------------------------------------------------------ state
    def timing(self) -> dict[str, Any]:
        """The run's time so far (for a checkpoint): wall and eval seconds, segments."""
        wall, ev = self.run_time()
        return {"wall_time_s": wall, "eval_time_s": ev, "segments": self.segments}

    def continue_timing(self, timing: dict[str, Any] | None) -> None:
        """Count the time of the earlier segments of a resumed run (``timing()`` of its
        checkpoint), so that wall time and throughput cover the whole run."""
        if timing is None:
            return
        _state_check.check_timing(timing)
        self._time_prev = (float(timing["wall_time_s"]), float(timing["eval_time_s"]))
        self.segments = int(timing["segments"]) + 1

    def run_time(self) -> tuple[float, float]:
        """``(wall, eval)`` seconds of the whole run so far, earlier resumed segments included."""
        now = time.perf_counter() - self._t_begin if self._t_begin is not None else 0.0
        return self._time_prev[0] + now, self._time_prev[1] + self.eval_time_s

    def plugin_states(self) -> dict[str, Any]:
        return {f"{i}:{plugin_name(p)}": p.state_dict() for i, p in enumerate(self.plugins)
                if hasattr(p, "state_dict")}

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, every plugin's state and the run counters."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "plugins": self.plugin_states(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "counters": {"step_index": self.step_index, "samples_seen": self.samples_seen,
                         "experience_index": self.experience_index,
                         "batch_in_experience": self.batch_in_experience,
                         "skipped_batches": self.skipped_batches,
                         "boundaries_detected": list(self.boundaries_detected)},
            "env": {"torch_threads": torch.get_num_threads(), "compile": self.compile,
                    **({"compile_shapes": self._step_history.state_dict()} if self.compile else {})},
        }

    @staticmethod
    def _read_shapes(state: dict[str, Any]) -> Any:
        """The compiled whole step's shape history of a checkpoint, checked (None: none saved)."""
        env = state.get("env")
        if not isinstance(env, dict) or "compile_shapes" not in env:
            return None
        from lifelong.compiled import ShapeHistory

        try:
            return ShapeHistory.parse(env["compile_shapes"])
        except ValueError as exc:
            raise CheckpointError(f"checkpoint: env.compile_shapes is malformed ({exc}); the "
                                  "checkpoint is corrupted") from exc

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, checking every part against this run first.

        A part that does not fit (a tensor of another shape or dtype, a missing
        plugin state, counters out of range, an RNG state of the wrong size) is a
        :class:`~lifelong.errors.CheckpointError` naming it; nothing from a
        plugin's ``load_state_dict`` escapes as another exception. While it runs,
        :func:`lifelong.validation.loading_learner` returns this learner.
        """
        from lifelong import validation

        counters = state.get("counters") if isinstance(state, dict) else None
        with validation.loading(self, counters if isinstance(counters, dict) else None):
            _state_check.check_top(state)
            history = self._read_shapes(state)
            loaded = self._regrow(state)  # a grown model is rebuilt before its weights load
            _state_check.check_model(self.model, state["model"])
            try:
                self.model.load_state_dict(state["model"])
            except (RuntimeError, KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"checkpoint: the model state does not fit the model "
                                      f"({str(exc).splitlines()[0][:200]})") from exc
            self.optimizer = self._make_optimizer()
            _state_check.check_optimizer(self.optimizer, state["optimizer"])
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
                raise CheckpointError(f"checkpoint: the optimizer state does not fit the "
                                      f"optimizer ({str(exc).splitlines()[0][:200]})") from exc
            _state_check.check_rng(state["rng"])
            _state_check.check_counters(self, state["counters"])
            for i, p in enumerate(self.plugins):
                key = f"{i}:{plugin_name(p)}"
                if hasattr(p, "load_state_dict") and key not in loaded:
                    _state_check.load_plugin(self, p, key, state["plugins"])
            c = state["counters"]
            self.step_index, self.samples_seen = c["step_index"], c["samples_seen"]
            self.experience_index, self.skipped_batches = c["experience_index"], c["skipped_batches"]
            self.batch_in_experience = c["batch_in_experience"]
            torch.set_rng_state(state["rng"]["torch"])
            if state["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            self.boundaries_detected = [int(b) for b in c["boundaries_detected"]]
            env = state.get("env", {})
            if history is not None:
                self._step_history.load(history)
            then = env.get("torch_threads") if isinstance(env, dict) else -1
            if then is not None and (not isinstance(then, int) or isinstance(then, bool)
                                     or then < 1):
                raise CheckpointError(f"checkpoint: env.torch_threads is {then!r}, expected a "
                                      "positive integer; the checkpoint is corrupted")
            if then is not None and then != torch.get_num_threads():
                warnings.warn(f"the checkpoint was written with {then} torch thread(s), this "
                              f"process uses {torch.get_num_threads()}: the resumed run will not "
                              "be bit-identical to an uninterrupted one", RuntimeWarning,
                              stacklevel=2)
            was = env.get("compile") if isinstance(env, dict) else None
            if isinstance(was, bool) and was != self.compile:
                warnings.warn(f"the checkpoint was written with train.compile: {str(was).lower()}, "
                              f"this run has {str(self.compile).lower()}: compiled and eager steps "
                              "round differently, so the resumed run will not be bit-identical to "
                              "an uninterrupted one", RuntimeWarning, stacklevel=2)


class _StopRun(Exception):
    """Raised inside the loop when ``stop_after`` steps are reached."""


def plugin_name(plugin: Any) -> str:
    """A plugin's display name: its ``name`` attribute, else its class name."""
    return getattr(plugin, "name", None) or type(plugin).__name__

