"""Tests that pin each method's equations: each fails for a named wrong variant.

Every test here kills at least one mutation of ``benchmarks/mutants.py`` (named in
its docstring); most compare a plugin's term or state with a hand computation on
one or two parameters, so they are fast and the bound between right and wrong is
exact rather than a behavioural threshold.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong import metrics
from lifelong.learner import Learner, Step
from lifelong.memory.selection import reservoir_slots
from lifelong.plugins.evaluation import Prequential
from lifelong.plugins.regularization import ewc as ewc_mod
from lifelong.plugins.regularization import mas as mas_mod
from lifelong.plugins.regularization.ewc import EWC, OnlineEWC
from lifelong.plugins.regularization.lwf import LwF
from lifelong.plugins.regularization.mas import MAS
from lifelong.plugins.regularization.si import SI
from lifelong.plugins.replay import gem as gem_mod
from lifelong.plugins.replay.der import DER, DERpp
from lifelong.plugins.replay.er import ER
from lifelong.plugins.replay.gem import GEM
from lifelong.stream.base import Batch, EvalSet
from lifelong.testing import make_learner, tiny_stream

CPU = torch.device("cpu")


def _one_weight(value: float) -> nn.Linear:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def _set(m: nn.Module, value: float) -> None:
    with torch.no_grad():
        m.weight.fill_(value)


def _fake(model: nn.Module) -> tuple[SimpleNamespace, SimpleNamespace]:
    return SimpleNamespace(model=model, device=CPU), SimpleNamespace(input_shape=(1,),
                                                                     num_classes=1)


# ---------------------------------------------------------------------------- metrics
def test_forgetting_takes_the_best_earlier_row_not_the_diagonal():
    """Kills forgetting-diagonal: column 0 peaks after experience 1, not 0."""
    R = [[0.5, 0.0, 0.0], [0.9, 0.6, 0.0], [0.4, 0.5, 0.8]]
    assert metrics.average_forgetting(R) == pytest.approx(((0.9 - 0.4) + (0.6 - 0.5)) / 2)


def test_fwt_uses_the_baseline_of_the_same_column():
    """Kills fwt-previous-baseline."""
    R = [[0.9, 0.3, 0.2], [0.8, 0.9, 0.4], [0.7, 0.8, 0.9]]
    b = [0.0, 0.1, 0.3]
    assert metrics.forward_transfer(R, b) == pytest.approx(((0.3 - 0.1) + (0.4 - 0.3)) / 2)


def test_task_il_accuracy_masks_the_logits():
    """Kills task-il-unmasked: class 0 wins overall, the right class wins within {2, 3}."""
    model = nn.Linear(1, 4, bias=True)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([5.0, 0.0, 1.0, 0.0]))
    learner = Learner(model, device="cpu")
    es = EvalSet(torch.zeros(4, 1), torch.tensor([2, 2, 3, 2]), classes=(2, 3), name="e")
    report = learner.evaluate([es])
    assert report.class_il == [0.0]
    assert report.task_il == [0.75]


def test_prequential_windows_are_window_batches():
    """Kills prequential-window-size: windows close every ``window`` batches."""
    stream = tiny_stream()          # 3 x 48 samples, batch 8: 18 batches
    preq = Prequential(window=5)
    Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 6)), plugins=[preq], device="cpu",
            batch_size=8, lr=0.05).fit(stream)
    assert [at for at, _ in preq.windows_] == [40, 80, 120, 144]


# ---------------------------------------------------------------------------- EWC
def _two_consolidations(plugin, fishers, monkeypatch, module=ewc_mod, fn="fisher_diagonal"):
    model = _one_weight(1.0)
    learner, stream = _fake(model)
    plugin.before_training(learner, stream)
    it = iter(fishers)
    monkeypatch.setattr(module, fn, lambda *a, **k: {"weight": torch.tensor([[next(it)]])})
    for anchor in (1.0, 4.0):
        _set(model, anchor)
        plugin._recent.add(torch.zeros(1, 1))
        plugin.consolidate(model)
    _set(model, 2.0)
    return learner


def test_ewc_keeps_one_penalty_per_experience(monkeypatch):
    """Kills ewc-latest-only and ewc-no-half: lambda/2 * sum_t F_t (theta - theta*_t)^2."""
    plugin = EWC(ewc_lambda=2.0)
    learner = _two_consolidations(plugin, [3.0, 1.0], monkeypatch)
    got = float(plugin.loss_terms(learner, None)["ewc"].detach())
    assert got == pytest.approx(0.5 * 2.0 * (3.0 * (2 - 1) ** 2 + 1.0 * (2 - 4) ** 2))  # 7
    # latest only: 4; without the 1/2: 14


def test_online_ewc_decays_with_gamma(monkeypatch):
    """Kills online-ewc-gamma-*: F* = gamma F*_prev + F, penalty lambda/2 gamma F* (theta - theta*)^2."""
    plugin = OnlineEWC(ewc_lambda=2.0, gamma=0.5)
    learner = _two_consolidations(plugin, [3.0, 1.0], monkeypatch)
    assert float(plugin.weight_["weight"]) == pytest.approx(0.5 * 3.0 + 1.0)
    assert float(plugin.center_["weight"]) == 4.0
    got = float(plugin.loss_terms(learner, None)["online_ewc"].detach())
    assert got == pytest.approx(0.5 * 2.0 * 0.5 * 2.5 * (2 - 4) ** 2)   # 5 (8 or 10 if wrong)


# ---------------------------------------------------------------------------- MAS
def test_mas_importance_accumulates(monkeypatch):
    """Kills mas-replace and mas-lambda-ignored: Omega = Omega_1 + Omega_2, latest anchor."""
    plugin = MAS(mas_lambda=0.5)
    learner = _two_consolidations(plugin, [3.0, 1.0], monkeypatch, mas_mod, "mas_importance")
    assert float(plugin.importance_["weight"]) == 4.0
    got = float(plugin.loss_terms(learner, None)["mas"].detach())
    assert got == pytest.approx(0.5 * 4.0 * (2 - 4) ** 2)   # 8 (replaced: 2; lambda ignored: 16)


# ---------------------------------------------------------------------------- SI
def test_si_resets_its_path_integral_and_uses_c():
    """Kills si-omega-not-reset and si-c-ignored."""
    stream = tiny_stream()
    plugin = SI(c=0.5)
    learner = make_learner([plugin], stream)
    learner.fit(stream)                         # ends with a consolidation
    assert plugin.n_consolidations_ == 3
    assert all(float(w.abs().max()) == 0.0 for w in plugin.omega_.values())
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.1)
    expected = sum((plugin.importance_[n] * (p - plugin.anchor_[n]).square()).sum()
                   for n, p in learner.model.named_parameters())
    got = float(plugin.loss_terms(learner, None)["si"].detach())
    assert got == pytest.approx(0.5 * float(expected.detach()))


def test_si_path_integral_excludes_its_own_penalty():
    """Kills si-surrogate-sign: the path integral uses the task gradient, without 2cOmega(theta-a)."""
    model = _one_weight(3.0)
    learner, stream = _fake(model)
    plugin = SI(c=0.5)
    plugin.before_training(learner, stream)
    plugin.importance_ = {"weight": torch.tensor([[2.0]])}
    plugin.anchor_["weight"].fill_(1.0)
    plugin.n_consolidations_ = 1
    model.weight.grad = torch.tensor([[10.0]])  # task gradient 6 + penalty gradient 2*.5*2*2 = 4
    plugin.before_update(learner, None)
    assert float(plugin._grad["weight"]) == pytest.approx(6.0)



def test_si_path_integral_excludes_the_gradient_its_penalty_gave_autograd():
    """Kills si-surrogate-sign-batched: a real step (penalty forward and backward, then
    before_update) leaves the task gradient alone in SI's path-integral gradient,
    for a weight and a bias, with the loss scaled so the backward's upstream gradient is not 1."""
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(-1.0)
    learner, stream = _fake(model)
    plugin = SI(c=0.5)
    plugin.before_training(learner, stream)
    plugin.importance_ = {"weight": torch.tensor([[2.0]]), "bias": torch.tensor([4.0])}
    plugin.anchor_["weight"].fill_(1.0)
    plugin.anchor_["bias"].fill_(0.0)
    plugin.n_consolidations_ = 1
    x = torch.tensor([[2.0]])
    for _ in range(2):  # the first step allocates SI's gradient buffers, the second reuses them
        model.zero_grad(set_to_none=True)
        task = model(x).sum() * 3.0                       # d/dw = 6, d/db = 3
        penalty = plugin.loss_terms(learner, None)["si"]  # 0.5 * (2 * 2^2 + 4 * 1^2) = 6
        assert float(penalty.detach()) == pytest.approx(6.0)
        (0.5 * (task + penalty)).backward()                # upstream gradient 0.5 on both terms
        assert float(model.weight.grad) == pytest.approx(0.5 * (6.0 + 2 * 0.5 * 2 * 2))
        plugin.before_update(learner, None)
        assert float(plugin._grad["weight"]) == pytest.approx(3.0)
        assert float(plugin._grad["bias"]) == pytest.approx(1.5)


# ---------------------------------------------------------------------------- LwF
def test_lwf_term_uses_temperature_and_lambda():
    """Kills lwf-temperature-ignored, lwf-lambda-ignored, lwf-kl-reversed."""
    old_logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    new_logits = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    plugin = LwF(lwf_lambda=0.7, temperature=3.0)
    plugin.heads_ = torch.zeros(3, dtype=torch.long)       # one head over the three units
    plugin.old_ = lambda x: old_logits
    step = SimpleNamespace(batch=Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)),
                           stream_logits=new_logits)
    p_old = F.softmax(old_logits / 3.0, 1)
    kl = (p_old * (p_old.log() - F.log_softmax(new_logits / 3.0, 1))).sum(1).mean()
    got = float(plugin.loss_terms(None, step)["lwf"])
    assert got == pytest.approx(0.7 * float(kl), rel=1e-5)


def test_lwf_multihead_term_uses_temperature():
    """Kills lwf-multihead-temperature-ignored: each head is its own softmax at temperature T."""
    old_logits = torch.tensor([[2.0, 0.0, -1.0, 1.0], [0.5, 1.5, 0.0, -2.0]])
    new_logits = torch.tensor([[0.0, 1.0, 0.0, 2.0], [1.0, -1.0, 2.0, 0.0]])
    plugin = LwF(temperature=3.0, multihead=True)
    plugin.heads_ = torch.tensor([0, 0, 2, 2])
    plugin.old_ = lambda x: old_logits
    step = SimpleNamespace(batch=Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)),
                           stream_logits=new_logits)

    def kl(cols):
        p = F.log_softmax(old_logits[:, cols] / 3.0, 1)
        return (p.exp() * (p - F.log_softmax(new_logits[:, cols] / 3.0, 1))).sum(1)

    got = float(plugin.loss_terms(None, step)["lwf"])
    assert got == pytest.approx(float((kl([0, 1]) + kl([2, 3])).mean()), rel=1e-5)


# ---------------------------------------------------------------------------- GEM
def _gem_with_rows(rows, g, monkeypatch, **kw):
    stream = tiny_stream()
    plugin = GEM(mem_size=12, **kw)
    learner = make_learner([plugin], stream)
    learner.begin(stream, evaluate=False)
    for k in (0, 1):
        plugin.buffer_.add(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long),
                           torch.full((2,), k))
    plugin.task_ = 2
    calls = {}
    monkeypatch.setattr(GEM, "_task_gradients", staticmethod(lambda lr, mem, sizes, p: torch.stack(rows)))
    monkeypatch.setattr(gem_mod, "flat_grad", lambda params: g)
    monkeypatch.setattr(gem_mod, "set_flat_grad", lambda params, v: calls.setdefault("set", v))
    real = gem_mod.gem_project
    monkeypatch.setattr(gem_mod, "gem_project",
                        lambda *a, **k: calls.setdefault("args", a) and real(*a, **k))
    plugin.before_update(learner, None)
    return calls


def test_gem_projects_when_any_constraint_is_violated(monkeypatch):
    """Kills gem-any-to-all: one of two memories conflicts with the update."""
    calls = _gem_with_rows([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])],
                           torch.tensor([-1.0, 1.0]), monkeypatch, memory_strength=0.0, eps=0.0)
    assert "set" in calls
    got = calls["set"]
    assert float(got @ torch.tensor([1.0, 0.0])) >= -1e-6 and float(got[1]) == pytest.approx(1.0)


def test_gem_uses_memory_strength(monkeypatch):
    """Kills gem-strength-ignored: the dual variables are bounded below by memory_strength."""
    calls = _gem_with_rows([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])],
                           torch.tensor([-1.0, 1.0]), monkeypatch, memory_strength=0.7, eps=0.0)
    assert calls["args"][2] == 0.7
    # G G' = I, G g = (-1, 1): the dual optimum (1, -1) clipped below at 0.7 is v = (1, 0.7),
    # g~ = g + G' v = (0, 1.7) (with memory_strength 0 it would be (0, 1))
    assert calls["set"].tolist() == pytest.approx([0.0, 1.7], abs=1e-6)


# ---------------------------------------------------------------------------- ER / reservoir / DER
def test_er_replays_batch_size_samples():
    """Kills er-batch-size-ignored."""
    stream = tiny_stream()
    plugin = ER(mem_size=20, batch_size=3)
    learner = make_learner([plugin], stream)
    learner.fit(stream, stop_after=4)
    assert len(plugin.replay_batch(learner, SimpleNamespace(n_stream=8))) == 3


def test_reservoir_keeps_each_sample_with_probability_capacity_over_seen():
    """Kills reservoir-off-by-one: sample n (0-based) is kept with probability capacity/(n+1)."""
    g = torch.Generator().manual_seed(0)
    kept = (reservoir_slots(torch.full((20000,), 3), 2, g) >= 0).float().mean()
    assert abs(float(kept) - 2 / 4) < 0.03          # the off-by-one keeps 2/3


def _step_with_replay(plugin, n_stream, replay):
    x = torch.zeros(n_stream, 1, 4, 4)
    step = Step(0, Batch(x, torch.zeros(n_stream, dtype=torch.long)), None)
    stream_rows = torch.arange(n_stream * 6, dtype=torch.float32).view(n_stream, 6)
    replay_rows = -torch.arange(len(replay) * 6, dtype=torch.float32).view(len(replay), 6) - 1
    step.logits = torch.cat([stream_rows, replay_rows])
    step.replays.append(replay)
    step._owners.append((plugin, slice(n_stream, n_stream + len(replay))))
    return step, stream_rows, replay_rows


def test_der_terms_use_alpha_beta_and_stored_logits():
    """Kills der-alpha-ignored, derpp-beta-ignored and der-stores-replay-rows."""
    stream = tiny_stream()
    der = DER(mem_size=20, batch_size=4, alpha=0.5)
    learner = make_learner([der], stream)
    learner.begin(stream, evaluate=False)
    stored = torch.randn(4, 6)
    replay = Batch(torch.zeros(4, 1, 4, 4), torch.tensor([0, 1, 2, 3]), None, {"logits": stored})
    step, stream_rows, replay_rows = _step_with_replay(der, 4, replay)
    assert float(der.loss_terms(learner, step)["der"]) == pytest.approx(
        0.5 * float(F.mse_loss(replay_rows, stored)))
    der.after_update(learner, step)              # the stream rows' logits enter the buffer
    assert torch.equal(der.buffer_.columns["logits"][:4], stream_rows)

    pp = DERpp(mem_size=20, batch_size=2, alpha=0.5, beta=0.3)
    replay = Batch(torch.zeros(4, 1, 4, 4), torch.tensor([0, 1, 2, 3]), None, {"logits": stored})
    step, _, replay_rows = _step_with_replay(pp, 4, replay)
    terms = pp.loss_terms(learner, step)
    assert float(terms["derpp_logits"]) == pytest.approx(
        0.5 * float(F.mse_loss(replay_rows[:2], stored[:2])))
    assert float(terms["derpp_labels"]) == pytest.approx(
        0.3 * float(F.cross_entropy(replay_rows[2:], torch.tensor([2, 3]))))


# ---------------------------------------------------------------------------- DGR
def test_dgr_generator_trains_on_replayed_inputs(monkeypatch):
    """Kills dgr-generator-without-replay: once there is a previous generator, every
    generator step sees replayed inputs as well as the new ones (the r-mix)."""
    from lifelong.plugins.replay.generative_replay import GenerativeReplay

    seen = []
    real = GenerativeReplay._generator_step

    def spy(self, x_new, x_old, r):
        seen.append((self.has_previous_, x_old is not None))
        real(self, x_new, x_old, r)

    monkeypatch.setattr(GenerativeReplay, "_generator_step", spy)
    stream = tiny_stream(n_per_class=8)
    make_learner([GenerativeReplay(hidden=16, latent_dim=4)], stream).fit(stream)
    after = [has_old for prev, has_old in seen if prev]
    assert after and all(after)


# ---------------------------------------------------------------------------- Avalanche's variants
def test_er_experience_balanced_end_replays_only_closed_experiences():
    stream = tiny_stream()
    plugin = ER(mem_size=12, memory="experience_balanced_end", replay_loss="joint_mean")
    assert plugin.requires == ("boundaries",) and ER().requires == ()
    learner = make_learner([plugin], stream)
    learner.fit(stream, stop_after=3)                 # inside experience 0: nothing to replay
    assert plugin.replay_batch(learner, SimpleNamespace(n_stream=8)) is None
    learner = make_learner([plugin := ER(mem_size=12, memory="experience_balanced_end")], stream)
    learner.fit(stream)
    mem = plugin.buffer_.memory
    assert len(mem) == 12
    per_exp = torch.bincount(mem.columns["task"][mem.filled_slots()], minlength=3)
    assert per_exp.tolist() == [4, 4, 4]              # equal shares per experience


def test_der_class_balanced_end_stores_the_trained_models_eval_logits():
    stream = tiny_stream()
    plugin = DER(mem_size=12, batch_size=4, memory="class_balanced_end")
    learner = make_learner([plugin], stream)
    learner.fit(stream)
    mem = plugin.buffer_.memory
    b = mem.gather(mem.filled_slots())
    assert torch.bincount(b.y, minlength=6).tolist() == [2] * 6   # class-balanced
    # the last experience's samples carry the final model's eval-mode logits
    last = b.y >= 4
    assert torch.allclose(b.extras["logits"][last], learner.predict(b)[last], atol=1e-6)


# ---------------------------------------------------------------------------- evaluation / detectors
def test_anytime_evaluates_the_seen_experiences_every_n_batches(monkeypatch):
    """Kills anytime-every-off-by-one and anytime-all-test-sets."""
    from lifelong.plugins.evaluation import AnytimeAccuracy

    stream = tiny_stream()                        # 3 x 6 batches of 8
    plugin = AnytimeAccuracy(every=4)
    learner = Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 6)), plugins=[plugin],
                      device="cpu", batch_size=8, lr=0.05)
    sizes = []
    real = learner.evaluate

    def spy(eval_sets=None, **kw):
        if kw.get("kind") == "anytime":
            sizes.append(len(eval_sets))
        return real(eval_sets, **kw)

    monkeypatch.setattr(learner, "evaluate", spy)
    learner.fit(stream)
    assert [at for at, _, _ in plugin.curve_] == [24, 56, 88, 120]  # samples before the batch
    assert sizes == [1, 2, 2, 3]                  # batches 4, 8, 12, 16: experiences 0, 1, 1, 2


def test_accuracy_matrix_keeps_class_il_and_task_il_rows_apart():
    """Kills accuracy-matrix-task-il-row."""
    from lifelong.learner import EvalReport
    from lifelong.plugins.evaluation import AccuracyMatrix

    m = AccuracyMatrix()
    m.after_eval(None, EvalReport("initial", [0.1, 0.2], [0.5, 0.5], 0, 0))
    m.after_eval(None, EvalReport("experience_end", [0.9, 0.0], [1.0, 0.6], 10, 1, 0))
    m.after_eval(None, EvalReport("anytime", [0.3, 0.3], [0.3, 0.3], 15, 2))
    m.after_eval(None, EvalReport("experience_end", [0.4, 0.8], [0.9, 0.95], 20, 2, 1))
    s = m.summary()
    assert s["accuracy_matrix"] == [[0.9, 0.0], [0.4, 0.8]]
    assert s["accuracy_matrix_task_il"] == [[1.0, 0.6], [0.9, 0.95]]
    assert s["fwt"] == pytest.approx(0.0 - 0.2) and s["random_init_accuracy"] == [0.1, 0.2]


def test_detectors_pass_their_parameters_to_river():
    """Kills adwin-delta-ignored and kswin-alpha-ignored."""
    from lifelong.plugins.boundaries import ADWIN, KSWIN

    assert ADWIN(delta=0.3)._make().delta == 0.3
    assert KSWIN(alpha=0.01)._make().alpha == 0.01


def test_plateau_needs_a_low_variance_window_too():
    """Kills plateau-variance-ignored: a low but noisy loss window is not a plateau."""
    from lifelong.plugins.boundaries.plateau import PlateauRule

    rule = PlateauRule(window=4, mean_threshold=1.0, variance_threshold=0.01)
    assert not any(rule.update(v) for v in [0.1, 0.9] * 6)       # mean 0.5, variance 0.16
    assert any(rule.update(v) for v in [0.5] * 4)                # then a flat window: a plateau


def test_a_detection_exactly_at_the_tolerance_counts():
    """Kills detection-tolerance-inclusive: c < d <= c + tolerance detects change c."""
    got = metrics.report_detections([100], [150], tolerance=50)
    assert got["detected"] == 1 and got["false_alarms"] == 0 and got["delays"] == [50]
    assert metrics.report_detections([100], [151], tolerance=50)["false_alarms"] == 1
