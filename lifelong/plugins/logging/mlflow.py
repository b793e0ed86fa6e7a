"""MLflow logger: the run's scalars as an MLflow run's metrics, its config as the params.

What is logged and when is :mod:`lifelong.plugins.logging._common`'s convention (step =
training samples seen); the params are the resolved config flattened to dotted keys
(``train.lr``, ``strategy.mem_size``, ``plugins.0.name``). Written through
:class:`mlflow.tracking.MlflowClient` (needs ``pip install 'lifelong[mlflow]'``,
mlflow-skinny suffices) to ``tracking_uri``: by default a local file store,
``file:./mlruns`` (MLflow's own default place), for which the logger sets
``MLFLOW_ALLOW_FILE_STORE=true`` (MLflow 3 asks for that opt-in; any other URI, e.g.
``sqlite:///mlflow.db`` or a server, is used as given). A resumed run reopens the same
MLflow run (its id is in the checkpoint) and skips the points that run already holds,
so each (metric, step) is logged once.

Parameters: ``tracking_uri="file:./mlruns"``, ``experiment="lifelong"`` (created when
missing), ``run_name=None`` (the config's ``name``, else
``<strategy>-<stream>-seed<seed>``), ``log_every=100`` (training steps between loss
points).

Examples
--------
>>> import tempfile
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> ml = MLflowLogger(tracking_uri="file:" + tempfile.mkdtemp(), run_name="demo")
>>> learner = make_learner([ml], stream).fit(stream)
>>> run = ml.client().get_run(ml.run_id_)
>>> run.info.run_name, run.info.status, "final/final_avg_accuracy" in run.data.metrics
('demo', 'FINISHED', True)
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.logging._common import Logger, flatten, require

__all__ = ["MLflowLogger"]

MAX_BATCH = 100  # params per log_batch call (MLflow's limit)


@contextmanager
def _global_random_kept() -> Iterator[None]:
    """MLflow draws from ``random`` (ids, names): the run's global generator stays as it was."""
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


class MLflowLogger(Logger):
    """Scalars as MLflow metrics (step = samples seen), the resolved config as params."""

    name = "mlflow"
    extra = "mlflow"

    def __init__(self, *, tracking_uri: str = "file:./mlruns", experiment: str = "lifelong",
                 run_name: str | None = None, log_every: int = 100) -> None:
        require("mlflow", extra=self.extra, owner=self.name)
        super().__init__(run_name=run_name, log_every=log_every)
        for key, v in (("tracking_uri", tracking_uri), ("experiment", experiment)):
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"plugin 'mlflow': {key} must be a non-empty string, got {v!r}")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id_ = ""
        self.uri_ = ""  # the tracking URI in use (a relative file: path made absolute)
        self._wclient: Any = None
        self._wlast: dict[str, int] = {}  # per metric, the last step the MLflow run holds

    @classmethod
    def contract_kwargs(cls) -> dict[str, Any]:
        import tempfile

        return {"tracking_uri": "file:" + tempfile.mkdtemp(prefix="lifelong-mlflow-"),
                "log_every": 5}

    def _resolved_uri(self) -> str:
        uri = self.uri_ or self.tracking_uri
        if uri.startswith("file:"):
            path = uri[len("file:"):]
            if path.startswith("//"):
                path = path[2:]
            uri = "file:" + str(Path(path).expanduser().resolve())
        return uri

    def client(self) -> Any:
        """The :class:`mlflow.tracking.MlflowClient` this logger writes with."""
        if self._wclient is None:
            from mlflow.tracking import MlflowClient

            uri = self._resolved_uri()
            if uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self._wclient = MlflowClient(tracking_uri=uri)
        return self._wclient

    def _taken(self, name: str) -> bool:
        return False  # every start is a new MLflow run (runs are told apart by id)

    def _open(self, learner: Any, resumed: bool) -> None:
        with _global_random_kept():
            self._start(resumed)

    def _start(self, resumed: bool) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        self.uri_ = self._resolved_uri()
        try:
            c = self.client()
            if resumed:
                c.update_run(self.run_id_, status="RUNNING")
                data = c.get_run(self.run_id_).data
                self._wlast = {k: max(m.step for m in c.get_metric_history(self.run_id_, k))
                               for k in data.metrics}
                return
            exp = c.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp is not None else c.create_experiment(self.experiment)
            run = c.create_run(exp_id, run_name=self.run_name_)
            self.run_id_ = run.info.run_id
            params = [Param(k, v) for k, v in flatten(self.config_ or {}).items()]
            for i in range(0, len(params), MAX_BATCH):
                c.log_batch(self.run_id_, params=params[i:i + MAX_BATCH])
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            err = CheckpointError if resumed else ConfigError
            raise err(f"plugin 'mlflow': {self.tracking_uri}: {first}") from None

    def _write(self, step: int, items: list[tuple[str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v in items if step > self._wlast.get(k, -1)]
        if ms:
            with _global_random_kept():
                self.client().log_batch(self.run_id_, metrics=ms)

    def _flush(self) -> None:
        pass  # every point is written when it is logged

    def _close(self) -> None:
        with _global_random_kept():
            self.client().set_terminated(self.run_id_)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "run_id": self.run_id_, "uri": self.uri_}

    def _load_extra(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_get

        run_id, uri = state_get(state, "run_id", owner=self.name), state_get(state, "uri",
                                                                               owner=self.name)
        if not isinstance(run_id, str) or not isinstance(uri, str):
            raise CheckpointError("checkpoint state of plugin 'mlflow': run_id and uri must be "
                                  "strings; the checkpoint is corrupted")
        self.run_id_, self.uri_ = run_id, uri
        self._wclient, self._wlast = None, {}


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "mlflow", MLflowLogger)
