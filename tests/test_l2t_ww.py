"""L2T-ww: weighted feature matching, its meta-networks, Algorithm 1's look-ahead, bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.backbones import cnn, mlp
from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.learner import Learner
from lifelong.plugins.distillation.l2t_ww import (
    L2TWW,
    channel_weights,
    lookahead_meta_gradient,
    match_spatial,
    pair_matching,
    pair_weights,
    weighted_feature_matching,
)
from lifelong.testing import assert_same_state, make_learner, tiny_stream


def _source(hidden=(8,), seed=3, num_classes=3):
    torch.manual_seed(seed)
    return mlp(input_shape=(1, 4, 4), num_classes=num_classes, hidden=list(hidden))


def _plugin(**kw):
    base = {"source": _source(), "source_layers": ["body.1", "body.2"],
            "target_layers": ["body.1", "body.2"]}
    return L2TWW(**{**base, **kw})


# ---------------------------------------------------------------------------- the math


def test_weighted_matching_against_a_hand_computation():
    # two pairs, batch of two; pair 0 on 2x2 maps of 2 channels, pair 1 on vectors of 3
    r0 = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[2.0, 2.0], [2.0, 2.0]]],
                       [[[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]])
    s0 = torch.zeros(2, 2, 2, 2)
    w0 = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    # sample 0: ch0 sum sq = 2, ch1 = 16; /HW=4 -> 0.5, 4 -> 0.5*0.5 + 0.5*4 = 2.25
    # sample 1: ch0 = 0, ch1 = 1/4 -> 0.75 * 0.25 = 0.1875
    assert torch.allclose(pair_matching(r0, s0, w0), torch.tensor([2.25, 0.1875]))
    r1 = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    s1 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    w1 = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    # sample 0: (0 + 4 + 9) / 3 = 13/3; sample 1: 3/3 = 1
    assert torch.allclose(pair_matching(r1, s1, w1), torch.tensor([13 / 3, 1.0]))
    lam0, lam1 = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0])
    # mean over the batch of sum_pairs lambda * L: ((2*2.25 + 13/3) + (0 + 3)) / 2
    want = ((2 * 2.25 + 13 / 3) + 3.0) / 2
    got = weighted_feature_matching([r0, r1], [s0, s1], [w0, w1], [lam0, lam1])
    assert torch.allclose(got, torch.tensor(want))


def test_source_maps_are_resized_to_the_target_bilinearly():
    s = torch.arange(16.0).reshape(1, 1, 4, 4)
    t = torch.zeros(1, 3, 2, 2)
    out = match_spatial(s, t)
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out, F.interpolate(s, size=(2, 2), mode="bilinear", align_corners=False))
    assert match_spatial(s, torch.zeros(1, 2, 4, 4)) is s


def test_channel_weights_sum_to_one_and_pair_weights_are_non_negative():
    plugin = _plugin()
    stream = tiny_stream()
    make_learner([plugin], stream).begin(stream, evaluate=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():   # move the meta-networks away from their initialisation
        for p in [*plugin.what_nets_.parameters(), *plugin.where_nets_.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 3)
    feats = [torch.randn(50, 8, generator=g) * 4 for _ in plugin.pairs_]
    ws, lams = plugin.transfer_weights(feats)
    assert len(ws) == len(lams) == 4
    for w, lam in zip(ws, lams):
        assert w.shape == (50, 8) and (w >= 0).all()
        assert torch.allclose(w.sum(1), torch.ones(50))
        assert lam.shape == (50,) and (lam >= 0).all() and (lam <= 6).all()
        assert (lam == 0).any() and (lam > 0).any()   # relu6 clips: both sides were reached
    assert torch.allclose(channel_weights(torch.zeros(2, 4)), torch.full((2, 4), 0.25))
    assert torch.equal(pair_weights(torch.tensor([[-1.0], [7.0], [2.0]])), torch.tensor([0.0, 6.0, 2.0]))


def test_meta_networks_start_uniform_with_lambda_init():
    plugin = _plugin(lambda_init=1.0)
    stream = tiny_stream()
    make_learner([plugin], stream).begin(stream, evaluate=False)
    ws, lams = plugin.transfer_weights([torch.zeros(3, 8)] * 4)
    assert all(torch.allclose(w, torch.full((3, 8), 1 / 8)) for w in ws)
    assert all(torch.allclose(lam, torch.ones(3)) for lam in lams)


def test_lookahead_on_a_quadratic_matches_the_closed_form():
    # theta scalar, wfm = phi * theta^2, org = (theta - 1)^2; T = 1, alpha = 0.1
    phi = torch.tensor(0.7, requires_grad=True)

    def meta_loss(ph):
        th = torch.tensor(2.0)
        th = th - 0.1 * 2 * ph * th
        th = th - 0.1 * 2 * (th - 1)
        return (th - 1) ** 2

    want = torch.autograd.grad(meta_loss(phi), phi)[0]
    grads, outer = lookahead_meta_gradient({"t": torch.tensor(2.0)}, [phi],
                                           lambda p: phi * p["t"] ** 2, lambda p: (p["t"] - 1) ** 2,
                                           steps=1, lr=0.1)
    assert torch.allclose(grads[0], want) and torch.allclose(outer, meta_loss(phi).detach())


# ---------------------------------------------------------------------------- Algorithm 1


def _double_setup(**kw):
    stream = tiny_stream()
    plugin = _plugin(**kw)
    learner = make_learner([plugin], stream, lr=0.1)
    learner.begin(stream, evaluate=False)
    learner.model.double()
    for m in (plugin.regressors_, plugin.what_nets_, plugin.where_nets_, *plugin._sources):
        m.double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*plugin.what_nets_.parameters(), *plugin.where_nets_.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
        for p in plugin.where_nets_.parameters():
            p.add_(0.5)   # keep relu6 away from its kinks
    exp = next(stream.experiences())
    return learner, plugin, exp.x[:12].double(), exp.y[:12]


def test_meta_gradient_equals_a_finite_difference_estimate():
    learner, plugin, x, y = _double_setup(T=2, inner_lr=0.02)
    grads, outer = plugin.meta_gradient(learner, x, y)
    assert 1.0 < float(outer) < 1.8   # away from saturation: the estimate is meaningful
    phi = plugin._meta_parameters()
    assert any(g.abs().max() > 1e-6 for g in grads)
    eps = 1e-6
    g = torch.Generator().manual_seed(2)
    for p, grad in zip(phi, grads):
        for _ in range(3):
            i = int(torch.randint(p.numel(), (1,), generator=g))
            p.data.view(-1)[i] += eps
            up = plugin.meta_gradient(learner, x, y)[1]
            p.data.view(-1)[i] -= 2 * eps
            down = plugin.meta_gradient(learner, x, y)[1]
            p.data.view(-1)[i] += eps
            fd = (up - down) / (2 * eps)
            assert abs(float(fd) - float(grad.view(-1)[i])) < 1e-6 + 1e-4 * abs(float(fd)), (fd, grad)


def test_with_T_zero_phi_gets_no_gradient_from_the_lookahead():
    learner, plugin, x, y = _double_setup(T=0)
    grads, _ = plugin.meta_gradient(learner, x, y)
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_the_learner_is_unchanged_by_the_meta_step():
    stream = tiny_stream()
    plugin = _plugin()
    learner = make_learner([plugin], stream, momentum=0.9)
    seen = []
    original = plugin.meta_step

    def checked(learner_, *args, **kw):
        before = (copy.deepcopy(learner_.model.state_dict()), copy.deepcopy(learner_.optimizer.state_dict()),
                  copy.deepcopy(plugin.regressors_.state_dict()), copy.deepcopy(plugin._reg_opt.state_dict()))
        phi = [p.detach().clone() for p in plugin._meta_parameters()]
        out = original(learner_, *args, **kw)
        after = (learner_.model.state_dict(), learner_.optimizer.state_dict(),
                 plugin.regressors_.state_dict(), plugin._reg_opt.state_dict())
        assert_same_state(before, after, "learner and regressors across the meta step")
        seen.append(any(not torch.equal(a, b) for a, b in zip(phi, plugin._meta_parameters())))
        return out

    plugin.meta_step = checked
    learner.fit(stream)
    assert len(seen) == plugin.meta_steps_ == 18 and all(seen)   # phi moved, theta did not


def test_learner_weights_match_a_run_whose_meta_step_is_skipped():
    # the ordinary step alone (theta on L_total with phi as it is) gives the same theta after step 1
    runs = []
    for meta in (True, False):
        stream = tiny_stream()
        plugin = _plugin()
        learner = make_learner([plugin], stream)
        if not meta:
            plugin.meta_step = lambda *a, **k: None
        learner.fit(stream, stop_after=1)
        runs.append(copy.deepcopy(learner.model.state_dict()))
    assert_same_state(runs[0], runs[1], "weights after one step with and without the look-ahead")


class HandFM:
    """Unweighted feature matching written out directly: beta * mean (r(T) - S)^2 per pair."""

    def __init__(self, source, pairs, beta):
        self.source, self.pairs, self.beta = source, pairs, beta

    @hookimpl
    def before_training(self, learner, stream):
        self.src = copy.deepcopy(self.source).eval()
        self.out = {}
        for m, _ in self.pairs:
            dict(self.src.named_modules())[m].register_forward_hook(
                lambda mod, a, o, m=m: self.out.__setitem__(m, o))
        for _, n in self.pairs:
            learner.features.request(n)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.regs = nn.ModuleList(nn.Conv2d(c_t, c_s, 1) for c_s, c_t in [(3, 4), (3, 5)])
        self.opt = torch.optim.SGD(self.regs.parameters(), lr=learner.lr)

    @hookimpl
    def loss_terms(self, learner, step):
        self.opt.zero_grad()
        with torch.no_grad():
            self.src(step.batch.x)
        total = 0.0
        for (m, n), r in zip(self.pairs, self.regs):
            t = r(learner.features[n])
            s = self.out[m]
            s = F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
            total = total + F.mse_loss(t, s)
        return {"fm": self.beta * total}

    @hookimpl
    def after_update(self, learner, step):
        self.opt.step()


class TermRecorder:
    def __init__(self, key):
        self.key, self.values = key, []

    @hookimpl
    def after_update(self, learner, step):
        self.values.append(step.losses[self.key].detach().clone())


def test_T_zero_with_fixed_uniform_weights_is_unweighted_feature_matching():
    stream = tiny_stream()
    torch.manual_seed(5)
    source = cnn(input_shape=(1, 4, 4), num_classes=3, channels=[3])
    pairs = [["body.0", "body.0"], ["body.0", "body.3"]]   # 4x4 -> 4x4 and 4x4 -> 2x2 (resized)

    def learner_with(plugins):
        torch.manual_seed(0)
        model = cnn(input_shape=(1, 4, 4), num_classes=6, channels=[4, 5])
        return Learner(model, plugins=plugins, device="cpu", batch_size=8, lr=0.05)

    fm = L2TWW(source=source, pairs=pairs, what=False, where=False, T=0, beta=0.5)
    a = learner_with([fm, TermRecorder("l2t_ww")])
    a.fit(stream, evaluate=False)
    b = learner_with([HandFM(source, pairs, 0.5), TermRecorder("fm")])
    b.fit(stream, evaluate=False)
    assert fm.meta_steps_ == 0 and fm._meta_opt is None
    terms, fm_terms = a.plugins[1].values, b.plugins[1].values
    assert len(terms) == len(fm_terms) == 18
    assert torch.allclose(torch.stack(terms), torch.stack(fm_terms), rtol=1e-5, atol=1e-7)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(va, vb, rtol=1e-4, atol=1e-6), k


# ---------------------------------------------------------------------------- behaviour


def _oracles(stream):
    """A source that classifies the stream perfectly, and the same with its logits negated."""
    torch.manual_seed(1)
    good = mlp(input_shape=stream.input_shape, num_classes=stream.num_classes, hidden=[16])
    xs = torch.cat([e.x for e in stream.experiences()])
    ys = torch.cat([e.y for e in stream.experiences()])
    opt = torch.optim.Adam(good.parameters(), 0.05)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(good(xs), ys).backward()
        opt.step()
    with torch.no_grad():
        scale = good(xs).std()
        good.head.weight.div_(scale)
        good.head.bias.div_(scale)
    bad = copy.deepcopy(good)
    with torch.no_grad():
        bad.head.weight.neg_()
        bad.head.bias.neg_()
    return good, bad, xs


def test_where_learns_to_prefer_the_helpful_source_over_the_harmful_one():
    # two sources (multi-source transfer) matched into the learner's logits: one agrees with the
    # labels, one is its negation. Measured: lambda(good) - lambda(bad) ~ +1.1; with the meta
    # gradient's sign flipped ~ -1.1; with the look-ahead detached 0 (phi never moves).
    stream = tiny_stream()
    good, bad, xs = _oracles(stream)
    plugin = L2TWW(source=[good, bad], pairs=[[0, "head", "head"], [1, "head", "head"]], what=False,
                   meta_lr=1e-2, meta_weight_decay=0.0)
    learner = make_learner([plugin], stream)
    learner.begin(stream, evaluate=False)
    with torch.no_grad():   # regressors start as the identity, g as a constant: a clean comparison
        for r in plugin.regressors_:
            r.weight.copy_(torch.eye(6))
            r.bias.zero_()
        for g in plugin.where_nets_:
            g.weight.zero_()
    learner.fit(stream)
    lam = plugin.lambdas(xs)
    assert lam["0:head->head"] - lam["1:head->head"] > 0.5, lam


# ---------------------------------------------------------------------------- checkpoints, YAML


def test_state_holds_regressors_meta_networks_and_their_optimizers():
    stream = tiny_stream()
    plugin = _plugin()
    make_learner([plugin], stream).fit(stream, stop_after=5)
    state = plugin.state_dict()
    assert set(state) >= {"regressors", "what", "where", "regressor_optimizer", "meta_optimizer"}
    assert state["meta_steps"] == 5 and state["meta_optimizer"]["state"]
    other = _plugin(pairs="one_to_one")
    make_learner([other], stream).begin(stream, evaluate=False)
    with pytest.raises(ConfigError, match="pairs"):
        other.load_state_dict(state)


def test_yaml_run_with_a_source_checkpoint(tmp_path):
    from lifelong.run import build

    src = cnn(input_shape=(1, 4, 4), num_classes=4, channels=[6])
    torch.save(src.state_dict(), tmp_path / "src.pt")
    cfg = {"seed": 0, "device": "cpu",
           "stream": {"name": "blobs", "n_per_class": 20},
           "backbone": {"name": "cnn", "channels": [4, 4]},
           "plugins": [{"name": "l2t_ww", "pairs": "all_to_all", "T": 1,
                        "source": {"backbone": {"name": "cnn", "channels": [6]},
                                   "checkpoint": str(tmp_path / "src.pt"), "num_classes": 4},
                        "source_layers": ["body.1"], "target_layers": ["body.1", "body.4"]}],
           "train": {"batch_size": 8, "lr": 0.05}}
    run = build(cfg)
    plugin = next(p for p in run.learner.plugins if isinstance(p, L2TWW))
    run.learner.fit(run.stream, stop_after=3, evaluate=False)
    assert plugin.pair_names() == ["body.1->body.1", "body.1->body.4"]
    assert plugin.meta_steps_ == 3


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw, match", [
    ({"source": None}, "source is required"),
    ({"T": -1}, "T .*>= 0"),
    ({"T": 1.5}, "T .*integer"),
    ({"beta": -0.1}, "beta"),
    ({"meta_lr": float("nan")}, "meta_lr"),
    ({"inner_lr": 0.0}, "inner_lr"),
    ({"meta_every": 0}, "meta_every"),
    ({"pairs": "many_to_few"}, "pairs must be one of"),
    ({"pairs": []}, "no pair"),
    ({"source_layers": []}, "no pair"),
    ({"pairs": [["body.1"]]}, "source_layer, target_layer"),
    ({"pairs": "one_to_one", "target_layers": ["body.1"]}, "as many source_layers"),
    ({"target_layers": None}, "needs target_layers"),
    ({"source_layers": None}, "needs source_layers"),
    ({"source": [_source(), _source()]}, "2 sources"),
    ({"source": [_source(), _source()], "pairs": [["body.1", "body.1"]],
      "source_layers": None}, "names no source"),
    ({"source": [_source(), _source()], "pairs": [[2, "body.1", "body.1"]],
      "source_layers": None}, "source index 2"),
])
def test_bad_parameters_are_one_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        _plugin(**kw)


@pytest.mark.parametrize("kw, match", [
    ({"source_layers": ["body.1", "bdy.2"]}, "source layer 'bdy.2' is not a module of the source"),
    ({"target_layers": ["body.1", "body.9"]}, "target layer 'body.9' is not a module of the model"),
    ({"source": {"run": "/nonexistent/run"}}, "run directory"),
    ({"source": {"backbone": {"name": "mlp", "hidden": [8]}, "checkpoint": "/nope.pt"}}, "does not exist"),
    ({"source": mlp(input_shape=(7,), num_classes=3, hidden=[8])}, "cannot take the stream's inputs"),
    ({"source": cnn(input_shape=(1, 4, 4), num_classes=3, channels=[3]), "pairs": "single",
      "source_layers": ["body.0"], "target_layers": ["body.2"]}, "both be vectors"),
])
def test_bad_setups_fail_before_the_first_batch(kw, match):
    stream = tiny_stream()
    learner = make_learner([_plugin(**kw)], stream)
    with pytest.raises(ConfigError, match=match):
        learner.fit(stream)
    assert learner.step_index == 0
