"""Fine-tuning presets: weights copied, layers frozen, layer-wise rates, the scale-and-bias patch."""

from __future__ import annotations

import pytest
import torch

from lifelong.backbones import mlp
from lifelong.errors import ConfigError
from lifelong.learner import Learner
from lifelong.plugins.transfer._layers import parameter_layers, params_up_to
from lifelong.plugins.transfer.discriminative import DiscriminativeLR, layer_multipliers
from lifelong.plugins.transfer.finetune import FineTune
from lifelong.plugins.transfer.scale_bias import ScaleBiasPatch, patch_parameters
from lifelong.stream.synthetic import blobs
from lifelong.stream.transforms import joint
from lifelong.testing import make_learner, tiny_stream


def _stream(n_per_class, seed=0):
    return joint(blobs(n_experiences=3, classes_per_experience=2, n_per_class=n_per_class,
                       n_test_per_class=30, separation=2.0, seed=seed))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An MLP [32] trained on 60 samples per class of the blobs."""
    stream = _stream(60)
    torch.manual_seed(5)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[32])
    Learner(model, device="cpu", lr=0.1, batch_size=16, epochs=10, seed=5).fit(stream,
                                                                               evaluate=False)
    path = tmp_path_factory.mktemp("source") / "source.pt"
    torch.save(model.state_dict(), path)
    return {"backbone": {"name": "mlp", "hidden": [32]}, "checkpoint": str(path)}, model


def _acc(learner, stream):
    x = torch.cat([t.x for t in stream.test])
    y = torch.cat([t.y for t in stream.test])
    with torch.no_grad():
        return float((learner.model(x).argmax(1) == y).float().mean())


def _fit(plugins, stream, epochs=3, hidden=(32,)):
    torch.manual_seed(0)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=list(hidden))
    return Learner(model, plugins=plugins, device="cpu", lr=0.05, batch_size=4, epochs=epochs,
                   seed=0).fit(stream, evaluate=False)


def test_layers_in_order_and_up_to_a_layer():
    model = mlp(input_shape=(4,), num_classes=3, hidden=[5, 6])
    assert [n for n, _ in parameter_layers(model)] == ["body.1", "body.3", "head"]
    assert params_up_to(model, "body.2") == ["body.1.weight", "body.1.bias"]
    assert params_up_to(model, "body") == ["body.1.weight", "body.1.bias", "body.3.weight",
                                           "body.3.bias"]
    assert layer_multipliers(3, 2.6) == pytest.approx([1 / 2.6**2, 1 / 2.6, 1.0])


def test_finetune_copies_the_source_and_beats_training_from_scratch(source):
    spec, src = source
    few = _stream(1)                            # one labelled sample per class, same classes
    learner = make_learner([FineTune(source=spec)], few)
    learner.begin(few, evaluate=False)
    assert all(torch.equal(a, b) for a, b in zip(learner.model.state_dict().values(),
                                                 src.state_dict().values()))
    scratch = _acc(_fit([], few), few)
    tuned = _acc(_fit([FineTune(source=spec)], few), few)
    new_head = _acc(_fit([FineTune(source=spec, new_head=True, freeze_upto="body")], few), few)
    assert tuned > scratch + 0.15, (tuned, scratch)
    assert new_head > scratch + 0.15, (new_head, scratch)


def test_freeze_upto_keeps_the_frozen_layers_at_the_source(source):
    spec, src = source
    stream = _stream(4)
    learner = _fit([FineTune(source=spec, freeze_upto="body.2", new_head=True)], stream)
    m = learner.model
    assert torch.equal(m.body[1].weight, src.body[1].weight)
    assert not m.body[1].weight.requires_grad and m.head.weight.requires_grad
    assert not torch.equal(m.head.weight, src.head.weight)
    n_opt = sum(len(g["params"]) for g in learner.optimizer.param_groups)
    assert n_opt == 2                                   # the head's weight and bias only


def test_discriminative_rates_divide_by_decay_per_layer():
    stream = tiny_stream()
    torch.manual_seed(0)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[8, 8])
    learner = Learner(model, plugins=[DiscriminativeLR(decay=2.0)], device="cpu", lr=0.1)
    by_param = {id(p): g["lr"] for g in learner.optimizer.param_groups for p in g["params"]}
    assert by_param[id(model.body[1].weight)] == pytest.approx(0.025)
    assert by_param[id(model.body[3].weight)] == pytest.approx(0.05)
    assert by_param[id(model.head.weight)] == pytest.approx(0.1)


def test_scale_bias_patch_trains_only_norm_scales_biases_and_head():
    stream = tiny_stream()
    torch.manual_seed(0)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[8, 8], norm="layer")
    assert patch_parameters(model) == ["body.2.weight", "body.2.bias", "body.5.weight",
                                       "body.5.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learner = Learner(model, plugins=[ScaleBiasPatch()], device="cpu", lr=0.1)
    learner.fit(stream, evaluate=False)
    changed = sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))
    assert changed == ["body.2.bias", "body.2.weight", "body.5.bias", "body.5.weight",
                       "head.bias", "head.weight"]


@pytest.mark.parametrize("plugins,match", [
    (lambda s: [FineTune(source=s, freeze_upto="body.7")], r"plugin 'finetune': freeze_upto"),
    (lambda s: [FineTune(source={**s, "num_classes": 10})],
     r"plugin 'finetune': source: the weights do not match"),
    (lambda s: [FineTune()], r"plugin 'finetune': source: missing"),
    (lambda s: [DiscriminativeLR(decay=0.5)], r"plugin 'discriminative_lr': decay"),
])
def test_bad_presets_fail_before_the_first_batch(source, plugins, match):
    stream = tiny_stream()
    with pytest.raises(ConfigError, match=match) as e:
        learner = make_learner(plugins(source[0]), stream)
        learner.fit(stream)
    assert "\n" not in str(e.value)


def test_a_source_of_another_head_needs_new_head_and_a_model_without_norms_no_patch(tmp_path):
    stream = tiny_stream()
    torch.save(mlp(input_shape=stream.input_shape, num_classes=10, hidden=[32]).state_dict(),
               tmp_path / "ten.pt")
    spec = {"backbone": {"name": "mlp", "hidden": [32]}, "checkpoint": str(tmp_path / "ten.pt"),
            "num_classes": 10}
    with pytest.raises(ConfigError, match=r"plugin 'finetune': source: its weights do not fit "
                                          r"the model \(head.weight \(6, 32\) vs \(10, 32\)"):
        make_learner([FineTune(source=spec)], stream).fit(stream)
    make_learner([FineTune(source=spec, new_head=True)], stream).fit(stream)
    model = mlp(input_shape=stream.input_shape, num_classes=6, hidden=[8])
    with pytest.raises(ConfigError, match=r"plugin 'scale_bias': the model has no normalisation"):
        Learner(model, plugins=[ScaleBiasPatch()], device="cpu")
