"""Property-based tests: generated configs, data and streams never produce a crash
that is not one of lifelong's own errors, and every plugin trains on any small stream."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.config import resolve
from lifelong.errors import LifelongError
from lifelong.registry import get_registry
from lifelong.stream.adapters import from_tensors
from lifelong.stream.synthetic import blobs
from lifelong.testing import contract_factory, make_learner, multitask_view

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 300),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=6)
sections = st.fixed_dictionaries({}, optional={
    "stream": st.one_of(st.just({"name": "blobs"}), st.dictionaries(
        st.sampled_from(["name", "n_experiences", "n_per_class", "bogus", "seed"]), values,
        max_size=3), values),
    "train": st.dictionaries(st.sampled_from(["lr", "batch_size", "epochs", "optimizer",
                                              "nan_policy", "zzz"]), values, max_size=3),
    "plugins": st.lists(st.one_of(st.sampled_from(get_registry().names("plugin")),
                                  st.dictionaries(st.sampled_from(["name", "every", "x"]),
                                                  values, max_size=2)), max_size=2),
    "strategy": st.one_of(st.sampled_from(get_registry().names("strategy")), values),
    "seed": values,
    "eval": st.dictionaries(st.sampled_from(["every", "window", "oops"]), values, max_size=2),
    "extra": values,
})


@FAST
@given(sections)
def test_any_config_resolves_or_raises_a_config_error(cfg):
    try:
        out = resolve(cfg)
    except LifelongError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert out["stream"]["name"] in get_registry().names("stream")


@FAST
@given(n=st.integers(0, 12), d=st.integers(1, 4), classes=st.integers(1, 4),
       nan=st.booleans(), shift=st.integers(-1, 2), float_labels=st.booleans())
def test_any_tensor_data_builds_a_stream_or_raises_a_data_error(n, d, classes, nan, shift,
                                                               float_labels):
    g = torch.Generator().manual_seed(n * 31 + d)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g) + (shift if n else 0)
    if nan and n:
        x[n // 2, 0] = math.nan
    if float_labels:
        y = y.float()
    try:
        stream = from_tensors(x, y, num_classes=classes)
    except LifelongError as exc:
        assert str(exc)
    else:
        assert not nan and 0 <= int(y.min()) and int(y.max()) < classes
        assert sum(len(e.y) for e in stream.experiences()) == n


stream_shapes = st.fixed_dictionaries({
    "n_experiences": st.integers(1, 3), "classes_per_experience": st.integers(1, 2),
    "n_per_class": st.integers(1, 6), "task_aware": st.booleans(),
    "batch_size": st.integers(1, 4), "seed": st.integers(0, 3)})


@pytest.mark.parametrize("name", get_registry().names("plugin"))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=stream_shapes)
def test_every_plugin_trains_on_any_small_stream(name, shape):
    factory = contract_factory(get_registry().get("plugin", name).factory)
    plugin = factory()
    needs = set(getattr(plugin, "requires", ()))
    bs = shape.pop("batch_size")
    if "boundaries" in needs:
        shape["task_aware"] = True
    stream = blobs(n_test_per_class=2, task_labels="task_labels" in needs, **shape)
    lr = 0.05
    if "multitask" in needs:  # multi-task methods train on the same samples with three targets
        stream = multitask_view(stream)
        # three summed losses at batch 1: SGD at 0.05 diverges on a few of these streams even
        # with no plugin at all (the regression head), so the property would test the fixture
        lr = 0.02
    learner = make_learner([plugin], stream, batch_size=bs, lr=lr)
    learner.fit(stream)
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())
    assert learner.samples_seen == shape["n_experiences"] * shape["classes_per_experience"] * \
        shape["n_per_class"]
