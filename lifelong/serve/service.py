"""One learner as a service: durable learning in arrival order, predictions from a snapshot.

:class:`Service` owns the learner (built by :func:`lifelong.run.build` from a
run config whose stream is ``online``), the learn log and one worker
thread. ``learn`` validates a request, appends it to the fsynced log and
returns once it is durable; the worker trains on durable records in log
order, each record in steps of at most ``train.batch_size`` rows, so the
sequence of steps depends on the log alone. After each record the worker
publishes a frozen copy of the model: ``predict`` reads that copy and never
waits for training. Checkpoints are :mod:`lifelong.checkpoint` files, taken
between records; the learner's ``samples_seen`` is the number of logged
rows it holds, so a restart loads the checkpoint and replays the log's
later records (:mod:`lifelong.serve.log`): it ends where an uninterrupted
service would. ``close`` drains the queue and saves.

Nothing here speaks HTTP: :mod:`lifelong.serve.app` maps requests to these
calls and :class:`RequestError` to status codes.
"""

from __future__ import annotations

import copy
import itertools
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.checkpoint import FILENAME, Checkpointer, check_compatible, load_checkpoint
from lifelong.errors import ConfigError
from lifelong.plugins.evaluation.prequential import Prequential
from lifelong.serve.log import LearnLog, Record
from lifelong.stream.online import OnlineSession, label_key

__all__ = ["Service", "RequestError", "ServiceSettings"]

LOG_NAME = "learn.log"


class RequestError(Exception):
    """A request that is refused, with its HTTP status; it changes nothing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ServiceSettings:
    """Limits and checkpoint cadence of one service."""

    out: Path
    checkpoint_every: int = 0  # training steps between checkpoints (0: off)
    checkpoint_every_seconds: float = 30.0
    max_rows: int = 10_000  # rows in one request
    max_pending: int = 100_000  # predictions kept for labels that come later


class Service:
    """The learner, its log and its worker. Thread-safe: ``learn`` and ``predict`` may be concurrent."""

    def __init__(self, raw_config: dict[str, Any], settings: ServiceSettings) -> None:
        from lifelong.run import build

        run = build(raw_config)
        if run.stream.name != "online":
            raise ConfigError("lifelong serve: the config's stream must be the online stream, "
                              "e.g. stream: {name: online, n_features: 4, classes: [a, b]}")
        self.config = run.config
        self.settings = settings
        self.out = Path(settings.out)
        self.n_features = int(run.stream.input_shape[0])
        self.labels: list[Any] = list(run.stream.meta["classes"])
        self._label_index = {k: i for i, k in enumerate(run.stream.meta["label_keys"])}
        state = None
        self.resumed_from: int | None = None
        if (self.out / FILENAME).is_file():
            payload = load_checkpoint(self.out)
            check_compatible(payload, run.config, str(self.out / FILENAME))
            state = payload["learner"]
            self.resumed_from = int(state["counters"]["samples_seen"])
        self.session = OnlineSession(run.learner, run.stream, state=state)
        self.learner = run.learner
        self._prequential = next((p for p in self.learner.plugins if isinstance(p, Prequential)),
                                 None)
        self.checkpointer = Checkpointer(self.out, run.config)
        self._queue: queue.Queue[tuple[int, Record] | None] = queue.Queue()
        self._steps_at_save = self.learner.step_index
        self._saved_at = time.monotonic()
        self.error: str | None = None
        self.closing = False
        # predictions waiting for their labels: id -> (row, predicted class)
        self._pending: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._pending_lock = threading.Lock()
        self._boot = uuid.uuid4().hex[:8]
        self._ids = itertools.count()
        self.delayed_hits = 0
        self.delayed_seen = 0
        self._in_flight = 0
        self._flight = threading.Condition()
        # replay what the checkpoint does not hold, before anything is served
        self.log = LearnLog(self.out / LOG_NAME)
        replayed = 0
        for x, y in self.log.records(skip_rows=self.learner.samples_seen):
            self._train(x, y)
            replayed += 1
        self.replayed_records = replayed
        self.acknowledged_rows = self.log.rows_total
        self.applied_records = self.log.records_total
        self._publish()
        self.log.on_durable = lambda seq, rec: self._queue.put((seq, rec))
        self._worker = threading.Thread(target=self._work, name="lifelong-learner", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ worker
    def _train(self, x: np.ndarray, y: np.ndarray) -> None:
        bs = self.learner.batch_size
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for i in range(0, len(yt), bs):
            self.session.learn(xt[i:i + bs], yt[i:i + bs])

    def _work(self) -> None:
        last_publish = time.monotonic()
        while True:
            item = self._queue.get()
            if item is None:
                return
            seq, (x, y) = item
            try:
                self._train(x, y)
                self.applied_records = seq + 1
                now = time.monotonic()
                if self._queue.empty() or now - last_publish > 0.05:
                    self._publish()
                    last_publish = now
                self._maybe_checkpoint()
            except Exception as exc:  # the service stops learning and says why
                self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self._publish()
                return

    def _maybe_checkpoint(self) -> None:
        s = self.settings
        steps = self.learner.step_index - self._steps_at_save
        due = bool(s.checkpoint_every) and steps >= s.checkpoint_every
        if not due and s.checkpoint_every_seconds and steps:
            due = time.monotonic() - self._saved_at >= s.checkpoint_every_seconds
        if due:
            self.save()

    def save(self) -> Path:
        """A checkpoint of the learner as it stands (call between records: worker or closed)."""
        path = self.checkpointer.save(self.learner)
        self._steps_at_save = self.learner.step_index
        self._saved_at = time.monotonic()
        return path

    def _publish(self) -> None:
        model = copy.deepcopy(self.learner.model).eval()
        for m in model.modules():  # a feature capture of the learner must not see predictions
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        for p in model.parameters():
            p.requires_grad_(False)
        lr = self.learner
        acc = None
        if self._prequential is not None:
            st = self._prequential.state_dict()
            seen = st["seen"] + st["open"]["seen"]
            acc = (st["correct"] + st["open"]["correct"]) / seen if seen else None
        self._snapshot = (model, lr.step_index, {
            "samples_learned": lr.samples_seen, "steps": lr.step_index,
            "prequential_accuracy": acc, "boundaries_detected": list(lr.boundaries_detected),
            "skipped_batches": lr.skipped_batches})

    # ------------------------------------------------------------------ requests
    def _rows(self, rows: Any) -> np.ndarray:
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, "'rows' must be a non-empty list of rows, each a list of "
                                    f"{self.n_features} numbers")
        if len(rows) > self.settings.max_rows:
            raise RequestError(413, f"{len(rows)} rows in one request; at most "
                                    f"{self.settings.max_rows} (send several requests)")
        for i, r in enumerate(rows):
            if not isinstance(r, list) or len(r) != self.n_features:
                got = f"{len(r)} values" if isinstance(r, list) else type(r).__name__
                raise RequestError(422, f"row {i} has {got}; the model takes {self.n_features} "
                                        "features per row")
            for j, v in enumerate(r):
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise RequestError(422, f"row {i}, feature {j} is {v!r}: features must be "
                                            "numbers")
        x = np.asarray(rows, dtype=np.float64)
        with np.errstate(over="ignore"):
            x32 = x.astype(np.float32)
        bad = ~np.isfinite(x32)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise RequestError(422, f"row {i}, feature {j} is {x[i, j]!r}: features must be "
                                    "finite float32 numbers (no NaN, inf or overflow)")
        return x32

    def _labels(self, labels: Any, n: int) -> np.ndarray:
        if not isinstance(labels, list) or len(labels) != n:
            raise RequestError(422, f"'labels' must be a list of {n} labels, one per row")
        out = np.empty(n, np.int64)
        for i, v in enumerate(labels):
            k = self._label_index.get(label_key(v)) if isinstance(v, str | int | float) else None
            if k is None:
                raise RequestError(422, f"label {v!r} (row {i}) is not one of the classes "
                                        f"{self.labels}")
            out[i] = k
        return out

    def _check_open(self) -> None:
        if self.error is not None:
            raise RequestError(503, f"learning stopped: {self.error}; restart the service after "
                                    "fixing the cause (acknowledged rows are in the log)")
        if self.closing:
            raise RequestError(503, "the service is shutting down")

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        """Classes and probabilities for ``body["rows"]`` from the current weights."""
        x = self._rows(body.get("rows"))
        model, version, _ = self._snapshot
        with torch.no_grad():
            xt = torch.from_numpy(x).to(self.learner.device)
            logits = (model(xt, torch.zeros(len(xt), dtype=torch.long, device=xt.device))
                      if getattr(model, "task_conditioned", False) else model(xt))
            proba = torch.softmax(logits[:, : len(self.labels)].float(), 1).cpu().numpy()
        pred = proba.argmax(1)
        ids = [f"{self._boot}-{next(self._ids)}" for _ in range(len(x))]
        with self._pending_lock:
            for i, pid in enumerate(ids):
                self._pending[pid] = (x[i], int(pred[i]))
            while len(self._pending) > self.settings.max_pending:
                self._pending.popitem(last=False)
        return {"version": version, "ids": ids,
                "predictions": [self.labels[int(k)] for k in pred],
                "probabilities": [[float(p) for p in row] for row in proba],
                "classes": self.labels}

    def learn(self, body: dict[str, Any]) -> dict[str, Any]:
        """Append labelled rows (or labels for earlier predictions, by id) to the log."""
        with self._flight:
            self._check_open()
            self._in_flight += 1
        try:
            return self._learn(body)
        finally:
            with self._flight:
                self._in_flight -= 1
                self._flight.notify_all()

    def _learn(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"rows", "labels", "ids"}
        if unknown:
            raise RequestError(422, f"unknown field {sorted(unknown)[0]!r}; a learn request has "
                                    "'rows' and 'labels', or 'ids' and 'labels'")
        if ("rows" in body) == ("ids" in body):
            raise RequestError(422, "give 'rows' (feature rows) or 'ids' (of earlier "
                                    "predictions) with 'labels', not both or neither")
        if "rows" in body:
            x = self._rows(body["rows"])
            y = self._labels(body.get("labels"), len(x))
            seq = self.log.append(x, y)
            return {"accepted": len(y), "record": seq}
        ids = body["ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise RequestError(422, "'ids' must be a non-empty list of prediction ids")
        if len(set(ids)) != len(ids):
            raise RequestError(422, "'ids' lists the same prediction twice")
        y = self._labels(body.get("labels"), len(ids))
        with self._pending_lock:
            missing = [i for i in ids if i not in self._pending]
            if missing:
                raise RequestError(404, f"prediction id {missing[0]!r} is unknown: already "
                                        "labelled, too old (max_pending), or made before a "
                                        "restart; send the rows with their labels instead")
            held = [self._pending.pop(i) for i in ids]
        x = np.stack([h[0] for h in held])
        try:
            seq = self.log.append(x, y)
        except BaseException:
            with self._pending_lock:  # not acknowledged: the predictions can be labelled again
                for i, h in zip(ids, held):
                    self._pending[i] = h
            raise
        self.delayed_hits += int(sum(h[1] == int(k) for h, k in zip(held, y)))
        self.delayed_seen += len(ids)
        return {"accepted": len(y), "record": seq}

    def metrics(self) -> dict[str, Any]:
        from lifelong.teachers import weights_digest

        model, version, snap = self._snapshot
        return {**snap, "version": version, "acknowledged_rows": self.log.rows_total,
                "acknowledged_records": self.log.records_total,
                "applied_records": self.applied_records, "queue_depth": self._queue.qsize(),
                "delayed_label_accuracy": (self.delayed_hits / self.delayed_seen
                                           if self.delayed_seen else None),
                "pending_predictions": len(self._pending),
                "checkpoints_saved": self.checkpointer.saved,
                "replayed_records": self.replayed_records, "resumed_from_rows": self.resumed_from,
                "weights_digest": weights_digest(model), "error": self.error}

    def health(self) -> tuple[bool, dict[str, Any]]:
        ok = self.error is None and self._worker.is_alive()
        return ok, {"status": "ok" if ok else "failed", "error": self.error,
                    "version": self._snapshot[1]}

    def close(self, *, timeout: float = 600.0) -> None:
        """Stop taking rows, train on everything acknowledged, save a checkpoint, close the log."""
        with self._flight:
            self.closing = True
            self._flight.wait_for(lambda: self._in_flight == 0, timeout)
        self._queue.put(None)  # after every acknowledged record: the worker trains on all
        self._worker.join(timeout)
        if self.error is None and not self._worker.is_alive():
            self.save()
        self.log.close()


def pid_file(out: Path, host: str, port: int) -> Path:
    """Where a running service writes its address (``server.json`` in its directory)."""
    import json

    path = out / "server.json"
    tmp = out / ".server.json.tmp"
    tmp.write_text(json.dumps({"host": host, "port": port, "pid": os.getpid()}))
    os.replace(tmp, path)
    return path
