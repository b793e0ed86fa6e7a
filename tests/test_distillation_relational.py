"""Jacobian matching, RKD, VID and CRD: pure losses against hand computations, behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lifelong.backbones import mlp
from lifelong.errors import ConfigError
from lifelong.learner import Learner
from lifelong.plugins.distillation.crd import (
    CRD,
    bank_scores,
    critic_scores,
    momentum_update,
    nce_loss,
    same_input,
)
from lifelong.plugins.distillation.jacobian import JacobianMatching, input_gradient, jacobian_loss
from lifelong.plugins.distillation.rkd import RKD, angles, normalized_distances, rkd_distance_loss
from lifelong.plugins.distillation.vid import VID, VIDHead, vid_nll
from lifelong.stream.synthetic import blobs
from lifelong.stream.transforms import joint
from lifelong.testing import make_learner, tiny_stream


def _huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def _stream(n_per_class=8):
    return joint(blobs(n_experiences=3, classes_per_experience=2, n_per_class=n_per_class,
                       n_test_per_class=30, separation=2.0, seed=0))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    stream = _stream(n_per_class=60)
    torch.manual_seed(3)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[64])
    Learner(model, device="cpu", lr=0.1, batch_size=16, epochs=15, seed=3).fit(stream,
                                                                               evaluate=False)
    path = tmp_path_factory.mktemp("teacher") / "mlp.pt"
    torch.save(model.state_dict(), path)
    return {"backbone": {"name": "mlp", "hidden": [64]}, "checkpoint": str(path)}, model


def _student(plugins, stream, epochs=10):
    torch.manual_seed(0)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[32])
    return Learner(model, plugins=plugins, device="cpu", lr=0.05, batch_size=8, epochs=epochs,
                   seed=0).fit(stream, evaluate=False)


def _x(stream):
    return torch.cat([t.x for t in stream.test])


# ----------------------------------------------------------------------------- pure functions
def test_jacobian_loss_and_input_gradient_by_hand():
    assert float(jacobian_loss(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]]))) == \
        pytest.approx(0.16 + 0.64)
    lin = nn.Linear(2, 3)
    g = input_gradient(lin, torch.randn(4, 2), torch.tensor([0, 2, 1, 2]), create_graph=False)
    assert torch.allclose(g, lin.weight[[0, 2, 1, 2]].detach())


def test_rkd_distances_and_angles_by_hand():
    t = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    psi, mask = normalized_distances(t)
    assert psi[0, 1] == pytest.approx(0.75) and psi[1, 2] == pytest.approx(1.25)
    a = angles(t)
    assert a[1, 0, 2] == pytest.approx(0.0, abs=1e-6) and a[0, 1, 2] == pytest.approx(0.6)
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mu_s = (4 + 2 * math.sqrt(2)) / 6
    ps = [1 / mu_s, 1 / mu_s, math.sqrt(2) / mu_s]
    want = sum(_huber(p, q) for p, q in zip(ps, [0.75, 1.0, 1.25])) / 3
    assert float(rkd_distance_loss(s, t)) == pytest.approx(want, rel=1e-5)
    assert float(rkd_distance_loss(s[:1], t[:1])) == 0.0       # a batch of one has no pairs


def test_vid_likelihood_and_variance_by_hand():
    nll = vid_nll(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0), torch.tensor([2.0]))
    assert float(nll) == pytest.approx(0.5 * math.log(2) + 4 / 4)
    head = VIDHead(3, 4, conv=True, init_variance=5.0, eps=1e-5)
    assert torch.allclose(head.variance(), torch.full((4,), 5.0))
    assert head(torch.zeros(2, 3, 2, 2), torch.zeros(2, 4, 2, 2)).shape == ()


def test_crd_critic_and_nce_by_hand():
    a = torch.tensor([[1.0, 0.0]])
    scores = critic_scores(a, torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]]),
                           tau=0.5)
    assert scores.tolist()[0] == pytest.approx([math.exp(2), 1.0, math.exp(-2)])
    z, m, k = 2.0, 4, 2
    h = [math.exp(2) / z, 1 / z, math.exp(-2) / z]
    want = -math.log(h[0] / (h[0] + k / m)) - sum(math.log((k / m) / (q + k / m)) for q in h[1:])
    assert float(nce_loss(scores, z, m)) == pytest.approx(want, rel=1e-5)
    # a negative left out (it holds the row's own input) drops its term; K and M stay
    keep = torch.tensor([[1.0, 0.0]])
    want = -math.log(h[0] / (h[0] + k / m)) - math.log((k / m) / (h[1] + k / m))
    assert float(nce_loss(scores, z, m, keep)) == pytest.approx(want, rel=1e-5)


def test_crd_bank_scores_same_input_and_momentum_by_hand():
    g = torch.Generator().manual_seed(0)
    a, p, bank = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), \
        torch.randn(5, 4, generator=g)
    idx = torch.randint(5, (3, 7), generator=g)          # K >= M: scored against the whole bank
    assert torch.allclose(bank_scores(a, p, bank, idx, 0.5), critic_scores(a, p, bank[idx], 0.5))
    keys = torch.tensor([2.5, -1.0], dtype=torch.float64)
    bank_keys = torch.tensor([float("nan"), -1.0, 2.5, 2.5 + 1e-6], dtype=torch.float64)
    assert same_input(keys, bank_keys).tolist() == [[False, False, True, False],
                                                    [False, True, False, False]]
    new = momentum_update(torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0]]), 0.5)
    assert torch.allclose(new, torch.tensor([[0.8, 0.4]]) / math.sqrt(0.8)), new


# ----------------------------------------------------------------------------- behaviour
def test_jacobian_matching_aligns_the_input_gradients(teacher):
    spec, t = teacher
    stream = _stream()
    x, y = _x(stream), torch.cat([e.y for e in stream.test])

    def distance(learner):
        js = input_gradient(learner.model.eval(), x, y, create_graph=False)
        return float(jacobian_loss(js, input_gradient(t, x, y, create_graph=False)))

    alone = distance(_student([], stream))
    jm = distance(_student([JacobianMatching(teacher=spec)], stream))
    assert jm < 0.6 * alone, (jm, alone)


def test_rkd_keeps_the_teachers_relations(teacher):
    spec, t = teacher
    stream = _stream()
    x = _x(stream)

    def distance(learner):
        with torch.no_grad():
            return float(rkd_distance_loss(learner.model.body(x), t.body(x)))

    alone = distance(_student([], stream))
    rkd = distance(_student([RKD(teacher=spec)], stream))
    assert rkd < 0.5 * alone, (rkd, alone)


def _cka(a, b):
    """Linear centred kernel alignment of two feature matrices (rows: samples)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a.T @ b).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm()))


def test_vid_brings_the_students_features_towards_the_teachers(teacher):
    """Linear CKA to the teacher's features on test rows: VID 0.957, alone 0.930 (beta=0.1: 0.930)."""
    spec, t = teacher
    stream = _stream()
    x = _x(stream)

    def cka(learner):
        with torch.no_grad():
            return _cka(learner.model.body(x), t.body(x))

    alone = cka(_student([], stream, epochs=30))
    vid = VID(teacher=spec)
    learner = _student([vid], stream, epochs=30)
    assert cka(learner) > alone + 0.015, (cka(learner), alone)
    assert float(vid.auxiliary_["0"].variance().detach().min()) < 5.0      # the variances were learned


def test_crd_aligns_the_embeddings_of_the_same_input(teacher):
    """Rank of the positive among 180 test rows by critic score: CRD ~6, negated loss ~174."""
    spec, t = teacher
    stream = _stream()
    x = _x(stream)
    crd = CRD(teacher=spec, n_negatives=256, memory_size=512)
    learner = _student([crd], stream, epochs=5)
    with torch.no_grad():
        vs = torch.nn.functional.normalize(crd.auxiliary_["student"](learner.model.body(x)), dim=1)
        vt = torch.nn.functional.normalize(crd.auxiliary_["teacher"](t.body(x)), dim=1)
    sim = vs @ vt.T
    rank = float((sim > sim.diag()[:, None]).sum(1).float().mean())
    assert rank < 30, rank
    assert crd.ptr_ == 48 and crd.z_s_ is not None      # 48 inputs, 5 epochs: written once each


def test_crd_bank_holds_each_input_once_and_never_as_its_own_negative(teacher):
    """The paper's bank: one slot per sample, updated with momentum; negatives of other classes.

    A ring that writes every row anew holds each of the 48 inputs 4 times after 4
    epochs, and a row's own earlier embeddings are drawn as its negatives (with
    K = 200 draws from M = 64 slots, about 3 times per row); the authors' code
    draws negatives among the other classes' samples only.
    """
    from lifelong.stream.base import Batch

    spec, _ = teacher
    stream = _stream()
    x, y = torch.cat([e.x for e in stream.experiences()]), torch.cat([e.y for e in stream.experiences()])
    torch.manual_seed(0)
    crd = CRD(teacher=spec, n_negatives=200, memory_size=64)
    learner = Learner(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[32]),
                      plugins=[crd], device="cpu", lr=0.05, batch_size=8, seed=0)
    learner.begin(stream, evaluate=False)
    learner.start_experience(None)
    for _ in range(4):
        for i in range(0, 48, 8):
            learner.train_batch(Batch(x[i:i + 8], y[i:i + 8]))
    filled = crd.memory_key_[~crd.memory_key_.isnan()]
    assert crd.ptr_ == 48 and len(filled) == 48 and len(filled.unique()) == 48
    perm = torch.randperm(48)
    assert same_input(crd._keys(x[perm]), crd.memory_key_).sum(1).tolist() == [1] * 48

    mem_s, mem_t, bank_keys = crd.memory_s_.clone(), crd.memory_t_.clone(), crd.memory_key_.clone()
    g = torch.Generator().manual_seed(0)
    g.set_state(crd._g.get_state())
    step = learner.train_batch(Batch(x[perm[:8]], y[perm[:8]]))
    v_s, v_t, keys, labels = step.scratch["crd"]
    idx = torch.randint(64, (8, 200), generator=g)
    own = same_input(keys, bank_keys[idx])
    same_class = crd.memory_label_[idx] == labels[:, None]
    assert int(own.sum()) > 8 and int((same_class & ~own).sum()) > 100
    keep = (~(own | same_class)).float()      # the authors' negatives: the other classes' samples

    def loss(k):
        return crd.beta * (nce_loss(critic_scores(v_s, v_t, mem_t[idx], crd.nce_t), crd.z_s_, 64, k)
                           + nce_loss(critic_scores(v_t, v_s, mem_s[idx], crd.nce_t), crd.z_t_, 64, k))

    got = float(step.losses["crd"].detach())
    assert got == pytest.approx(float(loss(keep)), rel=1e-4)
    assert got != pytest.approx(float(loss((~own).float())), rel=1e-3)
    assert got != pytest.approx(float(loss(None)), rel=1e-3)
    # the rows already in the bank were updated in place, with momentum
    assert crd.memory_label_[crd.memory_label_ >= 0].bincount().tolist() == [8] * 6
    slot = same_input(keys, bank_keys).float().argmax(1)
    assert torch.allclose(crd.memory_t_[slot], momentum_update(mem_t[slot], v_t, 0.5), atol=1e-6)
    learner.end()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,match", [
    (lambda: JacobianMatching(jacobian_lambda=-1.0), r"plugin 'jacobian': jacobian_lambda"),
    (lambda: JacobianMatching(unit="all"), r"plugin 'jacobian': unit"),
    (lambda: RKD(lambda_a=-0.5), r"plugin 'rkd': lambda_a"),
    (lambda: VID(init_variance=0.0), r"plugin 'vid': init_variance"),
    (lambda: CRD(nce_t=0.0), r"plugin 'crd': nce_t must be"),
    (lambda: CRD(n_negatives=0), r"plugin 'crd': n_negatives"),
    (lambda: CRD(negatives="same"), r"plugin 'crd': negatives must be"),
    (lambda: CRD(momentum=1.0), r"plugin 'crd': momentum"),
])
def test_bad_parameters_are_one_line_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_vid_refuses_a_conv_layer_paired_with_a_flat_one(teacher):
    stream = tiny_stream()
    from lifelong.backbones import cnn
    torch.manual_seed(0)
    model = cnn(input_shape=stream.input_shape, num_classes=6, channels=[4, 8])
    learner = Learner(model, plugins=[VID(teacher=teacher[0], layers=[["body.2", "body"]])],
                      device="cpu")
    with pytest.raises(ConfigError, match=r"plugin 'vid': layers \['body.2', 'body'\]"):
        learner.fit(stream)
    assert make_learner  # the helper stays importable for the contract
