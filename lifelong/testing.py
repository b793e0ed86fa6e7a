"""The contract every registered plugin and strategy meets.

``tests/test_contract.py`` runs :func:`plugin_checks` on every plugin and
:func:`strategy_checks` on every strategy found in the registry (built-in
or installed), so a new method is checked the moment it is registered.
Third-party authors can do the same::

    from lifelong.testing import check_plugin
    check_plugin(MyPlugin)          # raises AssertionError naming the failed check

Checks: hooks match the specs; parameters are stored as given; a short run
on a small class-incremental stream works and composes with the evaluation
plugins; the same seed gives bit-identical weights; inputs are not
mutated; a batch of one works; ``state_dict`` survives ``torch.save`` /
``torch.load(weights_only=True)`` and pickling; a run stopped mid-experience
and resumed from its state ends with exactly the weights of an
uninterrupted run; the plugin's declared needs (``requires``) are enforced;
corrupted copies of its state (keys deleted, tensors resized or retyped, the
state replaced) are refused with a ``CheckpointError`` (see
:func:`corrupted_states`).

Teacher-guided plugins (``requires`` names ``"teacher"``; their ``teacher``
parameter, or the one their ``teacher_param`` names, e.g. ``"source"``, has no
usable default) are run with the contract's teacher: a
frozen copy of the contract's backbone, freshly initialised with another
seed and written to a temporary weights file (:func:`contract_factory`);
without it they must refuse to start (a ``ConfigError`` naming ``teacher``).
A plugin that needs another backbone than the contract's MLP (attention
maps need convolutional features) names it in its class attribute
``contract_backbone`` (a backbone config, e.g. ``{"name": "cnn", "channels": [4, 8]}``);
one whose paper defaults are too large for a stream of 36 samples (CRD's 16384
negatives) names smaller values in ``contract_params`` (a dict of parameters).
"""

from __future__ import annotations

import functools
import inspect
import io
import pickle
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.backbones import mlp
from lifelong.checkpoint import check_state
from lifelong.errors import CompositionError, ConfigError
from lifelong.learner import Learner
from lifelong.multitask import shared_bottom
from lifelong.plugins.evaluation import AccuracyMatrix, Prequential
from lifelong.registry import Registry, get_registry
from lifelong.stream.base import Stream, TaskSpec
from lifelong.stream.multitask import multi_target
from lifelong.stream.synthetic import blobs
from lifelong.stream.transforms import TRANSFORMS

Factory = Callable[[], Any]

__all__ = ["tiny_stream", "tiny_multitask_stream", "multitask_view", "make_learner",
           "shifted", "check_plugin", "check_strategy", "plugin_checks", "strategy_checks",
           "assert_same_state", "contract_factory", "contract_teacher", "corrupted_states"]


def tiny_stream(*, task_aware: bool = True, task_labels: bool = False, seed: int = 0,
                n_per_class: int = 24) -> Stream:
    """Three experiences of two Gaussian classes each: the contract's stream."""
    return blobs(n_experiences=3, classes_per_experience=2, n_per_class=n_per_class,
                 n_test_per_class=10, task_aware=task_aware, task_labels=task_labels, seed=seed)


def _build(backbone: dict[str, Any] | None, stream: Stream) -> torch.nn.Module:
    if backbone is None:
        return mlp(input_shape=stream.input_shape, num_classes=stream.num_classes, hidden=[32])
    params = {k: v for k, v in backbone.items() if k != "name"}
    return get_registry().get("backbone", backbone["name"]).factory(
        input_shape=stream.input_shape, num_classes=stream.num_classes, **params)


def shifted(stream: Stream, *, shift: float = 0.5, scale: float = 1.0) -> Stream:
    """A target domain for ``stream``: every input mapped to ``scale * x + shift`` (labels kept)."""
    from lifelong.stream.base import EvalSet, TensorExperience

    exps = [TensorExperience(e.id, e.x * scale + shift, e.y, task_id=e.task_id,  # type: ignore[attr-defined]
                             classes=e.classes) for e in stream.experiences()]
    test = [EvalSet(t.x * scale + shift, t.y, t.classes, t.task_id, f"{t.name}/shifted")
            for t in stream.test]
    return Stream(f"{stream.name}_shifted", stream.num_classes, stream.input_shape,
                  lambda: iter(exps), test, task_aware=stream.task_aware,
                  n_experiences=stream.n_experiences, task_labels=stream.task_labels,
                  seed=stream.seed)


def tiny_multitask_stream(*, seed: int = 0, n_per_class: int = 24) -> Stream:
    """The contract's stream with three targets per sample: tasks ``a`` (6 classes), ``b``
    (2 classes, the parity of ``a``) and ``c`` (regression, the mean input), iid, in three
    experiences."""
    return multitask_view(tiny_stream(seed=seed, n_per_class=n_per_class))


def multitask_view(base: Stream) -> Stream:
    """A single-target tensor stream as a multi-target one: tasks ``a`` (its labels), ``b``
    (their parity) and ``c`` (regression, the mean input); the same samples, iid, in as
    many experiences."""
    xs = torch.cat([e.x for e in base.experiences()])
    ys = torch.cat([e.y for e in base.experiences()])
    xt, yt = torch.cat([t.x for t in base.test]), torch.cat([t.y for t in base.test])

    def targets(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": y, "b": y % 2, "c": x.flatten(1).mean(1)}

    tasks = (TaskSpec("a", "classification", base.num_classes),
             TaskSpec("b", "classification", 2), TaskSpec("c", "regression", 1))
    n = min(base.n_experiences or 1, len(yt))
    return multi_target(xs, targets(xs, ys), xt, targets(xt, yt), tasks=tasks, n_experiences=n,
                        seed=base.seed, name=f"{base.name}_multitask")


def make_learner(plugins: list[Any], stream: Stream, *, seed: int = 0, batch_size: int = 8,
                 lr: float = 0.05, **kwargs: Any) -> Learner:
    """A small MLP learner on ``stream`` with ``plugins`` and the accuracy matrix.

    The first plugin's ``contract_backbone`` (a backbone config), if it has one,
    replaces the MLP. A plugin that requires a target domain gets
    ``shifted(stream)`` unless ``target=`` is given.

    On a multi-target stream the MLP is a shared bottom with one head per task.
    """
    if "target" not in kwargs and any("target" in getattr(p, "requires", ()) for p in plugins):
        kwargs["target"] = shifted(stream)
    torch.manual_seed(seed)
    backbone = next((getattr(p, "contract_backbone", None) for p in plugins[:1]), None)
    if stream.tasks:
        model: Any = shared_bottom(input_shape=stream.input_shape, num_classes=stream.num_classes,
                                   tasks=stream.tasks_at(0), hidden=[32])
    else:
        model = _build(backbone, stream)
    return Learner(model, plugins=[*plugins, AccuracyMatrix(), Prequential(window=5)],
                   device="cpu", seed=seed, batch_size=batch_size, lr=lr, **kwargs)


def assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    """Recursive equality for nested dicts/lists/tuples of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{path}: tensor vs {type(b).__name__}"
        assert a.shape == b.shape and a.dtype == b.dtype, f"{path}: {a.shape}/{a.dtype} vs " \
            f"{b.shape}/{b.dtype}"
        assert torch.equal(a, b) or (a.is_floating_point() and torch.allclose(
            a, b, equal_nan=True, atol=0, rtol=0)), f"{path}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys differ"
        for k in a:
            assert_same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


def _needs(factory: Factory) -> set[str]:
    return set(getattr(factory(), "requires", ()))


_TEACHERS: dict[str, dict[str, Any]] = {}


def contract_teacher(backbone: dict[str, Any] | None = None) -> dict[str, Any]:
    """A teacher spec for the contract's stream: ``backbone`` (the contract's MLP by default)
    initialised with seed 1, its weights in a temporary file."""
    key = repr(sorted((backbone or {}).items()))
    if key not in _TEACHERS:
        stream = tiny_stream()
        torch.manual_seed(1)
        model = _build(backbone, stream)
        path = Path(tempfile.mkdtemp(prefix="lifelong-contract-")) / "teacher.pt"
        torch.save(model.state_dict(), path)
        _TEACHERS[key] = {"backbone": dict(backbone or {"name": "mlp", "hidden": [32]}),
                          "checkpoint": str(path), "input_shape": list(stream.input_shape),
                          "num_classes": stream.num_classes}
    return dict(_TEACHERS[key])


def contract_factory(factory: Factory) -> Factory:
    """``factory`` with the arguments the contract runs it with.

    A plugin that cannot run without an argument (a source or teacher network)
    either gives the contract suite a small one through its ``contract_kwargs()``
    (sized for :func:`tiny_stream` and :func:`make_learner`'s MLP), or declares
    ``requires = ("teacher",)`` and is given :func:`contract_teacher` (as its
    ``teacher`` parameter, or the one its ``teacher_param`` names), plus its
    ``contract_params``.
    """
    example = getattr(factory, "contract_kwargs", None)
    if callable(example):
        return functools.partial(factory, **example())
    plugin = factory()
    params = dict(getattr(plugin, "contract_params", None) or {})
    key = getattr(plugin, "teacher_param", "teacher")  # e.g. "source" for fine-tuning
    if "teacher" in set(getattr(plugin, "requires", ())) and not getattr(plugin, key, None):
        params[key] = contract_teacher(getattr(plugin, "contract_backbone", None))
    return functools.partial(factory, **params) if params else factory


def _stream_for(factory: Factory, **kw: Any) -> Stream:
    needs = _needs(factory)
    if "multitask" in needs:
        return tiny_multitask_stream(**kw)
    return tiny_stream(task_labels="task_labels" in needs, **kw)


def _weights(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


def _roundtrip(obj: Any) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---------------------------------------------------------------------------- checks


def check_hooks_match_specs(factory: Factory) -> None:
    plugin = factory()
    learner = make_learner([plugin], _stream_for(factory))  # raises on unknown hooks
    impls = [i for h in learner.pm.hook.__dict__.values() if hasattr(h, "get_hookimpls")
             for i in h.get_hookimpls() if i.plugin is plugin]
    assert impls, f"{type(plugin).__name__} implements no hook"


def check_params_stored(factory: Factory) -> None:
    """Every keyword parameter is an attribute holding the value given.

    For a class, an instance built with no arguments holds the defaults. For any
    factory (``lambda: P(x=1)``, a ``functools.partial``) the given values are not
    known, so the check is scikit-learn's clone test: a second instance built from the
    first one's attributes must hold the very same values (a parameter stored
    transformed, e.g. ``x * 2``, would come back as ``x * 4``).
    """
    plugin = factory()
    cls = type(plugin)
    given = getattr(factory, "keywords", {})  # a contract_factory's arguments
    sig = inspect.signature(cls.__init__)
    params = {name: p for name, p in sig.parameters.items()
              if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    for name in params:
        assert hasattr(plugin, name), f"{cls.__name__} does not store parameter {name!r}"
    if factory is cls or given:  # the defaults, or a contract_factory's given arguments
        for name, p in params.items():
            expected = given.get(name, p.default)
            if expected is not p.empty and not callable(expected):
                got = getattr(plugin, name)
                assert got is expected or got == expected, (
                    f"{cls.__name__}.{name} is {got!r}, the value given was {expected!r}: "
                    "store parameters as given, derive state in hooks")
    stored = {name: getattr(plugin, name) for name in params}
    clone = cls(**stored)
    for name, value in stored.items():
        got = getattr(clone, name)
        assert got is value or got == value, (
            f"{cls.__name__}.{name}: built with {value!r} it stores {got!r}: store parameters "
            "as given, derive state in hooks")


def check_runs_and_composes(factory: Factory) -> None:
    stream = _stream_for(factory)
    learner = make_learner([factory()], stream)
    learner.fit(stream)
    acc = learner.plugins[-2].summary()["final_avg_accuracy"]
    assert acc is not None and 0.0 <= acc <= 1.0
    for p in learner.model.parameters():
        assert torch.isfinite(p).all(), "weights became non-finite"


def check_deterministic(factory: Factory) -> None:
    runs = []
    for _ in range(2):
        stream = _stream_for(factory)
        learner = make_learner([factory()], stream)
        learner.fit(stream)
        runs.append(_weights(learner))
    assert_same_state(runs[0], runs[1], "weights (same seed, two runs)")


def check_inputs_not_mutated(factory: Factory) -> None:
    stream = _stream_for(factory)
    before = [(e.x.clone(), e.y.clone()) for e in stream.experiences()]
    tests = [(t.x.clone(), t.y.clone()) for t in stream.test]
    make_learner([factory()], stream).fit(stream)
    for (x, y), e in zip(before, stream.experiences()):
        assert torch.equal(x, e.x) and torch.equal(y, e.y), "training data was mutated"
    for (x, y), t in zip(tests, stream.test):
        assert torch.equal(x, t.x) and torch.equal(y, t.y), "test data was mutated"


def check_batch_of_one(factory: Factory) -> None:
    stream = _stream_for(factory, n_per_class=4)
    make_learner([factory()], stream, batch_size=1).fit(stream)


def check_state_roundtrip(factory: Factory) -> None:
    stream = _stream_for(factory)
    plugin = factory()
    make_learner([plugin], stream).fit(stream, stop_after=20)
    if not hasattr(plugin, "state_dict"):
        pickle.loads(pickle.dumps(plugin))
        return
    state = plugin.state_dict()
    check_state(state, f"{type(plugin).__name__}.state_dict()")  # names the offending entry
    loaded = _roundtrip(state)  # must hold only tensors and plain data
    assert_same_state(state, loaded, "state_dict after torch.load(weights_only=True)")
    fresh = factory()
    make_learner([fresh], stream).begin(stream, evaluate=False)
    fresh.load_state_dict(loaded)
    assert_same_state(state, fresh.state_dict(), "state_dict after load_state_dict")
    pickle.loads(pickle.dumps(plugin))


def check_resume_exact(factory: Factory) -> None:
    stream = _stream_for(factory)
    full = make_learner([factory()], stream)
    full.fit(stream)
    n1 = next(stream.experiences()).n_samples or 0
    stop = (n1 // 8) + 2  # a few batches into the second experience
    first = make_learner([factory()], stream)
    first.fit(stream, stop_after=stop)
    state = _roundtrip(first.state_dict())
    second = make_learner([factory()], stream)
    second.fit(stream, state=state)
    assert_same_state(_weights(full), _weights(second), "weights (resumed vs uninterrupted)")
    for i in (-2, -1):  # the accuracy matrix and prequential accuracy
        assert_same_state(full.plugins[i].summary(), second.plugins[i].summary(),
                          "metrics (resumed vs uninterrupted)")


def corrupted_states(state: Any, *, max_tensors: int = 12) -> list[tuple[str, Any]]:
    """``(label, corrupted copy)`` of a plugin state: replaced wholesale, each top-level key
    deleted, and each tensor (up to ``max_tensors``) given an extra dimension or another dtype.

    Generic on purpose: a plugin whose ``load_state_dict`` reads what it saved and
    checks it (with :mod:`lifelong.validation` helpers, or by loading into a module)
    rejects all of them without code for this check.
    """
    import copy

    out: list[tuple[str, Any]] = [("state replaced by a string", "corrupted"),
                                  ("state replaced by None", None)]
    if isinstance(state, dict):
        for k in state:
            out.append((f"{k!r} deleted", {kk: v for kk, v in state.items() if kk != k}))
    paths: list[tuple[Any, ...]] = []

    def walk(v: Any, path: tuple[Any, ...]) -> None:
        if isinstance(v, torch.Tensor):
            paths.append(path)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(item, (*path, k))
        elif isinstance(v, list | tuple):
            for i, item in enumerate(v):
                walk(item, (*path, i))

    walk(state, ())
    for path in paths[:max_tensors]:
        where = "state" + "".join(f"[{p!r}]" for p in path)
        for label, change in (("an extra dimension", _unsqueezed), ("another dtype", _retyped)):
            bad = copy.deepcopy(state)
            node = bad
            for p in path[:-1]:
                node = node[p]
            if isinstance(node, tuple):
                continue
            node[path[-1]] = change(node[path[-1]])
            out.append((f"{where} {label}", bad))
    return out


def _unsqueezed(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(-1)


def _retyped(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return t.to(torch.int64) if t.numel() else torch.zeros(1, dtype=torch.int64)
    return t.to(torch.float64) + 0.5


def check_rejects_corrupted_state(factory: Factory) -> None:
    """Every corrupted copy of the plugin's state is refused with a CheckpointError."""
    from lifelong.errors import CheckpointError

    stream = _stream_for(factory)
    first = make_learner([factory()], stream)
    first.fit(stream, stop_after=20)
    plugin = first.plugins[0]
    if not hasattr(plugin, "state_dict"):
        return
    full = _roundtrip(first.state_dict())
    key = next(k for k in full["plugins"] if k.startswith("0:"))
    cases = corrupted_states(full["plugins"][key])
    cases.append(("state missing", None))
    for label, bad in cases:
        state = dict(full)
        state["plugins"] = dict(full["plugins"])
        if label == "state missing":
            del state["plugins"][key]
        else:
            state["plugins"][key] = bad
        learner = make_learner([factory()], stream)
        learner.begin(stream, evaluate=False)
        try:
            learner.load_state_dict(state)
        except CheckpointError:
            continue
        raise AssertionError(f"{type(plugin).__name__}: a checkpoint whose plugin state has "
                             f"{label} was loaded without a CheckpointError; check the state "
                             "in load_state_dict (lifelong.validation helpers)")


def check_requirements_enforced(factory: Factory) -> None:
    needs = _needs(factory)
    if "teacher" in needs:
        bare = getattr(factory, "func", factory)
        kept = {k: v for k, v in (getattr(factory, "keywords", None) or {}).items()
                if k != getattr(bare(), "teacher_param", "teacher")}
        plugin = bare(**kept)
        stream = tiny_stream()
        learner = make_learner([plugin], stream)
        try:
            learner.fit(stream)
        except ConfigError as exc:
            key = getattr(plugin, "teacher_param", "teacher")
            assert key in str(exc) and learner.step_index == 0, str(exc)
        else:
            raise AssertionError("a plugin that requires a teacher ran without one")
    if "multitask" in needs:
        stream = tiny_stream()
        try:
            make_learner([factory()], stream).fit(stream)
        except CompositionError as exc:
            assert "task" in str(exc)
        else:
            raise AssertionError("a multi-task plugin ran on a single-target stream")
    if "boundaries" in needs:
        stream = tiny_stream(task_aware=False)
        try:
            make_learner([factory()], stream).fit(stream)
        except CompositionError as exc:
            assert "boundar" in str(exc)
        else:
            raise AssertionError("a plugin that requires boundaries ran on a task-free stream "
                                 "without a detector")


def _global_rng_after_run(factory: Factory, with_plugin: bool) -> tuple[Any, ...]:
    stream = _stream_for(factory)  # the plugin's own contract stream, with or without it
    learner = make_learner([factory()] if with_plugin else [], stream)
    random.seed(0)
    np.random.seed(0)
    learner.fit(stream)  # fit seeds torch's global generator itself
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


_PLAIN_RNG: dict[frozenset[str], tuple[Any, ...]] = {}  # runs without the plugin, once per stream


def check_no_global_rng(factory: Factory) -> None:
    """The plugin's randomness comes from its own seeded generator, never a global one.

    The global generators (torch, numpy, ``random``) must end a run in the state they
    end the same run without the plugin: a draw from them would make the run depend on
    what else touched them, and a resumed run would draw differently.
    """
    key = frozenset(_needs(factory))
    with_plugin = _global_rng_after_run(factory, True)
    if key not in _PLAIN_RNG:
        _PLAIN_RNG[key] = _global_rng_after_run(factory, False)
    without = _PLAIN_RNG[key]
    for name, a, b in zip(("torch", "numpy", "random"), with_plugin, without):
        same = torch.equal(a, b) if name == "torch" else (
            bool((a == b).all()) if name == "numpy" else a == b)
        assert same, (f"the plugin draws from {name}'s global random generator; give it a "
                      f"seed parameter and a private generator (torch.Generator, "
                      f"numpy.random.default_rng, random.Random) saved in state_dict()")


PLUGIN_CHECKS: tuple[Callable[[Factory], None], ...] = (
    check_hooks_match_specs, check_params_stored, check_runs_and_composes, check_deterministic,
    check_inputs_not_mutated, check_batch_of_one, check_state_roundtrip, check_resume_exact,
    check_requirements_enforced, check_rejects_corrupted_state, check_no_global_rng,
)


def plugin_checks(registry: Registry | None = None) -> list[tuple[str, Callable[[], None]]]:
    """``(id, check)`` pairs for every registered plugin x every check."""
    reg = registry or get_registry()
    out = []
    for entry in reg.entries("plugin"):
        for check in PLUGIN_CHECKS:
            out.append((f"{entry.name}-{check.__name__[6:]}",
                        (lambda c=check, f=entry.factory: c(contract_factory(f)))))
    return out


def check_plugin(factory: Factory) -> None:
    """Run every plugin check on ``factory`` (a class or zero-argument callable)."""
    for check in PLUGIN_CHECKS:
        check(contract_factory(factory))


# ---------------------------------------------------------------------------- strategies


def _strategy_learner(name: str, stream: Stream, reg: Registry) -> tuple[Learner, Stream]:
    from lifelong.run import make_plugin

    strat = reg.get("strategy", name).factory()
    plugins = [make_plugin(s["name"], {k: v for k, v in s.items() if k != "name"}, seed=0,
                           registry=reg) for s in strat.plugins]
    if strat.stream_transform:
        stream = TRANSFORMS[strat.stream_transform](stream)
    return make_learner(plugins, stream), stream


def check_strategy(name: str, registry: Registry | None = None) -> None:
    """A strategy runs, is deterministic, and resumes exactly."""
    reg = registry or get_registry()
    a, s = _strategy_learner(name, tiny_stream(), reg)
    a.fit(s)
    b, s = _strategy_learner(name, tiny_stream(), reg)
    b.fit(s)
    assert_same_state(_weights(a), _weights(b), f"strategy {name}: same seed, two runs")
    c, s = _strategy_learner(name, tiny_stream(), reg)
    c.fit(s, stop_after=7)
    state = _roundtrip(c.state_dict())
    d, s = _strategy_learner(name, tiny_stream(), reg)
    d.fit(s, state=state)
    assert_same_state(_weights(a), _weights(d), f"strategy {name}: resumed vs uninterrupted")


def strategy_checks(registry: Registry | None = None) -> list[tuple[str, Callable[[], None]]]:
    reg = registry or get_registry()
    return [(n, (lambda n=n: check_strategy(n, reg))) for n in reg.names("strategy")]
