"""KSWIN: a Kolmogorov-Smirnov test between the old and recent parts of a sliding window.

Raab, Heusinger & Schleif, "Reactive soft prototype computing for concept
drift streams", Neurocomputing 2020; river's implementation with river
0.26's defaults (``alpha=0.005``, ``window_size=100``, ``stat_size=30``).
river's KSWIN draws from ``random.Random(seed)``, and ``seed`` here
defaults to 0 (river's own default, ``None``, would not be reproducible);
its window and generator state are saved as plain numbers and lists.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_aware=False)
>>> learner = make_learner([KSWIN(window_size=20, stat_size=5)], stream).fit(stream)
>>> learner.boundaries_detected == learner.plugins[0].detections_
True
"""

from __future__ import annotations

import collections
import math
import random
from typing import Any

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.boundaries._signal import _RiverDetector, check_signal
from lifelong.validation import check_number

__all__ = ["KSWIN"]


class KSWIN(_RiverDetector):
    """KSWIN (river): a Kolmogorov-Smirnov test between a sliding window's old and recent parts."""

    name = "kswin"

    def __init__(self, *, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30,
                 signal: str = "loss", sync_every: int | None = None, seed: int = 0) -> None:
        check_number(f"plugin {self.name!r}", "alpha", alpha, above=0.0, max=1.0)
        check_number(f"plugin {self.name!r}", "window_size", window_size, min=2, integer=True)
        check_number(f"plugin {self.name!r}", "stat_size", stat_size, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "seed", seed, min=0, max=2**63 - 1, integer=True)
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
        from lifelong.validation import state_get, state_number

        who = "checkpoint state of plugin 'kswin'"
        if not isinstance(state_get(state, "drift_detected", owner=self.name), bool):
            raise CheckpointError(f"{who}: drift_detected must be true or false; the "
                                  "checkpoint is corrupted")
        state_number(state, "p_value", owner=self.name, min=0.0, max=1.0)
        state_number(state, "n", owner=self.name, min=0, integer=True)
        window = state_get(state, "window", owner=self.name)
        if not isinstance(window, list) or len(window) > self.window_size or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in window):
            raise CheckpointError(f"{who}: window must be a list of at most "
                                  f"window_size={self.window_size} finite numbers; the "
                                  "checkpoint is corrupted")
        rng = state_get(state, "rng", owner=self.name)
        try:
            random.Random().setstate((rng["version"], tuple(rng["state"]), rng["gauss_next"]))
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise CheckpointError(f"{who}: the random generator state is not valid ({exc}); "
                                  "the checkpoint is corrupted") from None
        d = self.detector_
        d._drift_detected = bool(state["drift_detected"])
        d.p_value, d.n = state["p_value"], state["n"]
        d.window = collections.deque(state["window"], maxlen=self.window_size)
        rng = state["rng"]
        d._rng = random.Random()
        d._rng.setstate((rng["version"], tuple(rng["state"]), rng["gauss_next"]))


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "kswin", KSWIN)
