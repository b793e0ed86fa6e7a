"""Loss-plateau boundaries: consolidate once the loss has settled after a peak.

The rule of task-free continual learning (Aljundi, Kelchtermans &
Tuytelaars, "Task-Free Continual Learning", CVPR 2019, Sec. 3): keep a
window of the ``window`` most recent training losses. A *plateau* is a
window whose mean is below ``mean_threshold`` and whose variance is below
``variance_threshold``: the model has learned what the stream currently
shows, so it is time to consolidate (update importance weights). After a
plateau, the next one counts only once a *peak* has been seen — a window
mean above the last plateau's mean plus its standard deviation — i.e. the
loss rose again because the distribution changed. The first plateau of
the run needs no peak.

Defaults are those of the authors' reference implementation
(``kkelchte/task_free_continual_learning``, ``loss_window_length=5``,
``loss_window_mean_threshold=0.2``, ``loss_window_variance_threshold=0.1``).
The thresholds are absolute values of the loss: here the signal is the
batch's mean cross-entropy (per sample), so a mean below 0.2 nats means the
current data is well fit; raise it for streams the model cannot fit that
well. Variance is the population variance of the window, as in the
reference. One deviation: the rule is tested on full windows only (the
reference also tests the first, shorter windows, which matters only if the
very first losses are already below the threshold).

A plateau fires *after* a change has been learned, not when it happens:
measured against true change points its "delay" is the time to learn the
new data plus the window, and the first plateau precedes any change. That
is by design: it marks consolidation points. Signals reach the host every
``sync_every`` batches (see :mod:`lifelong.plugins.boundaries._signal`).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_aware=False)
>>> learner = make_learner([Plateau(mean_threshold=1.0)], stream).fit(stream)
>>> learner.boundaries_detected == learner.plugins[0].detections_
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.boundaries._signal import SignalBuffer, batch_signal, check_signal, resolve_sync
from lifelong.validation import check_number

__all__ = ["Plateau", "PlateauRule", "plateau_boundaries"]


class PlateauRule:
    """The plateau-after-peak rule on host floats; ``update(loss) -> bool``."""

    def __init__(self, window: int, mean_threshold: float, variance_threshold: float) -> None:
        self.window = window
        self.mean_threshold = mean_threshold
        self.variance_threshold = variance_threshold
        self.losses: list[float] = []
        self.peak = True  # the first plateau needs no peak
        self.last_mean: float | None = None
        self.last_var: float | None = None

    def update(self, loss: float) -> bool:
        self.losses.append(loss)
        if len(self.losses) > self.window:
            del self.losses[0]
        if len(self.losses) < self.window:
            return False
        n = len(self.losses)
        mean = sum(self.losses) / n
        var = sum((v - mean) ** 2 for v in self.losses) / n
        if not self.peak and self.last_mean is not None and self.last_var is not None:
            if mean > self.last_mean + self.last_var ** 0.5:
                self.peak = True
        if self.peak and mean < self.mean_threshold and var < self.variance_threshold:
            self.last_mean, self.last_var = mean, var
            self.peak = False
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "peak": self.peak, "last_mean": self.last_mean,
                "last_var": self.last_var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.errors import CheckpointError
        from lifelong.validation import state_get, state_number

        losses = state_get(state, "losses", owner="plateau")
        if not isinstance(losses, list) or len(losses) > self.window or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in losses):
            raise CheckpointError(f"checkpoint state of plugin 'plateau': losses must be a list "
                                  f"of at most window={self.window} finite numbers, got "
                                  f"{str(losses)[:60]}; the checkpoint is corrupted")
        peak = state_get(state, "peak", owner="plateau")
        if not isinstance(peak, bool):
            raise CheckpointError(f"checkpoint state of plugin 'plateau': peak must be true or "
                                  f"false, got {peak!r}; the checkpoint is corrupted")
        mean = state_number(state, "last_mean", owner="plateau", allow_none=True)
        var = state_number(state, "last_var", owner="plateau", min=0.0, allow_none=True)
        self.losses = [float(v) for v in losses]
        self.peak = peak
        self.last_mean, self.last_var = mean, var


def plateau_boundaries(losses: Sequence[float], *, window: int = 5, mean_threshold: float = 0.2,
                       variance_threshold: float = 0.1) -> list[int]:
    """Indices of ``losses`` at which the rule fires (pure; for tests and analysis)."""
    rule = PlateauRule(window, mean_threshold, variance_threshold)
    return [i for i, v in enumerate(losses) if rule.update(float(v))]


class Plateau:
    """Boundary at each loss plateau that follows a peak (Aljundi et al., CVPR 2019)."""

    name = "plateau"
    requires: tuple[str, ...] = ()
    owns: tuple[str, ...] = ()

    def __init__(self, *, window: int = 5, mean_threshold: float = 0.2,
                 variance_threshold: float = 0.1, sync_every: int | None = None) -> None:
        check_number(f"plugin {self.name!r}", "window", window, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "mean_threshold", mean_threshold, above=0.0)
        check_number(f"plugin {self.name!r}", "variance_threshold", variance_threshold, above=0.0)
        check_signal("plateau", "loss", sync_every)
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"plugin 'plateau': window must be a positive integer, got {window!r}")
        if mean_threshold <= 0 or variance_threshold <= 0:
            raise ConfigError("plugin 'plateau': mean_threshold and variance_threshold must be "
                              f"> 0, got {mean_threshold} and {variance_threshold}")
        self.window = window
        self.mean_threshold = mean_threshold
        self.variance_threshold = variance_threshold
        self.sync_every = sync_every
        self.rule_ = PlateauRule(window, mean_threshold, variance_threshold)
        self.detections_: list[int] = []
        self._buffer = SignalBuffer()
        self._sync = 1
        self._device = torch.device("cpu")

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self.rule_ = PlateauRule(self.window, self.mean_threshold, self.variance_threshold)
        self.detections_ = []
        self._buffer = SignalBuffer()
        self._sync = resolve_sync(self.sync_every, learner.device)
        self._device = learner.device

    @hookimpl
    def detect_boundary(self, learner: Any, step: Any) -> bool:
        self._buffer.push(batch_signal(step, "loss"), learner.samples_seen)
        if len(self._buffer) < self._sync:
            return False
        fired = False
        for value, at in self._buffer.drain():
            if self.rule_.update(value):
                self.detections_.append(at)
                fired = True
        return fired

    def summary(self) -> dict[str, Any]:
        """Where plateaus were found (samples seen), for ``metrics.json``."""
        return {"plateau_detections": list(self.detections_)}

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.rule_.state_dict(), "detections": list(self.detections_),
                "pending": self._buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.plugins.boundaries._signal import _positions
        from lifelong.validation import state_get

        detections = _positions(state_get(state, "detections", owner=self.name), self.name)
        pending = SignalBuffer()
        pending.load_state_dict(state_get(state, "pending", owner=self.name), self._device,
                                owner=self.name,
                                most=self._sync if self.sync_every is not None else 10)
        self.rule_.load_state_dict(state_get(state, "rule", owner=self.name))
        self.detections_ = detections
        self._buffer = pending


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "plateau", Plateau)
