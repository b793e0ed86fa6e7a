"""``train.compile``: the training step through ``torch.compile``, as one graph where it can be.

**The whole step as one graph.** When every part of the step can be traced,
the model's forward, the stream cross-entropy, the loss terms of the plugins
that declare them traceable (``traceable_loss = True``: ER, DER, DER++), the
gradients (``torch.func.grad`` over the trainable parameters) and the
optimizer's update (SGD with momentum, Nesterov and weight decay as
``torch.optim.SGD`` computes it; Adam and AdamW as ``torch.optim.Adam`` /
``AdamW`` compute theirs, bias correction and L2 or decoupled decay
included; at the optimizer's current learning rates) run as one compiled graph
(TorchDynamo + Inductor, no autograd tape and no per-tensor optimizer loop:
that is where a small model's eager step spends its time). Replay sampling,
buffer updates, every other hook and evaluation run eager around it, as
without compile; ``p.grad`` holds the step's gradient afterwards and the
momentum buffers, Adam's moments and step counts live in the optimizer's own
state, so checkpoints are the same. A step whose loss is not finite leaves
the weights and the optimizer state unchanged (inside the graph), then
``train.nan_policy`` applies.

What keeps a step off that path (said in one line at the first step, and the
model's forward then runs compiled alone, below): an optimizer other than
the learner's SGD, Adam or AdamW (or one with dampening, ``maximize``,
``amsgrad``, step hooks), a plugin that changes gradients before the
update (``before_update``: A-GEM, GEM, SI, DEN, PCGrad, MGDA-UB), decides the
loss or sample weights (``combine_losses``, ``sample_weights``), adds loss
terms not marked traceable (EWC, MAS, LwF, the distillation plugins: they
read the model's parameters, other models or captured features), keeps the autograd
graph, trains its own parameters, or a model with floating-point buffers
(BatchNorm's running statistics), multi-target batches and target batches.

**The forward alone.** Otherwise the model's forward pass of each training
step and the backward of that graph run compiled (one graph with a dynamic
batch dimension, so the stream batch, the stream + replay batch and a short
last batch share it after at most one recompilation); the loss, plugins'
terms and hooks and the optimizer run eager. On CUDA that graph is replayed
through CUDA graphs (``mode="reduce-overhead"``); neither path has been run
on a GPU here.

If ``torch.compile`` is not available or fails (no C++ compiler for Inductor
on CPU, an untraceable module), the run says so in one line and trains eager.

Determinism and resume: a compiled run is deterministic (same seed, same
result) and a resumed compiled run equals the uninterrupted compiled run
(``benchmarks/compile.py`` checks both), but a compiled run does not equal
the eager run bit for bit: Inductor fuses and reorders floating-point
operations, so weights differ by rounding (``benchmarks/compile.py``
reports the largest difference; the tests bound it). One compiled step is
within float rounding of the eager one (7.5e-9 for the MLP, with Adam too),
but Adam divides each gradient by its own running magnitude, so over a
whole run it magnifies the rounding of gradients that nearly cancel: ER
with Adam on split MNIST ended with weights up to 0.16 apart from the eager
run's and a final accuracy of 0.767 against 0.774 (SGD: 4.5e-7 apart, the
same accuracy). Resume with the same ``train.compile`` as the run that wrote
the checkpoint to continue it exactly.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CompiledForward", "CompiledStep", "ShapeHistory", "whole_step_blocker"]

def failure(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters): a compiler's error in the
    one line a run says about it."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


# one compiled callable per module: a new learner on the same model reuses its compiled code
_CACHE: weakref.WeakKeyDictionary[nn.Module, Callable[..., Tensor]] = weakref.WeakKeyDictionary()


class CompiledForward:
    """The model's training forward, compiled on first use, eager if compiling fails.

    :param model: the module to run.
    :param device: the learner's device (CUDA: CUDA graphs via ``reduce-overhead``).
    :param compiler: ``torch.compile`` (replaceable in tests).
    :param say: where the one-line notes go.
    """

    def __init__(self, model: nn.Module, device: torch.device, *,
                 compiler: Callable[..., Any] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.device = device
        self.compiler = compiler if compiler is not None else getattr(torch, "compile", None)
        self.say = say if say is not None else (lambda m: print(m, file=sys.stderr))
        self.fn: Callable[..., Tensor] | None = None
        self.eager = self.compiler is None
        if self.eager:
            self.say("train.compile: this torch has no torch.compile; the training step runs eager")

    def _build(self) -> Callable[..., Tensor]:
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        assert self.compiler is not None
        fn = _CACHE.get(self.model)
        if fn is None:
            fn = self.compiler(self.model, dynamic=True, mode=mode)
            _CACHE[self.model] = fn
        self.say(f"train.compile: the model's forward and backward run compiled (torch.compile"
                 f"{', CUDA graphs' if mode else ''}); the loss, plugins' terms and hooks, the "
                 "optimizer and evaluation run eager")
        return fn

    def __call__(self, *args: Tensor) -> Tensor:
        if self.eager:
            return self.model(*args)
        try:
            if self.fn is None:
                self.fn = self._build()
            return self.fn(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back, once, loudly
            self.say(f"train.compile: torch.compile failed on {type(self.model).__name__} "
                     f"({failure(exc)}); the training step runs eager")
            self.eager = True
            return self.model(*args)


def whole_step_blocker(learner: Any) -> str | None:
    """Why ``learner``'s training step cannot run as one compiled graph, or ``None`` if it can.

    Decided once per optimizer (a model change rebuilds it); the per-batch
    conditions (multi-target and target batches) are checked by the learner.
    """
    from lifelong.learner import plugin_name

    opt = learner.optimizer
    if type(opt) not in _UPDATES or callable(learner.optimizer_spec):
        return (f"the optimizer is {type(opt).__name__}; the compiled step updates with the "
                "learner's SGD, Adam or AdamW only")
    for g in opt.param_groups:
        if g.get("momentum") and g.get("dampening"):
            return "SGD with dampening; the compiled step's momentum has none"
        fused_adam = g.get("fused") and type(opt) is not torch.optim.SGD  # (SGD: same update)
        if g.get("maximize") or g.get("differentiable") or g.get("amsgrad") \
                or g.get("capturable") or fused_adam:
            return (f"{type(opt).__name__} with maximize, differentiable, amsgrad, capturable or "
                    "fused set")
    if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
        return "the optimizer has step hooks, which the compiled update would not call"
    hooks = learner.pm.hook
    for hook, what in (("before_update", "changes the gradients before the update"),
                       ("combine_losses", "decides how the loss terms combine"),
                       ("sample_weights", "weights the stream samples")):
        impls = getattr(hooks, hook).get_hookimpls()
        if impls:
            return f"plugin {plugin_name(impls[0].plugin)!r} {what} ({hook})"
    for impl in hooks.loss_terms.get_hookimpls():
        if not getattr(impl.plugin, "traceable_loss", False):
            return (f"plugin {plugin_name(impl.plugin)!r} adds loss terms not marked traceable "
                    "(traceable_loss)")
    if learner._retain_graph:
        return "a plugin reads the autograd graph after the backward (task_gradients)"
    if learner._needs_target or learner._features is not None:
        return "a plugin needs a target batch or captured features"
    trainable = learner.trainable_parameters()
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    if in_opt != {id(p) for p in trainable.values()}:
        return "the optimizer trains parameters besides the model's (plugins' own parameters)"
    if any(b.is_floating_point() for b in learner.model.buffers()):
        return "the model has floating-point buffers updated in training (e.g. BatchNorm)"
    return None


# the optimizers whose update the compiled step computes, by the name of its update rule
_UPDATES: dict[type, str] = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam",
                             torch.optim.AdamW: "adamw"}

_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}

# one compiled step per module (with what it was built for): a rebuilt optimizer (a resume) or
# a new learner on the same model reuses it instead of compiling again
_STEPS: weakref.WeakKeyDictionary[nn.Module, tuple[Any, Callable[..., Any]]] = \
    weakref.WeakKeyDictionary()

# what a traceable plugin's loss_terms may read of the step, besides logits and losses; no
# per-step integers (the step's index): TorchDynamo would specialize the graph on each value
_SLOTS = ("batch", "experience", "n_stream", "replays", "_owners")
_UNSET = ("index", "scratch", "predict_logits", "target", "target_rows", "eval_logits", "loss",
          "outputs")


def _fresh_code(fn: Callable[..., Any], tag: int) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object: TorchDynamo keeps its compiled entries (and
    their recompilation limit) per code object, so each learner's step gets its own."""
    import types

    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                              fn.__closure__)


class CompiledStep:
    """One training step (forward, losses, gradients, optimizer update) as one compiled graph.

    Built by the learner when :func:`whole_step_blocker` finds nothing in the
    way; see the module docstring. Calling it updates the trainable
    parameters (and momentum buffers) in place and returns the step's
    logits, total loss and named losses, detached.

    :param learner: the learner whose model, optimizer and plugins it runs.
    :param compiler: ``torch.compile`` (replaceable in tests).
    :param say: where the one-line notes go.
    """

    _count = 0
    max_shapes = 4

    def __init__(self, learner: Any, *, compiler: Callable[..., Any] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        from torch.func import functional_call, grad

        self.optimizer = learner.optimizer
        self.model = learner.model
        named = learner.trainable_parameters()
        group_of = {id(p): i for i, g in enumerate(self.optimizer.param_groups) for p in g["params"]}
        self.names = list(named)
        self.params = [named[n] for n in self.names]
        self.views = {n: p.detach() for n, p in named.items()}  # same storage: updated in place
        self.groups = [group_of[id(p)] for p in self.params]
        kind = _UPDATES[type(self.optimizer)]
        self.kind = kind
        if kind == "sgd":
            hyper = [(g["momentum"], g["nesterov"], g["weight_decay"])
                     for g in self.optimizer.param_groups]
        else:
            hyper = [(*g["betas"], g["eps"], g["weight_decay"]) for g in self.optimizer.param_groups]
        self.hyper = hyper
        self.lr_values = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.lrs = [torch.tensor(v, device=learner.device) for v in self.lr_values]
        self.plugins = [impl.plugin for impl in reversed(learner.pm.hook.loss_terms.get_hookimpls())]
        from lifelong.learner import plugin_name

        self.traced_plugins = ", ".join(plugin_name(p) for p in self.plugins)
        conditioned = learner._task_conditioned
        names, groups = self.names, self.groups  # plain data: the closure keeps no module alive
        from lifelong.learner import Step

        def losses_of(params: dict[str, Tensor], model: nn.Module, x: Tensor, y: Tensor,
                      task: Tensor | None, step: Any, plugins: list[Any],
                      lrn: Any) -> tuple[Tensor, Any]:
            logits = functional_call(model, params, (x, task) if conditioned else (x,))
            view = Step.__new__(Step)  # the step as plugins read it, with the traced logits
            for k in _SLOTS:
                setattr(view, k, getattr(step, k))
            for k in _UNSET:
                setattr(view, k, None)
            view.logits = logits
            n = step.n_stream
            ce = torch.nn.functional.cross_entropy(logits[:n] if logits.shape[0] != n else logits, y)
            losses = {"ce": ce}
            view.losses = losses
            loss = ce
            for plugin in plugins:
                for k, v in (plugin.loss_terms(lrn, view) or {}).items():
                    losses[k] = v
                    loss = loss + v
            return loss, (loss.detach(), logits.detach(), {k: v.detach() for k, v in losses.items()})

        gradient = grad(losses_of, has_aux=True)

        def step_fn(params: dict[str, Tensor], model: nn.Module, states: list[list[Tensor]],
                    lrs: list[Tensor], x: Tensor, y: Tensor, task: Tensor | None, step: Any,
                    plugins: list[Any], lrn: Any) -> tuple[Any, ...]:
            grads, (loss, logits, losses) = gradient(params, model, x, y, task, step, plugins, lrn)
            ok = torch.isfinite(loss)  # a non-finite step changes no weight and no state
            out = []
            for i, name in enumerate(names):
                p, g, lr = params[name], grads[name], lrs[groups[i]]
                if kind == "sgd":  # torch.optim.SGD's update (_single_tensor_sgd)
                    momentum, nesterov, decay = hyper[groups[i]]
                    d = g.add(p, alpha=decay) if decay else g
                    if momentum:
                        buf = states[i][0]
                        buf.copy_(torch.where(ok, buf * momentum + d, buf))
                        d = d.add(buf, alpha=momentum) if nesterov else buf
                    p.sub_(torch.where(ok, d * lr, 0.0))
                else:  # torch.optim.Adam / AdamW's (_single_tensor_adam, no amsgrad)
                    beta1, beta2, eps, decay = hyper[groups[i]]
                    t, m, v = states[i]
                    t1 = t + 1
                    d = g.add(p, alpha=decay) if decay and kind == "adam" else g
                    m1 = m.lerp(d, 1 - beta1)
                    v1 = v * beta2 + d * d * (1 - beta2)
                    t64 = t1.double()
                    size = lr / (1 - beta1 ** t64)
                    denom = v1.sqrt() / (1 - beta2 ** t64).sqrt() + eps
                    base = p * (1 - lr * decay) if decay and kind == "adamw" else p
                    p.copy_(torch.where(ok, base - m1 / denom * size, p))
                    t.copy_(torch.where(ok, t1, t))
                    m.copy_(torch.where(ok, m1, m))
                    v.copy_(torch.where(ok, v1, v))
                out.append(g)
            return loss, logits, losses, out

        key = (tuple(names), tuple(groups), kind, tuple(hyper), conditioned, compiler)
        cached = _STEPS.get(self.model)
        if cached is not None and cached[0] == key:  # same model, same update: reuse its code
            self.fn = cached[1]
        else:
            CompiledStep._count += 1
            compile_ = compiler if compiler is not None else torch.compile
            self.fn = compile_(_fresh_code(step_fn, CompiledStep._count), dynamic=False,
                               fullgraph=True)
            _STEPS[self.model] = (key, self.fn)
        self.learner_ref = weakref.ref(learner)
        self.history: ShapeHistory = learner._step_history  # the learner's, checkpointed
        self.say = say if say is not None else (lambda m: print(m, file=sys.stderr))

    @property
    def failed(self) -> bool:
        """Compiling failed: this learner's steps take the forward-only path."""
        return self.history.failed

    def note(self) -> str:
        terms = f", the loss terms of {self.traced_plugins}" if self.plugins else ""
        return (f"train.compile: the whole training step (forward, cross-entropy{terms}, "
                f"gradients, {_NAMES[self.kind]} update) runs as one compiled graph (torch.compile); replay "
                "sampling, buffer updates, the other hooks and evaluation run eager")

    def run(self, step: Any, x: Tensor, y: Tensor, task: Tensor | None) -> tuple[Any, ...] | None:
        """The step through the compiled graph, or ``None`` where this step runs eager.

        Graphs are static, one per step shape (the batch's rows and the replayed
        rows' slices): a shape is compiled the second time it comes, up to
        :attr:`max_shapes` of them, so the steady shapes of a run (stream + full
        replay batches) run compiled while the one-off shapes (a buffer filling
        up, an experience's short last batch) run eager instead of each paying a
        compilation. A compilation that fails (an untraceable plugin or model,
        no C++ compiler) is said once, updates nothing, and sends this learner's
        steps to the forward-only path.
        """
        h = self.history
        if h.failed:
            return None
        sig = (tuple(x.shape), tuple((sl.start, sl.stop) for _, sl in step._owners))
        state = h.shapes.get(sig)
        if state:
            try:
                return self(step, x, y, task)
            except torch._dynamo.exc.FailOnRecompileLimitHit:  # raised before anything ran
                self.say("train.compile: the compiled step kept recompiling; the training step "
                         "runs eager from here on")
                h.failed = True
                return None
        if state is not None:
            return None
        if len(h.seen) > 64:  # shapes that never repeat: forget them
            h.seen.clear()
        seen = h.seen[sig] = h.seen.get(sig, 0) + 1
        if seen < 2:
            return None
        if sum(1 for v in h.shapes.values() if v) >= self.max_shapes:
            h.shapes[sig] = False
            return None
        try:
            out = self(step, x, y, task)
        except Exception as exc:  # noqa: BLE001 - any tracing or compiler failure falls back, once
            self.say(f"train.compile: the training step cannot run as one compiled graph "
                     f"({failure(exc)}); the model's forward runs compiled alone")
            h.failed = True
            return None
        h.shapes[sig] = True
        return out

    def __call__(self, step: Any, x: Tensor, y: Tensor, task: Tensor | None) -> tuple[Any, ...]:
        opt = self.optimizer
        for i, g in enumerate(opt.param_groups):  # a scheduler may have moved the rate
            if g["lr"] != self.lr_values[i]:
                self.lr_values[i] = float(g["lr"])
                self.lrs[i].fill_(g["lr"])
        states: list[list[Tensor]] = []  # the optimizer's own state tensors, updated in place
        for p, gi in zip(self.params, self.groups):
            st = opt.state[p]
            if self.kind == "sgd":
                if not self.hyper[gi][0]:
                    states.append([])
                    continue
                if st.get("momentum_buffer") is None:  # zero momentum + gradient = torch's
                    st["momentum_buffer"] = torch.zeros_like(p)  # first-step clone (no dampening)
                states.append([st["momentum_buffer"]])
                continue
            if not st:  # as torch's Adam creates it: a CPU step count, zero moments
                st["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype())
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            states.append([st["step"], st["exp_avg"], st["exp_avg_sq"]])
        loss, logits, losses, grads = self.fn(self.views, self.model, states, self.lrs, x, y,
                                              task, step, self.plugins, self.learner_ref())
        for p, g in zip(self.params, grads):
            p.grad = g
        return loss, logits, losses


class ShapeHistory:
    """Which step shapes of a learner run through the compiled whole step: compiled (True) or
    eager (False), the undecided ones with the times they were seen, and whether compiling
    failed. Checkpointed with the learner, so a resumed run takes the same path at every step."""

    def __init__(self) -> None:
        self.shapes: dict[Any, bool] = {}
        self.seen: dict[Any, int] = {}
        self.failed = False

    def state_dict(self) -> dict[str, Any]:
        def plain(sig: Any) -> list[Any]:
            return [list(sig[0]), [list(sl) for sl in sig[1]]]
        return {"shapes": [[plain(k), bool(v)] for k, v in self.shapes.items()],
                "seen": [[plain(k), int(v)] for k, v in self.seen.items()],
                "failed": self.failed}

    @staticmethod
    def parse(state: Any) -> ShapeHistory:
        """A checked copy of a :meth:`state_dict`; a malformed one is a ``ValueError``."""
        def sig(v: Any) -> Any:
            rows, slices = v
            return (tuple(int(d) for d in rows), tuple((int(a), int(b)) for a, b in slices))
        if not isinstance(state, dict) or set(state) != {"shapes", "seen", "failed"} \
                or not isinstance(state["failed"], bool):
            raise ValueError("expected a mapping with 'shapes', 'seen' and 'failed' (a bool)")
        out = ShapeHistory()
        try:
            out.shapes = {sig(k): bool(v) for k, v in state["shapes"]}
            out.seen = {sig(k): int(v) for k, v in state["seen"]}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"an entry is not [[shape], [[start, stop], ...]], value: {exc}") from exc
        out.failed = state["failed"]
        return out

    def load(self, other: ShapeHistory) -> None:
        self.shapes, self.seen, self.failed = other.shapes, other.seen, other.failed
