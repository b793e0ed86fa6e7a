"""train.compile: the compiled forward is used, a compiler failure falls back to eager in one line.

torch.compile itself is not run here (it takes minutes on a small CPU);
benchmarks/compile.py runs it, with its determinism and resume checks.
"""

from __future__ import annotations

import pytest
import torch

from lifelong import ConfigError
from lifelong.plugins.replay import ER
from lifelong.testing import make_learner, tiny_stream


def _weights(learner):
    return {k: v.clone() for k, v in learner.model.state_dict().items()}


def _fit(compile, plugins=()):
    stream = tiny_stream()
    learner = make_learner(list(plugins), stream)
    learner.compile = compile
    return learner.fit(stream, evaluate=False)


def test_compile_routes_the_training_forward_through_the_compiler(monkeypatch, capsys):
    calls = []

    def fake_compile(model, **kw):
        calls.append(kw)

        def run(*args):
            run.n += 1
            return model(*args)
        run.n = 0
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    compiled = _fit(True, [ER(mem_size=20)])
    assert calls == [{"dynamic": True, "mode": None}]      # compiled once, dynamic batch
    assert compiled._compiled.fn.n == compiled.step_index   # every training step used it
    assert "train.compile: the model's forward and backward run compiled" in capsys.readouterr().err
    eager = _fit(False, [ER(mem_size=20)])
    for k, v in _weights(eager).items():
        assert torch.equal(v, _weights(compiled)[k])


def test_a_compiler_failure_trains_eager_and_says_so_once(monkeypatch, capsys):
    def broken(model, **kw):
        def run(*args):
            raise RuntimeError("no working C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    fell_back = _fit(True)
    err = capsys.readouterr().err
    assert err.count("torch.compile failed") == 1
    assert "RuntimeError: no working C++ compiler found); the training step runs eager" in err
    eager = _fit(False)
    for k, v in _weights(eager).items():
        assert torch.equal(v, _weights(fell_back)[k])


def test_compile_must_be_a_boolean():
    stream = tiny_stream()
    with pytest.raises(ConfigError, match="train.compile must be true or false"):
        make_learner([], stream, compile="yes")
