"""Continual-learning metrics as pure functions of the accuracy matrix.

``R[i][j]`` is the accuracy on experience j's held-out data after training
on experience i (rows: training progress, columns: evaluation sets).
Definitions follow Lopez-Paz & Ranzato (2017, NeurIPS; ACC, BWT, FWT) and
Chaudhry et al. (2018, ECCV; average forgetting). Functions return
``None`` where the metric is undefined (fewer than two experiences).

:func:`report_detections` scores detected boundaries of a task-free run
against the stream's true change points (delay, missed changes, false
alarms).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

Matrix = Sequence[Sequence[float]]


def average_accuracy(R: Matrix) -> float | None:
    """ACC: mean accuracy over all evaluation sets after the last experience."""
    if not R or not R[-1]:
        return None
    return sum(R[-1]) / len(R[-1])


def backward_transfer(R: Matrix) -> float | None:
    """BWT = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j]); negative means forgetting."""
    T = min(len(R), len(R[0]) if R else 0)
    if T < 2:
        return None
    return sum(R[-1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forward_transfer(R: Matrix, baseline: Sequence[float] | None) -> float | None:
    """FWT = 1/(T-1) * sum_{j>=1} (R[j-1][j] - b[j]), b = accuracy of the untrained model."""
    T = min(len(R), len(R[0]) if R else 0)
    if T < 2 or baseline is None or len(baseline) < T:
        return None
    return sum(R[j - 1][j] - baseline[j] for j in range(1, T)) / (T - 1)


def average_forgetting(R: Matrix) -> float | None:
    """Mean over j < T-1 of max_{l<T-1} R[l][j] - R[T-1][j] (Chaudhry et al. 2018)."""
    T = len(R)
    cols = len(R[0]) if R else 0
    if T < 2 or cols < 1:
        return None
    js = range(min(T - 1, cols))
    return sum(max(R[l][j] for l in range(T - 1)) - R[-1][j] for j in js) / len(js)


def report_detections(true_change_points: Sequence[int], detected: Sequence[int],
                      tolerance: int) -> dict[str, Any]:
    """Score detected boundaries against the true change points (positions in samples).

    Change ``c_i`` is *detected* by the first detection ``d`` with
    ``c_i < d <= c_i + tolerance`` and ``d`` before the next change point
    (a detection is reported after the batch that triggered it, so ``d = c_i``
    saw no sample of the new concept). Its delay is ``d - c_i``. A change
    with no such detection is *missed*. A detection that is not within the
    tolerance window after some change is a *false alarm*; further
    detections inside a window that was already detected are counted as
    ``duplicates``, not false alarms.

    Returns ``{"detections", "detected", "missed", "false_alarms",
    "duplicates", "delays", "mean_delay"}`` (``mean_delay`` is ``None`` when
    nothing was detected).
    """
    if tolerance < 1:
        raise ValueError(f"tolerance must be >= 1 sample, got {tolerance}")
    cps = sorted(int(c) for c in true_change_points)
    dets = sorted(int(d) for d in detected)
    delays: list[int] = []
    false_alarms = duplicates = 0
    hit = [False] * len(cps)
    for d in dets:
        # the last change point strictly before d, if d falls within its window
        i = bisect.bisect_left(cps, d) - 1
        if i < 0 or d - cps[i] > tolerance:
            false_alarms += 1
        elif hit[i]:
            duplicates += 1
        else:
            hit[i] = True
            delays.append(d - cps[i])
    return {
        "detections": len(dets),
        "detected": sum(hit),
        "missed": len(cps) - sum(hit),
        "false_alarms": false_alarms,
        "duplicates": duplicates,
        "delays": delays,
        "mean_delay": sum(delays) / len(delays) if delays else None,
    }


def delta_mtl(metrics: dict[str, float], baselines: dict[str, float],
              lower_is_better: Sequence[str] = ()) -> float:
    """Delta_MTL in percent (Maninis, Radosavovic & Kokkinos, CVPR 2019).

    ``100 / T * sum_i (-1)^{l_i} (M_i - B_i) / B_i`` over the T tasks of
    ``baselines``, with ``M_i`` the multi-task model's metric, ``B_i`` the
    single-task baseline's and ``l_i = 1`` for the tasks in ``lower_is_better``
    (errors): positive means better than the single-task models on average.
    """
    if not baselines:
        raise ValueError("delta_mtl needs at least one baseline")
    total = 0.0
    for task, b in baselines.items():
        if task not in metrics:
            raise ValueError(f"delta_mtl: no metric for task {task!r}")
        if b == 0:
            raise ValueError(f"delta_mtl: the baseline of task {task!r} is 0 (relative change "
                             "undefined)")
        sign = -1.0 if task in lower_is_better else 1.0
        total += sign * (metrics[task] - b) / b
    return 100.0 * total / len(baselines)
