"""One self-contained HTML report of a benchmark grid: the tables and the figures in one
file (figures as base64 PNG, the style inline: nothing is fetched when it is opened).

Per stream, one row per cell (strategy x axis values): every metric as mean +- 95 %
confidence interval over seeds (Student t) with the number of seeds; the best value of
each column is bold. Failed runs are listed with their errors.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError
from lifelong.report.data import METRICS, Cell, Grid, load_grid
from lifelong.report.plots import DPI, grid_figures

__all__ = ["grid_report", "render", "LOWER_IS_BETTER"]

LOWER_IS_BETTER = {"avg_forgetting", "wall_time_s", "peak_rss_mb"}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;
color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f0f0f0}td.l,th.l{text-align:left}
td.best{font-weight:bold;background:#e8f4e8}
.ci{color:#666;font-size:.9em}.meta{color:#555}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
"""


def _fmt(v: float | None, key: str) -> str:
    if v is None:
        return "-"
    if key == "samples_per_second":
        return f"{v:,.0f}"
    if key in ("wall_time_s", "peak_rss_mb"):
        return f"{v:,.1f}"
    return f"{v:.3f}"


def _best(cells: list[Cell], key: str) -> float | None:
    means = [m for m in (c.stat(key)[0] for c in cells) if m is not None]
    if len(means) < 2 or min(means) == max(means):  # nothing to tell apart
        return None
    return min(means) if key in LOWER_IS_BETTER else max(means)


def _table(grid: Grid, stream: str) -> str:
    cells = [c for c in grid.cells if c.stream == stream]
    keys = [k for k in METRICS if any(c.stat(k)[2] for c in cells)]
    axis_names = [a for a in grid.axis_names if any(a in c.axes for c in cells)]
    head = "".join(['<th class="l">strategy</th>',
                    *(f'<th class="l">{html.escape(a)}</th>' for a in axis_names),
                    "<th>seeds</th>",
                    *(f"<th>{html.escape(METRICS[k][0])}"
                      f"{' (' + html.escape(METRICS[k][1]) + ')' if METRICS[k][1] else ''}"
                      f"{' &darr;' if k in LOWER_IS_BETTER else ' &uarr;'}</th>" for k in keys)])
    best = {k: _best(cells, k) for k in keys}
    body = []
    for c in cells:
        tds = [f'<td class="l">{html.escape(c.strategy)}</td>',
               *(f'<td class="l">{html.escape(json.dumps(c.axes[a]) if a in c.axes else "-")}'
                 "</td>" for a in axis_names),
               f"<td>{len(c.ok)}{' (' + str(len(c.failed)) + ' failed)' if c.failed else ''}"
               "</td>"]
        for k in keys:
            mean, h, _ = c.stat(k)
            cls = ' class="best"' if mean is not None and mean == best[k] else ""
            ci = f' <span class="ci">&plusmn; {_fmt(h, k)}</span>' if h is not None else ""
            tds.append(f"<td{cls}>{_fmt(mean, k)}{ci}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _failed(grid: Grid) -> str:
    rows = [r for r in grid.rows if r.get("status", "ok") != "ok"]
    if not rows:
        return ""
    trs = "".join(
        "<tr>" + "".join(f'<td class="l">{html.escape(str(v))}</td>' for v in (
            r.get("strategy"), r.get("stream"), r.get("seed"),
            json.dumps(r.get("axes") or {}), r.get("error") or "")) + "</tr>" for r in rows)
    return (f"<h2>Failed runs ({len(rows)})</h2><table><tr><th class=\"l\">strategy</th>"
            "<th class=\"l\">stream</th><th class=\"l\">seed</th><th class=\"l\">axes</th>"
            f"<th class=\"l\">error</th></tr>{trs}</table>")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render(grid: Grid) -> str:
    """The report's HTML text."""
    ok = sum(len(c.ok) for c in grid.cells)
    failed = sum(len(c.failed) for c in grid.cells)
    seeds = sorted({str(r.get("seed")) for r in grid.rows})
    meta = (f"{ok} finished run(s), {failed} failed, {len(grid.cells)} cell(s) "
            f"(strategy x stream x axis values), seeds {', '.join(seeds)}. "
            "Each number: mean over the finished seeds &plusmn; the half-width of its 95 % "
            "confidence interval (Student t); bold: the best of its column.")
    if grid.skipped_lines:
        meta += (f" Line {', '.join(map(str, grid.skipped_lines))} of bench_runs.jsonl was cut "
                 "short (an interrupted write) and is not counted.")
    parts = [f"<h1>Benchmark report: {html.escape(str(grid.path))}</h1>",
             f'<p class="meta">{meta}</p>']
    for stream in grid.streams:
        parts.append(f"<h2>Stream {html.escape(stream)}</h2>{_table(grid, stream)}")
    parts.append(_failed(grid))
    parts.append("<h2>Figures</h2>")
    for name, fig in grid_figures(grid).items():
        parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{_png(fig)}">')
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="meta">Written by lifelong report, {when}.</p>')
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>lifelong benchmark report</title><style>{STYLE}</style></head><body>"
            + "\n".join(p for p in parts if p) + "</body></html>\n")


def grid_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of the grid in ``path`` to ``out`` (default: ``report.html`` in
    the grid directory); returns its path."""
    grid = load_grid(path)
    dest = Path(out) if out else grid.path / "report.html"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(render(grid), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {dest} ({exc.strerror or exc}); choose "
                          "another --out") from exc
    return dest
