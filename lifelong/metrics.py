"""Continual-learning metrics as pure functions of the accuracy matrix.

``R[i][j]`` is the accuracy on experience j's held-out data after training
on experience i (rows: training progress, columns: evaluation sets).
Definitions follow Lopez-Paz & Ranzato (2017, NeurIPS; ACC, BWT, FWT) and
Chaudhry et al. (2018, ECCV; average forgetting). Functions return
``None`` where the metric is undefined (fewer than two experiences).
"""

from __future__ import annotations

from collections.abc import Sequence

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
