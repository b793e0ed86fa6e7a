"""Assemble a run from a resolved config and execute it.

``build`` turns config data into objects (stream, backbone, plugins,
learner) and fails before the first batch if anything does not fit;
``execute`` trains, evaluates, and returns the metrics dictionary that
``lifelong run`` writes to ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lifelong.config import SELECTION_KEYS, resolve
from lifelong.errors import ConfigError, LifelongError
from lifelong.learner import Learner, plugin_name, resolve_device
from lifelong.plugins.evaluation import (
    AccuracyMatrix,
    AnytimeAccuracy,
    DomainAccuracy,
    Prequential,
    Resources,
    TaskMetrics,
)
from lifelong.registry import Registry, get_registry
from lifelong.stream import scenarios
from lifelong.stream.base import Stream
from lifelong.stream.delay import label_delay
from lifelong.stream.transforms import TRANSFORMS
from lifelong.threads import apply_threads, choose_threads

__all__ = ["Run", "build", "execute", "run_config", "make_plugin"]


@dataclass
class Run:
    """Everything one experiment is made of."""

    config: dict[str, Any]
    stream: Stream
    learner: Learner
    plugins: list[Any] = field(default_factory=list)
    threads: int = 1
    threads_rule: str = ""


def make_plugin(name: str, params: dict[str, Any], *, seed: int,
                registry: Registry | None = None) -> Any:
    """Instantiate a registered plugin; a ``seed`` parameter not set is derived from the run's."""
    entry = (registry or get_registry()).get("plugin", name)
    params = dict(params)
    if "seed" in entry.parameters() and "seed" not in params:
        params["seed"] = seed
    try:
        return entry.factory(**params)
    except LifelongError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"plugin {name!r}: {exc}") from exc


def hide_boundaries(stream: Stream, task_free: bool) -> Stream:
    """``stream.task_free`` for a stream whose factory has no such parameter."""
    if task_free and stream.task_aware:
        return scenarios.task_free(stream)
    if not task_free and not stream.task_aware:
        raise ConfigError(f"stream.task_free: false, but stream {stream.name!r} is task-free by "
                          "construction (it has no boundaries to announce); drop the key")
    return stream


def build(raw: dict[str, Any], *, registry: Registry | None = None,
          resumed_threads: int | None = None) -> Run:
    """Validate ``raw`` and build the stream, model, plugins and learner.

    ``resumed_threads``: the thread count a checkpoint recorded, kept when
    ``train.threads`` is ``auto`` (an exact resume needs the same count).
    """
    reg = registry or get_registry()
    cfg = resolve(raw, reg)
    seed = cfg["seed"]

    sparams = {k: v for k, v in cfg["stream"].items() if k not in ("name", "label_delay")}
    sentry = reg.get("stream", cfg["stream"]["name"])
    selection = {k: sparams.pop(k) for k in SELECTION_KEYS
                 if k in sparams and k not in sentry.parameters()}
    if "seed" in sentry.parameters() and "seed" not in sparams:
        sparams["seed"] = seed
    free = sparams.pop("task_free", None) if "task_free" not in sentry.parameters() else None
    from lifelong.validation import check_stream_params

    check_stream_params(cfg["stream"]["name"], sparams)
    stream: Stream = sentry.factory(**sparams)
    if selection:
        stream = scenarios.select_experiences(stream, first=selection.get("first_experiences"),
                                              skip=selection.get("skip_experiences", 0))
    if free is not None:
        stream = hide_boundaries(stream, free)
    target: Stream | None = None
    if cfg.get("target") is not None:  # the unlabeled target domain: same names and adapters
        tparams = {k: v for k, v in cfg["target"].items() if k != "name"}
        tentry = reg.get("stream", cfg["target"]["name"])
        if "seed" in tentry.parameters() and "seed" not in tparams:
            tparams["seed"] = seed
        target = tentry.factory(**tparams)

    specs: list[dict[str, Any]] = []
    train = dict(cfg["train"])
    if cfg["strategy"] is not None:
        sp = {k: v for k, v in cfg["strategy"].items() if k != "name"}
        strategy = reg.get("strategy", cfg["strategy"]["name"]).factory(**sp)
        specs.extend(strategy.plugins)
        user_train = (raw.get("train") or {}) if isinstance(raw.get("train"), dict) else {}
        train.update({k: v for k, v in strategy.train.items() if k not in user_train})
        if strategy.stream_transform:
            stream = TRANSFORMS[strategy.stream_transform](stream)
    specs.extend(cfg["plugins"])
    if cfg["stream"].get("label_delay"):
        stream = label_delay(stream, cfg["stream"]["label_delay"])

    bparams = {k: v for k, v in cfg["backbone"].items() if k != "name"}
    torch.manual_seed(seed)
    bentry = reg.get("backbone", cfg["backbone"]["name"])
    if "tasks" in bentry.parameters():  # multi-output backbones get the stream's tasks
        bparams["tasks"] = stream.tasks_at(0)  # a head arriving later grows then
    model = bentry.factory(input_shape=stream.input_shape, num_classes=stream.num_classes,
                           **bparams)

    plugins = [make_plugin(s["name"], {k: v for k, v in s.items() if k != "name"},
                           seed=seed, registry=reg) for s in specs]
    threads, threads_rule = choose_threads(model, tuple(stream.input_shape), train["batch_size"],
                                           setting=train.get("threads", "auto"),
                                           device=resolve_device(cfg["device"]), plugins=plugins,
                                           resumed=resumed_threads)
    apply_threads(threads)
    ev = cfg["eval"]
    user_eval = raw.get("eval") if isinstance(raw.get("eval"), dict) else {}
    if "every" not in user_eval and not stream.task_aware and stream.test:
        # task-free runs: anytime accuracy on the seen experiences, once per prequential window
        ev["every"] = ev.get("window", 100)
    observers: list[Any] = [Resources()]
    if ev.get("matrix", True):
        observers.append(AccuracyMatrix())
    if ev.get("prequential", True):
        observers.append(Prequential(window=ev.get("window", 100)))
    if ev.get("every", 0):
        observers.append(AnytimeAccuracy(every=ev["every"]))
    if target is not None:
        observers.append(DomainAccuracy())
    if stream.tasks or ev.get("baselines"):  # multi-target: each task's metric, Delta_MTL
        observers.append(TaskMetrics(baselines=ev.get("baselines")))
    learner = Learner(
        model, plugins=plugins + observers, optimizer=train["optimizer"], lr=float(train["lr"]),
        momentum=float(train["momentum"]), weight_decay=float(train["weight_decay"]),
        batch_size=train["batch_size"], epochs=train["epochs"], device=cfg["device"], seed=seed,
        nan_policy=train["nan_policy"], check_every=train.get("check_every"),
        detect_in_task_aware=train.get("detect_in_task_aware", False), target=target,
        compile=train.get("compile", False),
    )
    cfg["train"] = train
    for p in plugins:  # loggers name their run and record its params from the resolved config
        if hasattr(p, "describe_run"):
            p.describe_run(cfg)
    return Run(cfg, stream, learner, plugins, threads=threads, threads_rule=threads_rule)


def collect_metrics(run: Run) -> dict[str, Any]:
    """Merge every plugin's ``summary()`` with the run's description."""
    out: dict[str, Any] = {}
    for p in run.learner.plugins:
        if hasattr(p, "summary"):
            out.update(p.summary())
    lr = run.learner
    out.update({
        "skipped_batches": lr.skipped_batches,
        "boundaries_detected": lr.boundaries_detected,
        "true_change_points": run.stream.change_points,
        "stream": repr(run.stream),
        "plugins": [plugin_name(p) for p in run.plugins],
        "device": str(lr.device),
        "threads": run.threads,
        "threads_rule": run.threads_rule,
        "compile": lr.compile,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": run.config,
    })
    return out


def execute(run: Run, *, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train on the whole stream and return the metrics."""
    run.learner.fit(run.stream, progress=progress)
    return collect_metrics(run)


_RESUME_FIX = ("free space or choose another --out (the run's checkpoint, if any, is intact: "
               "resume it to write the results again)")


def _atomic_write(path: Path, write: Callable[[Path], None], *, fix: str = _RESUME_FIX) -> None:
    """Write through a temporary file renamed over ``path``; on failure remove it and raise
    one error naming ``path``, the cause and ``fix``."""
    from lifelong.errors import CheckpointError

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}; {fix}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_metrics(metrics: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``metrics.json`` atomically into ``out_dir``."""
    path = Path(out_dir) / "metrics.json"
    text = json.dumps(metrics, indent=2, default=str)
    _atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def write_model(learner: Learner, out_dir: str | os.PathLike[str], run: Run | None = None) -> Path:
    """Write the final weights to ``out_dir/model.pt`` (a plain state dict).

    With ``run``, ``model.json`` beside it describes the backbone (config, input
    shape, classes), so the model can serve as a teacher (:mod:`lifelong.teachers`).
    A write that fails (a full disk) removes its temporary file and raises
    :class:`~lifelong.errors.CheckpointError`.
    """
    path = Path(out_dir) / "model.pt"

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(learner.model.state_dict(), fh)
            fh.flush()
            os.fsync(fh.fileno())

    _atomic_write(path, save)
    if run is not None:
        from lifelong.teachers import model_description

        desc = json.dumps(model_description(run.config, run.stream.input_shape,
                                            run.stream.num_classes), indent=2)
        _atomic_write(Path(out_dir) / "model.json", lambda tmp: tmp.write_text(desc))
    return path


def run_config(raw: dict[str, Any], *, out_dir: str | None = None,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Build, execute and (if ``out_dir``) write ``metrics.json``; returns the metrics."""
    run = build(raw)
    metrics = execute(run, progress=progress)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_metrics(metrics, out_dir)
    return metrics
