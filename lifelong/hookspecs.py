"""The whole event vocabulary of ``lifelong``: one documented hookspec each.

Four kinds of hook:

* observers return nothing (``before_training``, ``before_experience``,
  ``after_experience``, ``before_update``, ``after_update``, ``after_eval``,
  ``after_training``);
* contributors return a value the learner collects (``replay_batch``,
  ``loss_terms``, ``detect_boundary``, ``register``);
* deciders are ``firstresult`` (``combine_losses``, ``expand_model``,
  ``sample_weights``): at
  most one plugin may implement each, checked when the run is assembled;
* the gradient stage (``before_update``) may be *owned* by at most one
  plugin (GEM, A-GEM, MGDA rewrite gradients); others only observe it.

Hook arguments are only ever added, never renamed: an implementation may
take any subset of them. ``step`` is a :class:`lifelong.learner.Step`;
``learner`` a :class:`lifelong.learner.Learner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torch import Tensor, nn

    from lifelong.learner import EvalReport, Learner, Step
    from lifelong.registry import Registry
    from lifelong.stream.base import Batch, Experience

hookspec = pluggy.HookspecMarker("lifelong")
hookimpl = pluggy.HookimplMarker("lifelong")

# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


@hookspec
def register(registry: Registry) -> None:
    """Contribute streams, backbones, plugins and strategies by name.

    Called once, the first time the registry is used, on every built-in
    module and every module exposed through the ``lifelong`` entry-point group.

    :param registry: add entries with ``registry.add(kind, name, factory)``.

    Results are ignored. Example::

        @hookimpl
        def register(registry):
            registry.add("plugin", "my_reg", MyRegularizer)
    """


# ---------------------------------------------------------------------------
# Run lifecycle
# ---------------------------------------------------------------------------


@hookspec
def before_training(learner: Learner, stream: Any) -> None:
    """Called once before the first batch, after the run is assembled.

    Plugins check here that the stream suits them (and raise
    :class:`lifelong.errors.CompositionError` if not) and allocate state on
    ``learner.device``.

    :param learner: the learner about to train.
    :param stream: the :class:`lifelong.stream.Stream` about to be consumed.

    Observer: results are ignored. Example::

        @hookimpl
        def before_training(self, learner, stream):
            self.buffer_ = ReservoirBuffer(self.mem_size, device=learner.device)
    """


@hookspec
def after_training(learner: Learner) -> None:
    """Called once after the last batch of the stream. Observer.

    :param learner: the learner that finished.

    Example::

        @hookimpl
        def after_training(self, learner):
            print("done after", learner.samples_seen, "samples")
    """


# ---------------------------------------------------------------------------
# Experience boundaries (announced by the stream or detected)
# ---------------------------------------------------------------------------


@hookspec
def before_experience(learner: Learner, experience: Experience | None) -> None:
    """Called when a new experience starts.

    In a task-aware stream this is the stream's own boundary; in a task-free
    stream it follows a detected boundary and ``experience`` is ``None``
    (nobody announced it). Observer.

    :param learner: the learner.
    :param experience: the experience starting, or ``None`` if detected.

    Example::

        @hookimpl
        def before_experience(self, learner, experience):
            self.seen_tasks_ += 1
    """


@hookspec
def after_experience(learner: Learner, experience: Experience | None) -> None:
    """Called when an experience ends: consolidation time.

    EWC computes its Fisher here, LwF snapshots the model, SI consolidates its
    path integral, GEM closes a task's memory. In task-free streams it
    follows a detected boundary (``experience`` is ``None``). Observer.

    :param learner: the learner.
    :param experience: the experience that ended, or ``None`` if detected.

    Example::

        @hookimpl
        def after_experience(self, learner, experience):
            self.anchor_ = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    """


@hookspec
def parameter_groups(learner: Learner, model: nn.Module) -> dict[str, float] | None:
    """Contribute learning-rate multipliers for parameters, by name prefix; 0 freezes.

    Why a hook: fine-tuning presets (frozen layers, layer-wise learning rates,
    scale-and-bias patches) and models with their own learning-rate
    multipliers need the optimizer's parameter groups, which the learner
    builds; a plugin must not rebuild the optimizer itself. Called whenever
    the learner builds its optimizer: when the run is assembled, after
    ``before_training``, after ``expand_model`` replaced the model, and on
    resume.

    :param learner: the learner.
    :param model: the model the optimizer is built for.

    Returns ``{prefix: multiplier}``: a parameter whose name equals ``prefix``
    or starts with ``prefix + "."`` gets ``lr * multiplier`` (``""`` matches
    every parameter). Collected: the multipliers of every plugin (and of the
    model's own ``lr_multipliers()``, if it has one) multiply; a parameter
    whose multiplier is 0 is frozen (``requires_grad=False``, no optimizer
    state). Example::

        @hookimpl
        def parameter_groups(self, learner, model):
            return {"body": 0.0, "head": 1.0}     # train only the head
    """


@hookspec(firstresult=True)
def expand_model(learner: Learner, experience: Experience | None) -> nn.Module | None:
    """Return a new model to train from now on, or ``None`` to keep the current one.

    Called right after ``before_experience``. Expansion methods (progressive
    columns, dynamically expanded units) return the grown module; the learner
    moves it to its device and rebuilds the optimizer. Decider: at most one
    plugin may implement it.

    Resuming a grown model: such a plugin also has a method
    ``grown_model(learner) -> Module | None`` that builds, from its own
    ``state_dict`` alone (already loaded), the architecture it had grown (any
    weights: the checkpoint's are loaded into it next). The learner calls it
    when it loads a checkpoint, before the model's weights.

    :param learner: the learner; ``learner.model`` is the current model.
    :param experience: the experience starting (``None`` if detected).

    Example::

        @hookimpl
        def expand_model(self, learner, experience):
            return ProgressiveNet.with_new_column(learner.model)
    """


# ---------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------


@hookspec
def replay_batch(learner: Learner, step: Step) -> Batch | None:
    """Contribute samples to train on together with the stream batch.

    Called before the forward pass. Each non-``None`` batch is concatenated
    with the stream batch so that one forward pass serves all; the logits of
    a plugin's own samples are ``step.logits_of(self)``. Collected.

    :param learner: the learner.
    :param step: the step; ``step.batch`` is the stream batch (on device).

    Example::

        @hookimpl
        def replay_batch(self, learner, step):
            return self.buffer_.sample(self.batch_size) if len(self.buffer_) else None
    """


@hookspec(firstresult=True)
def sample_weights(learner: Learner, step: Step) -> Tensor | None:
    """Weight the stream samples' cross-entropy, one weight per stream row.

    Why a hook: covariate-shift corrections (importance weighting,
    Shimodaira 2000) weight each source sample's loss, which must happen
    before the learner reduces the per-sample cross-entropy to
    ``step.losses["ce"]``; ``loss_terms`` can only add terms. Called after
    the forward pass (``step.logits`` is set), before ``loss_terms``.
    Decider: at most one plugin may implement it.

    :param learner: the learner.
    :param step: the step, after the forward pass.

    Returns a ``(step.n_stream,)`` tensor on the learner's device (no
    gradient); ``"ce"`` becomes ``mean(w_i * ce_i)``, so weights normalized
    to mean 1 keep the loss's scale. ``None`` keeps the plain mean. Example::

        @hookimpl
        def sample_weights(self, learner, step):
            w = self.ratio(step.batch.x).clamp(max=10.0)
            return w / w.mean()
    """


@hookspec
def loss_terms(learner: Learner, step: Step) -> dict[str, Tensor] | None:
    """Contribute named scalar loss terms for this step.

    Called after the forward pass; ``step.logits`` holds the logits of the
    stream batch followed by every replay batch, ``step.losses`` already has
    ``"ce"`` (cross-entropy of the stream batch; on a multi-target stream one
    loss per task instead, ``ce/<task>`` / ``mse/<task>``, with the outputs in
    ``step.outputs``). Names must be unique across
    plugins. Collected, then merged into ``step.losses``.

    :param learner: the learner.
    :param step: the step, after the forward pass.

    Example::

        @hookimpl
        def loss_terms(self, learner, step):
            return {"ewc": self.lambda_ / 2 * ewc_penalty(learner.model, self.anchor_, self.fisher_)}
    """


@hookspec(firstresult=True)
def combine_losses(learner: Learner, step: Step, losses: dict[str, Tensor]) -> Tensor | None:
    """Combine the named loss terms into the scalar to back-propagate.

    Default (no plugin): the plain sum. Multi-task balancers (uncertainty
    weighting, GradNorm, DWA) implement it. On a multi-target stream
    ``losses`` holds one loss per task, ``ce/<task>`` or ``mse/<task>``
    (``learner.tasks`` lists them), instead of ``"ce"``. Decider: at most one
    plugin.

    :param learner: the learner.
    :param step: the step.
    :param losses: every term by name, ``"ce"`` included.

    Example::

        @hookimpl
        def combine_losses(self, learner, step, losses):
            return sum(torch.exp(-s) * v + s for s, v in zip(self.log_vars, losses.values()))
    """


@hookspec
def before_update(learner: Learner, step: Step) -> None:
    """The gradient stage: after ``backward()``, before ``optimizer.step()``.

    Gradients are in ``p.grad`` for ``learner.model``'s parameters. A plugin
    that rewrites them (GEM, A-GEM, MGDA-UB, PCGrad) declares ``owns =
    ("gradient",)``; at most one such plugin per run. Others may read them
    (SI). A plugin whose ``requires`` lists ``"task_gradients"`` finds the
    step's graph kept, so per-task gradients can still be taken
    (:mod:`lifelong.plugins.multitask._gradients`). Observer.

    :param learner: the learner.
    :param step: the step, after backward.

    Example::

        @hookimpl
        def before_update(self, learner, step):
            g = flat_grad(learner.model); set_flat_grad(learner.model, project(g, self.ref_))
    """


@hookspec
def after_update(learner: Learner, step: Step) -> None:
    """Called after ``optimizer.step()``: path integrals, buffer inserts. Observer.

    :param learner: the learner.
    :param step: the step; ``step.batch`` and ``step.logits`` are still there.

    Example::

        @hookimpl
        def after_update(self, learner, step):
            self.buffer_.add(step.batch)
    """


@hookspec
def detect_boundary(learner: Learner, step: Step) -> bool | None:
    """Say whether an unannounced experience boundary happened at this step.

    Called after ``after_update`` in task-free streams (and in task-aware
    streams if ``detect_in_task_aware`` is set). If any implementation
    returns True, the learner fires ``after_experience(None)``,
    ``before_experience(None)`` and ``expand_model(None)``. Collected.

    :param learner: the learner.
    :param step: the step; ``step.losses["ce"]`` is the stream loss.

    Example::

        @hookimpl
        def detect_boundary(self, learner, step):
            return step.index > 0 and step.index % self.every == 0
    """


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


@hookspec
def after_eval(learner: Learner, report: EvalReport) -> None:
    """Called after each evaluation on held-out data. Observer.

    :param learner: the learner.
    :param report: accuracies per experience, Class-IL and Task-IL, and when.

    Example::

        @hookimpl
        def after_eval(self, learner, report):
            self.history.append((report.samples_seen, report.class_il))
    """
