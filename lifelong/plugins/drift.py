"""Drift detectors as boundary detectors: river's ADWIN, Page-Hinkley and KSWIN.

Each plugin feeds one number per training batch into a river detector —
the batch's cross-entropy (``signal="loss"``) or its error rate
(``signal="error"``, one minus the accuracy of the predictions made before
the update) — and answers ``detect_boundary`` with True when river flags a
drift. The learner then fires ``after_experience(None)`` /
``before_experience(None)``, so EWC, SI, MAS, LwF, GEM and expansion
plugins consolidate without being told task ids.

* ``adwin`` — Bifet & Gavaldà, "Learning from time-changing data with
  adaptive windowing", SDM 2007.
* ``page_hinkley`` — Page, "Continuous inspection schemes", Biometrika 1954.
  river's default ``mode="both"`` also fires when the loss *falls* (the
  model learning); ``mode="up"`` reacts to rising loss only, which is what
  a drift in the loss looks like.
* ``kswin`` — Raab, Heusinger & Schleif, "Reactive soft prototype computing
  for concept drift streams", Neurocomputing 2020 (Kolmogorov-Smirnov
  windows).

Every river parameter is a keyword with river 0.26's default; river's
KSWIN draws from ``random.Random(seed)``, and ``seed`` here defaults to the
run's seed (river's own default, ``None``, would not be reproducible).

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

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_aware=False)
>>> learner = make_learner([ADWIN(clock=1)], stream).fit(stream)
>>> learner.boundaries_detected == learner.plugins[0].detections_
True
"""

from __future__ import annotations

import collections
import random
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl

__all__ = ["ADWIN", "PageHinkley", "KSWIN", "SignalBuffer", "batch_signal", "SIGNALS"]

SIGNALS = ("loss", "error")


def batch_signal(step: Any, signal: str) -> Tensor:
    """The per-batch drift signal as a 0-d device tensor (no host sync).

    ``"loss"``: the stream cross-entropy of the step (computed before the
    update, so it is a test-then-train loss); ``"error"``: the fraction of
    the stream rows the model got wrong in that same forward pass.
    """
    if signal == "loss":
        return step.losses["ce"].detach()
    wrong = step.stream_logits.detach().argmax(1) != step.batch.y
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

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.values = [v.to(device) for v in state["values"]]
        self.at = [int(a) for a in state["at"]]


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
        self.detector_ = self._make()
        if state["detector"] is not None:
            self._restore(state["detector"])
        self.detections_ = [int(d) for d in state["detections"]]
        self._buffer = SignalBuffer()
        self._buffer.load_state_dict(state["pending"], self._device)


class ADWIN(_RiverDetector):
    """ADWIN (river) on the per-batch loss or error: adaptive windows, two-sided."""

    name = "adwin"

    def __init__(self, *, delta: float = 0.002, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10, signal: str = "loss",
                 sync_every: int | None = None) -> None:
        check_signal("adwin", signal, sync_every)
        if not 0.0 < delta < 1.0:
            raise ConfigError(f"plugin 'adwin': delta is a significance level in (0, 1), got {delta}")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self.signal = signal
        self.sync_every = sync_every
        self._init_state()

    def _make(self) -> Any:
        from river import drift

        return drift.ADWIN(delta=self.delta, clock=self.clock, max_buckets=self.max_buckets,
                           min_window_length=self.min_window_length,
                           grace_period=self.grace_period)

    def _snapshot(self) -> dict[str, Any]:
        import river

        blob = self.detector_._helper.__getstate__()
        return {"river": river.__version__, "drift_detected": bool(self.detector_._drift_detected),
                "window": torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()}

    def _restore(self, state: dict[str, Any]) -> None:
        import river

        try:
            self.detector_._helper.__setstate__(state["window"].numpy().tobytes())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the Rust decoder panics (pyo3's PanicException)
            raise CheckpointError(
                f"plugin 'adwin': the checkpoint's ADWIN state was written by river "
                f"{state['river']} and cannot be read by river {river.__version__} ({exc}); "
                f"resume with river {state['river']}") from exc
        self.detector_._drift_detected = bool(state["drift_detected"])


class PageHinkley(_RiverDetector):
    """Page-Hinkley test (river) on the per-batch loss or error."""

    name = "page_hinkley"

    def __init__(self, *, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0,
                 alpha: float = 1 - 0.0001, mode: str = "both", signal: str = "loss",
                 sync_every: int | None = None) -> None:
        check_signal("page_hinkley", signal, sync_every)
        if mode not in ("up", "down", "both"):
            raise ConfigError(f"plugin 'page_hinkley': mode must be 'up', 'down' or 'both', "
                              f"got {mode!r}")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self.signal = signal
        self.sync_every = sync_every
        self._init_state()

    def _make(self) -> Any:
        from river import drift

        return drift.PageHinkley(min_instances=self.min_instances, delta=self.delta,
                                 threshold=self.threshold, alpha=self.alpha, mode=self.mode)

    def _snapshot(self) -> dict[str, Any]:
        d = self.detector_
        return {"drift_detected": bool(d._drift_detected), "n": float(d._x_mean.n),
                "mean": float(d._x_mean._mean), "sum_increase": float(d._sum_increase),
                "sum_decrease": float(d._sum_decrease), "min_increase": float(d._min_increase),
                "max_decrease": float(d._max_decrease)}

    def _restore(self, state: dict[str, Any]) -> None:
        d = self.detector_
        d._drift_detected = bool(state["drift_detected"])
        d._x_mean.n, d._x_mean._mean = state["n"], state["mean"]
        d._sum_increase, d._sum_decrease = state["sum_increase"], state["sum_decrease"]
        d._min_increase, d._max_decrease = state["min_increase"], state["max_decrease"]


class KSWIN(_RiverDetector):
    """KSWIN (river): a Kolmogorov-Smirnov test between a sliding window's old and recent parts."""

    name = "kswin"

    def __init__(self, *, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30,
                 signal: str = "loss", sync_every: int | None = None, seed: int = 0) -> None:
        check_signal("kswin", signal, sync_every)
        if not 0 < stat_size < window_size:
            raise ConfigError(f"plugin 'kswin': need 0 < stat_size < window_size, got "
                              f"stat_size={stat_size}, window_size={window_size}")
        self.alpha = alpha
        self.window_size = window_size
        self.stat_size = stat_size
        self.signal = signal
        self.sync_every = sync_every
        self.seed = seed
        self._init_state()

    def _make(self) -> Any:
        from river import drift

        return drift.KSWIN(alpha=self.alpha, window_size=self.window_size,
                           stat_size=self.stat_size, seed=self.seed)

    def _snapshot(self) -> dict[str, Any]:
        d = self.detector_
        version, internal, gauss = d._rng.getstate()
        return {"drift_detected": bool(d._drift_detected), "p_value": float(d.p_value),
                "n": int(d.n), "window": [float(v) for v in d.window],
                "rng": {"version": version, "state": list(internal), "gauss_next": gauss}}

    def _restore(self, state: dict[str, Any]) -> None:
        d = self.detector_
        d._drift_detected = bool(state["drift_detected"])
        d.p_value, d.n = state["p_value"], state["n"]
        d.window = collections.deque(state["window"], maxlen=self.window_size)
        rng = state["rng"]
        d._rng = random.Random()
        d._rng.setstate((rng["version"], tuple(rng["state"]), rng["gauss_next"]))


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "adwin", ADWIN)
    registry.add("plugin", "page_hinkley", PageHinkley)
    registry.add("plugin", "kswin", KSWIN)
