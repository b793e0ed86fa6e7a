"""Deep Generative Replay: the VAE math, the scholar's hooks, and that it forgets less."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from lifelong import CompositionError, ConfigError, Learner, hookimpl
from lifelong.backbones import mlp
from lifelong.learner import Step
from lifelong.plugins.evaluation import AccuracyMatrix
from lifelong.plugins.replay.generative_replay import (
    GenerativeReplay,
    build_vae,
    kl_divergence,
    mixing_weights,
    vae_loss,
)
from lifelong.run import run_config
from lifelong.strategies.generative import dgr
from lifelong.stream.catalog import split_digits
from lifelong.testing import make_learner, tiny_stream

SMALL = {"hidden": 32, "latent_dim": 8}


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one intra-op thread is faster, and fair to a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digits_learner(plugins, *, seed=0, n_experiences=5, epochs=3):
    stream = split_digits(n_experiences=n_experiences, seed=seed)
    torch.manual_seed(seed)
    model = mlp(input_shape=stream.input_shape, num_classes=stream.num_classes, hidden=[64])
    learner = Learner(model, plugins=[*plugins, AccuracyMatrix()], device="cpu", seed=seed,
                      batch_size=10, epochs=epochs, lr=0.1)
    return learner, stream


# ---------------------------------------------------------------------------- the math


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(4, 8)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(4))
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, 1.0]])
    # 1/2 (mu^2) + 1/2 (e^1 - 1 - 1)
    expected = 0.5 * 1.0 + 0.5 * (torch.e - 2.0)
    assert torch.allclose(kl_divergence(mu, logvar), torch.tensor([expected]))


def test_vae_loss_is_reconstruction_plus_kl():
    x = torch.tensor([[0.0, 1.0, 0.5]])
    logits = torch.tensor([[-2.0, 3.0, 0.0]])
    mu, logvar = torch.zeros(1, 2), torch.zeros(1, 2)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    assert torch.allclose(vae_loss(logits, x, mu, logvar, likelihood="bernoulli"), bce[None])
    mean = torch.tensor([[0.0, 2.0, 0.5]])
    gauss = vae_loss(mean, x, mu + 1.0, logvar, likelihood="gaussian")
    assert torch.allclose(gauss, torch.tensor([0.5 * 1.0 + 0.5 * 2]))  # 1/2 |x-m|^2 + 1/2 |mu|^2
    # a better reconstruction has a lower loss
    assert vae_loss(torch.tensor([[-9.0, 9.0, 0.0]]), x, mu, logvar, likelihood="bernoulli") < \
        vae_loss(logits, x, mu, logvar, likelihood="bernoulli")


def test_mixing_weights_split_r_between_new_and_replayed_rows():
    w = mixing_weights(4, 6, 0.25)
    assert torch.allclose(w[:4].sum(), torch.tensor(0.25)) and torch.allclose(w[4:].sum(), torch.tensor(0.75))
    assert torch.allclose(mixing_weights(3, 0, 0.25), torch.full((3,), 1 / 3))


def test_vae_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_vae(64, 16, 4, seed=3), build_vae(64, 16, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.encoder[0].weight, build_vae(64, 16, 4, seed=4).encoder[0].weight)


# ---------------------------------------------------------------------------- the plugin


def test_generator_learns_the_input_distribution():
    plugin = GenerativeReplay(seed=0)
    learner, stream = digits_learner([plugin], n_experiences=2, epochs=1)
    learner.begin(stream, evaluate=False)
    x = stream.test[0].x
    assert plugin.likelihood_ == "bernoulli"

    def neg_elbo():
        with torch.no_grad():
            out, mu, logvar = plugin.generator_(x, torch.zeros(len(x), plugin.latent_dim))
            return vae_loss(out, x, mu, logvar, likelihood="bernoulli").mean()

    before = neg_elbo()
    learner.fit(stream, evaluate=False, stop_after=60)  # 60 batches of the first experience
    after = neg_elbo()
    assert after < 0.7 * before, (before, after)
    assert not plugin.has_previous_  # still in the first experience: nothing replayed yet


def test_replayed_inputs_are_labelled_by_the_frozen_previous_solver():
    plugin = GenerativeReplay(seed=0, **SMALL)
    stream = tiny_stream()
    learner = make_learner([plugin], stream)
    learner.fit(stream, stop_after=8)  # the first experience has 6 batches
    assert plugin.has_previous_ and plugin.prev_solver_ is not learner.model
    assert all(not p.requires_grad for p in plugin.prev_solver_.parameters())
    # make the live model answer class 5 for everything: replay labels must not follow it
    with torch.no_grad():
        learner.model.head.weight.zero_()
        learner.model.head.bias.zero_()
        learner.model.head.bias[5] = 10.0
    batch = next(iter(next(stream.experiences()).batches(8)))
    replay = plugin.replay_batch(learner, Step(0, batch, None))
    assert replay.x.shape == (8, *stream.input_shape)
    with torch.no_grad():
        expected = plugin.prev_solver_(replay.x).argmax(1)
    assert torch.equal(replay.y, expected)
    assert set(replay.y.tolist()) <= {0, 1}  # the classes the snapshot was trained on


def test_solver_loss_is_the_papers_mix_of_real_and_replayed():
    plugin = GenerativeReplay(seed=0, **SMALL)
    stream = tiny_stream()
    learner = make_learner([plugin], stream)
    learner.fit(stream, stop_after=20)  # third experience: N = 3, r = 1/3
    assert plugin.experiences_ == 3 and plugin.current_ratio() == pytest.approx(1 / 3)
    exp = list(stream.experiences())[2]
    step = learner.train_batch(next(iter(exp.batches(8))), exp)
    replayed = F.cross_entropy(step.logits_of(plugin), step.replay_of(plugin).y)
    expected = step.losses["ce"] / 3 + 2 / 3 * replayed
    assert torch.allclose(step.loss, expected)


class EverySix:
    """A boundary detector for the test: a boundary every 6 batches."""

    @hookimpl
    def detect_boundary(self, learner, step):
        return (step.index + 1) % 6 == 0


def test_detected_boundaries_snapshot_the_scholar_in_task_free_streams():
    plugin = GenerativeReplay(seed=0, **SMALL)
    stream = tiny_stream(task_aware=False)
    learner = make_learner([plugin, EverySix()], stream)
    learner.fit(stream, stop_after=8)
    assert learner.boundaries_detected == [48]
    assert plugin.has_previous_ and plugin.experiences_ == 2
    plugin = GenerativeReplay(seed=0, **SMALL)
    learner = make_learner([plugin, EverySix()], stream).fit(stream)  # the whole run
    assert plugin.experiences_ == 1 + len(learner.boundaries_detected) == 4


def test_decoder_follows_the_data_range():
    plugin = GenerativeReplay(seed=0, **SMALL)
    stream = tiny_stream()  # Gaussian blobs: not in [0, 1]
    make_learner([plugin], stream).begin(stream, evaluate=False)
    assert plugin.likelihood_ == "gaussian"
    plugin = GenerativeReplay(seed=0, **SMALL)
    learner, stream = digits_learner([plugin], n_experiences=2, epochs=1)
    learner.fit(stream, evaluate=False, stop_after=80)
    x = plugin.replay_batch(learner, Step(0, next(iter(next(stream.experiences()).batches(4))),
                                          None)).x
    assert plugin.likelihood_ == "bernoulli" and x.min() >= 0 and x.max() <= 1


def test_training_leaves_the_global_rng_alone():
    ends = []
    for plugins in ([], [GenerativeReplay(seed=0, **SMALL)]):
        stream = tiny_stream()
        make_learner(plugins, stream).fit(stream)
        ends.append(torch.get_rng_state())
    assert torch.equal(ends[0], ends[1])


def test_forgets_less_than_fine_tuning_on_split_digits():
    accs = []
    for plugins in ([], [GenerativeReplay(seed=0, hidden=128, latent_dim=16)]):
        learner, stream = digits_learner(plugins)
        learner.fit(stream)
        accs.append(learner.plugins[-1].summary()["final_avg_accuracy"])
    naive, dgr = accs
    assert naive < 0.25  # class-incremental fine-tuning keeps only the last experience
    assert dgr > naive + 0.15, accs


def test_dgr_strategy_builds_the_plugin():
    metrics = run_config({"stream": {"name": "blobs"}, "device": "cpu",
                          "strategy": {"name": "dgr", "generator_steps": 2, "hidden": 16},
                          "eval": {"prequential": False}})
    assert metrics["plugins"] == ["generative_replay"]
    assert 0.0 <= metrics["final_avg_accuracy"] <= 1.0


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("params, name", [
    ({"latent_dim": 0}, "latent_dim"), ({"latent_dim": -3}, "latent_dim"),
    ({"hidden": 0}, "hidden"), ({"ratio": 0.0}, "ratio"), ({"ratio": 1.0}, "ratio"),
    ({"ratio": 1.5}, "ratio"), ({"generator_steps": 0}, "generator_steps"),
    ({"generator_lr": 0.0}, "generator_lr"), ({"replay_size": 0}, "replay_size"),
    ({"decoder": "poisson"}, "decoder"),
])
def test_bad_parameters_are_config_errors(params, name):
    with pytest.raises(ConfigError, match=rf"generative_replay.*{name}"):
        GenerativeReplay(**params)


def test_bad_parameter_from_a_config_names_the_plugin():
    with pytest.raises(ConfigError, match="latent_dim"):
        run_config({"stream": {"name": "blobs"}, "device": "cpu",
                    "plugins": [{"name": "generative_replay", "latent_dim": 0}]})


def test_bernoulli_decoder_on_data_outside_0_1_is_refused_before_the_first_batch():
    stream = tiny_stream()
    learner = make_learner([GenerativeReplay(decoder="bernoulli", **SMALL)], stream)
    with pytest.raises(ConfigError, match="decoder='bernoulli'.*gaussian"):
        learner.begin(stream, evaluate=False)


def test_task_conditioned_model_is_refused_before_the_first_batch():
    stream = tiny_stream()
    learner = make_learner([GenerativeReplay(**SMALL)], stream)
    learner.model.task_conditioned = True
    with pytest.raises(CompositionError, match="task-conditioned"):
        learner.begin(stream, evaluate=False)


def test_dgr_strategy_defaults_are_the_plugins():
    plugin = inspect.signature(GenerativeReplay).parameters
    for name, p in inspect.signature(dgr).parameters.items():
        assert p.default == plugin[name].default, name
