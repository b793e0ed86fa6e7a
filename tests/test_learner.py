"""The learner's event loop, composition rules and error handling."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lifelong import Batch, CompositionError, ConfigError, DataError, Learner, NonFiniteLossError, hookimpl
from lifelong.backbones import mlp
from lifelong.plugins.evaluation import AccuracyMatrix
from lifelong.stream.synthetic import blobs
from lifelong.testing import make_learner, tiny_stream

HOOKS = ("before_training", "before_experience", "expand_model", "replay_batch", "loss_terms",
         "combine_losses", "before_update", "after_update", "detect_boundary",
         "after_experience", "after_eval", "after_training", "parameter_groups",
         "sample_weights")


class Recorder:
    """Implements every hook and records the order they are called in."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def before_training(self, learner, stream):
        self.calls.append("before_training")

    @hookimpl
    def after_training(self, learner):
        self.calls.append("after_training")

    @hookimpl
    def before_experience(self, learner, experience):
        self.calls.append(f"before_experience({None if experience is None else experience.id})")

    @hookimpl
    def after_experience(self, learner, experience):
        self.calls.append(f"after_experience({None if experience is None else experience.id})")

    @hookimpl
    def expand_model(self, learner, experience):
        self.calls.append("expand_model")

    @hookimpl
    def replay_batch(self, learner, step):
        self.calls.append("replay_batch")

    @hookimpl
    def sample_weights(self, learner, step):
        self.calls.append("sample_weights")

    @hookimpl
    def loss_terms(self, learner, step):
        self.calls.append("loss_terms")

    @hookimpl
    def combine_losses(self, learner, step, losses):
        self.calls.append("combine_losses")

    @hookimpl
    def before_update(self, learner, step):
        self.calls.append("before_update")

    @hookimpl
    def after_update(self, learner, step):
        self.calls.append("after_update")

    @hookimpl
    def detect_boundary(self, learner, step):
        self.calls.append("detect_boundary")

    @hookimpl
    def after_eval(self, learner, report):
        self.calls.append(f"after_eval({report.kind})")

    @hookimpl
    def parameter_groups(self, learner, model):
        self.calls.append("parameter_groups")


STEP = ["replay_batch", "sample_weights", "loss_terms", "combine_losses", "before_update", "after_update"]


def test_golden_hook_sequence_task_aware():
    stream = blobs(n_experiences=2, classes_per_experience=2, n_per_class=4, n_test_per_class=2)
    rec = Recorder()
    Learner(mlp(input_shape=(1, 4, 4), num_classes=4), plugins=[rec], batch_size=4,
            device="cpu").fit(stream)
    expected = ["parameter_groups", "before_training", "parameter_groups", "after_eval(initial)"]
    for e in range(2):
        expected += [f"before_experience({e})", "expand_model", *STEP * 2,
                     f"after_experience({e})", "after_eval(experience_end)"]
    expected += ["after_training"]
    assert rec.calls == expected


def test_golden_hook_sequence_task_free_asks_for_boundaries():
    stream = blobs(n_experiences=2, classes_per_experience=2, n_per_class=4, n_test_per_class=2,
                   task_aware=False)
    rec = Recorder()
    Learner(mlp(input_shape=(1, 4, 4), num_classes=4), plugins=[rec], batch_size=4,
            device="cpu").fit(stream)
    step = [*STEP, "detect_boundary"]
    expected = ["parameter_groups", "before_training", "parameter_groups", "after_eval(initial)",
                "before_experience(None)",
                "expand_model", *step * 2, "after_eval(experience_end)", *step * 2,
                "after_experience(None)", "after_eval(experience_end)", "after_training"]
    assert rec.calls == expected


def test_every_hook_in_the_specs_is_in_the_golden_test():
    from lifelong import hookspecs

    specs = {n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "lifelong_spec")}
    assert specs == set(HOOKS) | {"register"}


class Combiner:
    @hookimpl
    def combine_losses(self, learner, step, losses):
        return sum(losses.values())


class GradientOwner:
    owns = ("gradient",)

    @hookimpl
    def before_update(self, learner, step):
        pass


def test_two_deciders_refused_when_assembled():
    with pytest.raises(CompositionError, match="combine_losses"):
        make_learner([Combiner(), Combiner()], tiny_stream())


def test_two_gradient_owners_refused():
    with pytest.raises(CompositionError, match="gradient stage"):
        make_learner([GradientOwner(), GradientOwner()], tiny_stream())


def test_misspelled_hook_is_an_error():
    class Typo:
        @hookimpl
        def befor_update(self, learner, step):
            pass

    with pytest.raises(CompositionError, match="befor_update"):
        make_learner([Typo()], tiny_stream())


def test_plugin_needing_boundaries_refused_on_task_free_stream_before_first_batch():
    class NeedsBoundaries:
        requires = ("boundaries",)

        @hookimpl
        def after_experience(self, learner, experience):
            pass

    stream = tiny_stream(task_aware=False)
    learner = make_learner([NeedsBoundaries()], stream)
    with pytest.raises(CompositionError, match="boundar"):
        learner.fit(stream)
    assert learner.step_index == 0


def test_duplicate_loss_term_names_refused():
    class Term:
        @hookimpl
        def loss_terms(self, learner, step):
            return {"reg": step.losses["ce"] * 0}

    stream = tiny_stream()
    with pytest.raises(CompositionError, match="'reg'"):
        make_learner([Term(), Term()], stream).fit(stream)


class FixedReplay:
    """Replays the same 3 samples every step and records their logits' shape."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    @hookimpl
    def replay_batch(self, learner, step):
        return Batch(torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long))

    @hookimpl
    def loss_terms(self, learner, step):
        logits = step.logits_of(self)
        self.shapes.append(tuple(logits.shape))
        assert torch.equal(logits, step.logits[step.n_stream:])
        return {"replay_ce": nn.functional.cross_entropy(logits, step.replay_of(self).y)}


def test_replay_is_concatenated_into_one_forward():
    stream = tiny_stream()
    plugin = FixedReplay()
    learner = make_learner([plugin], stream)
    learner.fit(stream)
    assert plugin.shapes and all(s == (3, 6) for s in plugin.shapes)


def test_replay_with_wrong_shape_is_a_clear_error():
    class BadReplay:
        @hookimpl
        def replay_batch(self, learner, step):
            return Batch(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))

    stream = tiny_stream()
    with pytest.raises(DataError, match="BadReplay.*shape"):
        make_learner([BadReplay()], stream).fit(stream)


def test_expand_model_replaces_model_and_rebuilds_optimizer():
    class Grow:
        def __init__(self):
            self.models = []

        @hookimpl
        def expand_model(self, learner, experience):
            m = mlp(input_shape=(1, 4, 4), num_classes=6, hidden=[8 * (len(self.models) + 1)])
            self.models.append(m)
            return m

    stream = tiny_stream()
    grow = Grow()
    learner = make_learner([grow], stream)
    learner.fit(stream)
    assert learner.model is grow.models[-1] and len(grow.models) == 3
    opt_params = {id(p) for g in learner.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in learner.model.parameters()}


def test_detected_boundary_fires_experience_hooks_in_task_free_stream():
    class EveryFive:
        def __init__(self):
            self.ends = 0

        @hookimpl
        def detect_boundary(self, learner, step):
            return (step.index + 1) % 5 == 0

        @hookimpl
        def after_experience(self, learner, experience):
            assert experience is None
            self.ends += 1

    stream = tiny_stream(task_aware=False)
    det = EveryFive()
    learner = make_learner([det], stream)
    learner.fit(stream)
    assert learner.step_index == 18
    assert len(learner.boundaries_detected) == 3
    assert det.ends == 3 + 1  # detections + the stream's end


class Explode:
    def __init__(self, at: int):
        self.at = at

    @hookimpl
    def loss_terms(self, learner, step):
        bad = torch.tensor(float("nan")) if step.index == self.at else torch.tensor(0.0)
        return {"explode": bad}


def test_nan_loss_stops_naming_the_batch():
    stream = tiny_stream()
    learner = make_learner([Explode(4)], stream)
    with pytest.raises(NonFiniteLossError, match="batch 4"):
        learner.fit(stream)
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())


def test_nan_loss_skip_policy_counts_and_keeps_weights_finite():
    stream = tiny_stream()
    learner = make_learner([Explode(4)], stream, nan_policy="skip")
    learner.fit(stream)
    assert learner.skipped_batches == 1
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())


def test_nan_check_deferred_on_device_still_names_first_bad_batch():
    stream = tiny_stream()
    learner = make_learner([Explode(3)], stream, check_every=7)
    with pytest.raises(NonFiniteLossError, match="batch 3"):
        learner.fit(stream)


def test_wrong_input_shape_refused_before_training():
    stream = tiny_stream()
    model = mlp(input_shape=(1, 5, 5), num_classes=6)
    learner = Learner(model, device="cpu")
    with pytest.raises(DataError, match=r"cannot take inputs of shape \(1, 4, 4\)"):
        learner.fit(stream)


def test_head_smaller_than_classes_refused():
    stream = tiny_stream()
    learner = Learner(mlp(input_shape=(1, 4, 4), num_classes=4), device="cpu")
    with pytest.raises(DataError, match="6 classes"):
        learner.fit(stream)


def test_multi_epoch_per_experience():
    stream = tiny_stream()
    one = make_learner([], stream)
    one.fit(stream)
    three = make_learner([], stream, epochs=3)
    three.fit(stream)
    assert three.step_index == 3 * one.step_index


def test_naive_forgets_and_task_il_is_at_least_class_il():
    stream = blobs(n_experiences=2, classes_per_experience=2, n_per_class=100, seed=1)
    am = AccuracyMatrix()
    Learner(mlp(input_shape=(1, 4, 4), num_classes=4), plugins=[am], device="cpu", lr=0.1,
            batch_size=10, epochs=2).fit(stream)
    s = am.summary()
    R = s["accuracy_matrix"]
    assert R[0][0] > 0.8 and R[1][0] < R[0][0] - 0.3, R  # forgetting in Class-IL
    assert s["final_avg_accuracy_task_il"] >= s["final_avg_accuracy"]
    assert s["bwt"] < -0.25 and s["avg_forgetting"] > 0.25


def test_device_auto_resolves_to_cpu_without_cuda():
    learner = Learner(nn.Linear(2, 2), device="auto")
    assert learner.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_keeps_tensors_on_device():
    stream = tiny_stream()
    torch.manual_seed(0)
    learner = Learner(mlp(input_shape=(1, 4, 4), num_classes=6), plugins=[AccuracyMatrix()],
                      device="cuda")
    learner.fit(stream)
    assert all(p.is_cuda for p in learner.model.parameters())


@pytest.mark.parametrize("hook", [*HOOKS, "register"])
def test_every_hook_is_documented(hook):
    import inspect

    from lifelong import hookspecs

    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    summary = doc.splitlines()[0] if doc else ""
    assert summary.endswith(".") and len(summary) > 20, f"{hook}: one-line summary"
    params = [p for p in inspect.signature(getattr(hookspecs, hook)).parameters]
    for p in params:
        assert f":param {p}:" in doc, f"{hook}: parameter {p} is not documented"
    assert "Example" in doc and "@hookimpl" in doc, f"{hook}: no example"


class _Groups:
    def __init__(self, groups):
        self.groups = groups

    @hookimpl
    def parameter_groups(self, learner, model):
        return self.groups


def test_parameter_groups_freeze_and_scale_the_learning_rate():
    stream = blobs(n_experiences=1, classes_per_experience=2, n_per_class=4, n_test_per_class=2)
    model = mlp(input_shape=(1, 4, 4), num_classes=2, hidden=[3])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    learner = Learner(model, plugins=[_Groups({"body": 0.0}), _Groups({"head.weight": 0.5}),
                                      _Groups({"head": 0.5})], batch_size=4, device="cpu", lr=0.2)
    lrs = sorted(g["lr"] for g in learner.optimizer.param_groups)
    assert lrs == [0.05, 0.1]  # head.weight 0.2 * 0.5 * 0.5, head.bias 0.2 * 0.5
    learner.fit(stream)
    for n, p in learner.model.named_parameters():
        if n.startswith("body"):
            assert torch.equal(p, before[n]) and not p.requires_grad
        else:
            assert not torch.equal(p, before[n])


@pytest.mark.parametrize("groups", [{"nope": 1.0}, {"body": -1.0}, {"body": float("nan")}])
def test_bad_parameter_groups_are_config_errors(groups):
    model = mlp(input_shape=(1, 4, 4), num_classes=2, hidden=[3])
    with pytest.raises(ConfigError):
        Learner(model, plugins=[_Groups(groups)], device="cpu")


def test_trainable_parameters_follow_the_model_through_freezing_surgery_and_growth():
    """The learner's cached parameter map never hands a plugin a stale parameter."""
    stream = tiny_stream()
    learner = make_learner([], stream)
    first = learner.trainable_parameters()
    assert list(first) == [n for n, _ in learner.model.named_parameters()]
    name, p = next(iter(first.items()))
    p.requires_grad_(False)  # frozen: drops out at once
    assert name not in learner.trainable_parameters()
    p.requires_grad_(True)
    layer = next(m for m in learner.model.modules() if isinstance(m, torch.nn.Linear))
    layer.weight = torch.nn.Parameter(layer.weight.detach().clone())  # surgery in place
    learner.end_experience(None)  # a boundary: the cache is read again
    assert any(q is layer.weight for q in learner.trainable_parameters().values())
    learner.model = copy.deepcopy(learner.model)  # a new model assigned directly
    assert all(any(q is r for r in learner.model.parameters())
               for q in learner.trainable_parameters().values())


def test_plain_sgd_runs_fused_with_the_per_tensor_loops_bits_and_the_others_run_unfused():
    """Fused plain SGD is one kernel a step; the weights equal torch's per-tensor SGD's bit
    for bit. Momentum and Adam keep torch's default (per-tensor) implementation."""
    stream = tiny_stream()
    torch.manual_seed(0)
    model = mlp(input_shape=stream.input_shape, num_classes=stream.num_classes, hidden=[8])
    ref_model = copy.deepcopy(model)
    learner = Learner(model, lr=0.1, batch_size=4, device="cpu", seed=0)
    assert learner.optimizer.defaults["fused"] is True
    learner.fit(stream, evaluate=False)
    ref = Learner(ref_model, lr=0.1, batch_size=4, device="cpu", seed=0,
                  optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert not ref.optimizer.defaults.get("fused")
    ref.fit(stream, evaluate=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters()))
    m = mlp(input_shape=(4,), num_classes=2)
    assert not Learner(m, momentum=0.9, device="cpu").optimizer.defaults.get("fused")
    assert not Learner(m, optimizer="adam", device="cpu").optimizer.defaults.get("fused")
