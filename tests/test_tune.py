"""lifelong tune: search space, the A-GEM protocol (first k experiences, fresh seeds), resume."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from lifelong.cli import main
from lifelong.errors import ConfigError, DataError
from lifelong.run import build, execute
from lifelong.stream.scenarios import select_experiences
from lifelong.stream.synthetic import blobs
from lifelong.tune import (
    check_seeds,
    final_config,
    mean_ci,
    parse_param,
    parse_space,
    tune,
    tuning_config,
    validate_space,
)

pytest.importorskip("optuna")

BASE = {"stream": {"name": "blobs", "n_experiences": 4, "n_per_class": 20,
                   "n_test_per_class": 10},
        "strategy": {"name": "er", "mem_size": 20}, "train": {"batch_size": 8},
        "eval": {"prequential": False}}


class Spy:
    """Runs each config for real and records the seed and every label its run trained on."""

    def __init__(self, fail_if=None):
        self.calls: list[dict] = []
        self.fail_if = fail_if

    def __call__(self, cfg):
        if self.fail_if is not None and self.fail_if(cfg):
            self.calls.append({"seed": cfg["seed"], "failed": True})
            raise DataError("the loss became NaN at step 3; lower train.lr")
        run = build(cfg)
        seen = torch.cat([b.y for e in run.stream.experiences() for b in e.batches(8)])
        self.calls.append({"seed": cfg["seed"], "stream": dict(cfg["stream"]),
                           "labels": set(seen.tolist()), "n_test": len(run.stream.test),
                           "lr": cfg.get("train", {}).get("lr")})
        return execute(run)


# ------------------------------------------------------------------ the search space


def test_parse_param_reads_each_distribution():
    assert parse_param("train.lr=loguniform:1e-3:0.3").low == 0.001
    p = parse_param("strategy.mem_size=int:100:1000")
    assert (p.kind, p.low, p.high) == ("int", 100, 1000) and isinstance(p.low, int)
    assert parse_param("strategy.alpha=uniform:0:1").high == 1.0
    assert parse_param("strategy.name=categorical:er,der").choices == ("er", "der")
    assert parse_param("strategy.batch_size=categorical:10,128").choices == (10, 128)
    assert parse_space([], {"train.lr": "uniform:0.01:0.1", "strategy.name": ["er", "der"]})[
        1].choices == ("er", "der")


@pytest.mark.parametrize("text, words", [
    ("train.lr=gauss:0:1", ["train.lr", "unknown distribution 'gauss'"]),
    ("train.lr=uniform:1:0.5", ["train.lr", "low must be below high"]),
    ("train.lr=uniform:1:1", ["train.lr", "low must be below high"]),
    ("train.lr=loguniform:0:1", ["train.lr", "low > 0"]),
    ("strategy.mem_size=int:1.5:10", ["strategy.mem_size", "not an integer"]),
    ("train.lr=uniform:a:1", ["train.lr", "not a number"]),
    ("train.lr=uniform:1", ["train.lr", "low:high"]),
    ("strategy.name=categorical:er", ["strategy.name", "two or more"]),
    ("strategy.name=categorical:er,er", ["strategy.name", "twice"]),
    ("train.lr", ["expected key=distribution"]),
    ("seed=int:0:9", ["seed", "--seeds"]),
    ("stream.first_experiences=int:1:3", ["stream.first_experiences", "--tune-experiences"]),
])
def test_parse_param_errors_name_the_key(text, words):
    with pytest.raises(ConfigError) as err:
        parse_param(text)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


def test_a_key_given_twice_or_no_space_is_refused():
    with pytest.raises(ConfigError, match="train.lr: given twice"):
        parse_space(["train.lr=uniform:0.01:0.1"], {"train.lr": "uniform:0.01:0.2"})
    with pytest.raises(ConfigError, match="no search space"):
        parse_space([])


@pytest.mark.parametrize("param, words", [
    ("strategy.alpha=uniform:0:1", ["strategy.alpha", "strategy 'er' has no parameter 'alpha'"]),
    ("train.lrate=uniform:0.01:0.1", ["train.lrate", "train has no key 'lrate'"]),
    ("stream.speed=uniform:0:1", ["stream.speed", "stream 'blobs' has no parameter"]),
    ("plugins.0.alpha=uniform:0:1", ["plugins.0.alpha", "0 plugins"]),
    ("optimizer.lr=uniform:0:1", ["optimizer.lr", "unknown key 'optimizer'"]),
    ("train.lr=uniform:0.01:1000", ["train.lr=1000.0", "train.lr must be"]),
    ("strategy.mem_size=int:0:50", ["strategy.mem_size=0", "mem_size"]),
    ("strategy.name=categorical:er,nope", ["strategy.name=nope", "nope"]),
])
def test_space_is_checked_against_the_config_before_any_trial(param, words):
    with pytest.raises(ConfigError) as err:
        validate_space(parse_space([param]), BASE, 2)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)


def test_a_parameter_of_one_strategy_only_is_accepted_with_a_strategy_choice():
    validate_space(parse_space(["strategy.name=categorical:er,der",
                                "strategy.alpha=uniform:0:1"]), BASE, 2)


# ------------------------------------------------------------------ the protocol


def test_first_experiences_restricts_what_the_stream_yields():
    run = build(tuning_config(BASE, 2, seed=0))
    exps = list(run.stream.experiences())
    assert [e.classes for e in exps] == [(0, 1), (2, 3)]
    assert run.stream.n_experiences == 2 and len(run.stream.test) == 2
    labels = torch.cat([b.y for e in exps for b in e.batches(8)])
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert {int(c) for s in run.stream.test for c in s.y.unique()} == {0, 1, 2, 3}
    assert run.stream.change_points == [40]
    # the kept experiences are exactly those of the whole stream, batch for batch
    whole = list(build({**BASE, "seed": 0}).stream.experiences())
    for a, b in zip(exps, whole[:2]):
        assert all(torch.equal(x.x, y.x) for x, y in zip(a.batches(8, seed=0), b.batches(8, seed=0)))
    rest = build(final_config(BASE, 2, seed=5))
    assert [(e.id, e.classes) for e in rest.stream.experiences()] == [(0, (4, 5)), (1, (6, 7))]
    assert len(rest.stream.test) == 2 and rest.stream.change_points == [40]
    assert build(final_config(BASE, 2, 5, "all")).stream.n_experiences == 4


def test_later_experiences_are_never_built():
    built = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self):
            for e in self.inner():
                built.append(e.id)
                yield e

    import dataclasses
    s = blobs(n_experiences=5)
    s = dataclasses.replace(s, make_experiences=Counting(s.make_experiences))
    assert len(list(select_experiences(s, first=2).experiences())) == 2
    assert built == [0, 1]


@pytest.mark.parametrize("keys, words", [
    ({"first_experiences": 0}, "first_experiences: expected an integer >= 1"),
    ({"first_experiences": 5}, "first_experiences must be in 1..4"),
    ({"skip_experiences": 4}, "skip_experiences must be in 0..3"),
    ({"first_experiences": 2, "skip_experiences": 2}, "skip_experiences must be in 0..1"),
    ({"skip_experiences": True}, "skip_experiences: expected an integer"),
])
def test_selection_keys_are_checked(keys, words):
    with pytest.raises(ConfigError, match=words):
        build({**BASE, "stream": {**BASE["stream"], **keys}})


def test_a_selected_run_resumes_exactly():
    cfg = {**BASE, "stream": {**BASE["stream"], "skip_experiences": 1, "first_experiences": 3}}
    full = build(cfg)
    full.learner.fit(full.stream)
    first = build(cfg)
    first.learner.fit(first.stream, stop_after=7)
    state = first.learner.state_dict()
    second = build(cfg)
    second.learner.fit(second.stream, state=state)
    for k, v in full.learner.model.state_dict().items():
        assert torch.equal(v, second.learner.model.state_dict()[k]), k


def test_reported_seeds_must_be_fresh():
    check_seeds([0, 1], [2, 3])
    with pytest.raises(ConfigError, match="seed.s. 1 are also tuning seeds"):
        check_seeds([0, 1], [1, 2])
    with pytest.raises(ConfigError, match="--seeds: a seed is given twice"):
        check_seeds([0, 0], [2])


def test_mean_ci_is_student_t():
    m, h = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and math.isclose(h, 3.182446305284263 * math.sqrt(5 / 3) / 2, rel_tol=1e-9)
    assert mean_ci([0.5]) == (0.5, 0.0)


def test_tuning_never_sees_the_reported_experiences_nor_seeds(tmp_path):
    spy = Spy()
    res = tune(BASE, parse_space(["train.lr=loguniform:0.01:0.3"]), n_trials=2,
               tune_experiences=2, out_dir=tmp_path, seeds=[0, 1], final_seeds=[7, 8], run=spy)
    tuning, final = spy.calls[:4], spy.calls[4:]
    assert all(c["labels"] <= {0, 1, 2, 3} and c["n_test"] == 2 for c in tuning)
    assert {c["seed"] for c in tuning} == {0, 1}
    assert all(c["labels"] <= {4, 5, 6, 7} and c["n_test"] == 2 for c in final)
    assert [c["seed"] for c in final] == [7, 8]
    assert all(c["lr"] == res.best_params["train.lr"] for c in final)
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["tuning_seeds"] == [0, 1] and saved["final_seeds"] == [7, 8]
    assert saved["final"]["experiences"] == [2, 3] and saved["final"]["n"] == 2
    assert "never used in tuning" in saved["summary"]["reported"]


def test_study_resumes_without_rerunning_finished_trials_and_records_failures(tmp_path):
    space = parse_space(["train.lr=uniform:0.01:0.3"])
    def nan(cfg):
        return cfg["train"]["lr"] > 0.2

    r1 = tune(BASE, space, n_trials=3, tune_experiences=2, out_dir=tmp_path, final_seeds=[5],
              run=Spy(fail_if=nan))
    assert len(r1.trials) == 3
    again = Spy(fail_if=nan)
    r2 = tune(BASE, space, n_trials=5, tune_experiences=2, out_dir=tmp_path, final_seeds=[5],
              run=again)
    assert len(r2.trials) == 5 and r2.trials[:3] == r1.trials
    assert len(again.calls) == 2 + 1  # two new trials of one seed, one reported run
    same = Spy()
    tune(BASE, space, n_trials=5, tune_experiences=2, out_dir=tmp_path, final_seeds=[5], run=same)
    assert len(same.calls) == 1  # nothing left to tune: only the reported run
    failed = [t for t in r2.trials if t["state"] == "FAIL"]
    assert all("NaN" in t["error"] for t in failed)
    assert all(t["params"]["train.lr"] > 0.2 for t in failed)
    assert all(t["params"]["train.lr"] <= 0.2 for t in r2.trials if t["state"] == "COMPLETE")
    assert len({t["params"]["train.lr"] for t in r2.trials}) == 5  # resumed draws are new points


def test_same_command_same_trials_and_other_settings_refused(tmp_path):
    space = parse_space(["train.lr=loguniform:0.01:0.3", "strategy.mem_size=int:10:40"])
    runs = [tune(BASE, space, n_trials=3, tune_experiences=1, out_dir=tmp_path / d,
                 final_seeds=[4], run=Spy()) for d in ("a", "b")]
    assert [t["params"] for t in runs[0].trials] == [t["params"] for t in runs[1].trials]
    with pytest.raises(ConfigError, match="other settings .tune_experiences differ"):
        tune(BASE, space, n_trials=3, tune_experiences=2, out_dir=tmp_path / "a", run=Spy())
    with pytest.raises(ConfigError, match="--metric nope: not in the run's metrics"):
        tune(BASE, space, n_trials=3, tune_experiences=1, out_dir=tmp_path / "c", metric="nope",
             run=Spy())


def test_cli_tune_end_to_end(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({**BASE, "stream": {**BASE["stream"], "n_experiences": 3}}))
    code = main(["tune", str(cfg), "--param", "train.lr=loguniform:0.01:0.3",
                 "--param", "strategy.name=categorical:er,der", "--param",
                 "strategy.alpha=uniform:0:1", "--n-trials", "3", "--tune-experiences", "2",
                 "--seeds", "0", "--final-seeds", "1,2", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "tuning seeds: 0 (experiences 0-1 of 3)" in out
    assert "reported seeds: 1, 2, never used in tuning (experiences 2-2 of 3)" in out
    assert lines[-1].startswith("results:") or "study.db" in lines[-1]
    saved = json.loads((tmp_path / "o" / "tune.json").read_text())
    assert saved["n_trials"] == 3 and (tmp_path / "o" / "study.db").is_file()
    assert 0.0 <= saved["final"]["mean"] <= 1.0


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps(BASE))
    code = main(["tune", str(cfg), "--param", "strategy.alpha=uniform:0:1",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "strategy.alpha" in err
    monkeypatch.setitem(sys.modules, "optuna", None)  # the extra is not installed
    code = main(["tune", str(cfg), "--param", "train.lr=uniform:0.01:0.1",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'lifelong[tune]'" in err and err.count("\n") == 1
