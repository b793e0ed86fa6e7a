"""train.compile: the whole step as one graph where it can be, the compiled forward otherwise.

Most tests replace torch.compile by a counting wrapper, so they check the
step's own arithmetic (torch.func gradients and the SGD update) and which
path each step takes; one traces the replay plugins with TorchDynamo
(fullgraph, no code generation) and one compiles with Inductor.
benchmarks/compile.py measures speed, determinism and exact resume.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from lifelong import ConfigError, hookimpl
from lifelong.plugins.expansion.pnn import PNN
from lifelong.plugins.regularization import EWC
from lifelong.plugins.replay import AGEM, DER, ER, DERpp
from lifelong.plugins.transfer.discriminative import DiscriminativeLR
from lifelong.testing import make_learner, tiny_stream

REAL_COMPILE = torch.compile


def _weights(learner):
    return {k: v.clone() for k, v in learner.model.state_dict().items()}


def _fit(compile, plugins=(), **kw):
    stream = tiny_stream()
    learner = make_learner(list(plugins), stream, **kw)
    learner.compile = compile
    return learner.fit(stream, evaluate=False)


def counting(fn, **kw):
    """A stand-in for torch.compile that runs ``fn`` as it is and counts the calls."""
    def run(*args):
        run.n += 1
        return fn(*args)
    run.n, run.kw = 0, kw
    return run


def _close(a, b, atol=1e-5):
    wa, wb = _weights(a), _weights(b)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= atol


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
    compiled = _fit(True, [AGEM(mem_size=20, batch_size=8)])  # before_update: no whole step
    assert calls == [{"dynamic": True, "mode": None}]      # compiled once, dynamic batch
    assert compiled._compiled.fn.n == compiled.step_index   # every training step used it
    err = capsys.readouterr().err
    assert ("cannot run as one compiled graph: plugin 'agem' changes the gradients before the "
            "update (before_update)") in err
    assert "train.compile: the model's forward and backward run compiled" in err
    eager = _fit(False, [AGEM(mem_size=20, batch_size=8)])
    for k, v in _weights(eager).items():
        assert torch.equal(v, _weights(compiled)[k])


def broken(fn, **kw):
    """A stand-in for torch.compile on a machine without a C++ compiler."""
    def run(*args):
        raise RuntimeError("no working C++ compiler found\nmore detail")
    return run


def test_a_compiler_failure_trains_eager_and_says_so_once(monkeypatch, capsys):
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


@pytest.mark.parametrize("make", [lambda: [], lambda: [ER(mem_size=20)],
                                  lambda: [DER(mem_size=20)], lambda: [DERpp(mem_size=20, batch_size=8)]],
                         ids=["naive", "er", "der", "derpp"])
def test_the_whole_step_computes_the_eager_sgd_step_with_momentum_and_decay(monkeypatch, capsys,
                                                                            make):
    monkeypatch.setattr(torch, "compile", counting)
    kw = {"momentum": 0.5, "weight_decay": 0.01}
    whole = _fit(True, make(), **kw)
    step = whole._whole[1]
    assert step is not None and step.fn.kw == {"dynamic": False, "fullgraph": True}
    # every step shape is compiled the second time it comes: most steps ran through the graph
    assert whole.step_index // 2 < step.fn.n < whole.step_index
    assert "runs as one compiled graph" in capsys.readouterr().err
    eager = _fit(False, make(), **kw)
    assert _close(whole, eager)   # the same gradients, momentum and decay, to float rounding
    assert whole.optimizer.state_dict()["state"].keys() == eager.optimizer.state_dict()["state"].keys()
    for p, q in zip(whole.model.parameters(), eager.model.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)  # p.grad holds the last step's gradient


class Shapes:
    """Records each step's shape as the compiled step keys it (rows, replayed slices)."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def after_update(self, learner, step):
        rows = step.n_stream + sum(len(b) for b in step.replays)
        self.seen.append((rows, tuple((sl.start, sl.stop) for _, sl in step._owners)))


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_the_whole_step_computes_the_eager_adam_step(monkeypatch, optimizer):
    monkeypatch.setattr(torch, "compile", counting)
    kw = {"optimizer": optimizer, "lr": 0.01, "weight_decay": 0.05}
    whole = _fit(True, [ER(mem_size=20)], **kw)
    assert whole._whole[1].fn.n > whole.step_index // 2
    eager = _fit(False, [ER(mem_size=20)], **kw)
    assert _close(whole, eager)  # moments, bias correction and decay (L2 or decoupled) agree
    sw, se = whole.optimizer.state_dict()["state"], eager.optimizer.state_dict()["state"]
    for k in se:
        assert sw[k]["step"] == se[k]["step"] == whole.step_index - whole.skipped_batches
        assert sw[k]["step"].dtype == se[k]["step"].dtype and sw[k]["step"].device == se[k]["step"].device
        assert torch.allclose(sw[k]["exp_avg_sq"], se[k]["exp_avg_sq"], atol=1e-7)


def test_one_off_step_shapes_run_eager_and_steady_ones_compiled(monkeypatch):
    monkeypatch.setattr(torch, "compile", counting)
    spy = Shapes()
    learner = _fit(True, [DERpp(mem_size=64, batch_size=32), spy])  # the replay batch grows
    step = learner._whole[1]
    counts = {}
    for sig in spy.seen:
        counts[sig] = counts.get(sig, 0) + 1
    compiled = {(k[0][0], k[1]) for k, ok in step.history.shapes.items() if ok}
    assert compiled and len(compiled) <= step.max_shapes
    assert any(n == 1 for n in counts.values())   # the filling buffer's shapes come once
    assert all(counts[sig] >= 2 for sig in compiled)  # and never compile
    # each compiled shape ran eager the first time, through the graph every time after
    assert step.fn.n == sum(counts[sig] - 1 for sig in compiled) < learner.step_index


class Poison:
    """A traceable loss term that is NaN at one step (its factor is a tensor the graph reads)."""

    name = "poison"
    traceable_loss = True

    def __init__(self, at):
        self.at, self.factor = at, torch.zeros(())

    @hookimpl
    def replay_batch(self, learner, step):
        self.factor.fill_(float("nan") if step.index == self.at else 0.0)

    @hookimpl
    def loss_terms(self, learner, step):
        return {"poison": step.logits.sum() * self.factor}


def test_a_non_finite_loss_in_the_whole_step_updates_nothing(monkeypatch):
    monkeypatch.setattr(torch, "compile", counting)
    kw = {"momentum": 0.5, "nan_policy": "skip"}
    whole = _fit(True, [ER(mem_size=20), Poison(5)], **kw)
    assert whole._whole[1].history.shapes and whole._whole[1].fn.n > 5
    eager = _fit(False, [ER(mem_size=20), Poison(5)], **kw)
    assert whole.skipped_batches == eager.skipped_batches == 1
    assert all(torch.isfinite(p).all() for p in whole.model.parameters())
    assert all(torch.isfinite(b).all() for b in
               (s["momentum_buffer"] for s in whole.optimizer.state.values()))
    assert _close(whole, eager)


@pytest.mark.parametrize("plugins, optimizer, why", [
    (lambda: [EWC()], "sgd", "plugin 'ewc' adds loss terms not marked traceable"),
    (lambda: [ER(mem_size=20)], lambda ps: torch.optim.RMSprop(ps, lr=0.01),
     "the optimizer is RMSprop"),
], ids=["untraceable-terms", "rmsprop"])
def test_what_keeps_a_step_off_the_whole_graph_is_named(monkeypatch, capsys, plugins, optimizer,
                                                        why):
    monkeypatch.setattr(torch, "compile", counting)
    learner = _fit(True, plugins(), optimizer=optimizer)
    assert learner._whole[1] is None
    err = capsys.readouterr().err
    assert f"cannot run as one compiled graph: {why}" in err
    assert err.count("cannot run as one compiled graph") == 1
    assert learner._compiled.fn.n == learner.step_index  # the forward-only path instead


def test_the_whole_step_resumes_exactly(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "compile", counting)
    stream = tiny_stream()
    kw = {"momentum": 0.5, "compile": True}
    full = make_learner([ER(mem_size=20)], stream, **kw).fit(stream, evaluate=False)
    half = make_learner([ER(mem_size=20)], stream, **kw)
    half.fit(stream, evaluate=False, stop_after=9)
    torch.save(half.state_dict(), tmp_path / "ck.pt")
    resumed = make_learner([ER(mem_size=20)], stream, **kw)
    resumed.fit(stream, evaluate=False, state=torch.load(tmp_path / "ck.pt", weights_only=False))
    assert resumed._whole[1].fn.n > 0
    for k, v in _weights(full).items():
        assert torch.equal(v, _weights(resumed)[k])


@pytest.mark.parametrize("make", [lambda: [ER(mem_size=20)], lambda: [DER(mem_size=20)],
                                  lambda: [DERpp(mem_size=20, batch_size=8)]], ids=["er", "der", "derpp"])
def test_replay_plugins_loss_terms_trace_as_one_graph(monkeypatch, capsys, make):
    """TorchDynamo traces the step with fullgraph=True (no code generation: backend "eager")."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: REAL_COMPILE(fn, backend="eager", **kw))
    learner = _fit(True, make())
    err = capsys.readouterr().err
    assert "runs as one compiled graph" in err and "cannot" not in err
    assert any(learner._whole[1].history.shapes.values())
    assert _close(learner, _fit(False, make()))


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler")
@pytest.mark.parametrize("kw", [{"momentum": 0.5}, {"optimizer": "adam", "lr": 0.01}],
                         ids=["sgd-momentum", "adam"])
def test_inductor_compiles_the_whole_er_step(capsys, kw):
    learner = _fit(True, [ER(mem_size=20)], **kw)
    err = capsys.readouterr().err
    assert "runs as one compiled graph" in err and "cannot" not in err
    assert any(learner._whole[1].history.shapes.values())
    assert _close(learner, _fit(False, [ER(mem_size=20)], **kw), atol=1e-4)


def test_a_corrupted_step_shape_history_is_a_checkpoint_error(monkeypatch):
    from lifelong import CheckpointError

    monkeypatch.setattr(torch, "compile", counting)
    stream = tiny_stream()
    half = make_learner([ER(mem_size=20)], stream, compile=True)
    half.fit(stream, evaluate=False, stop_after=9)
    state = half.state_dict()
    assert state["env"]["compile_shapes"]["shapes"]  # the history travels with the checkpoint
    state["env"]["compile_shapes"] = {"shapes": [["not", "a shape"]], "seen": [], "failed": False}
    with pytest.raises(CheckpointError, match="env.compile_shapes is malformed"):
        make_learner([ER(mem_size=20)], stream, compile=True).fit(stream, state=state)


def test_a_growing_task_conditioned_model_and_per_layer_rates_trace_too(monkeypatch, capsys):
    """PNN adds a column per task (a new optimizer each time, the task ids go to the model);
    DiscriminativeLR gives each layer its own learning rate (one SGD group per rate)."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: REAL_COMPILE(fn, backend="eager", **kw))
    for make, labels in ((lambda: [PNN(), ER(mem_size=20)], True),
                         (lambda: [DiscriminativeLR(), ER(mem_size=20)], False)):
        stream = tiny_stream(task_labels=labels)
        whole = make_learner(make(), stream, compile=True).fit(stream, evaluate=False)
        assert any(whole._whole[1].history.shapes.values())
        eager = make_learner(make(), stream).fit(stream, evaluate=False)
        assert _close(whole, eager)
    err = capsys.readouterr().err
    assert err.count("runs as one compiled graph") == 2 and "cannot" not in err


def test_a_whole_step_that_fails_to_compile_trains_on_and_says_so_once(monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", broken)
    fell_back = _fit(True, [ER(mem_size=20)], momentum=0.5)
    err = capsys.readouterr().err
    assert err.count("the training step cannot run as one compiled graph (RuntimeError: no "
                     "working C++ compiler found)") == 1
    assert err.count("torch.compile failed") == 1  # then the forward-only path, which fails too
    assert fell_back._whole[1].failed
    assert fell_back.state_dict()["env"]["compile_shapes"]["failed"]  # a resume will not retry
    eager = _fit(False, [ER(mem_size=20)], momentum=0.5)
    for k, v in _weights(eager).items():  # nothing was updated by the failed attempt
        assert torch.equal(v, _weights(fell_back)[k])


def test_a_resumed_run_does_not_retry_a_whole_step_that_failed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "compile", broken)
    stream = tiny_stream()
    half = make_learner([ER(mem_size=20)], stream, compile=True)
    half.fit(stream, evaluate=False, stop_after=9)
    torch.save(half.state_dict(), tmp_path / "ck.pt")
    monkeypatch.setattr(torch, "compile", counting)  # a compiler that would work now
    resumed = make_learner([ER(mem_size=20)], stream, compile=True)
    resumed.fit(stream, evaluate=False, state=torch.load(tmp_path / "ck.pt", weights_only=False))
    assert resumed._whole[1].fn.n == 0  # the same path as the run it continues: not compiled
