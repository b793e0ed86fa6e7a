"""Page-Hinkley test on the per-batch loss or error: a boundary where the cumulative deviation jumps.

Page, "Continuous inspection schemes", Biometrika 1954; river's
implementation with river 0.26's defaults (``min_instances=30``,
``delta=0.005``, ``threshold=50``, ``alpha=1-1e-4``). river's default
``mode="both"`` also fires when the loss *falls* (the model learning);
``mode="up"`` reacts to rising loss only, which is what a drift in the loss
looks like. Its running sums are saved as plain numbers.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_aware=False)
>>> learner = make_learner([PageHinkley(min_instances=5, threshold=1.0)], stream).fit(stream)
>>> learner.boundaries_detected == learner.plugins[0].detections_
True
"""

from __future__ import annotations

from typing import Any

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.boundaries._signal import _RiverDetector, check_signal
from lifelong.validation import check_number

__all__ = ["PageHinkley"]


class PageHinkley(_RiverDetector):
    """Page-Hinkley test (river) on the per-batch loss or error."""

    name = "page_hinkley"

    def __init__(self, *, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0,
                 alpha: float = 1 - 0.0001, mode: str = "both", signal: str = "loss",
                 sync_every: int | None = None) -> None:
        check_number(f"plugin {self.name!r}", "min_instances", min_instances, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "delta", delta, min=0.0)
        check_number(f"plugin {self.name!r}", "threshold", threshold, above=0.0)
        check_number(f"plugin {self.name!r}", "alpha", alpha, above=0.0, max=1.0)
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
        from lifelong.validation import state_get, state_number

        if not isinstance(state_get(state, "drift_detected", owner=self.name), bool):
            raise CheckpointError("checkpoint state of plugin 'page_hinkley': drift_detected "
                                  "must be true or false; the checkpoint is corrupted")
        state_number(state, "n", owner=self.name, min=0.0)
        for key in ("mean", "sum_increase", "sum_decrease", "min_increase", "max_decrease"):
            state_number(state, key, owner=self.name, finite=False)
        d = self.detector_
        d._drift_detected = bool(state["drift_detected"])
        d._x_mean.n, d._x_mean._mean = state["n"], state["mean"]
        d._sum_increase, d._sum_decrease = state["sum_increase"], state["sum_decrease"]
        d._min_increase, d._max_decrease = state["min_increase"], state["max_decrease"]


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "page_hinkley", PageHinkley)
