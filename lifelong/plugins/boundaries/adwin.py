"""ADWIN on the per-batch loss or error: a boundary where the adaptive window shrinks.

Bifet & Gavaldà, "Learning from time-changing data with adaptive
windowing", SDM 2007; river's implementation, every parameter a keyword with
river 0.26's default (``delta=0.002``, ``clock=32``, ``max_buckets=5``,
``min_window_length=5``, ``grace_period=10``). Host syncs and state: see
:mod:`lifelong.plugins.boundaries._signal`. river's ADWIN is a Rust object
whose only serialization is its own binary encoding (``__getstate__``
bytes, decoded by serde into a typed struct — no pickle, no code run on
load); those bytes are kept as a ``uint8`` tensor together with the river
version that wrote them and their SHA-256, and loading bytes that do not
decode, do not match the checksum, or decode into a window that makes river
panic when updated (checked on a throwaway copy) raises
:class:`~lifelong.errors.CheckpointError`.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream(task_aware=False)
>>> learner = make_learner([ADWIN(clock=1)], stream).fit(stream)
>>> learner.boundaries_detected == learner.plugins[0].detections_
True
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch

from lifelong.errors import CheckpointError, ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.boundaries._signal import _RiverDetector, check_signal
from lifelong.validation import check_number

__all__ = ["ADWIN"]


class ADWIN(_RiverDetector):
    """ADWIN (river) on the per-batch loss or error: adaptive windows, two-sided."""

    name = "adwin"

    def __init__(self, *, delta: float = 0.002, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10, signal: str = "loss",
                 sync_every: int | None = None) -> None:
        check_number(f"plugin {self.name!r}", "delta", delta, above=0.0, max=1.0)
        check_number(f"plugin {self.name!r}", "clock", clock, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "max_buckets", max_buckets, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "min_window_length", min_window_length, min=1, integer=True)
        check_number(f"plugin {self.name!r}", "grace_period", grace_period, min=1, integer=True)
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
                "window": torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone(),
                "sha256": hashlib.sha256(blob).hexdigest()}

    def _restore(self, state: dict[str, Any]) -> None:
        import river

        from lifelong.validation import state_get, state_tensor

        who = "checkpoint state of plugin 'adwin'"
        written_by = state_get(state, "river", owner=self.name)
        if not isinstance(written_by, str):
            raise CheckpointError(f"{who}: the river version must be a string, got "
                                  f"{written_by!r}; the checkpoint is corrupted")
        blob_t = state_tensor(state, "window", owner=self.name, shape=(None,), dtype=torch.uint8)
        blob = blob_t.numpy().tobytes()
        digest = state.get("sha256")
        if digest is not None and digest != hashlib.sha256(blob).hexdigest():
            raise CheckpointError(f"{who}: the ADWIN window (written by river {written_by}) does "
                                  "not match its checksum; the checkpoint is corrupted")
        if not isinstance(state_get(state, "drift_detected", owner=self.name), bool):
            raise CheckpointError(f"{who}: drift_detected must be true or false; the checkpoint "
                                  "is corrupted")
        # river decodes the bytes into a typed Rust struct; a blob that decodes but is
        # inconsistent panics later, inside update(). Decode and exercise a throwaway copy
        # first (with Rust's panic report kept off the terminal), so it fails here, cleanly.
        try:
            with _quiet_stderr():
                probe = self._make()
                probe._helper.__setstate__(blob)
                for v in (0.0, 1.0) * min(2 * self.clock + 2, 256):
                    probe.update(v)
                width, est, var = float(probe.width), float(probe.estimation), float(probe.variance)
            if not (math.isfinite(est) and math.isfinite(var) and width >= 0 and var >= 0):
                raise ValueError(f"width {width}, estimation {est}, variance {var}")
            self.detector_._helper.__setstate__(blob)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the Rust decoder panics (pyo3's PanicException)
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            hint = (f"resume with river {written_by}" if written_by != river.__version__
                    else "the checkpoint is corrupted")
            raise CheckpointError(
                f"{who}: the ADWIN state written by river {written_by} cannot be used by river "
                f"{river.__version__} ({msg}); {hint}") from None
        self.detector_._drift_detected = bool(state["drift_detected"])


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (Rust panics print there)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "adwin", ADWIN)
