"""``lifelong run|bench|list|plot|report|serve|tune``: parse, validate, call the library, render.

User mistakes (bad YAML, unknown keys or names, plugins that cannot
compose, bad data) print one line ``error: ...`` and exit with status 2;
an interrupted run exits with 130.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError, LifelongError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _console(quiet: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=False, quiet=quiet, highlight=False)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def check_out_dir(out: str) -> Path:
    """Create ``out`` and prove it is writable, before any training starts."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); "
                          "choose a writable directory with free space") from exc
    return path


def _total_samples(stream: Any, epochs: int) -> int | None:
    """Training samples of the run, for the progress bar: ``None`` only when unknowable."""
    n = stream.meta.get("n_train") if hasattr(stream, "meta") else None
    if n is None and getattr(stream, "n_experiences", None) is not None:
        sizes = [getattr(e, "n_samples", None) for e in stream.experiences()]
        n = None if any(k is None for k in sizes) else sum(sizes)
    return None if n is None else n * epochs


def parse_every(value: str | None) -> tuple[int, float]:
    """``"100"`` -> every 100 batches; ``"30s"`` -> every 30 seconds."""
    if not value:
        return 0, 0.0
    try:
        if value.endswith("s"):
            secs = float(value[:-1])
            if not (math.isfinite(secs) and secs > 0):
                raise ValueError
            return 0, secs
        n = int(value)
        if n <= 0:
            raise ValueError
        return n, 0.0
    except ValueError:
        raise ConfigError(f"--checkpoint-every {value!r}: expected a number of batches (100) or "
                          "seconds (30s)") from None


class _Interrupted(Exception):
    pass


def _counter(payload: dict[str, Any], key: str) -> int:
    """A counter of a checkpoint for display (0 if unreadable; the load itself checks them)."""
    c = payload["learner"].get("counters") if isinstance(payload["learner"], dict) else None
    v = c.get(key) if isinstance(c, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


RUN_FILES = ("checkpoint.pt", "metrics.json", "model.pt", "model.json")


def check_no_other_run(out: str, *, overwrite: bool) -> None:
    """Refuse to start a new run in a directory holding another run's checkpoint or results.

    With ``overwrite`` the old run's files are removed first, so that a later
    ``--resume`` of the directory cannot pick up the old checkpoint.
    """
    path = Path(out)
    found = [f for f in RUN_FILES if (path / f).exists()]
    if not found:
        return
    if not overwrite:
        raise ConfigError(f"--out {out} already holds a run ({', '.join(found)}); resume it with "
                          f"`lifelong run --resume {out}`, choose another --out, or pass "
                          "--overwrite to replace it")
    for f in found:
        try:
            (path / f).unlink()
        except OSError as exc:
            raise ConfigError(f"--overwrite: cannot remove {path / f} "
                              f"({exc.strerror or exc})") from exc


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import time
    import warnings

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from lifelong.checkpoint import (
        Checkpointer,
        check_compatible,
        check_free_space,
        estimate_bytes,
        load_checkpoint,
        threads_warning,
    )
    from lifelong.config import apply_overrides, load_yaml
    from lifelong.errors import CheckpointError
    from lifelong.run import build, collect_metrics, write_metrics, write_model

    console = _console(args.quiet)
    payload = None
    if args.resume:
        payload = load_checkpoint(args.resume)
        if payload["finished"]:
            raise CheckpointError(f"the run in {args.resume} already finished; its metrics are "
                                  "in metrics.json there")
        raw = (payload["config"] if args.config is None
               else apply_overrides(load_yaml(args.config), args.set or []))
        out_arg = args.out or args.resume
    elif args.config is None:
        raise ConfigError("lifelong run needs a CONFIG file (or --resume DIR)")
    else:
        raw = apply_overrides(load_yaml(args.config), args.set or [])
        out_arg = args.out
    if args.threads is not None:
        value = args.threads if args.threads == "auto" else _int_arg("--threads", args.threads)
        raw = {**raw, "train": {**(raw.get("train") or {}), "threads": value}}
    ck = raw.get("checkpoint") if isinstance(raw.get("checkpoint"), dict) else {}
    from lifelong.validation import check_number

    if "every" in ck:
        check_number("", "checkpoint.every", ck["every"], min=0, integer=True)
    if "every_seconds" in ck:
        check_number("", "checkpoint.every_seconds", ck["every_seconds"], min=0.0)
    every, every_s = parse_every(args.checkpoint_every)
    if not (every or every_s) and payload is not None and args.checkpoint_every is None:
        every, every_s = payload["schedule"]["every"], payload["schedule"]["every_seconds"]
    elif not (every or every_s):
        every, every_s = int(ck.get("every", 0) or 0), float(ck.get("every_seconds", 0) or 0)
    out_arg = out_arg or ck.get("dir")
    if (every or every_s) and not out_arg:
        raise ConfigError("--checkpoint-every needs --out DIR to write checkpoints to")
    if out_arg:
        same = payload is not None and Path(out_arg).resolve() == Path(args.resume).resolve()
        if not same:
            check_no_other_run(out_arg, overwrite=args.overwrite)
    out = check_out_dir(out_arg) if out_arg else None
    run = build(raw, resumed_threads=None if payload is None else payload.get("torch_threads"))
    if payload is not None:
        check_compatible(payload, run.config, args.resume)
        run.learner.continue_timing(payload.get("timing"))
        warning = threads_warning(payload)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    checkpointer = None
    if every or every_s or (payload is not None and out is not None):
        # a resumed run keeps the original schedule and marks its last checkpoint finished
        assert out is not None
        check_free_space(out, estimate_bytes(run.learner))
        checkpointer = Checkpointer(out, run.config, every=every, every_seconds=every_s)
    total = _total_samples(run.stream, run.learner.epochs)
    where = f"resuming at batch {_counter(payload, 'step_index')}" if payload else ""
    console.print(f"[bold]lifelong run[/bold] {args.config or args.resume}: {run.stream!r} on "
                  f"{run.learner.device} with {run.threads} thread(s) ({run.threads_rule}), plugins: "
                  f"{', '.join(type(p).__name__ for p in run.plugins) or 'none (fine-tuning)'}"
                  f"{'; ' + where if where else ''}")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} samples/s"), TimeElapsedColumn(),
               TimeRemainingColumn()]
    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        del frame
        if stop["flag"]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    learner = run.learner
    try:
        with Progress(*columns, console=console, disable=args.quiet) as bar:
            done0 = _counter(payload, "samples_seen") if payload else 0
            task = bar.add_task("training", total=total, rate="-", completed=done0)
            t0 = time.perf_counter()

            def progress(n: int) -> None:
                rate = (bar.tasks[0].completed - done0) / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, advance=n, rate=f"{rate:,.0f}")
                if checkpointer is not None:
                    checkpointer.after_batch(learner)
                if stop["flag"]:
                    raise _Interrupted

            with warnings.catch_warnings():  # the thread-count warning was printed above
                warnings.filterwarnings("ignore", message="the checkpoint was written with")
                learner.fit(run.stream, progress=progress,
                            state=payload["learner"] if payload else None)
    except _Interrupted:
        if out is None:
            console.print("interrupted; nothing saved (run with --out DIR --checkpoint-every N "
                          "to be able to resume)")
            return EXIT_INTERRUPTED
        path = (checkpointer or Checkpointer(out, run.config)).save(learner)
        print(f"interrupted after batch {learner.step_index}; state saved to {path}; resume with: "
              f"lifelong run --resume {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    metrics = collect_metrics(run)
    _render_result(console, metrics)
    if out is not None:
        path = write_metrics(metrics, out)
        write_model(learner, out, run)
        if checkpointer is not None:
            checkpointer.save(learner, finished=True)
        console.print(f"metrics written to {path}")
    return 0


def _int_arg(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag} takes a whole number or 'auto', got {text!r}") from None


def _render_result(console: Any, m: dict[str, Any]) -> None:
    from rich.table import Table

    R = m.get("accuracy_matrix") or []
    if R:
        t = Table(title="accuracy matrix (row: after experience i, column: test on j)")
        t.add_column("after")
        for j in range(len(R[0])):
            t.add_column(f"exp {j}", justify="right")
        for i, row in enumerate(R):
            t.add_row(str(i), *[f"{v:.3f}" for v in row])
        console.print(t)
    s = Table(title="results")
    s.add_column("metric")
    s.add_column("value", justify="right")
    for key in ("final_avg_accuracy", "final_avg_accuracy_task_il", "avg_forgetting", "bwt",
                "fwt", "prequential_accuracy", "avg_anytime_accuracy", "samples_seen",
                "samples_per_second", "wall_time_s", "peak_rss_mb", "skipped_batches"):
        if key in m and m[key] is not None:
            s.add_row(key, _fmt(m[key]))
    console.print(s)


PLURALS = {"stream": "streams", "backbone": "backbones", "plugin": "plugins",
           "strategy": "strategies"}


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lifelong.registry import KINDS, get_registry

    reg = get_registry()
    console = _console()
    singular = {v: k for k, v in PLURALS.items()}
    kinds = [singular.get(args.kind, args.kind)] if args.kind else list(KINDS)
    for kind in kinds:
        t = Table(title=PLURALS[kind])
        grouped = kind == "plugin"
        entries = reg.entries(kind)
        rows = []
        if grouped:  # built-in families first, alphabetically; installed packages after
            entries = sorted(entries, key=lambda e: (e.origin != "built-in", e.family, e.name))
        for i, e in enumerate(entries):
            params = "\n".join(f"{k}={p.default!r}" if p.default is not p.empty else k
                                for k, p in e.parameters().items()
                                if k not in ("input_shape", "num_classes"))
            first = i == 0 or entries[i - 1].family != e.family
            last = i + 1 == len(entries) or entries[i + 1].family != e.family
            family = [(e.family or "-") if first else ""] if grouped else []
            rows.append(([*family, e.name, e.origin, params, e.summary], grouped and last))
        # every column but the summary as wide as its longest line: nothing is ever cut
        heads = (["family"] if grouped else []) + ["name", "from", "parameters"]
        widths = [max([len(h)] + [len(line) for r, _ in rows for line in r[c].splitlines()])
                  for c, h in enumerate(heads)]
        for h, w in zip(heads, widths):
            t.add_column(h, no_wrap=True, min_width=w)
        t.add_column("summary", overflow="fold", min_width=24)
        for r, end in rows:
            t.add_row(*r, end_section=end)
        console.width = max(console.width, sum(widths) + 24 + 3 * len(widths) + 4)
        console.print(t)
    for key, err in reg.broken.items():
        console.print(f"not loaded: {key}: {err}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Strategies x streams x axes x seeds: see :mod:`lifelong.bench`."""
    if getattr(args, "against", None) == "avalanche":  # each cell through Avalanche too
        from lifelong.compare.avalanche import bench_against

        return bench_against(args)
    from lifelong.bench.command import cmd_bench as bench

    return bench(args)


def cmd_plot(args: argparse.Namespace) -> int:
    """Figures of a run or of a grid (PNG and SVG); with ``--html`` a grid's report too."""
    from lifelong.report import grid_report, plot_path
    from lifelong.report.data import GRID_FILE, is_grid

    if args.html and not is_grid(args.path):
        raise ConfigError(f"--html: {args.path} is not a grid directory (no {GRID_FILE}); the "
                          "HTML report is of a `lifelong bench --out DIR` grid")
    formats = [f.strip() for f in (args.format or "png,svg").split(",") if f.strip()]
    paths = plot_path(args.path, args.out, formats)
    if args.html:
        paths.append(grid_report(args.path, Path(paths[0]).parent / "report.html"))
    _console().print("written: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The self-contained HTML report of a grid (tables and figures in one file)."""
    from lifelong.report import grid_report

    _console().print(f"report written to {grid_report(args.grid, args.out)}")
    return 0


def _seed_list(flag: str, text: str) -> list[int]:
    try:
        return [int(s.strip()) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give comma-separated integers, e.g. 0,1,2") from None


def cmd_tune(args: argparse.Namespace) -> int:
    """Optuna search on the first experiences, then the best setting on fresh seeds."""
    from lifelong import tune
    from lifelong.config import apply_overrides, load_yaml

    tune._optuna()  # the extra is missing: say so before anything else
    base = apply_overrides(load_yaml(args.config), args.set or [])
    space = tune.parse_space(args.param or [], load_yaml(args.space) if args.space else None)
    console = _console(args.quiet)
    out = check_out_dir(args.out)
    result = tune.tune(
        base, space, n_trials=args.n_trials, tune_experiences=args.tune_experiences, out_dir=out,
        seeds=_seed_list("--seeds", args.seeds),
        final_seeds=_seed_list("--final-seeds", args.final_seeds), final_on=args.final_on,
        metric=args.metric, direction=args.direction,
        study_name=args.study_name or Path(args.config).stem, storage=args.storage,
        sampler_seed=args.sampler_seed,
        on_trial=lambda r: console.print(f"trial {r['number']}: {r['state']} value="
                                         f"{_fmt(r['value'])} {r['error'] or ''}".rstrip()))
    tune.render(result, console)
    console.print(f"results: {out / 'tune.json'}; study: {result.storage}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from lifelong import __version__

    p = argparse.ArgumentParser(prog="lifelong", description="Continual learning on data streams.")
    p.add_argument("--version", action="version", version=f"lifelong {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one experiment from a YAML config")
    r.add_argument("config", nargs="?", help="YAML run config (optional with --resume)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    r.add_argument("--out", help="directory for metrics.json, model.pt and checkpoints")
    r.add_argument("--checkpoint-every", metavar="N|Ns",
                   help="write a checkpoint every N batches, or every N seconds with a trailing s")
    r.add_argument("--resume", metavar="DIR",
                   help="continue the run checkpointed in DIR (keeps its checkpoint schedule "
                        "unless --checkpoint-every is given)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace another run's checkpoint and results in --out (refused otherwise)")
    r.add_argument("--quiet", action="store_true", help="no progress bar or tables")
    r.add_argument("--threads", metavar="N|auto",
                   help="CPU threads (sets train.threads; default auto: a rule from the step's FLOPs)")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list streams, backbones, plugins and strategies")
    ls.add_argument("kind", nargs="?", choices=("stream", "backbone", "plugin", "strategy",
                                               *PLURALS.values()))
    ls.set_defaults(func=cmd_list)
    b = sub.add_parser("bench", help="strategies x streams x axes x seeds; rows, resume, summary")
    b.add_argument("--config", help="base YAML config")
    b.add_argument("--strategies", help="comma-separated strategy names (a+b: a plugin list)")
    b.add_argument("--streams", help="comma-separated stream names (default: the config's)")
    b.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key; a list value is an axis: strategy.mem_size=[200,500]")
    b.add_argument("--out", help="directory for bench_runs.jsonl/.csv, runs/<hash>/, bench.json")
    b.add_argument("--quiet", action="store_true", help="plain lines instead of the progress view")
    from lifelong.bench.command import add_arguments as bench_arguments

    bench_arguments(b)
    b.add_argument("--against", choices=("avalanche",),
                   help="also run each cell through Avalanche's implementation of the same "
                        "strategy and show both (needs pip install 'lifelong[avalanche]')")
    b.set_defaults(func=cmd_bench)
    tu = sub.add_parser("tune", help="tune hyper-parameters on the first experiences (Optuna), "
                                     "report the best on the rest with fresh seeds")
    tu.add_argument("config", help="base YAML run config")
    tu.add_argument("--param", action="append", metavar="KEY=DIST:ARGS",
                    help="a search dimension: uniform:lo:hi, loguniform:lo:hi, int:lo:hi, "
                         "intlog:lo:hi or categorical:a,b,c (e.g. train.lr=loguniform:0.001:0.3)")
    tu.add_argument("--space", metavar="FILE", help="YAML mapping key: dist:args (or a list)")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    tu.add_argument("--n-trials", type=int, default=20, help="trials in the study, in all")
    tu.add_argument("--tune-experiences", type=int, default=3,
                    help="tune on the first K experiences only (A-GEM's protocol: 3)")
    tu.add_argument("--seeds", default="0", help="tuning seeds (comma-separated)")
    tu.add_argument("--final-seeds", default="1,2,3",
                    help="fresh seeds for the reported runs, disjoint from --seeds")
    tu.add_argument("--final-on", choices=("rest", "all"), default="rest",
                    help="report on the experiences after the tuned ones (the paper's) or on all")
    tu.add_argument("--metric", default="final_avg_accuracy", help="a key of metrics.json")
    tu.add_argument("--direction", choices=("maximize", "minimize"), default="maximize")
    tu.add_argument("--study-name", help="default: the config file's name")
    tu.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    tu.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    tu.add_argument("--out", required=True, help="directory for study.db and tune.json")
    tu.add_argument("--quiet", action="store_true")
    tu.set_defaults(func=cmd_tune)
    pl = sub.add_parser("plot", help="figures of a run or a bench grid (PNG, SVG)")
    pl.add_argument("path", help="a run's --out directory (or its metrics.json), or a bench "
                                 "--out directory (bench_runs.jsonl)")
    pl.add_argument("--out", help="directory for the figures (default: PATH/plots)")
    pl.add_argument("--format", default="png,svg", help="comma-separated: png, svg")
    pl.add_argument("--html", action="store_true", help="a grid: also the HTML report")
    pl.set_defaults(func=cmd_plot)
    rp = sub.add_parser("report", help="one self-contained HTML report of a bench grid")
    rp.add_argument("grid", help="a bench --out directory (bench_runs.jsonl)")
    rp.add_argument("--out", help="HTML file (default: GRID/report.html)")
    rp.set_defaults(func=cmd_report)
    from lifelong.serve.app import add_arguments, cmd_serve

    sv = sub.add_parser("serve", help="serve one learner over HTTP: /predict, /learn, /metrics")
    add_arguments(sv)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LifelongError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
