"""Checkpoints: the whole run state, written atomically, loaded without unpickling code.

A checkpoint holds the model, the optimizer, every plugin's ``state_dict``
(buffers, Fisher, anchors, detector state...), the stream position
(experience, batch within it), the run counters and the RNG states, plus the
resolved config it was written for. It is written to a temporary file,
flushed to disk and renamed over the previous one, so a crash while writing
leaves the previous checkpoint intact. It is read with
``torch.load(weights_only=True)``: a crafted file cannot execute code, and
one written for another config or format is refused, naming what differs.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from lifelong.errors import CheckpointError

FORMAT = 1
FILENAME = "checkpoint.pt"
IGNORED_KEYS = ("checkpoint",)  # config keys that may change between a run and its resume


def _version() -> str:
    from lifelong import __version__

    return __version__


DIGESTED = ("config", "finished", "schedule", "torch_threads", "timing", "learner")


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 over a checkpoint's contents (tensor bytes, shapes, dtypes and plain values).

    Stored in the checkpoint and checked on load, so that bytes changed on disk
    (which ``torch.load`` often reads without complaint) are refused.
    """
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, dict):
            h.update(b"{")
            for k in sorted(v, key=repr):
                h.update(repr(k).encode())
                feed(v[k])
            h.update(b"}")
        elif isinstance(v, list | tuple):
            h.update(b"[")
            for item in v:
                feed(item)
            h.update(b"]")
        else:
            h.update(f"{type(v).__name__}:{v!r};".encode())

    feed({k: payload.get(k) for k in DIGESTED})
    return h.hexdigest()


#: What ``torch.load(weights_only=True)`` reads back: tensors and plain data.
PLAIN = (torch.Tensor, bool, int, float, complex, str, bytes, type(None), torch.dtype,
         torch.device, torch.Size)


def check_state(value: Any, where: str) -> None:
    """Raise :class:`CheckpointError` naming the first entry of ``value`` a checkpoint cannot hold.

    >>> check_state({"buf": [torch.zeros(2), 3, "a"]}, "plugin 'x' state_dict()")
    >>> import numpy as np
    >>> check_state({"buf": np.zeros(2)}, "plugin 'x' state_dict()")
    Traceback (most recent call last):
    ...
    lifelong.errors.CheckpointError: plugin 'x' state_dict()['buf'] is a numpy.ndarray: ...
    """
    if isinstance(value, PLAIN):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool | type(None)):
                raise CheckpointError(f"{where} has a key of type {type(k).__name__} ({k!r}); "
                                      "use strings or numbers as keys")
            check_state(v, f"{where}[{k!r}]")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_state(v, f"{where}[{i}]")
        return
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    raise CheckpointError(
        f"{where} is a {kind}: a checkpoint holds only tensors, numbers, strings, lists and "
        "dicts (it is read with torch.load(weights_only=True), which runs no code); convert it "
        "in state_dict() (numpy: torch.from_numpy(a), or a.tolist()) and back in load_state_dict()")


def check_plugin_states(learner_state: dict[str, Any]) -> None:
    """Every plugin's ``state_dict()`` in a learner state holds only what a checkpoint may."""
    for key, state in learner_state.get("plugins", {}).items():
        check_state(state, f"plugin {key.split(':', 1)[-1]!r} state_dict()")


def save_checkpoint(directory: str | os.PathLike[str], learner: Any, config: dict[str, Any],
                    *, finished: bool = False, schedule: dict[str, Any] | None = None) -> Path:
    """Write ``directory/checkpoint.pt`` atomically (temp file, fsync, rename).

    ``schedule`` (``{"every": N, "every_seconds": S}``) is stored so that a resumed
    run keeps checkpointing as the original did; ``torch_threads`` records the
    thread count, which exact (bit-identical) resume needs to be the same.
    """
    path = Path(directory) / FILENAME
    tmp = path.with_name(f".{FILENAME}.tmp")
    payload = {"format": FORMAT, "lifelong": _version(), "config": config, "finished": finished,
               "written_at": time.time(), "schedule": schedule or {"every": 0, "every_seconds": 0.0},
               "torch_threads": torch.get_num_threads(), "learner": learner.state_dict()}
    if hasattr(learner, "timing"):
        payload["timing"] = learner.timing()
    check_plugin_states(payload["learner"])  # before writing: a clear error, not an unreadable file
    payload["digest"] = payload_digest(payload)
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}; the "
                              "previous checkpoint (if any) is intact") from exc
    return path


def load_checkpoint(directory: str | os.PathLike[str], *,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; never executes code from the file."""
    path = Path(directory)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; was the run started with --out and "
                              "--checkpoint-every?")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path} holds objects a checkpoint may not contain and was not "
                              f"loaded ({first[:160]})") from exc
    except Exception as exc:  # noqa: BLE001 - torch.load of damaged bytes raises many kinds
        raise CheckpointError(f"{path} is not a readable checkpoint: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from exc
    if not isinstance(payload, dict) or "format" not in payload or "learner" not in payload:
        raise CheckpointError(f"{path} is not a lifelong checkpoint")
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {payload.get('format')} (written by "
                              f"lifelong {payload.get('lifelong')}); this lifelong "
                              f"({_version()}) reads format {FORMAT}")
    if not isinstance(payload["learner"], dict) or not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{path} is not a lifelong checkpoint (no learner state or config)")
    if not isinstance(payload.get("finished", False), bool):
        raise CheckpointError(f"{path}: 'finished' must be true or false, got "
                              f"{payload.get('finished')!r}; the checkpoint is corrupted")
    digest = payload.get("digest")
    if digest is not None:
        try:
            ok = digest == payload_digest(payload)
        except Exception:  # noqa: BLE001 - contents too damaged to hash
            ok = False
        if not ok:
            raise CheckpointError(f"{path} is corrupted: its contents do not match the checksum "
                                  "written with it (changed on disk?); resume from another copy "
                                  "or start the run again")
    payload["schedule"] = _schedule(payload.get("schedule"), path)
    if payload.get("timing") is not None:
        from lifelong._state_check import check_timing

        check_timing(payload["timing"])
    threads = payload.get("torch_threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or threads < 1):
        raise CheckpointError(f"{path}: torch_threads must be a positive integer, got "
                              f"{threads!r}; the checkpoint is corrupted")
    return payload


def _schedule(value: Any, path: Path) -> dict[str, Any]:
    if value is None:
        return {"every": 0, "every_seconds": 0.0}
    every = value.get("every") if isinstance(value, dict) else None
    secs = value.get("every_seconds") if isinstance(value, dict) else None
    ok = (isinstance(every, int) and not isinstance(every, bool) and every >= 0
          and isinstance(secs, int | float) and not isinstance(secs, bool)
          and math.isfinite(secs) and secs >= 0)
    if not ok:
        raise CheckpointError(f"{path}: the stored checkpoint schedule {value!r} is not "
                              "{every: N >= 0, every_seconds: S >= 0}; the checkpoint is corrupted")
    return {"every": every, "every_seconds": float(secs)}


def threads_warning(payload: dict[str, Any]) -> str | None:
    """A warning when the checkpoint was written with another torch thread count, else None.

    Exact resume needs the same thread count: reductions are split differently
    across threads, so 1 and 2 threads give (slightly) different weights.
    """
    then = payload.get("torch_threads")
    now = torch.get_num_threads()
    if then is None or then == now:
        return None
    return (f"the checkpoint was written with {then} torch thread(s), this process uses {now}: "
            "the run continues, but its weights will not be bit-identical to an uninterrupted "
            f"run's; set OMP_NUM_THREADS={then} (or torch.set_num_threads({then})) to resume "
            "exactly")


def config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Paths where two resolved configs differ (``train.lr: 0.1 != 0.05``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if not prefix and k in IGNORED_KEYS:
                continue
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                out.append(f"{key}: {'absent' if k not in a else repr(a[k])} != "
                           f"{'absent' if k not in b else repr(b[k])}")
            else:
                out.extend(config_differences(a[k], b[k], key))
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b))
                for d in config_differences(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [f"{prefix}: {a!r} != {b!r}"]


def check_compatible(payload: dict[str, Any], config: dict[str, Any], where: str) -> None:
    """Refuse a checkpoint written for another config, listing the differences."""
    diffs = config_differences(payload["config"], config)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise CheckpointError(f"{where} was written for a different config (checkpoint != now): "
                              f"{shown}")


def estimate_bytes(learner: Any) -> int:
    """A generous estimate of one checkpoint's size: parameters, optimizer and plugin state."""
    params = sum(p.numel() * p.element_size() for p in learner.model.parameters())
    return 4 * params + 16 * 2**20


def check_free_space(directory: str | os.PathLike[str], needed: int) -> None:
    """Refuse to start when the output disk cannot hold two checkpoints."""
    free = shutil.disk_usage(directory).free
    if free < 2 * needed:
        raise CheckpointError(f"only {free / 2**20:.0f} MiB free in {directory}; checkpoints "
                              f"need about {2 * needed / 2**20:.0f} MiB: free space or choose "
                              "another --out")


class Checkpointer:
    """Saves the run every ``every`` batches and/or every ``every_seconds`` seconds."""

    def __init__(self, directory: str | os.PathLike[str], config: dict[str, Any], *,
                 every: int = 0, every_seconds: float = 0.0) -> None:
        if not (every >= 0 and math.isfinite(every_seconds) and every_seconds >= 0):
            raise CheckpointError("checkpoint intervals must be finite numbers >= 0")
        self.directory = Path(directory)
        self.config = config
        self.every = every
        self.every_seconds = every_seconds
        self._last = time.monotonic()
        self.saved = 0

    def after_batch(self, learner: Any) -> None:
        due = self.every and learner.step_index % self.every == 0
        if not due and self.every_seconds:
            due = time.monotonic() - self._last >= self.every_seconds
        if due:
            self.save(learner)

    def save(self, learner: Any, *, finished: bool = False) -> Path:
        path = save_checkpoint(self.directory, learner, self.config, finished=finished,
                               schedule={"every": self.every,
                                         "every_seconds": float(self.every_seconds)})
        self._last = time.monotonic()
        self.saved += 1
        return path
