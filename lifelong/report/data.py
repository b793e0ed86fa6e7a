"""Reading what ``lifelong plot`` and ``lifelong report`` draw: one run's ``metrics.json``,
or a benchmark grid's ``bench_runs.jsonl`` grouped into cells.

A grid row (one run; extra keys are kept, missing ones read as ``None``): ``hash``,
``status`` (``"ok"`` or ``"failed"``), ``error``, ``strategy``, ``stream``, ``seed``,
``axes`` (dotted config key -> value), ``final_avg_accuracy``, ``avg_forgetting``,
``bwt``, ``fwt``, ``prequential_accuracy``, ``samples_per_second``, ``wall_time_s``,
``peak_rss_mb``, ``threads``, ``accuracy_matrix``, ``config``, ``run_dir`` (that run's
directory, relative to the grid's). A cell is strategy x stream x axis values; its
numbers are the mean over seeds with a Student-t 95 % confidence interval.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError

__all__ = ["Cell", "Grid", "load_grid", "load_run", "mean_ci", "is_grid", "GRID_FILE",
           "METRICS"]

GRID_FILE = "bench_runs.jsonl"
METRICS = {  # row key -> (label, unit); the columns of the report's table
    "final_avg_accuracy": ("final accuracy", ""),
    "avg_forgetting": ("forgetting", ""),
    "bwt": ("BWT", ""),
    "fwt": ("FWT", ""),
    "prequential_accuracy": ("prequential accuracy", ""),
    "samples_per_second": ("throughput", "samples/s"),
    "wall_time_s": ("wall time", "s"),
    "peak_rss_mb": ("peak memory", "MB"),
}


def mean_ci(values: list[float], *, level: float = 0.95) -> tuple[float | None, float | None, int]:
    """``(mean, half-width, n)``: the Student-t ``level`` confidence interval over ``values``
    (:func:`lifelong.bench.summary.mean_ci`, the grid summary's own), with the count.

    The half-width is ``t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard
    deviation; ``None`` with fewer than two values (no spread to estimate), and the mean is
    ``None`` without values. Non-finite and ``None`` values are not counted.

    >>> m, h, n = mean_ci([0.5, 0.7])
    >>> round(m, 3), round(h, 3), n          # t_{0.975, 1} = 12.706, s = 0.1414
    (0.6, 1.271, 2)
    """
    from lifelong.bench.summary import mean_ci as student_t

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    mean, half = student_t(xs, level)
    return mean, half, len(xs)


def load_run(path: str | Path) -> tuple[dict[str, Any], Path]:
    """``(metrics, run_dir)`` of a run directory (or its ``metrics.json``)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file or directory; give a run's --out directory "
                          f"(with metrics.json) or a bench --out directory (with {GRID_FILE})")
    f = p / "metrics.json" if p.is_dir() else p
    if not f.is_file():
        raise ConfigError(f"{p}: not a run directory (no metrics.json) nor a grid (no "
                          f"{GRID_FILE}); run `lifelong run ... --out DIR` or "
                          "`lifelong bench ... --out DIR` first")
    try:
        m = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{f}: not valid JSON ({getattr(exc, 'msg', exc)}); is it a "
                          "metrics.json written by `lifelong run`?") from exc
    if not isinstance(m, dict):
        raise ConfigError(f"{f}: holds a {type(m).__name__}, not the metrics object `lifelong "
                          "run` writes")
    return m, f.parent


def is_grid(path: str | Path) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / GRID_FILE).is_file()) or (p.is_file() and p.name == GRID_FILE)


def _axes_key(axes: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(axes, dict):
        return ()
    return tuple(sorted((str(k), json.dumps(v, sort_keys=True, default=str))
                        for k, v in axes.items()))


@dataclass
class Cell:
    """One strategy x stream x axis values, with its runs (one per seed)."""

    strategy: str
    stream: str
    axes: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The strategy, then ``key=value`` for each axis (the key's last part)."""
        parts = [f"{k.split('.')[-1]}={v}" for k, v in sorted(self.axes.items())]
        return " ".join([self.strategy, *parts])

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status", "ok") == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status", "ok") != "ok"]

    def stat(self, key: str) -> tuple[float | None, float | None, int]:
        """Mean, 95 % CI half-width and number of seeds of ``key`` over the ok runs."""
        vals = [r.get(key) for r in self.ok]
        return mean_ci([v for v in vals if isinstance(v, int | float) and not isinstance(v, bool)])


@dataclass
class Grid:
    """A grid's rows, grouped into cells in the order they first appear."""

    path: Path
    rows: list[dict[str, Any]]
    cells: list[Cell]
    skipped_lines: list[int] = field(default_factory=list)  # an unfinished last line

    @property
    def streams(self) -> list[str]:
        return list(dict.fromkeys(c.stream for c in self.cells))

    @property
    def strategies(self) -> list[str]:
        return list(dict.fromkeys(c.strategy for c in self.cells))

    @property
    def axis_names(self) -> list[str]:
        return list(dict.fromkeys(k for c in self.cells for k in sorted(c.axes)))


def load_grid(path: str | Path) -> Grid:
    """Read ``bench_runs.jsonl`` of a grid directory (or the file itself).

    A row appears once per run hash (the last ``ok`` row, else the last row, as
    :meth:`lifelong.bench.rows.RowLog.latest`: a resumed grid reruns a failed run); the
    file is only read, never repaired; a last line cut short by an interrupted write is skipped and noted in
    ``skipped_lines``; any other unreadable line is a :class:`ConfigError`. A grid
    without a single finished (``status: ok``) run is one too.
    """
    p = Path(path)
    f = p / GRID_FILE if p.is_dir() else p
    if not f.is_file():
        raise ConfigError(f"{p}: not a grid directory (no {GRID_FILE}); run `lifelong bench "
                          "... --out DIR` first")
    lines = f.read_text().splitlines()
    rows: dict[Any, dict[str, Any]] = {}
    skipped: list[int] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            if i == len(lines):
                skipped.append(i)
                continue
            raise ConfigError(f"{f}, line {i}: not a JSON object ({exc}); the grid file is "
                              "corrupted (rerun the grid, or delete that line)") from None
        key = row.get("hash") or f"line-{i}"
        old = rows.get(key)
        if old is None or row.get("status") == "ok" or old.get("status") != "ok":
            rows.pop(key, None)  # the last ok row counts, else the last row (as the grid's own)
            rows[key] = row
    kept = list(rows.values())
    if not any(r.get("status", "ok") == "ok" for r in kept):
        failed = [r for r in kept if r.get("status") == "failed"]
        why = f"; first error: {failed[0].get('error')}" if failed else ""
        raise ConfigError(f"{f}: no finished run ({len(kept)} row(s), {len(failed)} failed"
                          f"{why}); nothing to plot")
    cells: dict[tuple[Any, ...], Cell] = {}
    for r in kept:
        k = (str(r.get("strategy")), str(r.get("stream")), _axes_key(r.get("axes")))
        if k not in cells:
            axes = r.get("axes") if isinstance(r.get("axes"), dict) else {}
            cells[k] = Cell(k[0], k[1], dict(axes))
        cells[k].rows.append(r)
    return Grid(f.parent, kept, list(cells.values()), skipped)
