"""One row per run of a grid, appended as it finishes to ``bench_runs.jsonl`` and ``bench_runs.csv``.

The row schema (:data:`ROW_KEYS`) is what reports and plots read:
``hash``, ``status`` (``"ok"`` or ``"failed"``), ``error``, ``strategy``,
``stream``, ``seed``, ``axes`` (dotted key -> value), the metrics of the
run's ``metrics.json`` (:data:`METRIC_KEYS`), ``threads``,
``accuracy_matrix``, ``config`` (the resolved config the run used) and
``run_dir`` (``runs/<hash>/`` under ``--out``, holding that run's
``metrics.json``; ``None`` when the run failed before writing it). The CSV
has the same columns, the non-scalar ones as JSON text.

The JSON-lines file is the record; the CSV is rebuilt from it whenever a
grid starts on an existing ``--out``, so a process killed between the two
writes leaves nothing behind. A half-written last line (a killed process)
is moved to ``bench_runs.jsonl.torn`` with a warning and its run is run
again; a broken line elsewhere is an error naming it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError

__all__ = ["ROW_KEYS", "METRIC_KEYS", "RowLog", "read_csv", "read_jsonl", "make_row"]

METRIC_KEYS = ("final_avg_accuracy", "avg_forgetting", "bwt", "fwt", "prequential_accuracy",
               "samples_per_second", "wall_time_s", "peak_rss_mb")
EXTRA_METRICS = ("final_avg_accuracy_task_il", "avg_anytime_accuracy", "samples_seen")
ROW_KEYS = ("hash", "status", "error", "strategy", "stream", "seed", "axes", *METRIC_KEYS,
            "threads", "accuracy_matrix", "config", "run_dir", *EXTRA_METRICS, "backend")
JSON_COLUMNS = ("axes", "accuracy_matrix", "config")
INT_COLUMNS = ("seed", "threads", "samples_seen")
FLOAT_COLUMNS = (*METRIC_KEYS, "final_avg_accuracy_task_il", "avg_anytime_accuracy")

JSONL = "bench_runs.jsonl"
CSV = "bench_runs.csv"


def make_row(cell: Any, *, status: str, error: str | None = None,
             metrics: dict[str, Any] | None = None, run_dir: str | None = None,
             backend: str = "in-process") -> dict[str, Any]:
    """The row of one finished (or failed) run of ``cell`` (a :class:`~lifelong.bench.grid.Cell`)."""
    m = metrics or {}
    row: dict[str, Any] = {
        "hash": cell.hash, "status": status, "error": error, "strategy": cell.strategy,
        "stream": cell.stream, "seed": cell.seed, "axes": dict(cell.axes),
    }
    for k in METRIC_KEYS:
        row[k] = m.get(k)
    row["threads"] = m.get("threads")
    row["accuracy_matrix"] = m.get("accuracy_matrix")
    row["config"] = m.get("config") or cell.config
    row["run_dir"] = run_dir
    for k in EXTRA_METRICS:
        row[k] = m.get(k)
    row["backend"] = backend
    return row


def _csv_line(row: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([_csv_cell(k, row.get(k)) for k in ROW_KEYS])
    return buf.getvalue()


def _csv_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in JSON_COLUMNS:
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``bench_runs.csv``, with the types of the JSON-lines rows."""
    out = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k in ROW_KEYS:
                v = rec.get(k, "")
                if v == "" or v is None:
                    row[k] = None
                elif k in JSON_COLUMNS:
                    row[k] = json.loads(v)
                elif k in INT_COLUMNS:
                    row[k] = int(v)
                elif k in FLOAT_COLUMNS:
                    row[k] = float(v)
                else:
                    row[k] = v
            if row.get("axes") is None:
                row["axes"] = {}
            out.append(row)
    return out


def read_jsonl(path: str | Path, *, warn: Any = None) -> list[dict[str, Any]]:
    """Rows of a ``bench_runs.jsonl``; a torn last line is set aside (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    rows: list[dict[str, Any]] = []
    pos, good, torn = 0, 0, b""
    lines = data.split(b"\n")
    for i, line in enumerate(lines, 1):
        last = i == len(lines) or (i == len(lines) - 1 and lines[-1] == b"")
        end = pos + len(line) + (1 if i < len(lines) else 0)
        if line.strip():
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "hash" not in row or "status" not in row:
                    raise ValueError("not a row")
            except ValueError:
                if not last:
                    raise ConfigError(f"{p}: line {i} is not a benchmark row; repair or move the "
                                      "file (the other rows are intact)") from None
                torn = line
                break
            rows.append(row)
        pos = good = end
    if torn:
        aside = p.with_name(p.name + ".torn")
        with open(aside, "ab") as fh:
            fh.write(torn + b"\n")
        with open(p, "r+b") as fh:
            fh.truncate(good)
        if warn is not None:
            warn(f"{p}: the last line was cut short (a run killed while writing its row); it is "
                 f"kept in {aside.name} and that run runs again")
    elif data and not data.endswith(b"\n"):  # a whole row missing only its newline
        with open(p, "ab") as fh:
            fh.write(b"\n")
    return rows


class RowLog:
    """Appends rows to ``bench_runs.jsonl`` and ``bench_runs.csv`` in ``out``, one line each, flushed."""

    def __init__(self, out: str | Path, *, warn: Any = None) -> None:
        self.out = Path(out)
        self.jsonl = self.out / JSONL
        self.csv = self.out / CSV
        self.rows = read_jsonl(self.jsonl, warn=warn)
        self._rebuild_csv()

    def _rebuild_csv(self) -> None:
        from lifelong.run import _atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                fh.write(",".join(ROW_KEYS) + "\n")
                for row in self.rows:
                    fh.write(_csv_line(row))

        _atomic_write(self.csv, write, fix="free space or choose another --out")

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, default=str) + "\n"
        for path, text in ((self.jsonl, line), (self.csv, _csv_line(row))):
            with open(path, "a", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        self.rows.append(row)

    def latest(self) -> dict[str, dict[str, Any]]:
        """hash -> the row that counts: the last ``ok`` row, else the last row."""
        best: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            old = best.get(row["hash"])
            if old is None or row["status"] == "ok" or old["status"] != "ok":
                best[row["hash"]] = row
        return best
