"""lifelong.river.Classifier: river's interface over a lifelong learner."""

from __future__ import annotations

import json
import pickle
import warnings

import pandas as pd
import pytest
from river import checks, datasets, evaluate, metrics

from lifelong.errors import DataError
from lifelong.river import Classifier
from lifelong.run import run_config


def river_checks():
    model = Classifier(**next(Classifier._unit_test_params()))
    memory_checks = 0
    for check in checks.yield_checks(model):
        if check.__name__ == "check_bounded_memory_growth":
            # it runs 2,000 rows a data set: once (Phishing) is enough for a fixed-size model
            memory_checks += 1
            if memory_checks > 1:
                continue
        yield pytest.param(model, check, id=check.__name__)


@pytest.mark.filterwarnings("ignore:lifelong.river.Classifier")
@pytest.mark.parametrize(("model", "check"), river_checks())
def test_river_estimator_checks(model, check):
    check(model.clone())


@pytest.mark.parametrize("batch_size", [1, 8])
def test_same_prequential_accuracy_as_lifelong_run_on_the_same_stream(tmp_path, batch_size):
    path = tmp_path / "phishing.jsonl"
    with open(path, "w") as fh:
        for x, y in datasets.Phishing().take(600):
            fh.write(json.dumps({**x, "is_phishing": y}, sort_keys=True) + "\n")
    model = Classifier(backbone_params={"hidden": [16]}, optimizer="adam", lr=0.05,
                       batch_size=batch_size, classes=(False, True))
    acc = evaluate.progressive_val_score(datasets.Phishing().take(600), model, metrics.Accuracy())
    out = run_config({"stream": {"name": "jsonl", "path": str(path), "target": "is_phishing",
                                 "classes": [False, True]},
                      "backbone": {"name": "mlp", "hidden": [16]},
                      "train": {"batch_size": batch_size, "optimizer": "adam", "lr": 0.05}})
    assert out["samples_seen"] == model.learner.samples_seen == 600
    assert acc.get() == out["prequential_accuracy"]
    assert acc.get() > 0.75  # it learns: a constant guess scores about 0.55 here


def test_new_keys_take_free_slots_and_absent_keys_read_zero():
    m = Classifier(n_features=3, backbone_params={"hidden": [4]}, classes=("a", "b"))
    m.learn_one({"z": 1.0, "b": 2.0}, "a")
    assert m.features_ == {"b": 0, "z": 1}  # new keys in sorted order, whatever the dict order
    m.learn_one({"c": 3.0, "z": 1.0}, "b")
    assert m.features_ == {"b": 0, "z": 1, "c": 2}
    with pytest.warns(UserWarning, match="feature 'd' is new but all 3 input slots"):
        m.learn_one({"d": 1.0, "b": 1.0}, "a")
    m.learn_one({"d": 5.0}, "a")
    assert m.ignored_features_ == {"d": 2}
    p = m.predict_proba_one({"b": 1.0})
    assert set(p) == {"a", "b"} and abs(sum(p.values()) - 1) < 1e-9
    assert m.predict_proba_one({"b": 1.0}) == m.predict_proba_one({"b": 1.0, "d": 7.0})


def test_classes_learned_as_they_come_and_bad_input_refused():
    m = Classifier(max_classes=2, backbone_params={"hidden": [4]})
    assert m.predict_one({"x": 1.0}) is None
    m.learn_one({"x": 1.0}, "cat")
    assert list(m.predict_proba_one({"x": 1.0})) == ["cat"]
    m.learn_one({"x": 2.0}, "dog")
    with pytest.raises(DataError, match="max_classes=2"):
        m.learn_one({"x": 2.0}, "cow")
    with pytest.raises(DataError, match="feature 'x' is NaN"):
        m.learn_one({"x": float("nan")}, "dog")
    with pytest.raises(DataError, match="'x' is 'abc', not a number"):
        m.learn_one({"x": "abc"}, "dog")
    fixed = Classifier(classes=(0, 1), backbone_params={"hidden": [4]})
    with pytest.raises(DataError, match="label 2 is not one of classes"):
        fixed.learn_one({"x": 1.0}, 2)
    skip = Classifier(nan_policy="skip", backbone_params={"hidden": [4]})
    skip.learn_many(pd.DataFrame({"x": [1.0, float("nan"), 3.0]}), pd.Series([0, 1, 1]))
    assert skip.skipped_rows_ == 1 and skip.learner.samples_seen == 2


def test_pickled_model_continues_exactly():
    data = list(datasets.Phishing().take(120))
    a = Classifier(plugins=[{"name": "er", "mem_size": 20}], batch_size=4,
                   backbone_params={"hidden": [8]})
    for x, y in data[:60]:
        a.learn_one(x, y)
    b = pickle.loads(pickle.dumps(a))
    for x, y in data[60:]:
        a.learn_one(x, y)
        b.learn_one(x, y)
    assert [a.predict_proba_one(x) for x, _ in data[:10]] == [b.predict_proba_one(x) for x, _ in data[:10]]


def test_predict_many_matches_predict_one_on_frames():
    m = Classifier(backbone_params={"hidden": [8]})
    X = pd.DataFrame([x for x, _ in datasets.Phishing().take(40)])
    y = pd.Series([y for _, y in datasets.Phishing().take(40)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.learn_many(X, y)
    assert list(m.predict_many(X)) == [m.predict_one(x) for x in X.to_dict("records")]


def test_an_estimator_leaves_the_process_thread_setting_alone():
    import torch

    from lifelong.threads import available_cores

    before = torch.get_num_threads()
    n = min(2, available_cores())
    torch.set_num_threads(n)
    try:
        m = Classifier(backbone_params={"hidden": [4]})  # "auto" would pick 1 thread for it
        m.learn_one({"x": 1.0}, 0)
        assert torch.get_num_threads() == n
        assert Classifier(threads=1, backbone_params={"hidden": [4]}).config(1)["train"]["threads"] == 1
    finally:
        torch.set_num_threads(before)
