"""Shared glue of the drift-detector plugins (ADWIN, Page-Hinkley, KSWIN).

Each detector plugin feeds one number per training batch into a river
detector — the batch's cross-entropy (``signal="loss"``) or its error rate
(``signal="error"``, one minus the accuracy of the predictions made before
the update) — and answers ``detect_boundary`` with True when river flags a
drift. The learner then fires ``after_experience(None)`` /
``before_experience(None)``, so EWC, SI, MAS, LwF, GEM and expansion
plugins consolidate without being told task ids.

Every river parameter is a keyword with river 0.26's default.

**Host syncs.** The batch signal is a device tensor; river wants a Python
float. Signals are kept on the device and handed to river every
``sync_every`` batches (one ``.tolist()`` per flush). ``None`` means 1 on
CPU (reading a CPU scalar is a memory load) and 10 on CUDA. A drift river
flags at batch *t* is recorded at *t* (``detections_``, in samples seen)
but the learner fires the boundary when the buffer is flushed, up to
``sync_every - 1`` batches later: consolidation happens on a model that
trained those few extra batches on the new data. Detection delays are
typically tens of batches, so this changes little; set ``sync_every: 1``
where it matters.

**State.** ``state_dict()`` holds plain data and tensors only. Page-Hinkley
and KSWIN are pure Python: their running sums, window and ``random.Random``
state are copied out as numbers and lists. river's ADWIN is a Rust object
whose only serialization is its own binary encoding (``__getstate__``
bytes, decoded by serde into a typed struct — no pickle, no code run on
load); those bytes are kept as a ``uint8`` tensor together with the river
version that wrote them, and loading them into another river version
raises :class:`~lifelong.errors.CheckpointError` if they do not decode.
Signals waiting for the next flush are saved too, so a run resumed at any
batch detects at the same batches as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.predictions import prequential_logits

__all__ = ["SignalBuffer", "batch_signal", "check_signal", "resolve_sync", "SIGNALS"]

SIGNALS = ("loss", "error")


def batch_signal(step: Any, signal: str) -> Tensor:
    """The per-batch drift signal as a 0-d device tensor (no host sync).

    ``"loss"``: the stream cross-entropy of the step (the training forward,
    computed before the update); ``"error"``: the fraction of the stream rows
    the model got wrong when predicting them before the update in evaluation
    mode, the same predictions prequential accuracy scores
    (:func:`lifelong.predictions.prequential_logits`).
    """
    if signal == "loss":
        return step.losses["ce"].detach()
    wrong = prequential_logits(step).argmax(1) != step.batch.y
    return wrong.float().mean()


class SignalBuffer:
    """Per-batch signals kept on the device and read to the host in one go.

    ``push(value, at)`` stores a 0-d tensor and the number of samples seen
    after its batch; ``drain()`` returns ``[(float, at), ...]`` in order and
    empties the buffer.
    """

    def __init__(self) -> None:
        self.values: list[Tensor] = []
        self.at: list[int] = []

    def __len__(self) -> int:
        return len(self.values)

    def push(self, value: Tensor, at: int) -> None:
        self.values.append(value)
        self.at.append(at)

    def drain(self) -> list[tuple[float, int]]:
        if not self.values:
            return []
        if len(self.values) == 1:
            floats = [float(self.values[0])]
        else:
            floats = torch.stack(self.values).tolist()
        out = list(zip(floats, self.at))
        self.values, self.at = [], []
        return out

    def state_dict(self) -> dict[str, Any]:
        vals = (torch.stack(self.values).float().cpu() if self.values
                else torch.zeros(0, dtype=torch.float32))
        return {"values": vals, "at": list(self.at)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device,
                        owner: str = "detector", most: int | None = None) -> None:
        """Restore; ``most`` bounds how many signals may be pending (the sync interval)."""
        from lifelong.validation import state_get, state_tensor

        values = state_tensor(state, "values", owner=owner, shape=(None,), dtype="float",
                              finite=True)
        at = state_get(state, "at", owner=owner)
        from lifelong.validation import loading_counters

        top = loading_counters().get("samples_seen")
        top = top if isinstance(top, int) else None
        if not isinstance(at, list) or len(at) != len(values) or not all(
                isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= (
                    top if top is not None else a) for a in at):
            raise CheckpointError(f"checkpoint state of plugin {owner!r}: the pending signals' "
                                  f"positions {str(at)[:60]} do not match its {len(values)} "
                                  "values; the checkpoint is corrupted")
        if most is not None and len(values) >= most:
            raise CheckpointError(f"checkpoint state of plugin {owner!r}: {len(values)} pending "
                                  f"signals, at most {most - 1} can be pending between reads; "
                                  "the checkpoint is corrupted")
        self.values = [v.to(device) for v in values]
        self.at = list(at)


def _positions(value: Any, owner: str) -> list[int]:
    """Sample counts at which something fired: a non-decreasing list of integers >= 0."""
    from lifelong.validation import loading_counters

    top = loading_counters().get("samples_seen")
    top = top if isinstance(top, int) else None
    ok = isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= (top if top is not None
                                                                      else v) for v in value)
    if not ok or any(a > b for a, b in zip(value, value[1:])):
        raise CheckpointError(f"checkpoint state of plugin {owner!r}: detections "
                              f"{str(value)[:60]} are not a sorted list of sample counts; the "
                              "checkpoint is corrupted")
    return list(value)


def check_signal(owner: str, signal: str, sync_every: int | None) -> None:
    if signal not in SIGNALS:
        raise ConfigError(f"plugin {owner!r}: signal must be one of {SIGNALS}, got {signal!r}")
    if sync_every is not None and (not isinstance(sync_every, int) or sync_every < 1):
        raise ConfigError(f"plugin {owner!r}: sync_every must be a positive integer (or null for "
                          f"1 on CPU, 10 on CUDA), got {sync_every!r}")


def resolve_sync(sync_every: int | None, device: torch.device) -> int:
    return sync_every if sync_every is not None else (10 if device.type == "cuda" else 1)


class _RiverDetector:
    """Shared glue: buffer the batch signal, feed river, report drifts."""

    name = "river_detector"
    requires: tuple[str, ...] = ()
    owns: tuple[str, ...] = ()

    signal: str
    sync_every: int | None

    @property
    def scores_stream(self) -> bool:
        """The error signal needs eval-mode predictions before the update (predictions.py)."""
        return self.signal == "error"

    def _make(self) -> Any:  # the river detector, from the stored parameters
        raise NotImplementedError

    def _snapshot(self) -> dict[str, Any]:  # the river detector's state as plain data
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _init_state(self) -> None:
        self.detector_: Any = None
        self.detections_: list[int] = []
        self._buffer = SignalBuffer()
        self._sync = 1
        self._device = torch.device("cpu")

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self.detector_ = self._make()
        self.detections_ = []
        self._buffer = SignalBuffer()
        self._sync = resolve_sync(self.sync_every, learner.device)
        self._device = learner.device

    @hookimpl
    def detect_boundary(self, learner: Any, step: Any) -> bool:
        self._buffer.push(batch_signal(step, self.signal), learner.samples_seen)
        if len(self._buffer) < self._sync:
            return False
        fired = False
        for value, at in self._buffer.drain():
            self.detector_.update(value)
            if self.detector_.drift_detected:
                self.detections_.append(at)
                fired = True
        return fired

    def summary(self) -> dict[str, Any]:
        """Where river flagged drifts (samples seen), for ``metrics.json``."""
        return {f"{self.name}_detections": list(self.detections_)}

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self._snapshot() if self.detector_ is not None else None,
                "detections": list(self.detections_), "pending": self._buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_get

        detector = state_get(state, "detector", owner=self.name)
        detections = _positions(state_get(state, "detections", owner=self.name), self.name)
        pending = SignalBuffer()
        pending.load_state_dict(state_get(state, "pending", owner=self.name), self._device,
                                owner=self.name,
                                most=self._sync if self.sync_every is not None else 10)
        new = self._make()
        if detector is None and self.detector_ is not None:
            raise CheckpointError(f"checkpoint state of plugin {self.name!r}: the detector state "
                                  "is missing (null); the checkpoint is corrupted")
        if detector is not None:
            if not isinstance(detector, dict):
                raise CheckpointError(f"checkpoint state of plugin {self.name!r}: the detector "
                                      f"state is a {type(detector).__name__}; the checkpoint is "
                                      "corrupted")
            old, self.detector_ = self.detector_, new
            try:
                self._restore(detector)
            except CheckpointError:
                self.detector_ = old
                raise
        self.detector_ = new
        self.detections_ = detections
        self._buffer = pending
