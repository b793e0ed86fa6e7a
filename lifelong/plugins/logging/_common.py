"""What every logger records, and when; the loggers only write.

Conventions (those of TensorBoard and MLflow): one scalar per metric, the step is the
number of training samples seen, one run per run name.

* ``train/loss`` (the loss back-propagated) and ``train/<term>`` (each named loss term,
  ``train/ce`` first) every ``log_every`` training steps: the terms are stacked and read
  from the device in one transfer, so a CUDA run syncs once per ``log_every`` steps, never
  per step;
* at each evaluation: ``anytime/accuracy`` and ``anytime/accuracy_task_il`` (the mean over
  the experiences seen, every ``eval.every`` batches), ``eval/accuracy/exp<j>`` and
  ``eval/avg_accuracy`` (+ ``_task_il``) after each experience, and the prequential
  windows closed since the last evaluation as ``prequential/accuracy``;
* at the end, ``final/<key>`` for every number in the evaluation plugins' summaries
  (``final/final_avg_accuracy``, ``final/avg_forgetting``, ``final/samples_per_second``...).

A logger never touches training: it reads the step, the reports and the summaries. Its
``state_dict`` holds where it writes and how far it got, so a resumed run continues the
same log (the same event directory, MLflow run or CSV file) instead of starting another.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.validation import check_number

__all__ = ["Logger", "require", "flatten", "default_run_name"]


def require(module: str, *, extra: str, owner: str) -> None:
    """A one-line :class:`ConfigError` naming the extra when ``module`` is not installed."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(f"plugin {owner!r} needs the {module} package, which is not installed; "
                          f"pip install 'lifelong[{extra}]'")


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"train.lr": "0.1", "plugins.0.name": "ewc", ...}`` (strings)."""
    out: dict[str, str] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(config, list) and config and any(isinstance(v, dict) for v in config):
        for i, v in enumerate(config):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = config if isinstance(config, str) else json.dumps(config, default=str)
    return out


def default_run_name(config: dict[str, Any] | None, learner: Any) -> str:
    """The config's ``name``; else ``<strategy or plugins>-<stream>-seed<seed>``."""
    if config and config.get("name"):
        return str(config["name"])
    if config:
        strat = (config.get("strategy") or {}).get("name") if isinstance(
            config.get("strategy"), dict) else config.get("strategy")
        plugins = [p.get("name") for p in config.get("plugins") or [] if isinstance(p, dict)
                   and p.get("name") not in LOGGERS]
        method = strat or "+".join(plugins) or "naive"
        stream = (config.get("stream") or {}).get("name", "stream")
        seed = config.get("seed", 0)
    else:
        from lifelong.learner import plugin_name

        names = [plugin_name(p) for p in learner.plugins if not isinstance(p, Logger)
                 and not type(p).__module__.startswith("lifelong.plugins.evaluation")]
        method = "+".join(names) or "naive"
        stream = getattr(learner.stream, "name", "stream")
        seed = learner.seed
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", f"{method}-{stream}-seed{seed}")


LOGGERS = ("tensorboard", "mlflow", "csv")


class Logger:
    """Base of the logger plugins: decides what to log and when (see the module docstring).

    Subclasses implement ``_taken(name)`` (a fresh run of that name would mix with an
    existing log), ``_open(learner, resumed)``, ``_write(step, items)``, ``_flush()`` and
    ``_close()``, and may extend ``state_dict``.
    """

    name = "logger"
    extra = ""

    def __init__(self, *, run_name: str | None = None, log_every: int = 100) -> None:
        owner = f"plugin {self.name!r}"
        check_number(owner, "log_every", log_every, min=1, integer=True)
        if run_name is not None and (not isinstance(run_name, str) or not run_name.strip()):
            raise ConfigError(f"{owner}: run_name must be a non-empty string or null, got "
                              f"{run_name!r}")
        self.run_name = run_name
        self.log_every = log_every
        self.config_: dict[str, Any] | None = None
        self.run_name_: str | None = None  # the name in use (a suffix when the name was taken)
        self.last_step_ = -1               # the last step written
        self.windows_ = 0                  # prequential windows written
        self._open_ = False

    # ------------------------------------------------------------------ set-up
    def describe_run(self, config: dict[str, Any]) -> None:
        """Called by :func:`lifelong.run.build` with the resolved config (run name, params)."""
        self.config_ = config

    def _ensure_open(self, learner: Any) -> None:
        if self._open_:
            return
        resumed = self.run_name_ is not None
        if not resumed:
            base = self.run_name or default_run_name(self.config_, learner)
            name, k = base, 1
            while self._taken(name):
                k += 1
                name = f"{base}-{k}"
            self.run_name_ = name
        self._open(learner, resumed)
        self._open_ = True

    def _emit(self, learner: Any, step: int, items: list[tuple[str, float]]) -> None:
        if not items:
            return
        self._ensure_open(learner)
        self._write(int(step), [(k, float(v)) for k, v in items])
        self.last_step_ = max(self.last_step_, int(step))

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        if (step.index + 1) % self.log_every or step.loss is None:
            return
        import torch

        names = ["train/loss", *(f"train/{k}" for k in step.losses)]
        vals = [step.loss, *step.losses.values()]
        ts = [v.detach().float().reshape(()) if isinstance(v, torch.Tensor)
              else torch.tensor(float(v), device=learner.device) for v in vals]
        floats = torch.stack([t.to(ts[0].device) for t in ts]).tolist()  # one transfer
        self._emit(learner, learner.samples_seen + step.n_stream, list(zip(names, floats)))

    @hookimpl
    def after_eval(self, learner: Any, report: Any) -> None:
        items: list[tuple[str, float]] = []
        c, t = report.class_il, report.task_il
        if report.kind == "anytime" and c:
            items += [("anytime/accuracy", sum(c) / len(c)),
                      ("anytime/accuracy_task_il", sum(t) / len(t))]
        elif report.kind in ("experience_end", "initial"):
            items += [(f"eval/accuracy/exp{j}", a) for j, a in enumerate(c)]
            if report.kind == "experience_end" and c:
                k = min(report.experience_index + 1, len(c))
                items += [("eval/avg_accuracy", sum(c[:k]) / k),
                          ("eval/avg_accuracy_task_il", sum(t[:k]) / k)]
        self._emit(learner, report.samples_seen, items)
        self._prequential(learner)

    @hookimpl(trylast=True)  # after the evaluation plugins closed their last window
    def after_training(self, learner: Any) -> None:
        self._prequential(learner)
        items: list[tuple[str, float]] = []
        for p in learner.plugins:
            if isinstance(p, Logger) or not hasattr(p, "summary"):
                continue
            for k, v in p.summary().items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    items.append((f"final/{k}", v))
        self._emit(learner, learner.samples_seen, items)
        if self._open_:
            self._flush()
            self._close()
            self._open_ = False

    def _prequential(self, learner: Any) -> None:
        from lifelong.plugins.evaluation import Prequential

        p = next((q for q in learner.plugins if isinstance(q, Prequential)), None)
        if p is None:
            return
        windows = p.summary()["prequential_windows"]  # reads closed windows: at eval points only
        for at, acc in windows[self.windows_:]:
            self._emit(learner, at, [("prequential/accuracy", acc)])
        self.windows_ = len(windows)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        if self._open_:
            self._flush()  # what the checkpoint says was written is on disk
        return {"run_name": self.run_name_ or "", "last_step": self.last_step_,
                "windows": self.windows_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_get, state_number

        name = state_get(state, "run_name", owner=self.name)
        if not isinstance(name, str):
            from lifelong.errors import CheckpointError

            raise CheckpointError(f"checkpoint state of plugin {self.name!r}: run_name must be "
                                  f"a string, got {type(name).__name__}; the checkpoint is "
                                  "corrupted")
        last = state_number(state, "last_step", owner=self.name, min=-1, integer=True)
        windows = state_number(state, "windows", owner=self.name, min=0, integer=True)
        self._load_extra(state)
        if self._open_:
            self._close()
            self._open_ = False
        self.run_name_ = name or None
        self.last_step_, self.windows_ = int(last), int(windows)

    def _load_extra(self, state: dict[str, Any]) -> None:
        """Check and take the subclass's own entries (before anything changes)."""

    # ------------------------------------------------------------------ writers
    def _taken(self, name: str) -> bool:
        raise NotImplementedError

    def _open(self, learner: Any, resumed: bool) -> None:
        raise NotImplementedError

    def _write(self, step: int, items: list[tuple[str, float]]) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:  # pickling: the open writer stays behind
        d = dict(self.__dict__)
        d["_open_"] = False
        for k in ("_writer", "_wfile", "_wcsv", "_wclient"):
            if k in d:
                d[k] = None
        return d

    def _dir(self, log_dir: str, name: str) -> Path:
        return Path(log_dir).expanduser() / name
