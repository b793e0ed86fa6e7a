"""Streams from files and stdin: CSV, Parquet and JSON Lines, read lazily in chunks.

``stream: {name: csv | parquet | jsonl, path: FILE or "-", target: COLUMN}``
gives a task-free stream over the rows of a file (or of stdin with ``"-"``),
in file order, never held in memory as a whole: ``chunk`` rows at a time are
read, converted to tensors and validated before anything reaches the
learner. Parameters:

* ``features``: the input columns, in that order (default: every other
  numeric column of the file, in file order);
* ``task``: a column of integer task ids: the stream is then task-aware and
  each run of equal ids is one experience (with task labels);
* ``classes``: the label values, mapped to ``0..C-1`` in that order;
  ``n_classes``: labels are already ``0..n_classes-1``. With neither, a file
  is scanned once for its labels (sorted, numerically when they are
  integers); stdin needs one of them;
* ``nan_policy``: ``raise`` (a row with a missing, NaN or infinite feature, or
  without a label, is an error naming its line) or ``skip`` (such rows are
  dropped and counted in ``stream.meta["skipped_rows"]``);
* ``test_tail``: the last N rows of the file are held out as the evaluation
  set (read in the same scan as the labels); ``test_path``: a second file of
  the same format is the evaluation set. Evaluation data is held in memory.

Errors name the file and line (CSV: the header is line 1; JSONL: the
physical line; Parquet: the 1-based row). A label outside ``classes`` is
always an error. CSV and Parquet are read with pyarrow (the optional extra
``lifelong[io]``); JSON Lines needs nothing beyond the standard library.

Examples
--------
>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "rows.jsonl")
>>> with open(p, "w") as fh:
...     _ = fh.write("\\n".join('{"a": %d, "b": 0.5, "y": "%s"}' % (i, "ab"[i % 2]) for i in range(10)))
>>> s = jsonl(path=p, target="y", test_tail=2)
>>> s.input_shape, s.num_classes, s.meta["classes"], len(s.test[0])
((2,), 2, ['a', 'b'], 2)
>>> [len(b) for b in next(s.experiences()).batches(3)]
[3, 3, 2]
"""

from __future__ import annotations

import functools
import io
import json
import math
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lifelong.errors import ConfigError, DataError
from lifelong.hookspecs import hookimpl
from lifelong.stream.base import Batch, EvalSet, Experience, IterableExperience, Stream

__all__ = ["from_file", "csv", "parquet", "jsonl", "FORMATS"]

FORMATS = ("csv", "parquet", "jsonl")
NAN_POLICIES = ("raise", "skip")
PEEK_BYTES = 1 << 20  # enough of a CSV file to infer its columns' types


def _pyarrow(fmt: str) -> Any:
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401
    except ImportError:
        raise ConfigError(f"stream {fmt!r} reads with pyarrow, which is not installed: "
                          "pip install 'lifelong[io]' (or use stream: jsonl)") from None
    return pyarrow


@dataclass
class _Raw:
    """Rows as read: float inputs (NaN where missing), label strings, task ids, line numbers."""

    x: np.ndarray
    y: list[str | None]
    task: np.ndarray | None
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.lines)

    def slice(self, a: int, b: int) -> _Raw:
        return _Raw(self.x[a:b], self.y[a:b], None if self.task is None else self.task[a:b],
                    self.lines[a:b])

    @staticmethod
    def concat(parts: list[_Raw], d: int) -> _Raw:
        if not parts:
            return _Raw(np.zeros((0, d), np.float32), [], None, np.zeros(0, np.int64))
        return _Raw(np.concatenate([p.x for p in parts]), [v for p in parts for v in p.y],
                    None if parts[0].task is None else np.concatenate([p.task for p in parts]),
                    np.concatenate([p.lines for p in parts]))


@dataclass
class _Spec:
    fmt: str
    path: str
    target: str
    features: list[str]
    task: str | None
    chunk: int
    nan_policy: str
    reads: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    stdin_prefix: bytes = b""  # what was read from stdin to find the columns

    @property
    def stdin(self) -> bool:
        return self.path == "-"

    @property
    def where(self) -> str:
        return f"stream {self.fmt} ({'stdin' if self.stdin else self.path})"

    def at(self, line: int) -> str:
        what = "row" if self.fmt == "parquet" else "line"
        return f"{self.where}, {what} {int(line)}"


def _label_text(v: Any) -> str | None:
    """A label value as the text it is matched by (``1``, ``1.0`` and ``"1"`` are the same)."""
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return str(int(v))
    return str(v)


# ---------------------------------------------------------------------------
# Readers: each yields _Raw chunks of about ``chunk`` rows
# ---------------------------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A binary stream that first returns ``prefix``, then the rest of ``fh``."""

    def __init__(self, prefix: bytes, fh: Any) -> None:
        self._prefix = memoryview(prefix)
        self._fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if len(self._prefix):
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._fh.read(len(b))
        b[:len(data)] = data
        return len(data)


def _open(spec: _Spec) -> Any:
    if spec.stdin:
        if spec.reads:
            raise ConfigError(f"{spec.where}: stdin can be read only once; train.epochs must be "
                              "1 and the labels must be declared (stream.classes or n_classes), "
                              "or read from a file instead")
        spec.reads += 1
        return io.BufferedReader(_Prefixed(spec.stdin_prefix, sys.stdin.buffer))
    spec.reads += 1
    try:
        return open(spec.path, "rb")  # noqa: SIM115 - closed by the reader
    except OSError as exc:
        raise ConfigError(f"{spec.where}: cannot open the file ({exc.strerror or exc})") from exc


def _columns_error(spec: _Spec, names: Sequence[str]) -> None:
    wanted = [spec.target, *spec.features, *([spec.task] if spec.task else [])]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{spec.where}: no column {missing[0]!r}; the file has columns "
                        f"{list(names)}")


def _csv_schema(path: str, prefix: bytes) -> Any:
    pa = _pyarrow("csv")
    import pyarrow.csv as pcsv

    cut = prefix.rfind(b"\n")
    head = prefix if cut < 0 else prefix[:cut + 1]
    try:
        return pcsv.open_csv(io.BytesIO(head),
                             read_options=pcsv.ReadOptions(use_threads=False)).schema
    except pa.ArrowInvalid as exc:
        raise DataError(f"stream csv ({'stdin' if path == '-' else path}): "
                        f"{_arrow_message(exc)}") from exc


def _arrow_message(exc: Exception) -> str:
    import re

    msg = str(exc).splitlines()[0]
    m = re.search(r"Row #(\d+): (.*)", msg)
    return f"line {m.group(1)}: {m.group(2)}" if m else msg


def _arrow_raw(spec: _Spec, batch: Any, lines: np.ndarray) -> _Raw:
    """Convert one pyarrow record batch (any column types) to a _Raw chunk."""
    pa = _pyarrow(spec.fmt)
    pc = pa.compute
    cols = []
    for f in spec.features:
        col = batch.column(f)
        try:
            col = pc.cast(col, pa.float32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = col.to_pylist()
            for i, v in enumerate(values):
                try:
                    float(v if v is not None else "nan")
                except (TypeError, ValueError):
                    raise DataError(f"{spec.at(lines[i])}: column {f!r} holds {v!r}, not a "
                                    "number; features must be numeric (encode it first, or "
                                    "leave the column out of stream.features)") from None
            raise
        cols.append(col.fill_null(float("nan")).to_numpy(zero_copy_only=False))
    x = (np.stack(cols, axis=1).astype(np.float32, copy=False) if cols
         else np.zeros((len(lines), 0), np.float32))
    ycol = batch.column(spec.target)
    if pa.types.is_floating(ycol.type):
        y = [_label_text(v) for v in ycol.to_pylist()]
    else:
        y = pc.cast(ycol, pa.string()).to_pylist()
    task = None
    if spec.task is not None:
        tcol = batch.column(spec.task)
        try:
            if tcol.null_count:
                raise pa.ArrowInvalid("null")
            task = np.array(pc.cast(tcol, pa.int64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = tcol.to_pylist()
            i = next((i for i, v in enumerate(values) if not _is_int(v)), 0)
            raise DataError(f"{spec.at(lines[i])}: task column {spec.task!r} holds "
                            f"{values[i]!r}; task ids must be integers") from None
    return _Raw(x, y, task, lines)


def _is_int(v: Any) -> bool:
    try:
        return v is not None and float(v) == int(float(v))
    except (TypeError, ValueError):
        return False


def _csv_chunks(spec: _Spec) -> Iterator[_Raw]:
    pa = _pyarrow("csv")
    import pyarrow.csv as pcsv

    fh = _open(spec)
    try:
        prefix = fh.read1(PEEK_BYTES) if spec.stdin else fh.read(PEEK_BYTES)
        head_lines = max(prefix.count(b"\n"), 1)
        bytes_per_row = max(len(prefix) // head_lines, 1)
        cols = [spec.target, *spec.features, *([spec.task] if spec.task else [])]
        try:
            reader = pcsv.open_csv(
                _Prefixed(prefix, fh),
                read_options=pcsv.ReadOptions(
                    use_threads=False, block_size=max(spec.chunk * bytes_per_row, 1 << 16)),
                convert_options=pcsv.ConvertOptions(
                    include_columns=cols, column_types={c: pa.string() for c in cols},
                    strings_can_be_null=True))
        except pa.ArrowInvalid as exc:
            raise DataError(f"{spec.where}: {_arrow_message(exc)}") from exc
        row = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise DataError(f"{spec.where}: {_arrow_message(exc)}") from exc
            n = batch.num_rows
            yield _arrow_raw(spec, batch, np.arange(row + 2, row + 2 + n))
            row += n
    finally:
        if not spec.stdin:
            fh.close()


def _parquet_chunks(spec: _Spec) -> Iterator[_Raw]:
    _pyarrow("parquet")
    import pyarrow.parquet as pq

    if spec.stdin:
        raise ConfigError("stream parquet: Parquet cannot be read from stdin (it needs a "
                          "seekable file); write it to a file, or stream CSV / JSON Lines")
    fh = _open(spec)
    try:
        pf = pq.ParquetFile(fh)
        cols = [spec.target, *spec.features, *([spec.task] if spec.task else [])]
        row = 0
        for batch in pf.iter_batches(batch_size=spec.chunk, columns=cols):
            n = batch.num_rows
            yield _arrow_raw(spec, batch, np.arange(row + 1, row + 1 + n))
            row += n
    finally:
        fh.close()


def _number(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError
    return float(v)


def _jsonl_rows(spec: _Spec, rows: list[dict[str, Any]], lines: list[int]) -> _Raw:
    x = np.empty((len(rows), len(spec.features)), np.float32)
    for i, r in enumerate(rows):
        for j, f in enumerate(spec.features):
            try:
                x[i, j] = _number(r.get(f))
            except (TypeError, OverflowError):
                raise DataError(f"{spec.at(lines[i])}: {f!r} is {r.get(f)!r}, not a number; "
                                "features must be numeric") from None
    y = [_label_text(r.get(spec.target)) for r in rows]
    task = None
    if spec.task is not None:
        t = [r.get(spec.task) for r in rows]
        bad = next((i for i, v in enumerate(t) if not _is_int(v) or isinstance(v, str | bool)),
                   None)
        if bad is not None:
            raise DataError(f"{spec.at(lines[bad])}: task {spec.task!r} is {t[bad]!r}; task ids "
                            "must be integers")
        task = np.asarray(t, dtype=np.int64)
    return _Raw(x, y, task, np.asarray(lines, dtype=np.int64))


def _jsonl_objects(spec: _Spec, fh: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, raw in enumerate(fh, 1):
        text = raw.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{spec.at(lineno)}: not valid JSON "
                            f"({getattr(exc, 'msg', None) or exc})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{spec.at(lineno)}: each line must be one JSON object, got "
                            f"{type(obj).__name__}")
        yield lineno, obj


def _jsonl_chunks(spec: _Spec) -> Iterator[_Raw]:
    fh = _open(spec)
    try:
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        checked = False
        for lineno, obj in _jsonl_objects(spec, fh):
            if not checked:
                _columns_error(spec, list(obj))
                checked = True
            rows.append(obj)
            lines.append(lineno)
            if len(rows) >= spec.chunk:
                yield _jsonl_rows(spec, rows, lines)
                rows, lines = [], []
        if rows:
            yield _jsonl_rows(spec, rows, lines)
    finally:
        if not spec.stdin:
            fh.close()


READERS: dict[str, Callable[[_Spec], Iterator[_Raw]]] = {
    "csv": _csv_chunks, "parquet": _parquet_chunks, "jsonl": _jsonl_chunks}


def _read_head(fh: Any) -> bytes:
    """The first lines of stdin (header and a row), as they arrive; kept for the reader."""
    buf = b""
    while buf.count(b"\n") < 2 and len(buf) < PEEK_BYTES:
        chunk = fh.read1(PEEK_BYTES - len(buf)) if hasattr(fh, "read1") else fh.read(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _default_features(fmt: str, path: str, target: str, task: str | None
                      ) -> tuple[list[str], list[str], bytes]:
    """(numeric columns other than target/task, in file order; all columns; stdin bytes read)."""
    skip = {target, task}
    if fmt == "parquet":
        pa = _pyarrow(fmt)
        import pyarrow.parquet as pq

        if path == "-":
            raise ConfigError("stream parquet: Parquet cannot be read from stdin (it needs a "
                              "seekable file); write it to a file, or stream CSV / JSON Lines")
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"stream parquet ({path}): cannot read the file "
                              f"({str(exc).splitlines()[0]})") from exc
        numeric = [f.name for f in schema if f.name not in skip and (
            pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
        return numeric, list(schema.names), b""
    consumed = b""
    if path == "-":
        prefix = consumed = _read_head(sys.stdin.buffer)
    else:
        try:
            with open(path, "rb") as fh:
                prefix = fh.read(PEEK_BYTES)
        except OSError as exc:
            raise ConfigError(f"stream {fmt} ({path}): cannot open the file "
                              f"({exc.strerror or exc})") from exc
    if fmt == "csv":
        pa = _pyarrow(fmt)
        schema = _csv_schema(path, prefix)
        numeric = [f.name for f in schema if f.name not in skip and (
            pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
        return numeric, list(schema.names), consumed
    first = prefix.split(b"\n", 1)[0].strip()
    try:
        obj = json.loads(first) if first else {}
    except json.JSONDecodeError as exc:
        raise DataError(f"stream jsonl ({'stdin' if path == '-' else path}), line 1: not valid "
                        f"JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(f"stream jsonl ({path}), line 1: each line must be one JSON object")
    numeric = [k for k, v in obj.items() if k not in skip and isinstance(v, int | float)
               and not isinstance(v, bool)]
    return numeric, list(obj), consumed


# ---------------------------------------------------------------------------
# Validation: labels mapped, NaN handled, line numbers in every message
# ---------------------------------------------------------------------------


def _validate(spec: _Spec, raw: _Raw, index: dict[str, int]) -> tuple[Tensor, Tensor, Tensor | None]:
    y = np.fromiter((index.get(v, -2) if v is not None else -1 for v in raw.y), np.int64,
                    count=len(raw))
    unknown = np.flatnonzero(y == -2)
    if unknown.size:
        i = int(unknown[0])
        raise DataError(f"{spec.at(raw.lines[i])}: label {raw.y[i]!r} is not one of the classes "
                        f"{list(index)[:20]}; list every label in stream.classes")
    bad_x = ~np.isfinite(raw.x).all(axis=1)
    bad = bad_x | (y < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if spec.nan_policy == "raise":
            if y[i] < 0:
                cause = f"has no label in column {spec.target!r}"
            else:
                col = spec.features[int(np.flatnonzero(~np.isfinite(raw.x[i]))[0])]
                cause = f"column {col!r} is missing, NaN or infinite"
            raise DataError(f"{spec.at(raw.lines[i])}: {cause}; clean the data or set "
                            "stream.nan_policy: skip to drop such rows (they are counted)")
        keep = ~bad
        spec.meta["skipped_rows"] = spec.meta.get("skipped_rows", 0) + int(bad.sum())
        raw = _Raw(raw.x[keep], [v for v, k in zip(raw.y, keep) if k],
                   None if raw.task is None else raw.task[keep], raw.lines[keep])
        y = y[keep]
    task = None if raw.task is None else torch.from_numpy(np.ascontiguousarray(raw.task))
    return torch.from_numpy(np.ascontiguousarray(raw.x)), torch.from_numpy(y), task


def _limited(chunks: Iterator[_Raw], stop: int | None) -> Iterator[_Raw]:
    """The first ``stop`` rows of ``chunks`` (all of them when ``stop`` is None)."""
    seen = 0
    for c in chunks:
        if stop is not None and seen + len(c) >= stop:
            if stop > seen:
                yield c.slice(0, stop - seen)
            return
        seen += len(c)
        yield c


def _scan(spec: _Spec, tail: int) -> tuple[set[str], int, _Raw]:
    """One pass: the label values, the row count and the last ``tail`` rows."""
    labels: set[str] = set()
    n = 0
    kept: deque[_Raw] = deque()
    held = 0
    for c in READERS[spec.fmt](spec):
        labels.update(v for v in c.y if v is not None)
        n += len(c)
        if tail:
            kept.append(c)
            held += len(c)
            while held - len(kept[0]) >= tail:
                held -= len(kept.popleft())
    rest = _Raw.concat(list(kept), len(spec.features))
    return labels, n, rest.slice(max(len(rest) - tail, 0), len(rest))


def _sorted_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(labels)


# ---------------------------------------------------------------------------
# Experiences
# ---------------------------------------------------------------------------


def _train_chunks(spec: _Spec, index: dict[str, int], stop: int | None
                  ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    spec.meta["skipped_rows"] = 0  # counted afresh on every pass over the file
    for raw in _limited(READERS[spec.fmt](spec), stop):
        x, y, t = _validate(spec, raw, index)
        if len(y):
            yield x, y, t


def _rebatch(chunks: Iterator[tuple[Tensor, Tensor, Tensor | None]], batch_size: int
             ) -> Iterator[Batch]:
    """Cut chunks of any size into batches of ``batch_size`` (the last may be smaller)."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    have = 0
    for x, y, _ in chunks:
        xs.append(x)
        ys.append(y)
        have += len(y)
        if have >= batch_size:
            x, y = torch.cat(xs), torch.cat(ys)
            full = have - have % batch_size
            for i in range(0, full, batch_size):
                yield Batch(x[i:i + batch_size], y[i:i + batch_size])
            xs, ys, have = [x[full:]], [y[full:]], have - full
    if have:
        yield Batch(torch.cat(xs), torch.cat(ys))


class _Segments:
    """One pass over validated chunks, cut where the task id changes."""

    def __init__(self, chunks: Iterator[tuple[Tensor, Tensor, Tensor | None]]) -> None:
        self._chunks = chunks
        self._buf: tuple[Tensor, Tensor, Tensor] | None = None

    def peek(self) -> int | None:
        while self._buf is None or not len(self._buf[1]):
            nxt = next(self._chunks, None)
            if nxt is None:
                return None
            assert nxt[2] is not None
            self._buf = (nxt[0], nxt[1], nxt[2])
        return int(self._buf[2][0])

    def take(self, task_id: int) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """The rows of the current run of ``task_id``, chunk by chunk."""
        while self.peek() == task_id:
            assert self._buf is not None
            x, y, t = self._buf
            other = (t != task_id).nonzero()
            cut = int(other[0]) if len(other) else len(t)
            self._buf = (x[cut:], y[cut:], t[cut:])
            yield x[:cut], y[:cut], t[:cut]


class SegmentExperience(Experience):
    """A run of rows with one task id in a file stream (read once, in file order)."""

    finite_checked = True  # rows were checked when read

    def __init__(self, id: int, segments: _Segments, task_id: int, num_classes: int,
                 where: str) -> None:
        self.id = id
        self.task_id = task_id
        self.classes = tuple(range(num_classes))
        self.n_samples = None
        self._segments = segments
        self._where = where

    def batches(self, batch_size: int, *, epochs: int = 1, shuffle: bool = True, seed: int = 0,
                start: int = 0) -> Iterator[Batch]:
        if epochs != 1:
            raise ConfigError(f"{self._where}: with a task column each experience is read once; "
                              f"train.epochs must be 1, got {epochs}")
        for k, b in enumerate(_rebatch(self._segments.take(self.task_id), batch_size)):
            if k >= start:
                yield Batch(b.x, b.y, torch.full_like(b.y, self.task_id))

    def drain(self) -> None:
        for _ in self._segments.take(self.task_id):
            pass


def _segment_experiences(spec: _Spec, index: dict[str, int], stop: int | None
                         ) -> Iterator[Experience]:
    segments = _Segments(_train_chunks(spec, index, stop))
    k = 0
    while (tid := segments.peek()) is not None:
        exp = SegmentExperience(k, segments, tid, len(index), spec.where)
        yield exp
        exp.drain()
        k += 1


def _iterable_source(spec: _Spec, index: dict[str, int], stop: int | None,
                     batch_size: int) -> Iterator[Batch]:
    return _rebatch(_train_chunks(spec, index, stop), batch_size)


def _eval_sets(spec: _Spec, raw: _Raw, index: dict[str, int], name: str) -> list[EvalSet]:
    if not len(raw):
        return []
    x, y, t = _validate(spec, raw, index)
    if not len(y):
        return []
    if t is None:
        return [EvalSet(x, y, tuple(range(len(index))), name=f"{name}/test")]
    out = []
    for tid in torch.unique(t).tolist():
        m = t == tid
        out.append(EvalSet(x[m], y[m], tuple(torch.unique(y[m]).tolist()), task_id=int(tid),
                           name=f"{name}/task{tid}"))
    return out


def from_file(fmt: str, path: str, *, target: str, features: Sequence[str] | None = None,
              task: str | None = None, chunk: int = 10_000, classes: Sequence[Any] | None = None,
              n_classes: int | None = None, nan_policy: str = "raise",
              test_path: str | None = None, test_tail: int = 0, seed: int = 0) -> Stream:
    """A lazy, chunked stream over a CSV / Parquet / JSON Lines file, or stdin with ``path="-"``."""
    where = f"stream {fmt} ({'stdin' if path == '-' else path})"
    if fmt not in FORMATS:
        raise ConfigError(f"stream: unknown file format {fmt!r}; one of {', '.join(FORMATS)}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"{where}: chunk must be a positive number of rows, got {chunk!r}")
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"{where}: nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if test_tail < 0:
        raise ConfigError(f"{where}: test_tail must be >= 0 rows, got {test_tail}")
    if test_tail and test_path:
        raise ConfigError(f"{where}: give test_tail or test_path, not both")
    if n_classes is not None and n_classes < 1:
        raise ConfigError(f"{where}: n_classes must be >= 1, got {n_classes}")
    if fmt in ("csv", "parquet"):
        _pyarrow(fmt)
    if path == "-" and (test_tail or (classes is None and n_classes is None)):
        raise ConfigError(f"{where}: stdin is read once, as it arrives: declare the labels "
                          "(stream.classes: [...] or n_classes: N) and use test_path, not "
                          "test_tail, for an evaluation set")
    numeric, names, consumed = _default_features(fmt, path, target, task)
    feats = list(features) if features is not None else numeric
    if not feats:
        raise DataError(f"{where}: no numeric feature columns besides the target {target!r}; "
                        f"the file has columns {names}; list them in stream.features")
    if len(set(feats)) != len(feats) or target in feats or (task is not None and task in feats):
        raise ConfigError(f"{where}: features {feats} repeat a column or include the target/task")
    spec = _Spec(fmt, path, target, feats, task, chunk, nan_policy, stdin_prefix=consumed)
    _columns_error(spec, names)

    tail = _Raw.concat([], len(feats))
    n_rows: int | None = None
    labels: set[str] = set()
    if path != "-" and (test_tail or (classes is None and n_classes is None)):
        labels, n_rows, tail = _scan(spec, test_tail)
        if n_rows <= test_tail:
            raise DataError(f"{where}: test_tail={test_tail} but the file has only {n_rows} rows")
    if classes is not None:
        values = [_label_text(c) for c in classes]
        if len(set(values)) != len(values) or None in values:
            raise ConfigError(f"{where}: classes {list(classes)} repeat a value")
    elif n_classes is not None:
        values = [str(i) for i in range(n_classes)]
    else:
        values = _sorted_labels(labels)
        if not values:
            raise DataError(f"{where}: no labelled rows in column {target!r}")
    index = {v: i for i, v in enumerate(values)}
    stop = None if n_rows is None else n_rows - test_tail
    name = fmt
    evals = _eval_sets(spec, tail, index, name)
    if test_path:
        tspec = _Spec(fmt, test_path, target, feats, task, chunk, nan_policy)
        _columns_error(tspec, _default_features(fmt, test_path, target, task)[1])
        test_raw = _Raw.concat(list(READERS[fmt](tspec)), len(feats))
        evals = _eval_sets(tspec, test_raw, index, name)
    shape = (len(feats),)
    meta: dict[str, Any] = spec.meta
    meta.update({"change_points": None if task else [], "feature_names": feats,
                 "classes": values, "path": path, "skipped_rows": 0})
    if stop is not None:
        meta["n_train"] = stop
    if task is not None:
        return Stream(name, len(index), shape,
                      functools.partial(_segment_experiences, spec, index, stop), evals,
                      task_aware=True, n_experiences=None, task_labels=True, seed=seed, meta=meta)
    exp = IterableExperience(0, functools.partial(_iterable_source, spec, index, stop),
                             num_classes=len(index), input_shape=shape, n_samples=stop,
                             classes=tuple(range(len(index))))
    return Stream(name, len(index), shape, functools.partial(list, [exp]), evals,
                  task_aware=False, n_experiences=1, seed=seed, meta=meta)


# ---------------------------------------------------------------------------
# Named streams (what ``stream: {name: csv, ...}`` builds)
# ---------------------------------------------------------------------------


def csv(*, path: str, target: str, features: list[str] | None = None, task: str | None = None,
        chunk: int = 10_000, classes: list[Any] | None = None, n_classes: int | None = None,
        nan_policy: str = "raise", test_path: str | None = None, test_tail: int = 0,
        seed: int = 0) -> Stream:
    """Rows of a CSV file (or stdin: path "-"), read lazily in chunks (pyarrow)."""
    return from_file("csv", path, target=target, features=features, task=task, chunk=chunk,
                     classes=classes, n_classes=n_classes, nan_policy=nan_policy,
                     test_path=test_path, test_tail=test_tail, seed=seed)


def parquet(*, path: str, target: str, features: list[str] | None = None, task: str | None = None,
            chunk: int = 10_000, classes: list[Any] | None = None, n_classes: int | None = None,
            nan_policy: str = "raise", test_path: str | None = None, test_tail: int = 0,
            seed: int = 0) -> Stream:
    """Rows of a Parquet file, read lazily in record batches of chunk rows (pyarrow)."""
    return from_file("parquet", path, target=target, features=features, task=task, chunk=chunk,
                     classes=classes, n_classes=n_classes, nan_policy=nan_policy,
                     test_path=test_path, test_tail=test_tail, seed=seed)


def jsonl(*, path: str, target: str, features: list[str] | None = None, task: str | None = None,
          chunk: int = 10_000, classes: list[Any] | None = None, n_classes: int | None = None,
          nan_policy: str = "raise", test_path: str | None = None, test_tail: int = 0,
          seed: int = 0) -> Stream:
    """Rows of a JSON Lines file (or stdin: path "-"), one object a line, read in chunks."""
    return from_file("jsonl", path, target=target, features=features, task=task, chunk=chunk,
                     classes=classes, n_classes=n_classes, nan_policy=nan_policy,
                     test_path=test_path, test_tail=test_tail, seed=seed)


STREAMS = (csv, parquet, jsonl)


@hookimpl
def register(registry: Any) -> None:
    for factory in STREAMS:
        registry.add("stream", factory.__name__, factory)
