"""Where the runs of a grid execute: in this process, in N local processes, or as Ray tasks.

Every backend hands each finished run back to the caller as it finishes
(``on_done``), so the parent process alone writes rows and files. A run
that raises is an :class:`Outcome` with status ``"failed"`` and the
error's first line; the other runs go on.

- ``in-process`` (the default): one run after another.
- ``workers``: ``concurrent.futures.ProcessPoolExecutor`` with the spawn
  start method (a fresh interpreter: no state or thread pool inherited);
  each run gets ``max(1, cores // N)`` threads through ``train.threads``
  unless the config sets them.
- ``ray``: each run a Ray task (``num_cpus`` = its threads: ``train.threads``
  when the config sets a number, else 1) on the cluster at ``address``, or
  on a local instance started for the grid (``num_cpus`` = ``workers`` when
  given) and shut down after it; results come back as they finish
  (``ray.wait``). Ray is the optional extra ``lifelong[ray]``, imported only
  here and only when asked.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lifelong.errors import ConfigError, LifelongError

__all__ = ["BACKENDS", "Outcome", "execute", "run_cells", "thread_share"]

BACKENDS = ("in-process", "workers", "ray")
RAY_MISSING = ("--backend ray needs Ray, an optional extra: pip install 'lifelong[ray]' "
               "(or use --workers N for local processes)")


@dataclass
class Outcome:
    """What came back from one run."""

    status: str  # "ok" | "failed"
    metrics: dict[str, Any] | None = None
    error: str | None = None


def error_line(exc: BaseException) -> str:
    """The one line a failed row records: the message, with the type unless it is our own error."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = "" if isinstance(exc, LifelongError) else f"{type(exc).__name__}: "
    return f"{kind}{msg}"[:300]


def execute(raw: dict[str, Any]) -> Outcome:
    """Run one config (any process); never raises except KeyboardInterrupt."""
    import lifelong.run as run_mod  # looked up at call time: tests replace run_config

    try:
        return Outcome("ok", run_mod.run_config(raw))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the grid
        return Outcome("failed", error=error_line(exc))


def thread_share(workers: int, cores: int | None = None) -> int:
    """Threads of each of ``workers`` concurrent runs: ``max(1, cores // workers)``."""
    from lifelong.threads import available_cores

    return max(1, (cores or available_cores()) // max(1, workers))


def with_threads(cell: Any, threads: int) -> dict[str, Any]:
    """The cell's run config with ``train.threads = threads`` unless the config sets them."""
    raw = copy.deepcopy(cell.raw)
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    if "threads" not in train or train["threads"] == "auto":
        raw["train"] = {**train, "threads": threads}
    return raw


Done = Callable[[Any, Outcome, int], None]


def run_cells(cells: Sequence[Any], *, backend: str = "in-process", workers: int | None = None,
              ray_address: str | None = None, on_done: Done,
              on_start: Callable[[Any, int], None] | None = None) -> None:
    """Run ``cells``; ``on_done(cell, outcome, running)`` as each finishes (running: still in flight)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: one of {', '.join(BACKENDS)}")
    if backend == "in-process":
        for c in cells:
            if on_start is not None:
                on_start(c, 1)
            on_done(c, execute(c.raw), 0)
    elif backend == "workers":
        _run_workers(cells, workers or thread_share(1), on_done, on_start)
    else:
        _run_ray(cells, ray_address, workers, on_done, on_start)


def _run_workers(cells: Sequence[Any], workers: int, on_done: Done,
                 on_start: Callable[[Any, int], None] | None) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    share = thread_share(workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {}
        for c in cells:
            pending[pool.submit(execute, with_threads(c, share))] = c
        if on_start is not None:
            on_start(None, min(workers, len(pending)))
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                c = pending.pop(fut)
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker process that died
                    outcome = Outcome("failed", error=f"the worker process ended abruptly "
                                                      f"({error_line(exc)})")
                on_done(c, outcome, min(workers, len(pending)))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def _run_ray(cells: Sequence[Any], address: str | None, workers: int | None, on_done: Done,
             on_start: Callable[[Any, int], None] | None) -> None:
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None and workers is not None:
            opts["num_cpus"] = workers
        try:
            ray.init(address=address, **opts)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise ConfigError(f"--backend ray: cannot start or reach {where} ({error_line(exc)}); "
                              "check --ray-address (e.g. ray://HOST:10001 or auto)") from exc
    pending: dict[Any, Any] = {}
    try:
        task = ray.remote(execute)
        for c in cells:
            train = c.config.get("train") or {}
            threads = train.get("threads") if isinstance(train.get("threads"), int) else 1
            pending[task.options(num_cpus=threads).remote(with_threads(c, threads))] = c
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if on_start is not None:
            on_start(None, min(cpus, len(pending)))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                c = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task whose worker died
                    outcome = Outcome("failed", error=f"the Ray task ended abruptly "
                                                      f"({error_line(exc)})")
                on_done(c, outcome, min(cpus, len(pending)))
    except BaseException:
        for ref in list(pending):
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
