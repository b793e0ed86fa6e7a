"""Adapters: tensors, numpy arrays, torch datasets, river iterables and Avalanche
benchmarks -> :class:`Stream`.

Data held in memory is validated once when the stream is built; data fed by
an iterator (``IterableDataset``, river) is read lazily, converted and
validated chunk by chunk, and never materialized as a whole. Nothing here
imports river or avalanche: both are duck-typed.

Examples
--------
>>> import numpy as np
>>> s = from_numpy(np.random.rand(30, 4), np.arange(30) % 3, experience_ids=np.arange(30) // 10)
>>> s.n_experiences, s.change_points
(3, [10, 20])
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, default_collate

from lifelong.errors import ConfigError, DataError
from lifelong.stream.base import (
    Batch,
    EvalSet,
    Experience,
    IterableExperience,
    Stream,
    TensorExperience,
    validate_tensors,
)
from lifelong.stream.scenarios import (
    _tensor_experiences,
    change_points,
    check_data,
    groups,
    require_nonempty,
)

__all__ = ["from_tensors", "from_numpy", "from_torch_dataset", "from_river", "from_avalanche",
           "rows_to_array"]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _rebatch(chunks: Iterable[tuple[Tensor, Tensor]], batch_size: int) -> Iterator[Batch]:
    """Cut ``(x, y)`` chunks of any size into batches of ``batch_size`` (the last may be less)."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    have = 0
    for x, y in chunks:
        xs.append(x)
        ys.append(y)
        have += len(y)
        if have >= batch_size:
            x, y = torch.cat(xs), torch.cat(ys)
            full = have - have % batch_size
            for i in range(0, full, batch_size):
                yield Batch(x[i:i + batch_size], y[i:i + batch_size])
            xs, ys, have = [x[full:]], [y[full:]], have - full
    if have:
        yield Batch(torch.cat(xs), torch.cat(ys))


# ---------------------------------------------------------------------------
# Tensors and numpy arrays
# ---------------------------------------------------------------------------


def _experience_index(ids: Tensor, uniq: Tensor | None, n: int, what: str, where: str) -> Tensor:
    if (not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.dim() != 1
            or len(ids) != n):
        raise DataError(f"{where}: {what} must be an integer vector with one id per sample ({n})")
    if uniq is None:
        return torch.unique(ids, return_inverse=True)[1]
    pos = torch.searchsorted(uniq, ids).clamp(max=len(uniq) - 1)
    if n and not bool((uniq[pos] == ids).all()):
        bad = ids[uniq[pos] != ids][0]
        raise DataError(f"{where}: {what} has id {int(bad)}, which no training sample has")
    return pos


def from_tensors(
    x: Tensor, y: Tensor, *, x_test: Tensor | None = None, y_test: Tensor | None = None,
    experience_ids: Tensor | None = None, test_experience_ids: Tensor | None = None,
    num_classes: int | None = None, task_aware: bool = True, keep_order: bool = False,
    seed: int = 0, name: str = "tensors",
) -> Stream:
    """A stream over tensors held in memory.

    ``experience_ids`` (one integer per sample) splits the data into one
    experience per distinct id, in increasing id order; the default is one
    experience. The test set is one eval set over all classes, or one per
    experience when ``test_experience_ids`` gives each test sample's id (its
    ``classes`` are the labels of that experience). ``num_classes`` defaults to
    the largest label + 1. With ``keep_order`` batches follow the data order.
    """
    where = f"from_tensors({name!r})"
    for what, t in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test)):
        if t is not None and (not isinstance(t, Tensor) or t.dim() == 0):
            got = f"a 0-dim tensor ({t.item()!r})" if isinstance(t, Tensor) else type(t).__name__
            raise DataError(f"{where}: {what} must be a tensor with one row per sample "
                            f"(shape (N, ...)), got {got}")
    if (x_test is None) != (y_test is None):
        raise ConfigError(f"{where}: pass both x_test and y_test, or neither")
    if x_test is None or y_test is None:
        x_test, y_test = x[:0], y[:0]
    nc = check_data(x, y, x_test, y_test, where=where, num_classes=num_classes)
    if experience_ids is None:
        experience_ids = torch.zeros(len(y), dtype=torch.long)
    train_ids = _experience_index(experience_ids, None, len(y), "experience_ids", where)
    uniq = torch.unique(experience_ids)
    n = len(uniq)
    train = groups(train_ids, n)
    test: list[Tensor] = []
    if test_experience_ids is not None and len(y_test):
        test_ids = _experience_index(test_experience_ids, uniq, len(y_test), "test_experience_ids",
                                     where)
        test = groups(test_ids, n)
    require_nonempty(train, test, where)
    classes = [tuple(torch.unique(torch.cat([y[i], y_test[j] if test else y[:0]])).tolist())
               for i, j in itertools.zip_longest(train, test)]
    task_ids = list(range(n)) if task_aware else [None] * n
    if test:
        evals = [EvalSet(x_test[j], y_test[j], classes[k], task_id=task_ids[k], name=f"{name}/{k}")
                 for k, j in enumerate(test)]
    elif len(y_test):
        evals = [EvalSet(x_test, y_test, tuple(torch.unique(torch.cat([y, y_test])).tolist()),
                         name=f"{name}/test")]
    else:
        evals = []
    return Stream(
        name, nc, tuple(x.shape[1:]),
        functools.partial(_tensor_experiences, x, y, train, classes, task_ids, False, keep_order),
        evals, task_aware=task_aware, n_experiences=n, seed=seed,
        meta={"change_points": change_points([len(i) for i in train])},
    )


def _np_inputs(a: Any, what: str, where: str) -> Tensor:
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: {what} have dtype {arr.dtype}; they must be numbers (encode "
                        "strings/objects first, e.g. with sklearn's OneHotEncoder)")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _np_labels(a: Any, what: str, where: str) -> Tensor:
    arr = np.asarray(a)
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iub":
        raise DataError(f"{where}: {what} must be integer class indices, got dtype {arr.dtype}; "
                        "map them with np.unique(y, return_inverse=True)")
    return torch.from_numpy(arr.astype(np.int64))


def from_numpy(x: Any, y: Any, *, x_test: Any = None, y_test: Any = None,
               experience_ids: Any = None, test_experience_ids: Any = None,
               **kwargs: Any) -> Stream:
    """:func:`from_tensors` for numpy arrays: inputs become float32, labels int64."""
    where = f"from_numpy({kwargs.get('name', 'tensors')!r})"
    return from_tensors(
        _np_inputs(x, "inputs", where), _np_labels(y, "labels", where),
        x_test=None if x_test is None else _np_inputs(x_test, "test inputs", where),
        y_test=None if y_test is None else _np_labels(y_test, "test labels", where),
        experience_ids=None if experience_ids is None
        else _np_labels(experience_ids, "experience_ids", where),
        test_experience_ids=None if test_experience_ids is None
        else _np_labels(test_experience_ids, "test_experience_ids", where),
        **kwargs,
    )


# ---------------------------------------------------------------------------
# torch datasets
# ---------------------------------------------------------------------------


def _collate(items: list[Any], arity: Sequence[int], where: str) -> list[Tensor]:
    first = items[0]
    if not isinstance(first, (tuple, list)) or len(first) not in arity:
        got = f"a {len(first)}-tuple" if isinstance(first, (tuple, list)) else type(first).__name__
        want = " or ".join(f"{k}-tuples" for k in arity)
        raise DataError(f"{where}: samples must be (x, y{', t' if 3 in arity else ''}) "
                        f"{want}, got {got}")
    try:
        return list(default_collate(items))
    except (TypeError, RuntimeError) as exc:
        raise DataError(f"{where}: samples cannot be stacked into tensors: {exc}") from exc


def _items(dataset: Any) -> Iterator[Any]:
    if isinstance(dataset, IterableDataset):
        return iter(dataset)
    return (dataset[i] for i in range(len(dataset)))


def _materialize(dataset: Any, chunk: int, where: str) -> tuple[Tensor, Tensor]:
    parts = [_collate(c, (2,), where) for c in _chunks(_items(dataset), chunk)]
    if not parts:
        raise DataError(f"{where}: the dataset is empty")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _dataset_source(dataset: Any, chunk: int, where: str, batch_size: int) -> Iterator[Batch]:
    pairs = (tuple(_collate(c, (2,), where)) for c in _chunks(iter(dataset), chunk))
    return _rebatch(pairs, batch_size)  # type: ignore[arg-type]


def from_torch_dataset(
    dataset: Dataset[Any], *, test_dataset: Dataset[Any] | None = None,
    num_classes: int | None = None, experience_ids: Tensor | None = None,
    task_aware: bool = True, chunk: int = 1024, seed: int = 0, name: str = "torch_dataset",
) -> Stream:
    """A stream over a torch ``Dataset`` of ``(x, y)`` pairs.

    A map-style dataset is stacked into tensors (``chunk`` items at a time) and
    goes through :func:`from_tensors`. An ``IterableDataset`` becomes one
    :class:`IterableExperience` read lazily, ``chunk`` items at a time, and
    rebatched; it needs ``num_classes``. ``test_dataset`` is stacked either way.
    """
    where = f"from_torch_dataset({name!r})"
    x_test = y_test = None
    if test_dataset is not None:
        x_test, y_test = _materialize(test_dataset, chunk, f"{where}, test_dataset")
    if not isinstance(dataset, IterableDataset):
        x, y = _materialize(dataset, chunk, where)
        return from_tensors(x, y, x_test=x_test, y_test=y_test, experience_ids=experience_ids,
                            num_classes=num_classes, task_aware=task_aware, seed=seed, name=name)
    if num_classes is None:
        raise ConfigError(f"{where}: an IterableDataset cannot be scanned for its classes; "
                          "pass num_classes=")
    if experience_ids is not None:
        raise ConfigError(f"{where}: experience_ids needs a map-style dataset")
    first = next(iter(dataset), None)
    if first is None:
        raise DataError(f"{where}: the dataset is empty")
    input_shape = tuple(_collate([first], (2,), where)[0].shape[1:])
    try:
        n_samples: int | None = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        n_samples = None
    evals = []
    if x_test is not None and y_test is not None:
        validate_tensors(x_test, y_test, num_classes=num_classes, input_shape=input_shape,
                         where=f"{where}, test_dataset")
        evals = [EvalSet(x_test, y_test, tuple(range(num_classes)), name=f"{name}/test")]
    exp = IterableExperience(0, functools.partial(_dataset_source, dataset, chunk, where),
                             num_classes=num_classes, input_shape=input_shape,
                             n_samples=n_samples, classes=tuple(range(num_classes)),
                             task_id=0 if task_aware else None)
    return Stream(name, num_classes, input_shape, functools.partial(list, [exp]), evals,
                  task_aware=task_aware, n_experiences=1, seed=seed,
                  meta={"change_points": []})


# ---------------------------------------------------------------------------
# river
# ---------------------------------------------------------------------------


def rows_to_array(rows: Sequence[dict[Any, Any]], features: Sequence[Any], where: str,
                  offset: int = 0) -> np.ndarray:
    """River feature dicts -> a float32 array with columns in ``features`` order."""
    try:
        return np.array([[row[f] for f in features] for row in rows], dtype=np.float32)
    except KeyError as exc:
        i = next(i for i, row in enumerate(rows) if exc.args[0] not in row)
        raise DataError(f"{where}: sample {offset + i} has no feature {exc.args[0]!r}; "
                        f"expected features {list(features)}") from exc
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: a feature value is not a number ({exc})") from exc


def _open(source: Any, where: str) -> Iterator[Any]:
    if callable(source):
        return iter(source())
    it = iter(source)
    if it is source:
        raise ConfigError(f"{where}: a one-shot iterator cannot be replayed; pass a function that "
                          "returns a fresh iterable (e.g. lambda: datasets.Phishing()) or a "
                          "river dataset")
    return it


def _river_labels(labels: list[Any], index: dict[Hashable, int] | None, where: str) -> Tensor:
    if index is None:
        bad = [v for v in labels if not isinstance(v, (int, np.integer))]
        if bad:
            raise DataError(f"{where}: label {bad[0]!r} is not an integer class index; pass "
                            "classes=[...] listing the label values")
        return torch.tensor(labels, dtype=torch.long)
    try:
        return torch.tensor([index[v] for v in labels], dtype=torch.long)
    except KeyError as exc:
        raise DataError(f"{where}: label {exc.args[0]!r} is not one of the declared classes "
                        f"{list(index)}; add it to classes=") from exc
    except TypeError as exc:
        raise DataError(f"{where}: a label is not hashable ({exc})") from exc


def _check_rows(rows: list[Any], where: str, offset: int) -> None:
    """Each row must be an ``(x: dict, y)`` pair (river's ``iter_*`` convention)."""
    for i, r in enumerate(rows):
        if not (isinstance(r, tuple | list) and len(r) == 2 and isinstance(r[0], dict)):
            raise DataError(f"{where}: row {offset + i} is {type(r).__name__} "
                            f"{str(r)[:60]}, expected an (x, y) pair with x a dict of features; "
                            "a river dataset yields such pairs (for x, y in dataset)")


def _river_source(factory: Any, features: Sequence[Any], index: dict[Hashable, int] | None,
                  chunk: int, where: str, batch_size: int) -> Iterator[Batch]:
    def converted() -> Iterator[tuple[Tensor, Tensor]]:
        offset = 0
        for rows in _chunks(_open(factory, where), chunk):
            _check_rows(rows, where, offset)
            x = rows_to_array([r[0] for r in rows], features, where, offset)
            yield torch.from_numpy(x), _river_labels([r[1] for r in rows], index, where)
            offset += len(rows)

    return _rebatch(converted(), batch_size)


def from_river(
    iterable_factory: Callable[[], Iterable[tuple[dict[Any, Any], Any]]] | Iterable[Any], *,
    n_features: int | None = None, feature_names: Sequence[Any] | None = None,
    classes: Sequence[Any] | None = None, num_classes: int | None = None,
    n_samples: int | None = None, chunk: int = 256,
    test: tuple[Tensor, Tensor] | None = None, seed: int = 0, name: str = "river",
) -> Stream:
    """A task-free stream over river-style ``(features dict, label)`` pairs, read lazily.

    ``iterable_factory`` is a function returning a fresh iterable, or a
    re-iterable such as a river dataset. Rows are read ``chunk`` at a time,
    converted with columns in ``feature_names`` order (default: the first
    row's keys, sorted; one row is read to find them), and never held as a
    whole. ``classes`` lists the label values, mapped to ``0..C-1`` in that
    order; without it labels must already be integers ``< num_classes``.
    ``test`` is an optional ``(x, y)`` pair of tensors.
    """
    where = f"from_river({name!r})"
    if feature_names is None:
        first = next(_open(iterable_factory, where), None)
        if first is None:
            raise DataError(f"{where}: the stream is empty")
        _check_rows([first], where, 0)
        feature_names = sorted(first[0], key=str)
    features = list(feature_names)
    if n_features is not None and n_features != len(features):
        raise DataError(f"{where}: n_features={n_features} but the rows have {len(features)} "
                        f"features {features}")
    index = None
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        if num_classes is not None and num_classes != len(index):
            raise ConfigError(f"{where}: num_classes={num_classes} but classes lists {len(index)}")
        num_classes = len(index)
    elif num_classes is None:
        raise ConfigError(f"{where}: pass classes=[...] listing the label values, or num_classes= "
                          "when labels are already 0..C-1")
    shape = (len(features),)
    evals = []
    if test is not None:
        validate_tensors(test[0], test[1], num_classes=num_classes, input_shape=shape,
                         where=f"{where}, test data")
        evals = [EvalSet(test[0], test[1], tuple(range(num_classes)), name=f"{name}/test")]
    exp = IterableExperience(
        0, functools.partial(_river_source, iterable_factory, features, index, chunk, where),
        num_classes=num_classes, input_shape=shape, n_samples=n_samples,
        classes=tuple(range(num_classes)))
    return Stream(name, num_classes, shape, functools.partial(list, [exp]), evals,
                  task_aware=False, n_experiences=1, seed=seed,
                  meta={"change_points": [], "feature_names": features,
                        "classes": list(classes) if classes is not None else None})


# ---------------------------------------------------------------------------
# Avalanche (duck-typed: nothing is imported from avalanche)
# ---------------------------------------------------------------------------


def _triples(dataset: Any, where: str) -> list[Tensor]:
    parts = [_collate(c, (2, 3), where) for c in _chunks(iter(dataset), 1024)]
    if not parts:
        raise DataError(f"{where}: the experience is empty")
    return [torch.cat([p[i] for p in parts]) for i in range(2)]


def _avalanche_experiences(exps: list[Any], num_classes: int, input_shape: tuple[int, ...],
                           task_ids: list[int], task_labels: bool, where: str,
                           ) -> Iterator[Experience]:
    for k, e in enumerate(exps):
        x, y = _triples(e.dataset, f"{where}, experience {k}")
        validate_tensors(x, y, num_classes=num_classes, input_shape=input_shape,
                         where=f"{where}, experience {k}")
        yield TensorExperience(k, x, y, task_id=task_ids[k],
                               classes=list(e.classes_in_this_experience),
                               with_task_labels=task_labels)


def from_avalanche(benchmark: Any, *, stream: str = "train", seed: int = 0,
                   name: str = "avalanche") -> Stream:
    """A stream over an Avalanche benchmark's ``<stream>_stream``, tested on its ``test_stream``.

    Duck-typed: experiences need ``.dataset`` (iterating ``(x, y, t)``) and
    ``.classes_in_this_experience``; ``.task_label`` is used when present, and
    distinct task labels make a stream with task labels. Training
    experiences are stacked lazily, one at a time.
    """
    where = f"from_avalanche({name!r})"
    train = list(getattr(benchmark, f"{stream}_stream", None) or [])
    if not train:
        raise ConfigError(f"{where}: the benchmark has no (or an empty) {stream}_stream")
    tests = list(getattr(benchmark, "test_stream", None) or [])
    labels = [getattr(e, "task_label", 0) for e in train]
    task_labels = len(set(labels)) > 1
    task_ids = labels if task_labels else list(range(len(train)))
    num_classes = getattr(benchmark, "n_classes", None) or 1 + max(
        c for e in train + tests for c in e.classes_in_this_experience)
    first = next(iter(train[0].dataset), None)
    if first is None:
        raise DataError(f"{where}: experience 0 is empty")
    input_shape = tuple(_collate([first], (2, 3), where)[0].shape[1:])
    evals = []
    for k, e in enumerate(tests):
        x, y = _triples(e.dataset, f"{where}, test experience {k}")
        validate_tensors(x, y, num_classes=num_classes, input_shape=input_shape,
                         where=f"{where}, test experience {k}")
        tid = getattr(e, "task_label", 0) if task_labels else k
        evals.append(EvalSet(x, y, tuple(sorted(e.classes_in_this_experience)), task_id=tid,
                             name=f"{name}/{k}"))
    return Stream(
        name, num_classes, input_shape,
        functools.partial(_avalanche_experiences, train, num_classes, input_shape, task_ids,
                          task_labels, where),
        evals, task_aware=True, n_experiences=len(train), task_labels=task_labels, seed=seed,
        meta={"change_points": change_points([len(e.dataset) for e in train])},
    )
