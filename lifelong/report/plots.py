"""The figures of one run and of a benchmark grid (matplotlib, Agg; PNG and SVG).

One run (its ``metrics.json``): the accuracy matrix as an annotated heat map
(``accuracy_matrix``), each experience's accuracy over training
(``experience_accuracy``), anytime and prequential accuracy over time with the
true and detected boundaries (``accuracy_over_time``). A grid (``bench_runs.jsonl``):
final accuracy against throughput, one point per cell with 95 % confidence
intervals over seeds on both axes (``accuracy_vs_throughput``), and bars of final
accuracy and forgetting with their intervals (``accuracy_forgetting``).

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state, no
backend switch: saving renders with Agg for PNG and the SVG backend for SVG).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError
from lifelong.report.data import Grid, is_grid, load_grid, load_run

__all__ = ["FORMATS", "figure_accuracy_matrix", "figure_experience_accuracy",
           "figure_accuracy_over_time", "figure_accuracy_vs_throughput",
           "figure_accuracy_forgetting", "run_figures", "grid_figures", "plot_run",
           "plot_grid", "plot_path", "save"]

FORMATS = ("png", "svg")
DPI = 110


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _heat(ax: Any, matrix: list[list[float]], title: str) -> Any:
    import numpy as np

    a = np.asarray(matrix, dtype=float)
    im = ax.imshow(a, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    n_rows, n_cols = a.shape
    size = 10 if max(n_rows, n_cols) <= 6 else (8 if max(n_rows, n_cols) <= 10 else 6)
    for i in range(n_rows):
        for j in range(n_cols):
            v = a[i, j]
            ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    fontsize=size, color="black" if v > 0.55 else "white")
    ax.set_xticks(range(n_cols))
    ax.set_yticks(range(n_rows))
    ax.set(title=title, xlabel="evaluated on experience (test set)",
           ylabel="after training on experience")
    return im


def figure_accuracy_matrix(m: dict[str, Any]) -> Any:
    """Heat map of ``accuracy_matrix`` (and the Task-IL one beside it, when present)."""
    R = m.get("accuracy_matrix")
    if not R:
        raise ConfigError("metrics.json has no accuracy_matrix (the run evaluated no test set, "
                          "or eval.matrix was off); nothing to draw")
    panels = [("Class-IL accuracy", R)]
    if m.get("accuracy_matrix_task_il"):
        panels.append(("Task-IL accuracy (logits masked to its classes)",
                       m["accuracy_matrix_task_il"]))
    n = len(R[0])
    side = max(3.6, 0.55 * n + 1.8)
    fig = _figure(side * len(panels) + 1.0, side)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    im = None
    for ax, (name, mat) in zip(axes, panels):
        im = _heat(ax, mat, name)
    fig.colorbar(im, ax=list(axes), label="accuracy (fraction correct)", shrink=0.9)
    final = m.get("final_avg_accuracy")
    forg = m.get("avg_forgetting")
    sub = "; ".join(s for s in (f"final average accuracy {final:.3f}" if final is not None else "",
                                f"average forgetting {forg:.3f}" if forg is not None else "") if s)
    fig.suptitle("Accuracy matrix" + (f" ({sub})" if sub else ""))
    return fig


def _experience_ends(m: dict[str, Any], n: int) -> list[float] | None:
    """Samples seen at the end of each experience: the true change points, then the total."""
    cps = list(m.get("true_change_points") or [])
    total = m.get("samples_seen")
    if total is not None and len(cps) == n - 1:
        return [*cps, total]
    return None


def figure_experience_accuracy(m: dict[str, Any]) -> Any:
    """Each experience's held-out accuracy as training goes on.

    From ``anytime_per_experience`` (every ``eval.every`` batches) when the run recorded
    it, with the accuracy-matrix rows (after each experience) as markers; from the
    matrix rows alone otherwise.
    """
    R = m.get("accuracy_matrix") or []
    per = m.get("anytime_per_experience") or []
    if not R and not per:
        raise ConfigError("metrics.json has neither accuracy_matrix nor anytime_per_experience; "
                          "set eval.every (anytime accuracy) or keep eval.matrix on")
    n = max(len(R[0]) if R else 0, max((len(a) for _, a in per), default=0))
    ends = _experience_ends(m, len(R)) if R else None
    fig = _figure(8.5, 4.6)
    ax = fig.subplots()
    colors = _colors(n)
    for j in range(n):
        pts = [(at, a[j]) for at, a in per if len(a) > j]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[j], lw=1.6,
                    label=f"experience {j}")
        if R and ends is not None:
            rows = [(ends[i], R[i][j]) for i in range(len(R)) if i >= j]
            ax.plot([p[0] for p in rows], [p[1] for p in rows], "o", color=colors[j], ms=5,
                    ls="-" if not pts else "none", label=None if pts else f"experience {j}")
        elif R:
            rows = [(i, R[i][j]) for i in range(len(R)) if i >= j]
            ax.plot([p[0] for p in rows], [p[1] for p in rows], "o-", color=colors[j], ms=5,
                    label=f"experience {j}")
    if ends is not None:
        for i, cp in enumerate(ends[:-1]):
            ax.axvline(cp, color="grey", ls=":", lw=0.9,
                       label="experience boundary" if i == 0 else None)
        ax.set_xlabel("training samples seen")
    else:
        ax.set_xlabel("training samples seen" if per else "after training on experience")
    if per and R and ends is not None:
        from matplotlib.lines import Line2D

        ax.add_line(Line2D([], [], color="black", lw=1.6, label="anytime evaluation"))
        ax.add_line(Line2D([], [], color="black", marker="o", ls="none",
                           label="after the experience ended"))
    ax.set(ylabel="held-out accuracy (fraction correct)", ylim=(-0.02, 1.02),
           title="Each experience's test accuracy over training")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return fig


def figure_accuracy_over_time(m: dict[str, Any]) -> Any:
    """Anytime (held-out) and prequential (test-then-train) accuracy over the stream, with
    the true change points and the detected boundaries."""
    anytime = m.get("anytime_accuracy") or []
    preq = m.get("prequential_windows") or []
    if not anytime and not preq:
        raise ConfigError("metrics.json has neither anytime_accuracy nor prequential_windows; "
                          "set eval.every or keep eval.prequential on")
    fig = _figure(8.5, 4.6)
    ax = fig.subplots()
    if preq:
        ax.plot([p[0] for p in preq], [p[1] for p in preq], color="tab:orange", lw=1.4,
                marker="s" if len(preq) < 60 else None, ms=4,  # a single window stays visible
                label="prequential (test-then-train, per window)")
    if anytime:
        ax.plot([p[0] for p in anytime], [p[1] for p in anytime], color="tab:blue", lw=1.8,
                marker="." if len(anytime) < 60 else None,
                label="anytime (held-out, seen experiences)")
    for i, cp in enumerate(m.get("true_change_points") or []):
        ax.axvline(cp, color="grey", ls=":", lw=1.2, label="true boundary" if i == 0 else None)
    for i, b in enumerate(m.get("boundaries_detected") or []):
        ax.axvline(b, color="tab:red", ls="--", lw=1.0,
                   label="detected boundary" if i == 0 else None)
    ax.set(xlabel="training samples seen", ylabel="accuracy (fraction correct)",
           ylim=(-0.02, 1.02), title="Accuracy over time")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    return fig


def _err(h: float | None) -> float:
    return 0.0 if h is None else h


def figure_accuracy_vs_throughput(grid: Grid) -> Any:
    """Final accuracy against training throughput, one point per cell (strategy and axis
    values), one panel per stream; error bars are 95 % CIs over seeds on both axes."""
    streams = grid.streams
    fig = _figure(5.2 * len(streams) + 2.6, 4.6)
    axes = fig.subplots(1, len(streams), squeeze=False)[0]
    labels = list(dict.fromkeys(c.label for c in grid.cells))
    colors = dict(zip(labels, _colors(len(labels))))
    drawn: dict[str, Any] = {}
    for ax, stream in zip(axes, streams):
        xs = []
        for c in (c for c in grid.cells if c.stream == stream):
            x, xh, _ = c.stat("samples_per_second")
            y, yh, n = c.stat("final_avg_accuracy")
            if x is None or y is None:
                continue
            xs.append(x)
            h = ax.errorbar(x, y, xerr=_err(xh), yerr=_err(yh), fmt="o", ms=7, capsize=4,
                            color=colors[c.label], label=c.label)
            drawn.setdefault(c.label, h)
        if xs and max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale("log")
        else:  # a wide interval is cut at the axis, not drawn into negative throughput
            ax.set_xlim(left=max(ax.get_xlim()[0], 0.0))
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, -0.02), min(hi, 1.02))  # accuracy lives in [0, 1]
        ax.set(xlabel="throughput (training samples / s)", ylabel="final average accuracy",
               title=f"stream {stream}")
        ax.grid(alpha=0.3)
    fig.legend(list(drawn.values()), list(drawn), loc="outside right center", frameon=False,
               fontsize=9, title="strategy")
    fig.suptitle("Accuracy vs throughput (mean over seeds, bars: 95 % CI)")
    return fig


def figure_accuracy_forgetting(grid: Grid) -> Any:
    """Bars of final average accuracy and average forgetting per cell, 95 % CIs over seeds."""
    import numpy as np

    streams = grid.streams
    fig = _figure(max(7.0, 0.55 * len(grid.cells) * 2 + 3.0), 4.8)
    axes = fig.subplots(1, 2)
    labels = list(dict.fromkeys(c.label for c in grid.cells))
    colors = dict(zip(labels, _colors(len(labels))))
    width = 0.8 / max(len(labels), 1)
    for ax, key, name in ((axes[0], "final_avg_accuracy", "final average accuracy"),
                          (axes[1], "avg_forgetting", "average forgetting")):
        for k, label in enumerate(labels):
            means, errs, pos = [], [], []
            for s_i, stream in enumerate(streams):
                cell = next((c for c in grid.cells if c.stream == stream and c.label == label),
                            None)
                if cell is None:
                    continue
                mu, h, _ = cell.stat(key)
                if mu is None:
                    continue
                means.append(mu)
                errs.append(_err(h))
                pos.append(s_i + (k - (len(labels) - 1) / 2) * width)
            if means:
                ax.bar(pos, means, width * 0.92, yerr=errs, capsize=3, color=colors[label],
                       label=label if ax is axes[0] else None, edgecolor="black", lw=0.4)
        ax.set_xticks(np.arange(len(streams)), [f"stream {s}" for s in streams])
        ax.set(ylabel=f"{name} (fraction)", title=name)
        ax.grid(axis="y", alpha=0.3)
        ax.axhline(0, color="black", lw=0.6)
    axes[0].set_ylim(0, 1.05)
    lo, hi = axes[1].get_ylim()
    axes[1].set_ylim(max(lo, -1.05), min(hi, 1.05))  # forgetting lives in [-1, 1]
    fig.legend(loc="outside right center", frameon=False, fontsize=9, title="strategy")
    fig.suptitle("Final accuracy and forgetting (mean over seeds, bars: 95 % CI)")
    return fig


def run_figures(m: dict[str, Any]) -> dict[str, Any]:
    """``name -> Figure`` for one run: only the figures its metrics can draw."""
    out: dict[str, Any] = {}
    if m.get("accuracy_matrix"):
        out["accuracy_matrix"] = figure_accuracy_matrix(m)
    if m.get("accuracy_matrix") or m.get("anytime_per_experience"):
        out["experience_accuracy"] = figure_experience_accuracy(m)
    if m.get("anytime_accuracy") or m.get("prequential_windows"):
        out["accuracy_over_time"] = figure_accuracy_over_time(m)
    if not out:
        raise ConfigError("metrics.json has no accuracy matrix, anytime accuracy nor "
                          "prequential windows; nothing to draw")
    return out


def _has(grid: Grid, *keys: str) -> bool:
    return any(all(c.stat(k)[0] is not None for k in keys) for c in grid.cells)


def grid_figures(grid: Grid) -> dict[str, Any]:
    """``name -> Figure`` for a grid: only those its rows can draw (rows written by an older
    ``lifelong bench`` have no throughput)."""
    out: dict[str, Any] = {}
    if _has(grid, "samples_per_second", "final_avg_accuracy"):
        out["accuracy_vs_throughput"] = figure_accuracy_vs_throughput(grid)
    if _has(grid, "final_avg_accuracy") or _has(grid, "avg_forgetting"):
        out["accuracy_forgetting"] = figure_accuracy_forgetting(grid)
    if not out:
        raise ConfigError(f"{grid.path}: its finished runs have neither final_avg_accuracy nor "
                          "samples_per_second; nothing to draw")
    return out


def save(figures: dict[str, Any], out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write each figure as ``out_dir/<name>.<format>``; returns the paths."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"--format {','.join(bad)}: unknown; choose from {', '.join(FORMATS)}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create it ({exc.strerror or exc})") from exc
    paths = []
    for name, fig in figures.items():
        for fmt in formats:
            p = out_dir / f"{name}.{fmt}"
            fig.savefig(p, dpi=DPI, format=fmt)
            paths.append(p)
    return paths


def plot_run(path: str | Path, out: str | Path | None = None,
             formats: Sequence[str] = FORMATS) -> list[Path]:
    """The figures of the run in ``path`` (a run directory or its metrics.json), written to
    ``out`` (default: the run directory's ``plots/``)."""
    m, run_dir = load_run(path)
    return save(run_figures(m), Path(out) if out else run_dir / "plots", formats)


def plot_grid(path: str | Path, out: str | Path | None = None,
              formats: Sequence[str] = FORMATS) -> list[Path]:
    """The figures of the grid in ``path``, written to ``out`` (default: its ``plots/``)."""
    grid = load_grid(path)
    return save(grid_figures(grid), Path(out) if out else grid.path / "plots", formats)


def plot_path(path: str | Path, out: str | Path | None = None,
              formats: Sequence[str] = FORMATS) -> list[Path]:
    """:func:`plot_grid` for a grid directory, :func:`plot_run` for anything else."""
    return (plot_grid if is_grid(path) else plot_run)(path, out, formats)
