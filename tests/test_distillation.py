"""Distillation plugins: pure losses against hand computations, behaviour, errors, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lifelong.backbones import cnn, mlp
from lifelong.errors import CheckpointError, ConfigError
from lifelong.learner import Learner
from lifelong.plugins.distillation.attention import AT, at_loss, attention_map
from lifelong.plugins.distillation.fitnet import (
    FitNet,
    hint_loss,
    kd_lambda_at,
    make_regressor,
    soft_cross_entropy_kl,
)
from lifelong.plugins.distillation.kd import KD, kd_loss
from lifelong.stream.synthetic import blobs
from lifelong.stream.transforms import joint
from lifelong.testing import make_learner, tiny_stream


# ----------------------------------------------------------------------------- fixtures
def _stream(n_per_class=24, seed=0):
    return joint(blobs(n_experiences=3, classes_per_experience=2, n_per_class=n_per_class,
                       n_test_per_class=30, separation=2.0, seed=seed))


@pytest.fixture(scope="module")
def mlp_teacher(tmp_path_factory):
    """An MLP teacher trained on 60 samples per class; its spec and the module."""
    stream = _stream(n_per_class=60)
    torch.manual_seed(3)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64])
    Learner(model, device="cpu", lr=0.1, batch_size=16, epochs=15, seed=3).fit(stream,
                                                                               evaluate=False)
    path = tmp_path_factory.mktemp("teacher") / "mlp.pt"
    torch.save(model.state_dict(), path)
    return {"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(path)}, model


@pytest.fixture(scope="module")
def cnn_teacher(tmp_path_factory):
    stream = _stream(n_per_class=60)
    torch.manual_seed(3)
    model = cnn(input_shape=stream.input_shape, num_classes=6, channels=[8, 16])
    Learner(model, device="cpu", lr=0.1, batch_size=16, epochs=10, seed=3).fit(stream,
                                                                               evaluate=False)
    path = tmp_path_factory.mktemp("teacher") / "cnn.pt"
    torch.save(model.state_dict(), path)
    return {"backbone": {"name": "cnn", "channels": [8, 16]}, "checkpoint": str(path)}, model


def _student(plugins, stream, backbone="mlp", epochs=10, seed=0):
    torch.manual_seed(seed)
    if backbone == "mlp":
        model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[32])
    else:
        model = cnn(input_shape=stream.input_shape, num_classes=6, channels=[4, 8])
    return Learner(model, plugins=plugins, device="cpu", lr=0.05, batch_size=8, epochs=epochs,
                   seed=seed).fit(stream, evaluate=False)


def _test_x(stream):
    return torch.cat([t.x for t in stream.test])


# ----------------------------------------------------------------------------- pure losses
def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    T = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [1 / (1 + math.e), math.e / (1 + math.e)]
    want = T * T * sum(p * math.log(p / q) for p, q in zip(pt, ps))
    assert float(kd_loss(s, t, T)) == pytest.approx(want, rel=1e-6)


def test_hint_loss_and_annealing_by_hand():
    r = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    h = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    assert float(hint_loss(r, h)) == pytest.approx((0.5 * 5 + 0.5 * 4) / 2)
    assert [kd_lambda_at(k, 4.0, 1.0, 3) for k in (0, 1, 2, 3, 9)] == [4.0, 3.0, 2.0, 1.0, 1.0]
    s, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    cross = -(F.softmax(t, 1) * F.log_softmax(s, 1)).sum()
    ent = -(F.softmax(t, 1) * F.log_softmax(t, 1)).sum()
    assert float(soft_cross_entropy_kl(s, t, 1.0)) == pytest.approx(float(cross - ent))


def test_regressor_shapes_follow_the_paper():
    conv = make_regressor((4, 6, 6), (8, 4, 4), relu=True)
    assert conv[0].kernel_size == (3, 3) and conv(torch.zeros(1, 4, 6, 6)).shape == (1, 8, 4, 4)
    lin = make_regressor((32,), (64,), relu=False)
    assert lin(torch.zeros(2, 32)).shape == (2, 64) and len(lin) == 1
    with pytest.raises(ConfigError, match="fitnet.*smaller than the hint"):
        make_regressor((4, 2, 2), (8, 4, 4), relu=True)


def test_attention_map_and_loss_by_hand():
    a = torch.tensor([[[[1.0, 2.0]], [[2.0, 0.0]]]])        # sum_c a^2 = [5, 4]
    assert attention_map(a).tolist()[0] == pytest.approx([5 / math.sqrt(41), 4 / math.sqrt(41)])
    b = torch.tensor([[[[0.0, 1.0]]]])                       # map [0, 1]
    d = [(5 / math.sqrt(41)) ** 2, (4 / math.sqrt(41) - 1) ** 2]
    assert float(at_loss([a], [b], beta=1000.0)) == pytest.approx(500.0 * sum(d) / 2)
    assert float(at_loss([a, a], [b, a], beta=2.0)) == pytest.approx(sum(d) / 2)


# ----------------------------------------------------------------------------- behaviour
def _kl_to(teacher, learner, x, T=4.0):
    with torch.no_grad():
        return float(kd_loss(learner.model(x), teacher(x), T))


def test_kd_brings_the_student_to_the_teacher(mlp_teacher):
    """Test-set KL to the teacher: KD well below the student alone (a flipped sign is far above)."""
    spec, teacher = mlp_teacher
    stream = _stream(n_per_class=8)
    x = _test_x(stream)
    alone = _kl_to(teacher, _student([], stream), x)
    kd = _kl_to(teacher, _student([KD(teacher=spec)], stream), x)
    assert kd < 0.5 * alone, (kd, alone)


def test_fitnet_stage_one_trains_only_the_guided_layers_and_regressor(mlp_teacher):
    spec, teacher = mlp_teacher
    stream = _stream(n_per_class=8)
    torch.manual_seed(0)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[32])
    head0, body0 = model.head.weight.clone(), model.body[1].weight.clone()
    fit = FitNet(teacher=spec, hint_steps=10**6)
    learner = Learner(model, plugins=[fit], device="cpu", lr=0.05, batch_size=8, epochs=3)
    learner.begin(stream, evaluate=False)
    reg0 = [p.detach().clone() for p in fit.auxiliary_.parameters()]
    assert any(p is q for g in learner.optimizer.param_groups for p in g["params"]
               for q in fit.auxiliary_.parameters())

    def hint_on_test():
        x = _test_x(stream)
        feats = {}
        h = model.body.register_forward_hook(lambda m, a, o: feats.setdefault("s", o))
        with torch.no_grad():
            model(x)
        h.remove()
        with torch.no_grad():
            return float(hint_loss(fit.auxiliary_(feats["s"]), teacher.body(x)))

    before = hint_on_test()
    for exp in stream.experiences():
        learner.train_experience(exp)
    assert torch.equal(model.head.weight, head0)          # the label loss is cancelled in stage 1
    assert not torch.equal(model.body[1].weight, body0)
    assert not all(torch.equal(a, b) for a, b in zip(reg0, fit.auxiliary_.parameters()))
    assert hint_on_test() < 0.5 * before


def test_fitnet_stage_two_distills(mlp_teacher):
    spec, teacher = mlp_teacher
    stream = _stream(n_per_class=8)
    x = _test_x(stream)
    alone = _kl_to(teacher, _student([], stream), x)
    fit = _kl_to(teacher, _student([FitNet(teacher=spec, hint_steps=6, anneal_steps=20)], stream), x)
    assert fit < 0.8 * alone, (fit, alone)


def test_at_brings_the_attention_maps_to_the_teacher(cnn_teacher):
    spec, teacher = cnn_teacher
    stream = _stream(n_per_class=8)
    x = _test_x(stream)

    def distance(learner):
        with torch.no_grad():
            s = learner.model.body[:3](x), learner.model.body[:6](x)
            t = teacher.body[:3](x), teacher.body[:6](x)
        return sum(float((attention_map(a) - attention_map(b)).pow(2).mean()) for a, b in zip(s, t))

    alone = distance(_student([], stream, backbone="cnn", epochs=5))
    at = distance(_student([AT(teacher=spec)], stream, backbone="cnn", epochs=5))
    assert at < 0.5 * alone, (at, alone)


# ----------------------------------------------------------------------------- errors, resume
@pytest.mark.parametrize("make,match", [
    (lambda: KD(temperature=0.0), r"plugin 'kd': temperature must be .*> 0"),
    (lambda: KD(alpha=-1.0), r"plugin 'kd': alpha"),
    (lambda: FitNet(hint_steps=-1), r"plugin 'fitnet': hint_steps"),
    (lambda: FitNet(kd_lambda=float("nan")), r"plugin 'fitnet': kd_lambda"),
    (lambda: AT(beta=-2.0), r"plugin 'at': beta"),
])
def test_bad_parameters_are_one_line_config_errors(make, match):
    with pytest.raises(ConfigError, match=match) as e:
        make()
    assert "\n" not in str(e.value)


def test_bad_teachers_and_layers_fail_before_the_first_batch(tmp_path, mlp_teacher, cnn_teacher):
    spec, _ = mlp_teacher
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04not a state dict")
    cases = [
        (KD(teacher={"run": str(tmp_path / "nope")}), r"plugin 'kd': teacher.*does not exist"),
        (KD(teacher={"backbone": {"name": "mlp"}, "checkpoint": str(tmp_path / "evil.pt")}),
         r"plugin 'kd': teacher.*not a plain weights file"),
        (FitNet(teacher=spec, student_layer="body.9"), r"plugin 'fitnet': student_layer 'body.9'"),
        (FitNet(teacher=spec, teacher_layer="head.x"), r"plugin 'fitnet': teacher_layer"),
        (AT(teacher=cnn_teacher[0], layers=[["body.2", "body.5"]]), r"plugin 'at'.*same spatial"),
        (AT(teacher=cnn_teacher[0], layers=[["body.2"]]),
         r"plugin 'at': layers must be .* got \[\['body.2'\]\]"),
        (KD(), r"plugin 'kd': teacher: missing"),
    ]
    for plugin, match in cases:
        stream = tiny_stream()
        learner = make_learner([plugin], stream)
        with pytest.raises(ConfigError, match=match) as e:
            learner.fit(stream)
        assert learner.step_index == 0 and "\n" not in str(e.value)
    stream = tiny_stream()
    learner = make_learner([AT(teacher=spec, layers=[["body.1", "body.1"]])], stream)
    with pytest.raises(ConfigError, match=r"plugin 'at'.*\(C, H, W\)"):
        learner.fit(stream)


def test_resuming_with_another_teacher_is_refused(tmp_path, mlp_teacher):
    spec, _ = mlp_teacher
    stream = tiny_stream()
    first = make_learner([KD(teacher=spec)], stream)
    first.fit(stream, stop_after=5)
    state = first.state_dict()
    other = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64])
    torch.save(other.state_dict(), tmp_path / "other.pt")
    spec2 = {"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(tmp_path / "other.pt")}
    with pytest.raises(CheckpointError, match="plugin 'kd'.*teacher"):
        make_learner([KD(teacher=spec2)], stream).fit(stream, state=state)


class _OwnsAModule:
    """A plugin with an auxiliary module: a scale on the logits, trained by the learner."""

    name = "owns"

    def __init__(self):
        self.auxiliary_ = None

    from lifelong.hookspecs import hookimpl as _impl

    @_impl
    def before_training(self, learner, stream):
        self.auxiliary_ = torch.nn.Linear(1, 1, bias=False).to(learner.device)
        torch.nn.init.ones_(self.auxiliary_.weight)

    @_impl
    def loss_terms(self, learner, step):
        w = self.auxiliary_.weight.squeeze()
        return {"scaled": F.cross_entropy(step.logits * w, torch.cat(
            [step.batch.y, *[b.y for b in step.replays]])) - step.losses["ce"]}


def test_learner_trains_a_plugins_auxiliary_module_with_its_optimizer():
    stream = tiny_stream()
    plugin = _OwnsAModule()
    learner = make_learner([plugin], stream)
    learner.fit(stream, stop_after=10)
    groups = learner.optimizer.param_groups
    assert any(p is plugin.auxiliary_.weight for g in groups for p in g["params"])
    assert float(plugin.auxiliary_.weight.detach()) != 1.0
    assert len(learner.optimizer.state_dict()["param_groups"]) == 2


def test_an_auxiliary_that_is_not_a_module_is_refused():
    stream = tiny_stream()
    plugin = _OwnsAModule()
    learner = make_learner([plugin], stream)
    plugin.auxiliary_ = [torch.zeros(1, requires_grad=True)]
    from lifelong.errors import CompositionError
    with pytest.raises(CompositionError, match="plugin 'owns': auxiliary_ must be an nn.Module"):
        learner.auxiliary_parameters()
