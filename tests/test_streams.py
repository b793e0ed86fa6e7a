"""Streams: scenario builders, shipped data sets, adapters and their errors."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset, TensorDataset

from lifelong.errors import ConfigError, DataError
from lifelong.registry import Registry
from lifelong.stream import (
    EvalSet,
    IterableExperience,
    OrderedExperience,
    TensorExperience,
    blurry,
    catalog,
    class_incremental,
    from_avalanche,
    from_numpy,
    from_river,
    from_tensors,
    from_torch_dataset,
    load_digits_data,
    load_mnist_subset,
    load_river_real,
    permuted,
    rotate,
    rotated,
    task_free,
)


def toy(n: int = 120, classes: int = 6, shape: tuple[int, ...] = (1, 4, 4), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    y = torch.arange(n) % classes
    return x, y, x[: n // 5].clone(), y[: n // 5].clone()


def all_batches(exp: Any, bs: int = 7, **kw: Any) -> list[Any]:
    return list(exp.batches(bs, **kw))


def same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y)
                                    for p, q in zip(a, b, strict=True))


# ---------------------------------------------------------------------------
# Determinism and resumption
# ---------------------------------------------------------------------------


def test_same_seed_same_batches_other_seed_differs() -> None:
    runs = {}
    for seed in (0, 0, 1):
        s = permuted(*toy(), n_experiences=3, seed=seed)
        runs.setdefault(seed, []).append(
            [all_batches(e, seed=s.seed) for e in s.experiences()])
    first, again = runs[0]
    assert all(same(a, b) for a, b in zip(first, again, strict=True))
    assert not same(first[1], runs[1][0][1])  # other permutation, other shuffle


def test_batches_start_resumes_exactly() -> None:
    exp = next(class_incremental(*toy(), n_experiences=3).experiences())
    full = all_batches(exp, 6, epochs=2, seed=3)  # 40 samples: 7 batches per epoch
    for k in (0, 3, 7, 9, 14):
        assert same(all_batches(exp, 6, epochs=2, seed=3, start=k), full[k:])


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def test_class_incremental_splits_classes_and_eval_sets() -> None:
    x, y, xt, yt = toy()
    s = class_incremental(x, y, xt, yt, n_experiences=3, task_labels=True)
    exps = list(s.experiences())
    assert [e.classes for e in exps] == [(0, 1), (2, 3), (4, 5)]
    assert [ev.classes for ev in s.test] == [(0, 1), (2, 3), (4, 5)]
    assert [ev.task_id for ev in s.test] == [0, 1, 2]
    for e, ev in zip(exps, s.test, strict=True):
        assert set(e.y.tolist()) == set(e.classes) and set(ev.y.tolist()) == set(ev.classes)
        assert torch.equal(next(e.batches(8)).task, torch.full((8,), e.id))
    assert s.task_aware and s.task_labels and s.num_classes == 6 and s.n_experiences == 3
    assert s.change_points == [40, 80]
    order = class_incremental(x, y, xt, yt, n_experiences=2, class_order=[5, 0, 3, 1, 2, 4])
    assert [e.classes for e in order.experiences()] == [(0, 3, 5), (1, 2, 4)]
    shuffled = class_incremental(x, y, xt, yt, n_experiences=6, shuffle_classes=True, seed=1)
    assert sorted(c for e in shuffled.experiences() for c in e.classes) == list(range(6))


def test_permuted_is_a_permutation_and_identity_first() -> None:
    x, y, xt, yt = toy()
    s = permuted(x, y, xt, yt, n_experiences=3, seed=4)
    exps = list(s.experiences())
    assert torch.equal(exps[0].x, x) and torch.equal(s.test[0].x, xt)
    for e in exps[1:]:
        flat, ref = e.x.reshape(len(x), -1), x.reshape(len(x), -1)
        assert not torch.equal(flat, ref)
        assert torch.equal(flat.sort(1).values, ref.sort(1).values)
        perm = (flat[0][:, None] == ref[0][None, :]).float().argmax(1)  # one fixed permutation
        assert torch.equal(flat, ref[:, perm])
    assert all(ev.classes == tuple(range(6)) for ev in s.test)
    assert s.change_points == [120, 240]
    moved = next(permuted(x, y, xt, yt, n_experiences=2, keep_first=False).experiences())
    assert not torch.equal(moved.x, x)


def test_rotation_zero_is_identity_and_ninety_is_rot90() -> None:
    x = torch.rand(5, 2, 9, 9)
    assert rotate(x, 0.0) is x
    assert torch.allclose(rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    s = rotated(*toy(shape=(1, 6, 6)), n_experiences=4)
    assert s.meta["angles"] == [0.0, 45.0, 90.0, 135.0]
    exps = list(s.experiences())
    assert torch.allclose(exps[2].x, torch.rot90(exps[0].x, 1, dims=(2, 3)), atol=1e-5)
    custom = rotated(*toy(shape=(1, 6, 6)), n_experiences=2, angles=[0, 180])
    assert torch.allclose(list(custom.experiences())[1].x, exps[0].x.flip(2, 3), atol=1e-5)


def test_blurry_mixes_classes_and_is_task_free() -> None:
    x, y, xt, yt = toy(n=3000, classes=10)
    s = blurry(x, y, xt, yt, n_experiences=5, blur=0.2, seed=2)
    assert not s.task_aware and not s.task_labels and s.n_experiences == 5
    exps = list(s.experiences())
    off = [float((~torch.isin(e.y, torch.tensor(ev.classes))).float().mean())
           for e, ev in zip(exps, s.test, strict=True)]
    assert all(0.15 < f < 0.25 for f in off), off
    assert sum(len(e.y) for e in exps) == 3000
    assert s.change_points == torch.tensor([len(e.y) for e in exps]).cumsum(0)[:-1].tolist()
    assert [ev.classes for ev in s.test] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    sharp = blurry(x, y, xt, yt, n_experiences=5, blur=0.0)
    assert [e.classes for e in sharp.experiences()] == [ev.classes for ev in sharp.test]


def test_gradual_ramps_between_neighbours_in_order() -> None:
    x, y, xt, yt = toy(n=4000, classes=4)
    s = blurry(x, y, xt, yt, n_experiences=2, blur=0.5, mode="gradual", seed=0)
    exps = list(s.experiences())
    assert all(isinstance(e, OrderedExperience) for e in exps)
    seq = torch.cat([e.y for e in exps]) >= 2  # True for classes of experience 1
    late = torch.cat([b.y for b in exps[0].batches(100, seed=9)]) >= 2
    assert torch.equal(late, exps[0].y >= 2)  # never shuffled
    share = seq.float().reshape(40, 100).mean(1)  # 40 windows of 100 samples
    assert share[:14].max() == 0 and share[26:].min() == 1  # pure far from the boundary
    assert (share[14:26].diff() >= -0.15).all() and 0.3 < float(share[19:21].mean()) < 0.7
    assert abs(s.change_points[0] - 2000) < 150


def test_task_free_strips_task_ids() -> None:
    s = task_free(class_incremental(*toy(), n_experiences=3, task_labels=True))
    assert not s.task_aware and not s.task_labels and s.change_points == [40, 80]
    exps = list(s.experiences())
    assert all(isinstance(e, TensorExperience) for e in exps) and len(exps) == 3
    assert all(b.task is None for e in exps for b in e.batches(16))
    assert all(ev.task_id is None for ev in s.test)
    it = task_free(from_river(lambda: iter(rows(20)), num_classes=2))
    assert all(b.task is None for e in it.experiences() for b in e.batches(8))


# ---------------------------------------------------------------------------
# Shipped data sets
# ---------------------------------------------------------------------------


def test_mnist_subset_shapes_range_and_stratified() -> None:
    x, y, xt, yt = load_mnist_subset(test_fraction=0.2, seed=0)
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(yt).tolist() == [100] * 10 and torch.bincount(y).tolist() == [400] * 10
    x[:] = 7.0  # callers own their tensors: the cache is untouched
    x2, _, xt2, _ = load_mnist_subset(test_fraction=0.2, seed=0)
    assert float(x2.max()) == 1.0 and torch.equal(xt2, xt)
    assert not torch.equal(load_mnist_subset(seed=1)[2], xt)


def test_digits_shapes_and_split() -> None:
    x, y, xt, yt = load_digits_data(test_fraction=0.25, seed=3)
    assert x.shape[1:] == (1, 8, 8) and len(x) + len(xt) == 1797
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    full = torch.bincount(torch.cat([y, yt]))
    assert (torch.bincount(yt) - full * 0.25).abs().max() <= 0.5


def test_river_phishing_real_stream() -> None:
    from river import datasets

    x, y, xt, yt, names = load_river_real("phishing", test_fraction=0.2, seed=0)
    assert x.shape == (1000, 9) and xt.shape == (250, 9) and names == ("False", "True")
    assert x.dtype == torch.float32 and torch.allclose(x.mean(0), torch.zeros(9), atol=1e-5)
    labels = torch.tensor([int(label) for _, label in datasets.Phishing()])
    assert torch.equal(torch.sort(torch.cat([y, yt])).values, torch.sort(labels).values)
    # both parts keep stream order; the test part is every fifth sample (documented rule)
    phase = torch.rand(1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k = torch.floor(torch.arange(1251, dtype=torch.float64) * 0.2 + phase)
    is_test = k[1:] > k[:-1]
    assert torch.equal(y, labels[~is_test]) and torch.equal(yt, labels[is_test])
    assert set(is_test.nonzero().flatten().diff().tolist()) == {5}
    s = catalog.river_phishing(n_experiences=4)
    exps = list(s.experiences())
    assert not s.task_aware and s.change_points == [250, 500, 750]
    assert torch.equal(torch.cat([e.y for e in exps]), y)
    assert torch.equal(torch.cat([b.y for b in exps[0].batches(50)]), exps[0].y)  # ordered
    with pytest.raises(ConfigError, match="unknown river data set"):
        load_river_real("covtype")


def rows(n: int, limit: int | None = None) -> Iterator[tuple[dict[str, float], int]]:
    for i in range(n):
        if limit is not None and i >= limit:
            raise AssertionError(f"row {i} was read, only {limit} were asked for")
        yield {"b": float(i), "a": -float(i)}, i % 2


def test_from_river_is_lazy() -> None:
    s = from_river(lambda: rows(10**6, limit=16), classes=[0, 1], chunk=8)
    assert s.input_shape == (2,) and s.meta["feature_names"] == ["a", "b"] and not s.task_aware
    exp = next(s.experiences())
    assert isinstance(exp, IterableExperience)
    it = exp.batches(8)
    b1, b2 = next(it), next(it)  # 16 rows read, never the 17th
    assert torch.equal(b2.x[:, 1], torch.arange(8, 16.0)) and torch.equal(b1.y, torch.arange(8) % 2)
    mapped = from_river(lambda: rows(5), classes=[1, 0], n_samples=5)
    assert torch.equal(next(next(mapped.experiences()).batches(5)).y, torch.tensor([1, 0, 1, 0, 1]))


def test_from_river_errors_name_the_cause() -> None:
    bad = from_river(lambda: rows(6), classes=[0])
    with pytest.raises(DataError, match=r"label 1 is not one of the declared classes \[0\]"):
        list(next(bad.experiences()).batches(4))
    with pytest.raises(ConfigError, match="one-shot iterator"):
        from_river(rows(3), num_classes=2)
    with pytest.raises(ConfigError, match="classes="):
        from_river(lambda: rows(3))
    missing = from_river(lambda: iter([({"a": 1.0}, 0), ({"b": 2.0}, 0)]), num_classes=1)
    with pytest.raises(DataError, match="sample 1 has no feature 'a'"):
        list(next(missing.experiences()).batches(2))


# ---------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------


def test_from_tensors_and_numpy() -> None:
    x, y = np.random.default_rng(0).random((30, 4)), np.arange(30) % 3
    s = from_numpy(x, y.astype(float), x_test=x[:6], y_test=y[:6],
                   experience_ids=np.arange(30) // 10, test_experience_ids=np.arange(6) // 2)
    exps = list(s.experiences())
    assert [len(e.y) for e in exps] == [10, 10, 10] and s.change_points == [10, 20]
    assert exps[0].x.dtype == torch.float32 and len(s.test) == 3 and s.num_classes == 3
    one = from_tensors(torch.rand(8, 2), torch.arange(8) % 2, x_test=torch.rand(4, 2),
                       y_test=torch.arange(4) % 2)
    assert one.n_experiences == 1 and one.change_points == [] and one.test[0].classes == (0, 1)
    with pytest.raises(DataError, match="dtype object"):
        from_numpy(np.array([[1, "a"]], dtype=object), np.array([0]))
    with pytest.raises(DataError, match="integer class indices"):
        from_numpy(x, np.array(["cat"] * 30))


class Pairs(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        return ((torch.full((3,), float(i)), i % 4) for i in range(self.n))


def test_from_torch_dataset_map_and_iterable() -> None:
    x, y = torch.rand(20, 3), torch.arange(20) % 4
    s = from_torch_dataset(TensorDataset(x, y), test_dataset=TensorDataset(x[:4], y[:4]), chunk=6)
    exp = next(s.experiences())
    assert torch.equal(exp.x, x) and torch.equal(exp.y, y) and s.num_classes == 4
    it = from_torch_dataset(Pairs(10), num_classes=4, chunk=3)
    batches = list(next(it.experiences()).batches(4))
    assert [len(b) for b in batches] == [4, 4, 2] and it.input_shape == (3,)
    assert torch.equal(torch.cat([b.x[:, 0] for b in batches]), torch.arange(10.0))
    with pytest.raises(ConfigError, match="num_classes"):
        from_torch_dataset(Pairs(3))
    with pytest.raises(DataError, match=r"\(x, y\) 2-tuples, got a 3-tuple"):
        from_torch_dataset(TensorDataset(x, y, y))


def fake_avalanche(task_ids: tuple[int, int] = (0, 0)) -> Any:
    x, y = torch.rand(40, 1, 3, 3), torch.arange(40) % 4

    def exp(lo: int, t: int, n: int) -> SimpleNamespace:
        mask = (y >= lo) & (y < lo + 2)
        triples = [(a, b, t) for a, b in zip(x[mask][:n], y[mask][:n], strict=True)]
        return SimpleNamespace(dataset=triples, classes_in_this_experience=[lo, lo + 1],
                               task_label=t)

    return SimpleNamespace(
        train_stream=[exp(0, task_ids[0], 20), exp(2, task_ids[1], 20)],
        test_stream=[exp(0, task_ids[0], 4), exp(2, task_ids[1], 4)])


def test_from_avalanche_duck_typed() -> None:
    s = from_avalanche(fake_avalanche())
    exps = list(s.experiences())
    assert s.num_classes == 4 and s.input_shape == (1, 3, 3) and not s.task_labels
    assert [e.classes for e in exps] == [(0, 1), (2, 3)] and s.change_points == [20]
    assert [ev.classes for ev in s.test] == [(0, 1), (2, 3)] and len(s.test[1]) == 4
    multi = from_avalanche(fake_avalanche((0, 1)))
    assert multi.task_labels
    assert next(list(multi.experiences())[1].batches(5)).task.tolist() == [1] * 5


# ---------------------------------------------------------------------------
# Errors name their cause
# ---------------------------------------------------------------------------


def test_errors_are_clear() -> None:
    x, y, xt, yt = toy()
    with pytest.raises(DataError, match="label 5 is outside the declared classes") as exc:
        from_tensors(x, y, num_classes=3)
    assert "num_classes=" in str(exc.value) and "growing" not in str(exc.value)  # no such key
    with pytest.raises(DataError, match="label -1 is negative"):
        class_incremental(x, y - 1, xt, yt)
    nan = x.clone()
    nan[3, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 input row.*NaN.*first at row 3"):
        permuted(nan, y, xt, yt)
    with pytest.raises(DataError, match=r"test data: inputs have shape \(16,\) per sample"):
        class_incremental(x, y, xt.reshape(len(xt), -1), yt)
    with pytest.raises(DataError, match=r"must be images shaped \(N, C, H, W\)"):
        rotated(x.reshape(len(x), -1), y, xt, yt)
    with pytest.raises(ConfigError, match="6 classes cannot be split evenly into n_experiences=4"):
        class_incremental(x, y, xt, yt, n_experiences=4)
    with pytest.raises(ConfigError, match="n_experiences must be a positive integer"):
        permuted(x, y, xt, yt, n_experiences=0)
    with pytest.raises(ConfigError, match="class_order must list every training class"):
        class_incremental(x, y, xt, yt, n_experiences=2, class_order=[0, 1, 2])
    with pytest.raises(DataError, match="experience 1 has no test samples"):
        from_tensors(x, y, x_test=xt, y_test=yt, experience_ids=torch.arange(120) // 60,
                     test_experience_ids=torch.zeros(24, dtype=torch.long))
    with pytest.raises(DataError, match="experience 0 is empty"):
        TensorExperience(0, x[:0], y[:0])
    with pytest.raises(DataError, match="the training set is empty"):
        from_tensors(x[:0], y[:0])
    with pytest.raises(DataError, match=r"test labels \[7\] never occur in the training data"):
        class_incremental(x, y, xt, torch.full_like(yt, 7), n_experiences=3)
    with pytest.raises(ConfigError, match="blur is a fraction"):
        blurry(x, y, xt, yt, n_experiences=3, blur=1.5)
    with pytest.raises(DataError, match="labels must be integer class indices"):
        class_incremental(x, y.float(), xt, yt)


# ---------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------


def test_catalog_registers_typed_factories() -> None:
    reg = Registry()
    catalog.register(reg)
    names = reg.names("stream")
    assert names == sorted(f.__name__ for f in catalog.STREAMS)
    for entry in reg.entries("stream"):
        params = entry.parameters()
        assert "seed" in params and entry.summary
        for p in params.values():
            assert p.kind is p.KEYWORD_ONLY and p.default is not p.empty
            assert p.annotation in (int, float, bool, str, list), (entry.name, p)
    assert {"task_free", "task_labels"} <= set(reg.get("stream", "split_digits").parameters())
    s = reg.get("stream", "split_digits").factory(n_experiences=2, task_free=True, seed=1)
    assert not s.task_aware and len(s.test) == 2 and isinstance(s.test[0], EvalSet)
    assert inspect.signature(catalog.blurry_mnist).parameters["mode"].default == "blurry"


def test_every_stream_takes_task_free():
    from lifelong.config import resolve
    from lifelong.errors import ConfigError
    from lifelong.registry import get_registry
    from lifelong.run import build

    reg = get_registry()
    for e in reg.entries("stream"):          # the README's promise, for every stream
        if any(p.default is p.empty for p in e.parameters().values()):
            continue                        # file streams need a path: tested with theirs
        assert resolve({"stream": {"name": e.name, "task_free": True}}, reg)["stream"]["task_free"]
    for stream in ({"name": "blobs", "n_per_class": 5},
                   {"name": "sea_drift", "n_samples": 200, "n_test": 20}):
        run = build({"stream": {**stream, "task_free": True}, "device": "cpu"})
        assert not run.stream.task_aware
    with pytest.raises(ConfigError, match="task-free by construction"):
        build({"stream": {"name": "sea_drift", "n_samples": 200, "task_free": False},
               "device": "cpu"})
