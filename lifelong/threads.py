"""How many CPU threads a run uses: a rule from the model's arithmetic per step, applied to every pool.

Small online models gain nothing from torch's intra-op threads and lose a
lot to contention: the quickstart (an MLP at batch 10) trains at 11,700
samples/s on one thread, and with torch's default (all cores) at 560-3,300
samples/s as soon as anything else runs on the machine. Large steps (a
ResNet at batch 32) do gain from several threads. The rule: count the
multiply-adds of one training step (forward and backward, about three
forwards) of the model on the rows one step passes through it: the stream's
batch plus what the plugins add (``rows_per_step(batch_size)`` of a plugin:
ER's replay batch, DER++'s two, A-GEM's reference batch, GEM's past tasks'
memories). Below :data:`FLOPS_PER_THREAD` it is one thread, which needs no
measurement; above it one thread per :data:`FLOPS_PER_THREAD`, up to the cores
available and, since threads waiting on a busy core lose more than they
gain (GEM on 2 cores with another program on one: 2.2x slower at 2 threads
than at 1; on an idle machine 1.7x faster), up to the cores idle when the
run starts (:func:`idle_cores`, 0.1 s of ``/proc/stat``). A resumed run
keeps the count its checkpoint recorded (exact resume needs the same count;
the first run's machine state is not measured again).

The count applies to torch's intra-op pool and, through ``threadpoolctl``,
to every BLAS and OpenMP pool loaded in the process (numpy's OpenBLAS spins
against torch's OpenMP pool on a small machine: GEM's QP ran 3.4-3.7x faster
with ``OPENBLAS_NUM_THREADS=1``). ``train.threads`` (or ``--threads``) sets a
number instead of ``auto``. On CUDA the CPU pools only feed the device: the
rule gives one thread there too unless set.

Examples
--------
>>> from lifelong.backbones import mlp
>>> choose_threads(mlp(input_shape=(1, 28, 28), num_classes=10), (1, 28, 28), 10, cores=8)[0]
1
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from lifelong.errors import ConfigError

__all__ = ["FLOPS_PER_THREAD", "step_flops", "plugin_rows", "choose_threads", "apply_threads",
           "available_cores", "idle_cores"]

#: FLOPs of one training step that justify one more thread (5e8: a step of ~1 ms per thread
#: on one core; the MLP at batch 10 does 1.2e7, a small CNN at batch 10 2.3e8, the reduced
#: ResNet-18 at batch 32 8.6e9)
FLOPS_PER_THREAD = 5e8


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def idle_cores(seconds: float = 0.1) -> float | None:
    """How many cores the machine's other programs left idle over ``seconds``, from ``/proc/stat``.

    ``None`` where ``/proc/stat`` cannot be read (not Linux): no cap then.
    """
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields[3:5]), sum(fields[:8])   # idle + iowait, all but guest time

    try:
        idle0, total0 = read()
        time.sleep(seconds)
        idle1, total1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


def plugin_rows(plugins: Iterable[Any], batch_size: int) -> int:
    """Rows the plugins pass through the model per step beside the stream's batch.

    A plugin that runs the model on more rows than the batch (replay, a reference
    gradient, past tasks' memories) says how many with ``rows_per_step(batch_size)``;
    the others add none.
    """
    total = 0
    for p in plugins:
        rows = getattr(p, "rows_per_step", None)
        if not callable(rows):
            continue
        n = rows(batch_size)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            name = getattr(p, "name", type(p).__name__)
            raise ConfigError(f"plugin {name!r}: rows_per_step({batch_size}) returned {n!r}; it "
                              "must return a whole number >= 0 (the rows it adds to a step)")
        total += n
    return total


def step_flops(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> float:
    """FLOPs of one training step: linear and conv layers of one forward, times 3, times the batch."""
    total = [0.0]

    def hook(m: nn.Module, args: Any, out: torch.Tensor) -> None:
        if isinstance(m, nn.Linear):
            total[0] += 2.0 * m.in_features * m.out_features * (out.numel() / max(out.shape[-1], 1))
        elif isinstance(m, nn.modules.conv._ConvNd):
            k = math.prod(m.kernel_size) * m.in_channels // m.groups
            total[0] += 2.0 * k * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    was = model.training
    try:
        model.eval()
        p = next(model.parameters(), None)
        x = torch.zeros((1, *input_shape), device=p.device if p is not None else "cpu")
        with torch.no_grad():
            if getattr(model, "task_conditioned", False):
                model(x, torch.zeros(1, dtype=torch.long, device=x.device))
            else:
                model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return 3.0 * total[0] * batch_size


def choose_threads(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, *,
                   setting: int | str = "auto", device: torch.device | str = "cpu",
                   cores: int | None = None, plugins: Iterable[Any] = (),
                   idle: float | None | Callable[[], float | None] = idle_cores,
                   resumed: int | None = None) -> tuple[int, str]:
    """``(threads, why)`` for a run: ``setting`` if a number, else the rule of the module docstring.

    ``plugins``: their ``rows_per_step`` is counted; ``idle``: the idle cores (a number,
    ``None`` for no cap, or the function that measures them, called only when the
    arithmetic asks for more than one thread); ``resumed``: the count a checkpoint
    recorded, kept under ``auto``.
    """
    cores = cores or available_cores()
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ConfigError(f"train.threads must be 'auto' or a whole number >= 1, got {setting!r}")
        if setting > cores:
            raise ConfigError(f"train.threads: {setting} threads asked for, but this process may use "
                              f"{cores} core(s); use at most {cores}, or 'auto'")
        return setting, "set by train.threads"
    # a resume keeps its recorded count: the machine's idle cores are not measured again
    n, why = _rule(model, input_shape, batch_size, device, cores, plugins,
                   idle if resumed is None else None)
    if resumed is None or min(cores, resumed) == n:
        return n, why
    return (max(1, min(cores, resumed)),
            f"auto: the {resumed} thread(s) the checkpoint recorded, for an exact resume")


def _rule(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
          device: torch.device | str, cores: int, plugins: Iterable[Any],
          idle: float | None | Callable[[], float | None]) -> tuple[int, str]:
    if torch.device(device).type == "cuda":
        return 1, "auto: on CUDA the CPU threads only feed the device"
    extra = plugin_rows(plugins, batch_size)
    try:
        flops = step_flops(model, input_shape, batch_size + extra)
    except (RuntimeError, ValueError, TypeError):  # the dry forward failed: checked elsewhere
        return 1, "auto: the step's arithmetic could not be counted"
    rows = f"{batch_size}+{extra} rows" if extra else f"{batch_size} rows"
    want = max(1, min(cores, int(flops // FLOPS_PER_THREAD)))
    why = (f"auto: {flops / 1e6:,.0f} MFLOP per training step ({rows}), one thread per "
           f"{FLOPS_PER_THREAD / 1e6:,.0f} MFLOP, {cores} core(s)")
    if want == 1:
        return 1, why
    free = idle() if callable(idle) else idle
    if free is None:
        return want, why
    n = max(1, min(want, round(free)))
    return n, why if n == want else why + f", {free:.1f} idle at the start: {n} instead of {want}"


def apply_threads(n: int) -> None:
    """Use ``n`` threads in torch's intra-op pool and in every BLAS / OpenMP pool of the process."""
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return
    threadpool_limits(limits=n)
