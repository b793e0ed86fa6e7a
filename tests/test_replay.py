"""Replay plugins: GEM / A-GEM projections, DER's stored logits, behaviour, composition, bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lifelong import Batch, CompositionError, ConfigError, Learner, hookimpl
from lifelong.backbones import mlp
from lifelong.plugins.evaluation import AccuracyMatrix
from lifelong.plugins.replay._gradients import flat_grad, flat_grad_of, trainable
from lifelong.plugins.replay.agem import AGEM, agem_project
from lifelong.plugins.replay.der import DER, DERpp
from lifelong.plugins.replay.er import ER
from lifelong.plugins.replay.gem import GEM, gem_project
from lifelong.run import run_config
from lifelong.stream.catalog import split_digits
from lifelong.testing import make_learner, tiny_stream


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- GEM


def conflicting(seed: int, k: int = 4, p: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(k, p, generator=gen, dtype=torch.float64)
    g = torch.randn(p, generator=gen, dtype=torch.float64) - G[: k // 2].sum(0)
    assert (G @ g < 0).any()
    return g, G


@pytest.mark.parametrize("seed", range(4))
def test_gem_projection_meets_every_constraint_and_is_the_closest(seed):
    g, G = conflicting(seed)
    z = gem_project(g, G, memory_strength=0.0, eps=0.0)
    slack = G @ z
    assert (slack >= -1e-9).all()  # <g~, g_k> >= 0 for every past task
    # KKT of min 1/2 |z - g|^2 s.t. G z >= 0 (sufficient for this convex problem):
    lam = torch.linalg.lstsq(G.T, (z - g).unsqueeze(1)).solution.squeeze(1)
    assert torch.allclose(G.T @ lam, z - g, atol=1e-9)  # z - g is a combination of the g_k
    assert (lam >= -1e-9).all()  # with non-negative weights
    assert torch.allclose(lam * slack, torch.zeros_like(lam), atol=1e-9)  # only active ones
    # and an independent solver agrees
    optimize = pytest.importorskip("scipy.optimize")
    gn, Gn = g.numpy(), G.numpy()
    res = optimize.minimize(lambda v: 0.5 * ((v - gn) ** 2).sum(), gn, jac=lambda v: v - gn,
                            constraints=[{"type": "ineq", "fun": lambda v: Gn @ v,
                                          "jac": lambda v: Gn}],
                            method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
    assert torch.allclose(z, torch.from_numpy(res.x), atol=1e-5)


def test_gem_memory_strength_biases_towards_past_tasks_and_keeps_constraints():
    g, G = conflicting(7)
    exact, biased = gem_project(g, G, 0.0, 0.0), gem_project(g, G, 0.5, 0.0)
    assert (G @ biased >= -1e-9).all()
    assert (G @ biased).sum() > (G @ exact).sum()
    ok = G.T @ torch.ones(4, dtype=torch.float64)  # agrees with every g_k already
    assert torch.allclose(gem_project(ok, G, 0.0, 0.0), ok, atol=1e-9)


class CheckGEMGradient:
    """Runs after GEM's projection and checks the update against every past-task memory."""

    def __init__(self, gem: GEM) -> None:
        self.gem, self.checked = gem, 0

    @hookimpl(trylast=True)
    def before_update(self, learner, step):
        buf, params = self.gem.buffer_, trainable(learner.model)
        g = flat_grad(params)
        for k in range(self.gem.task_):
            mem = buf.gather(buf.selection.slots_of(buf, k))
            g_k = flat_grad_of(F.cross_entropy(learner.forward(mem.x), mem.y), params)
            assert float(g @ g_k) >= -1e-4 * float(g.norm() * g_k.norm())
            self.checked += 1


def test_gem_updates_never_increase_a_past_task_memory_loss():
    gem = GEM(mem_size=30, memory_strength=0.0, eps=0.0)
    check = CheckGEMGradient(gem)
    stream = tiny_stream()
    make_learner([gem, check], stream).fit(stream)
    assert check.checked > 10 and gem.task_ == 2
    assert sorted(gem.buffer_.gather(gem.buffer_.filled_slots()).task.unique().tolist()) == [0, 1, 2]


# ----------------------------------------------------------------------------- A-GEM


def test_agem_projection_formula():
    g, ref = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    out = agem_project(g, ref)  # g.ref = -1.5, ref.ref = 2
    assert torch.allclose(out, torch.tensor([1.0, -1.25, 1.25]))
    assert abs(float(out @ ref)) < 1e-6
    agrees = torch.tensor([1.0, 2.0, 0.0])
    assert torch.equal(agem_project(agrees, ref), agrees)
    assert torch.equal(agem_project(g, torch.zeros(3)), g)


# ----------------------------------------------------------------------------- DER / DER++


class LogitRecorder:
    """Remembers the logits every stream sample had at the step it was trained on."""

    def __init__(self) -> None:
        self.at_step: dict[tuple[float, ...], torch.Tensor] = {}

    @hookimpl
    def after_update(self, learner, step):
        for x, z in zip(step.batch.x, step.stream_logits.detach()):
            self.at_step[tuple(x.flatten().tolist())] = z.clone()


@pytest.mark.parametrize("cls", [DER, DERpp])
def test_der_stores_the_logits_of_insertion_time_and_never_refreshes_them(cls):
    der, rec = cls(mem_size=30, batch_size=8), LogitRecorder()
    stream = tiny_stream()
    learner = make_learner([der, rec], stream)
    learner.fit(stream)
    mem = der.buffer_.gather(der.buffer_.filled_slots())
    for x, z in zip(mem.x, mem.extras["logits"]):
        assert torch.equal(z, rec.at_step[tuple(x.flatten().tolist())])
    with torch.no_grad():
        now = learner.model(mem.x)
    assert not torch.allclose(now, mem.extras["logits"], atol=1e-3)  # the model moved on


def test_derpp_draws_two_independent_replay_batches():
    der = DERpp(mem_size=50, batch_size=10, seed=0)
    stream = tiny_stream()
    learner = make_learner([der], stream)
    learner.begin(stream, evaluate=False)
    x = torch.arange(50.0).view(50, 1, 1, 1).expand(50, 1, 4, 4).contiguous()
    der.buffer_.add(x, torch.arange(50) % 6, logits=torch.randn(50, 6))
    overlaps = []
    for _ in range(200):
        b = der.replay_batch(learner, None)
        first, second = b.x[:10, 0, 0, 0].tolist(), b.x[10:, 0, 0, 0].tolist()
        assert len(set(first)) == 10 and first != second
        overlaps.append(len(set(first) & set(second)))
    assert 1.5 < sum(overlaps) / len(overlaps) < 2.5  # independent draws: 10 * 10 / 50 = 2 on average
    # the logit term uses the first half, the label term the second
    logits = torch.randn(20, 6)
    step = SimpleNamespace(logits_of=lambda p: logits, replay_of=lambda p: b)
    terms = der.loss_terms(learner, step)
    assert torch.allclose(terms["derpp_logits"], 0.2 * F.mse_loss(logits[:10], b.extras["logits"][:10]))
    assert torch.allclose(terms["derpp_labels"], 1.0 * F.cross_entropy(logits[10:], b.y[10:]))


def test_derpp_shared_batch_uses_one_draw_for_both_terms_as_avalanche_does():
    der = DERpp(mem_size=50, batch_size=10, seed=0, shared_batch=True)
    stream = tiny_stream()
    learner = make_learner([der], stream)
    learner.begin(stream, evaluate=False)
    x = torch.arange(50.0).view(50, 1, 1, 1).expand(50, 1, 4, 4).contiguous()
    der.buffer_.add(x, torch.arange(50) % 6, logits=torch.randn(50, 6))
    b = der.replay_batch(learner, None)
    assert len(b) == 10 and len(set(b.x[:, 0, 0, 0].tolist())) == 10
    assert der.rows_per_step(10) == 10 and DERpp(batch_size=10).rows_per_step(10) == 20
    logits = torch.randn(10, 6)
    step = SimpleNamespace(logits_of=lambda p: logits, replay_of=lambda p: b)
    terms = der.loss_terms(learner, step)
    assert torch.allclose(terms["derpp_logits"], 0.2 * F.mse_loss(logits, b.extras["logits"]))
    assert torch.allclose(terms["derpp_labels"], 1.0 * F.cross_entropy(logits, b.y))
    with pytest.raises(ConfigError, match="shared_batch"):
        DERpp(shared_batch="yes")


# ----------------------------------------------------------------------------- behaviour

METHODS = {
    "er": lambda: ER(mem_size=100),
    "agem": lambda: AGEM(mem_size=100, batch_size=50),
    "gem": lambda: GEM(mem_size=100),
    "der": lambda: DER(mem_size=100),
    "derpp": lambda: DERpp(mem_size=100, batch_size=10),
}


def digits_run(plugins: list) -> dict:
    """Split digits, 5 experiences x 2 classes, Class-IL, 5 passes, MLP 64-64-10."""
    stream = split_digits(n_experiences=5, seed=0)
    torch.manual_seed(0)
    model = mlp(input_shape=stream.input_shape, num_classes=stream.num_classes, hidden=[64])
    learner = Learner(model, plugins=[*plugins, AccuracyMatrix()], device="cpu", seed=0,
                      batch_size=10, epochs=5, lr=0.1)
    return learner.fit(stream).plugins[-1].summary()


@pytest.fixture(scope="module")
def fine_tuning() -> dict:
    return digits_run([])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_replay_method_forgets_less_than_fine_tuning(method, fine_tuning):
    got = digits_run([METHODS[method]()])
    assert fine_tuning["avg_forgetting"] > 0.9  # fine-tuning forgets nearly everything
    assert got["avg_forgetting"] < fine_tuning["avg_forgetting"] - 0.02
    assert got["final_avg_accuracy"] > fine_tuning["final_avg_accuracy"] + 0.02


# ----------------------------------------------------------------------------- composition


class EveryN:
    """A toy boundary detector: a boundary every n batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    @hookimpl
    def detect_boundary(self, learner, step):
        return (step.index + 1) % self.n == 0


def test_gem_on_a_task_free_stream_says_to_use_agem_or_a_detector():
    stream = tiny_stream(task_aware=False)
    learner = make_learner([GEM(mem_size=30)], stream)
    with pytest.raises(CompositionError, match="boundar") as exc:
        learner.fit(stream)
    assert "'agem'" in str(exc.value) and "detector" in str(exc.value)
    assert learner.step_index == 0  # refused before the first batch


def test_gem_and_er_compose_with_a_boundary_detector_on_a_task_free_stream():
    stream = tiny_stream(task_aware=False)
    gem, er = GEM(mem_size=30), ER(mem_size=30)
    make_learner([gem, EveryN(6)], stream).fit(stream)
    assert gem.task_ == 3  # 18 batches, a boundary after batches 6, 12 and 18
    assert gem.buffer_.selection.keys == [0, 1, 2]  # one memory per detected task with data
    make_learner([er, EveryN(6)], stream).fit(stream)
    assert len(er.buffer_) == 30


def test_two_gradient_owners_are_refused():
    with pytest.raises(CompositionError, match="gradient"):
        make_learner([GEM(mem_size=30), AGEM(mem_size=30, batch_size=8)], tiny_stream())


def test_der_composes_with_er():
    stream = tiny_stream()
    learner = make_learner([DERpp(mem_size=20, batch_size=4), ER(mem_size=20)], stream)
    learner.fit(stream)
    assert learner.plugins[-2].summary()["final_avg_accuracy"] > 0.3


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("spec, match", [
    ({"name": "er", "mem_size": 0}, "mem_size must be a positive integer"),
    ({"name": "der", "mem_size": -3}, "mem_size"),
    ({"name": "gem", "mem_size": 0}, "mem_size"),
    ({"name": "derpp", "mem_size": 50}, r"replay batch \(batch_size=128\) is larger"),
    ({"name": "agem", "mem_size": 20, "batch_size": 21}, "larger than the buffer"),
])
def test_bad_memory_sizes_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        run_config({"stream": {"name": "blobs"}, "strategy": spec, "device": "cpu"})


def test_er_replay_batch_larger_than_the_buffer_fails_before_training():
    stream = tiny_stream()
    learner = make_learner([ER(mem_size=4)], stream, batch_size=8)
    with pytest.raises(ConfigError, match="stream's batch_size=8"):
        learner.fit(stream)
    assert learner.step_index == 0


def test_replay_batch_of_empty_buffer_is_none():
    er = ER(mem_size=5)
    stream = tiny_stream()
    learner = make_learner([er], stream, batch_size=4)
    learner.begin(stream, evaluate=False)
    assert er.replay_batch(learner, SimpleNamespace(n_stream=3)) is None
    er.buffer_.add(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
    b = er.replay_batch(learner, SimpleNamespace(n_stream=3))
    assert isinstance(b, Batch) and len(b) == 2


# ----------------------------------------------------------------------------- YAML and CLI

YAML = """
seed: 0
device: cpu
stream: {name: blobs, n_experiences: 2, n_per_class: 20, task_aware: TASK_AWARE}
backbone: {name: mlp, hidden: [16]}
strategy: STRATEGY
plugins: [{name: er, mem_size: 10}]
train: {batch_size: 5, lr: 0.05}
"""


def test_replay_methods_are_reachable_from_yaml_and_list(tmp_path, capsys):
    from lifelong.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(YAML.replace("TASK_AWARE", "true")
                   .replace("STRATEGY", "{name: derpp, mem_size: 20, batch_size: 5}"))
    assert main(["run", str(cfg), "--quiet", "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["plugins"] == ["derpp", "er"] and metrics["final_avg_accuracy"] is not None
    cfg.write_text(YAML.replace("TASK_AWARE", "false").replace("STRATEGY", "gem"))
    assert main(["run", str(cfg), "--quiet"]) != 0
    out, err = capsys.readouterr()
    assert "'agem'" in out + err
    assert main(["list"]) == 0
    out, _ = capsys.readouterr()
    for name in ("er", "gem", "agem", "der", "derpp"):
        assert f"│ {name} " in out
