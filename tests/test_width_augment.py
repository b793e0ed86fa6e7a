"""Width augmentation (WA-CNN): normalise-and-scale, the widening itself, resume, transfer."""

from __future__ import annotations

import functools
import io
import statistics

import pytest
import torch

from lifelong.backbones import mlp
from lifelong.errors import ConfigError
from lifelong.learner import Learner
from lifelong.plugins.transfer.finetune import FineTune
from lifelong.plugins.transfer.width_augment import WidthAugment, WidthAugmentedNet, normalize_and_scale
from lifelong.stream.adapters import from_tensors
from lifelong.stream.datasets import load_digits_data
from lifelong.testing import assert_same_state, check_resume_exact, make_learner, tiny_stream

HIDDEN = [64, 64]


def test_normalize_and_scale_against_a_hand_computation():
    h = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    gamma = torch.tensor([10.0, 1.0, 2.0])
    r3 = 1 / 3 ** 0.5
    want = torch.tensor([[10 * 0.6, 1 * 0.8, 0.0], [0.0, 0.0, 0.0], [10 * r3, r3, 2 * r3]])
    assert torch.allclose(normalize_and_scale(h, gamma), want, atol=1e-6, rtol=0)
    assert torch.equal(normalize_and_scale(h, None), h)     # WA-CNN-ori: as they are


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """An MLP trained on digits 0-4 of scikit-learn's digits; the target task is 5-9."""
    x, y, xt, yt = load_digits_data(seed=0)
    src_rows = y < 5
    torch.manual_seed(0)
    source = mlp(input_shape=(1, 8, 8), num_classes=5, hidden=HIDDEN)
    stream = from_tensors(x[src_rows], y[src_rows], num_classes=5, name="digits04")
    Learner(source, optimizer="adam", lr=1e-3, batch_size=32, epochs=12, device="cpu",
            seed=0).fit(stream, evaluate=False)
    source.eval()
    path = tmp_path_factory.mktemp("source") / "source.pt"
    torch.save(source.state_dict(), path)
    spec = {"backbone": {"name": "mlp", "hidden": HIDDEN}, "checkpoint": str(path),
            "num_classes": 5}
    return {"x": x, "y": y, "xt": xt[yt >= 5], "yt": yt[yt >= 5] - 5, "spec": spec,
            "source": source}


def _target(d, k, seed):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.nonzero(d["y"] == c).flatten() for c in range(5, 10)]
    idx = torch.cat([r[torch.randperm(len(r), generator=g)[:k]] for r in rows])
    return from_tensors(d["x"][idx], d["y"][idx] - 5, num_classes=5, name="digits59")


def _learner(d, stream, plugins, seed=0, epochs=30):
    torch.manual_seed(seed)
    model = mlp(input_shape=(1, 8, 8), num_classes=5, hidden=HIDDEN)
    return Learner(model, plugins=plugins, optimizer="sgd", lr=0.01, momentum=0.9,
                   weight_decay=5e-4, batch_size=10, epochs=epochs, device="cpu", seed=seed)


def _widened(d, **kw):
    stream = _target(d, 2, 0)
    learner = _learner(d, stream, [FineTune(source=d["spec"], new_head=True), WidthAugment(**kw)])
    learner.begin(stream, evaluate=False)
    learner.start_experience(next(stream.experiences()))
    return learner


def _hidden(model, x):
    """The top hidden layer's activations of a plain mlp."""
    return model.body(x)


def test_widening_keeps_the_pretrained_units_and_normalises_both_groups(digits):
    learner = _widened(digits, width=16)
    net, src = learner.model, digits["source"]
    assert isinstance(net, WidthAugmentedNet) and net.index == 3 and net.width == 16
    for name, p in src.body.named_parameters():          # every pre-trained weight, bit-equal
        assert torch.equal(p, net.body.get_parameter(name)), name
    x = digits["xt"][:50]
    with torch.no_grad():
        old, new = net.groups(x)
        h = _hidden(src, x)                                 # the source's fc7-like activations
        hp = torch.relu(net.plus(src.body[:3](x)))
        assert torch.allclose(old, 10 * h / h.norm(dim=1, keepdim=True), atol=1e-5, rtol=0)
        assert torch.allclose(new, 10 * hp / hp.norm(dim=1, keepdim=True), atol=1e-5, rtol=0)
        assert torch.allclose(old.norm(dim=1), torch.full((50,), 10.0))   # scale_init
        assert torch.equal(net(x), net.head(old) + net.plus_out(new))


def test_new_units_are_seeded_like_a_fresh_linear_layer(digits):
    """``W^{k+}``: PyTorch's default init U(+-1/sqrt(fan_in)) from the plugin's own seed."""
    nets = [_widened(digits, width=32, seed=s).model for s in (0, 0, 1)]
    w = nets[0].plus.weight.detach()
    bound = 1 / 64 ** 0.5
    assert float(w.abs().max()) <= bound and float(w.std()) > 0.8 * bound / 3 ** 0.5
    assert float(nets[0].plus_out.weight.detach().std()) > 0
    assert torch.equal(w, nets[1].plus.weight) and not torch.equal(w, nets[2].plus.weight)


def test_without_normalisation_zero_outgoing_weights_preserve_the_function_exactly(digits):
    learner = _widened(digits, width=16, normalize=False)
    net = learner.model
    learner_plain = _learner(digits, _target(digits, 2, 0),
                             [FineTune(source=digits["spec"], new_head=True)])
    learner_plain.begin(_target(digits, 2, 0), evaluate=False)
    plain = learner_plain.model                             # the same source, the same new head
    x = digits["xt"][:50]
    with torch.no_grad():
        old, new = net.groups(x)
        assert torch.equal(old, _hidden(digits["source"], x))   # the old units, unchanged
        net.plus_out.weight.zero_()
        assert torch.equal(net(x), plain(x))


def test_new_units_start_an_order_of_magnitude_below_the_pretrained_ones(digits):
    """The paper's reason for normalising: the new units' activations are on another scale."""
    net = _widened(digits, normalize=False).model
    with torch.no_grad():
        old, new = net.groups(digits["xt"])
    ratio = float(old.norm(dim=1).mean() / new.norm(dim=1).mean())
    assert ratio > 4, ratio                                  # measured 8.9 on this source


def _accuracy(model, d):
    model.eval()
    with torch.no_grad():
        return float((model(d["xt"]).argmax(1) == d["yt"]).float().mean())


def test_normalisation_and_scaling_beat_the_same_widening_without_them(digits):
    """Digits 0-4 -> 5-9 with 10 labels per class, 5 seeds: WA-CNN against WA-CNN-ori.

    Measured (mean over seeds): with normalisation 0.84, without 0.73 (each seed better,
    by 0.05 to 0.25); the bound sits between. Plain fine-tuning is about as good as WA-CNN
    here (see benchmarks/transfer.py): the paper's gain over fine-tuning does not show at
    this scale, its gain over WA-CNN-ori does.
    """
    gaps = []
    for seed in range(5):
        stream = _target(digits, 10, seed)
        accs = []
        for normalize in (True, False):
            plugins = [FineTune(source=digits["spec"], new_head=True),
                       WidthAugment(normalize=normalize)]
            learner = _learner(digits, stream, plugins, seed=seed).fit(stream, evaluate=False)
            accs.append(_accuracy(learner.model, digits))
        gaps.append(accs[0] - accs[1])
    assert statistics.mean(gaps) > 0.05, gaps


def test_with_the_pretrained_layers_frozen_the_new_units_beat_a_new_head_alone(digits):
    """The paper's "New" setting: only the new parts train. Measured over 3 seeds: widened
    0.84, a new head on the frozen body 0.61 (each seed by more than 0.2)."""
    gaps = []
    for seed in range(3):
        stream = _target(digits, 10, seed)
        wide = [FineTune(source=digits["spec"], new_head=True),
                WidthAugment(pretrained_lr_mult=0.0)]
        head_only = [FineTune(source=digits["spec"], new_head=True, freeze_upto="body")]
        accs = [_accuracy(_learner(digits, stream, p, seed=seed).fit(stream, evaluate=False)
                          .model, digits) for p in (wide, head_only)]
        gaps.append(accs[0] - accs[1])
    assert statistics.mean(gaps) > 0.1, gaps


def test_lr_multipliers_pretrained_body_slower_new_parts_at_the_learners_rate(digits):
    learner = _widened(digits, width=4)
    lr = {id(p): g["lr"] for g in learner.optimizer.param_groups for p in g["params"]}
    net = learner.model
    assert lr[id(net.body[1].weight)] == pytest.approx(0.001)
    for p in (net.plus.weight, net.plus_out.weight, net.scale, net.scale_plus, net.head.weight):
        assert lr[id(p)] == pytest.approx(0.01)
    frozen = _widened(digits, width=4, pretrained_lr_mult=0.0).model
    assert not frozen.body[1].weight.requires_grad and frozen.plus.weight.requires_grad


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_kill_and_resume_after_widening_is_bit_identical(digits):
    stream = _target(digits, 6, 1)

    def make():
        return _learner(digits, stream, [FineTune(source=digits["spec"], new_head=True),
                                         WidthAugment(width=12)], seed=1, epochs=3)

    full = make().fit(stream, evaluate=False)
    first = make().fit(stream, evaluate=False, stop_after=4)   # widened at the start, then 4 steps
    assert isinstance(first.model, WidthAugmentedNet)
    state = _roundtrip(first.state_dict())
    second = make().fit(stream, evaluate=False, state=state)
    assert isinstance(second.model, WidthAugmentedNet)
    assert_same_state(full.model.state_dict(), second.model.state_dict())
    assert_same_state(full.plugins[1].state_dict(), second.plugins[1].state_dict())


@pytest.mark.parametrize("kwargs,backbone,match", [
    ({"width": 0}, None, r"plugin 'width_augment': width must be"),
    ({"width": -3}, None, r"plugin 'width_augment': width must be"),
    ({"width": 2.5}, None, r"plugin 'width_augment': width must be"),
    ({"scale_init": 0.0}, None, r"plugin 'width_augment': scale_init must be"),
    ({"pretrained_lr_mult": -1.0}, None, r"plugin 'width_augment': pretrained_lr_mult must be"),
    ({"normalize": "yes"}, None, r"plugin 'width_augment': normalize must be true or false"),
    ({"layer": "body.9"}, None, r"plugin 'width_augment': layer 'body.9' is not a module"),
    ({"layer": "body.2"}, None, r"plugin 'width_augment': layer 'body.2' is not a hidden Linear"),
    ({"layer": "head"}, None, r"plugin 'width_augment': layer 'head' is not a hidden Linear"),
    ({}, {"name": "mlp", "hidden": [8], "norm": "layer"}, r"normalisation layers"),
    ({}, {"name": "linear"}, r"widens the mlp and cnn backbones; got Sequential"),
])
def test_bad_input_is_one_line_before_the_first_batch(kwargs, backbone, match):
    stream = tiny_stream()
    with pytest.raises(ConfigError, match=match) as e:
        plugin = WidthAugment(**kwargs)
        torch.manual_seed(0)
        if backbone is None:
            model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[8])
        elif backbone["name"] == "linear":
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 6))
        else:
            model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[8], norm="layer")
        learner = Learner(model, plugins=[plugin], device="cpu")
        learner.begin(stream, evaluate=False)
    assert "\n" not in str(e.value)
    assert make_learner([WidthAugment(width=3)], stream).fit(stream).model.width == 3


# ---------------------------------------------------------------------------- cnn


def test_normalize_and_scale_of_a_feature_map_against_a_hand_computation():
    h = torch.tensor([[[[3.0, 0.0]], [[0.0, 4.0]]]])           # [1, 2 channels, 1, 2]
    want = torch.tensor([[[[10 * 0.6, 0.0]], [[0.0, 1 * 0.8]]]])
    assert torch.allclose(normalize_and_scale(h, torch.tensor([10.0, 1.0])), want, atol=1e-6)


class _CNNWidthAugment(WidthAugment):
    contract_backbone = {"name": "cnn", "channels": [4, 8]}


@pytest.mark.parametrize("layer", [None, "body.0"])
def test_cnn_widening_keeps_the_pretrained_channels_and_resumes_exactly(layer):
    import copy

    stream = tiny_stream()                                  # 1 x 4 x 4 images
    learner = make_learner([_CNNWidthAugment(layer=layer, width=3, normalize=False)], stream)
    before = copy.deepcopy(learner.model)
    learner.begin(stream, evaluate=False)
    learner.start_experience(next(stream.experiences()))
    net = learner.model
    assert isinstance(net, WidthAugmentedNet) and net.plus.out_channels == 3
    x = torch.cat([t.x for t in stream.test])
    with torch.no_grad():
        old, _ = net.groups(x)
        k = net.index
        want = before.body[:k + 3](x)                       # conv, ReLU, max-pool
        assert torch.equal(old, want)
        net.plus_out.weight.zero_()
        assert torch.equal(net(x), before(x))               # zero outgoing weights: same function
    check_resume_exact(functools.partial(_CNNWidthAugment, layer=layer, width=3))


def test_a_plugin_capturing_the_whole_body_is_refused_before_the_first_batch():
    from lifelong.errors import CompositionError
    from lifelong.plugins.distillation.rkd import RKD
    from lifelong.testing import contract_teacher

    stream = tiny_stream()
    learner = make_learner([WidthAugment(), RKD(teacher=contract_teacher())], stream)
    with pytest.raises(CompositionError, match=r"plugin 'width_augment': another plugin "
                                               r"captures the features of layer 'body'") as e:
        learner.fit(stream)
    assert "\n" not in str(e.value) and learner.step_index == 0
    ok = make_learner([WidthAugment(), RKD(teacher=contract_teacher(), student_layer="body.1")],
                      stream).fit(stream)
    assert isinstance(ok.model, WidthAugmentedNet)
