"""The append-only learn log: every acknowledged ``/learn`` is on disk before it is answered.

One record per accepted request, one line each::

    <rows> <crc32 of the JSON, 8 hex digits> {"x": [[...], ...], "y": [...]}

Appends are written, flushed and ``fsync``-ed before the request is
acknowledged; concurrent appends share one ``fsync`` (group commit), and a
record reaches the learner only once it is durable, in log order. After a
crash the last line may be torn (it was never acknowledged): it is cut off
when the log is opened. A bad line anywhere else is an error, never skipped.

The learner's ``samples_seen`` says how many logged rows it has trained on,
so a checkpoint plus the log's later records is the whole state: on restart
:meth:`LearnLog.records` yields the records after the first ``skip_rows`` rows.

Examples
--------
>>> import os, tempfile, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "learn.log")
>>> log = LearnLog(path)
>>> log.append(np.ones((2, 3), np.float32), np.array([0, 1]))
0
>>> log.close()
>>> [(x.shape, y.tolist()) for x, y in LearnLog(path).records(skip_rows=0)]
[((2, 3), [0, 1])]
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lifelong.errors import CheckpointError

__all__ = ["LearnLog", "Record"]

Record = tuple[np.ndarray, np.ndarray]


def _encode(x: np.ndarray, y: np.ndarray) -> bytes:
    payload = json.dumps({"x": x.tolist(), "y": y.tolist()}, separators=(",", ":")).encode()
    return b"%d %08x " % (len(y), zlib.crc32(payload)) + payload + b"\n"


def _decode(line: bytes) -> tuple[int, bytes] | None:
    """(rows, payload) of a whole, intact line; ``None`` if it is torn or corrupt."""
    if not line.endswith(b"\n"):
        return None
    parts = line[:-1].split(b" ", 2)
    if len(parts) != 3:
        return None
    try:
        rows, crc = int(parts[0]), int(parts[1], 16)
    except ValueError:
        return None
    if zlib.crc32(parts[2]) != crc:
        return None
    return rows, parts[2]


class LearnLog:
    """An fsynced append-only log of learn records; ``on_durable`` gets each one, in order."""

    def __init__(self, path: str | os.PathLike[str],
                 on_durable: Callable[[int, Record], None] | None = None) -> None:
        self.path = Path(path)
        self.on_durable = on_durable
        new = not self.path.exists()
        self.records_total, self.rows_total = self._recover()
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        if new:  # the file's directory entry must be durable too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._unsynced: list[tuple[int, Record]] = []
        self._synced = self.records_total - 1

    def _recover(self) -> tuple[int, int]:
        """Count the intact records; cut off a torn last line (never acknowledged)."""
        if not self.path.exists():
            return 0, 0
        records = rows = 0
        good = 0
        with open(self.path, "rb") as fh:
            for line in fh:
                dec = _decode(line)
                if dec is None:
                    rest = fh.read()
                    if rest.strip():
                        raise CheckpointError(f"{self.path}: record {records + 1} is corrupt and "
                                              "is followed by more records; the log was changed "
                                              "by something else than this server")
                    break
                records += 1
                rows += dec[0]
                good += len(line)
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
        return records, rows

    def records(self, *, skip_rows: int) -> Iterator[Record]:
        """The records after the first ``skip_rows`` rows (which must end on a record)."""
        seen = 0
        with open(self.path, "rb") as fh:
            for k, line in enumerate(fh):
                dec = _decode(line)
                if dec is None:
                    return
                rows, payload = dec
                if seen < skip_rows:
                    seen += rows
                    if seen > skip_rows:
                        raise CheckpointError(
                            f"{self.path}: the checkpoint holds {skip_rows} rows, which ends "
                            f"inside record {k + 1}; the log and the checkpoint do not belong "
                            "together")
                    continue
                obj = json.loads(payload)
                yield (np.asarray(obj["x"], dtype=np.float32).reshape(rows, -1),
                       np.asarray(obj["y"], dtype=np.int64))
        if seen < skip_rows:
            raise CheckpointError(f"{self.path} holds {seen} rows but the checkpoint has trained "
                                  f"on {skip_rows}; the log and the checkpoint do not belong "
                                  "together")

    def append(self, x: np.ndarray, y: np.ndarray) -> int:
        """Write one record and return its index once it is on disk (fsynced)."""
        line = _encode(x, y)
        with self._write_lock:
            seq = self.records_total
            self._fh.write(line)
            self.records_total += 1
            self.rows_total += len(y)
            self._unsynced.append((seq, (x, y)))
        self._sync(seq)
        return seq

    def _sync(self, seq: int) -> None:
        with self._sync_lock:
            if self._synced >= seq:
                return  # another append's fsync covered this record
            with self._write_lock:
                self._fh.flush()
                batch, self._unsynced = self._unsynced, []
            os.fsync(self._fh.fileno())
            if batch:
                self._synced = batch[-1][0]
            if self.on_durable is not None:
                for item in batch:
                    self.on_durable(*item)

    def close(self) -> None:
        with self._write_lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
