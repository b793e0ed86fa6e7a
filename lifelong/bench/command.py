"""``lifelong bench``: expand and validate the grid, run it on a backend, write rows, summarize."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lifelong.bench.grid import Cell, expand, grid_from_args
from lifelong.bench.rows import RowLog, make_row
from lifelong.bench.runner import BACKENDS, Outcome, run_cells
from lifelong.bench.summary import render, summarize
from lifelong.errors import ConfigError, LifelongError

__all__ = ["add_arguments", "cmd_bench"]

EXIT_USER_ERROR = 2


def add_arguments(b: argparse.ArgumentParser) -> None:
    """The grid and backend flags of ``lifelong bench`` (the base flags live in ``lifelong.cli``)."""
    b.add_argument("grid", nargs="?", help="grid YAML file (config, strategies, streams, seeds, "
                                           "axes); flags given on top replace its keys")
    b.add_argument("--grid", dest="grid_file", metavar="GRID.yaml", help="the grid file, as a flag")
    b.add_argument("--workers", type=int, metavar="N",
                   help="run N runs at a time in local processes, each with cores // N threads")
    b.add_argument("--backend", choices=BACKENDS,
                   help="in-process (default), workers (with --workers), or ray (each run a Ray "
                        "task; needs lifelong[ray])")
    b.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to run on (ray://HOST:10001, auto); default: a local instance")
    b.add_argument("--extend", action="store_true",
                   help="add this grid's runs to an --out that holds runs of another grid")


def _backend(args: argparse.Namespace) -> tuple[str, int | None]:
    workers = getattr(args, "workers", None)
    backend = getattr(args, "backend", None)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: give a number of processes >= 1")
    if getattr(args, "ray_address", None) and backend != "ray":
        raise ConfigError("--ray-address needs --backend ray")
    if backend is None:
        backend = "workers" if workers and workers > 1 else "in-process"
    if backend == "workers" and workers is None:
        from lifelong.threads import available_cores

        workers = available_cores()
    if backend == "in-process" and workers not in (None, 1):
        raise ConfigError(f"--backend in-process runs one run at a time; drop --workers {workers} "
                          "or use --backend workers")
    return backend, workers


class _View:
    """Runs done / running / failed and the ETA: a rich bar on a terminal, else one line per run."""

    def __init__(self, console: Any, total: int, *, live: bool) -> None:
        self.total, self.done, self.failed, self.running = total, 0, 0, 0
        self.t0 = time.perf_counter()
        self.bar: Any = None
        if live and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("runs"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[running]} running, "
                                           "{task.fields[failed]} failed"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=console)
            self.task = self.bar.add_task("runs", total=total, running=0, failed=0)

    def __enter__(self) -> _View:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start(self, running: int) -> None:
        self.running = running
        if self.bar is not None:
            self.bar.update(self.task, running=running)

    def finish(self, cell: Cell, outcome: Outcome, running: int) -> None:
        self.done += 1
        self.failed += outcome.status == "failed"
        self.running = running
        if self.bar is not None:
            self.bar.update(self.task, advance=1, running=running, failed=self.failed)
            if outcome.status == "failed":
                self.bar.console.print(f"failed: {cell.describe()}: {outcome.error}")
            return
        elapsed = time.perf_counter() - self.t0
        left = (self.total - self.done) * elapsed / self.done
        m = outcome.metrics or {}
        what = (f"accuracy {m['final_avg_accuracy']:.4f}"
                if isinstance(m.get("final_avg_accuracy"), float) else "done")
        if outcome.status == "failed":
            what = f"failed: {outcome.error}"
        print(f"[{self.done}/{self.total}] {cell.describe()}: {what}; {running} running, "
              f"{self.failed} failed, ETA {_clock(left)}", flush=True)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def cmd_bench(args: argparse.Namespace) -> int:
    """Strategies x streams x axes x seeds; rows as runs finish; mean +- 95 % CI per cell.

    The whole grid is validated before the first run; a run that fails is a
    failed row and the others go on (exit 2 at the end, listing them); an
    ``--out`` holding rows of this grid resumes it, skipping finished runs.
    """
    from lifelong.cli import _console, check_out_dir
    from lifelong.run import write_metrics

    console = _console(args.quiet)
    backend, workers = _backend(args)
    notes: list[str] = []
    cells = expand(grid_from_args(args), notes=notes)
    if backend == "ray":
        from lifelong.bench.runner import _ray

        _ray()  # the missing extra is one line, before anything runs
    out = check_out_dir(args.out) if args.out else None
    for n in notes:
        print(f"note: {n}", flush=True)

    def warn(msg: str) -> None:
        print(f"warning: {msg}", file=sys.stderr, flush=True)

    log = RowLog(out, warn=warn) if out is not None else None
    rows = log.latest() if log is not None else {}
    hashes = {c.hash for c in cells}
    foreign = [r for h, r in rows.items() if h not in hashes]
    if foreign and not getattr(args, "extend", False):
        r = foreign[0]
        raise ConfigError(f"--out {args.out} holds {len(foreign)} run(s) of another grid (e.g. "
                          f"{r.get('strategy')} on {r.get('stream')}, seed {r.get('seed')}); "
                          "choose another --out, or pass --extend to add this grid's runs beside "
                          "them (nothing was changed)")
    todo = [c for c in cells if rows.get(c.hash, {}).get("status") != "ok"]
    if len(todo) < len(cells):
        again = sum(1 for c in todo if c.hash in rows)
        print(f"resuming {args.out}: {len(cells) - len(todo)} of {len(cells)} runs already "
              f"finished there are skipped{f'; {again} failed run(s) run again' if again else ''}",
              flush=True)
    failures: list[str] = []
    finished = [0]

    def done(cell: Cell, outcome: Outcome, running: int) -> None:
        run_dir = None
        if outcome.status == "ok" and out is not None:
            assert outcome.metrics is not None
            rel = f"runs/{cell.hash}/"
            try:
                Path(out, rel).mkdir(parents=True, exist_ok=True)
                write_metrics(outcome.metrics, Path(out, rel))
                run_dir = rel
            except (LifelongError, OSError) as exc:
                outcome = Outcome("failed", outcome.metrics, f"cannot write {rel}metrics.json: {exc}")
        row = make_row(cell, status=outcome.status, error=outcome.error, metrics=outcome.metrics,
                       run_dir=run_dir, backend=backend)
        if log is not None:
            log.append(row)
        rows[cell.hash] = row
        finished[0] += 1
        if outcome.status == "failed":
            failures.append(f"{cell.describe()}: {outcome.error}"[:400])
        view.finish(cell, outcome, running)

    live = console.is_terminal and not args.quiet
    try:
        with _View(console, len(todo), live=live) as view:
            run_cells(todo, backend=backend, workers=workers,
                      ray_address=getattr(args, "ray_address", None), on_done=done,
                      on_start=lambda _c, n: view.start(n))
    except KeyboardInterrupt:
        if log is not None:
            print(f"interrupted after {finished[0]} of {len(todo)} runs; their rows are in "
                  f"{log.jsonl}; run the same command again to resume", file=sys.stderr)
        raise
    summary = summarize(cells, rows)
    seeds = sorted({c.seed for c in cells})
    table = render(summary, title=f"benchmark: {len(cells)} runs, {len(seeds)} seed(s); "
                                  "mean ± 95 % CI (Student t over seeds)")
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(1000), table).maximum
    console.width = max(console.width, need)  # no cell is cut
    console.print(table)
    return finish(out, "bench.json", summary, failures, len(todo))


def finish(out: Path | None, name: str, payload: Any, failures: list[str], total: int) -> int:
    """Write ``payload`` as ``out/name`` (atomically; nothing without ``out``), report the
    failed runs; the exit status (2 when any of the ``total`` runs failed)."""
    if out is not None:
        from lifelong.run import _atomic_write

        text = json.dumps(payload, indent=2, default=str)
        _atomic_write(out / name, lambda tmp: tmp.write_text(text),
                      fix="free space or choose another --out")
    if failures:
        for f in failures:
            print(f"failed: {f}", file=sys.stderr)
        print(f"error: {len(failures)} of {total} runs failed (their rows say which); the "
              "others finished", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
