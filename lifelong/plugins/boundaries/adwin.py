"""ADWIN on the per-batch loss or error: a boundary where the adaptive window shrinks.

Bifet & Gavaldà, "Learning from time-changing data with adaptive
windowing", SDM 2007; river's implementation, every parameter a keyword with
river 0.26's default (``delta=0.002``, ``clock=32``, ``max_buckets=5``,
``min_window_length=5``, ``grace_period=10``). Host syncs and state: see
:mod:`lifelong.plugins.boundaries._signal`. river's ADWIN is a Rust object
whose only serialization is its own binary encoding (``__getstate__``
bytes, decoded by serde into a typed struct — no pickle, no code run on
load); those bytes are kept as a ``uint8`` tensor together with the river
version that wrote them, and loading them into another river version raises
:class:`~lifelong.errors.CheckpointError` if they do not decode.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_aware=False)
>>> learner = make_learner([ADWIN(clock=1)], stream).fit(stream)
>>> learner.boundaries_detected == learner.plugins[0].detections_
True
"""

from __future__ import annotations

from typing import Any

import torch

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.boundaries._signal import _RiverDetector, check_signal

__all__ = ["ADWIN"]


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


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "adwin", ADWIN)
