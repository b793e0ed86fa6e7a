"""The summary of a grid: per cell (strategy x stream x axes values), mean +- 95 % CI over seeds.

The interval is Student's t over the seeds: ``mean +- t(0.975, n-1) * s / sqrt(n)``
with ``s`` the sample standard deviation (``ddof=1``) and the quantile from
``scipy.stats.t`` (scipy arrives with scikit-learn); one seed gives no interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["COLUMNS", "mean_ci", "render", "summarize"]

#: summary columns: (metric, heading, higher is better)
COLUMNS = (("final_avg_accuracy", "accuracy", True), ("avg_forgetting", "forgetting", False),
           ("bwt", "BWT", True), ("fwt", "FWT", True),
           ("prequential_accuracy", "prequential", True),
           ("samples_per_second", "samples/s", True), ("wall_time_s", "wall s", False))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """``(mean, half-width)`` of the Student-t interval; the half-width is ``None`` for one value."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, None
    from scipy.stats import t

    s = statistics.stdev(xs)
    return m, float(t.ppf(0.5 + confidence / 2, len(xs) - 1)) * s / math.sqrt(len(xs))


def summarize(cells: Sequence[Any], rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per summary cell, in grid order: the mean, CI and SD of each metric over the ok seeds.

    ``rows`` maps a run's hash to its row (:meth:`~lifelong.bench.rows.RowLog.latest`).
    """
    groups: dict[Any, list[Any]] = {}
    for c in cells:
        groups.setdefault(c.key, []).append(c)
    out = []
    for members in groups.values():
        first = members[0]
        got = [rows.get(c.hash) for c in members]
        ok = [r for r in got if r is not None and r["status"] == "ok"]
        entry: dict[str, Any] = {
            "strategy": first.strategy, "stream": first.stream, "axes": dict(first.axes),
            "n": len(ok), "seeds": [r["seed"] for r in ok],
            "failed_seeds": [c.seed for c, r in zip(members, got)
                             if r is not None and r["status"] == "failed"],
            "missing_seeds": [c.seed for c, r in zip(members, got) if r is None],
        }
        keys = [k for k, _, _ in COLUMNS] + ["peak_rss_mb"]
        for k in keys:
            vals = [r[k] for r in ok if r.get(k) is not None]
            m, ci = mean_ci(vals)
            entry[k] = m
            entry[f"{k}_ci95"] = ci
            entry[f"{k}_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
        entry["std"] = entry["final_avg_accuracy_sd"]  # the name of earlier versions
        out.append(entry)
    return out


def _cell_text(mean: float | None, ci: float | None, key: str) -> str:
    if mean is None:
        return "-"
    if key == "samples_per_second":
        text = f"{mean:,.0f}" + (f" ± {ci:,.0f}" if ci is not None else "")
    elif key == "wall_time_s":
        text = f"{mean:.2f}" + (f" ± {ci:.2f}" if ci is not None else "")
    else:
        text = f"{mean:.4f}" + (f" ± {ci:.4f}" if ci is not None else "")
    return text


def render(summary: Sequence[dict[str, Any]], *, title: str) -> Any:
    """A rich table of the summary; the best mean of each column in bold green."""
    from rich.table import Table

    axes = list(dict.fromkeys(k for e in summary for k in e["axes"]))
    t = Table(title=title)
    t.add_column("stream")
    t.add_column("strategy")
    for a in axes:
        t.add_column(a)
    t.add_column("n", justify="right")
    shown = [c for c in COLUMNS if any(e[c[0]] is not None for e in summary)]
    best: dict[str, float] = {}
    for key, head, higher in shown:
        vals = [e[key] for e in summary if e[key] is not None]
        if vals and len(summary) > 1:
            best[key] = max(vals) if higher else min(vals)
        t.add_column(f"{head} {'↑' if higher else '↓'}", justify="right")
    t.add_column("failed seeds")
    for e in summary:
        cols = []
        for key, _, _ in shown:
            text = _cell_text(e[key], e[f"{key}_ci95"], key)
            if key in best and e[key] == best[key]:
                text = f"[bold green]{text}[/bold green]"
            cols.append(text)
        t.add_row(str(e["stream"]), e["strategy"], *[str(e["axes"].get(a, "-")) for a in axes],
                  str(e["n"]), *cols, ",".join(map(str, e["failed_seeds"])) or "-")
    return t
