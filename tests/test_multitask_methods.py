"""Loss balancing and gradient methods for multi-task learning: formulas, solvers, glue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from lifelong.errors import CompositionError, ConfigError
from lifelong.learner import Learner
from lifelong.multitask import shared_bottom
from lifelong.plugins.multitask import DWA, MGDAUB, GradNorm, PCGrad, UncertaintyWeighting
from lifelong.plugins.multitask._gradients import task_gradients
from lifelong.plugins.multitask.dwa import dwa_weights
from lifelong.plugins.multitask.gradnorm import gradnorm_loss, gradnorm_targets, renormalize
from lifelong.plugins.multitask.mgda_ub import min_norm_pair, min_norm_weights
from lifelong.plugins.multitask.pcgrad import project_conflicting
from lifelong.plugins.multitask.uncertainty import uncertainty_loss
from lifelong.stream.base import TaskSpec
from lifelong.stream.multitask import multi_target
from lifelong.testing import make_learner, tiny_multitask_stream

# ---------------------------------------------------------------------------- formulas


def test_uncertainty_loss_is_the_papers_two_forms():
    losses, s = torch.tensor([2.0, 3.0]), torch.tensor([0.5, -1.0])
    got = uncertainty_loss(losses, s, torch.tensor([False, True]))
    # classification: L / sigma^2 + log sigma; regression: L / (2 sigma^2) + log sigma
    sig2 = torch.exp(s)
    want = 2.0 / sig2[0] + 0.5 * math.log(sig2[0]) + 3.0 / (2 * sig2[1]) + 0.5 * math.log(sig2[1])
    assert float(got) == pytest.approx(float(want))


def test_dwa_weights_match_a_hand_computation():
    w = dwa_weights(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0]), 2.0)
    e = [math.exp(r / 2) for r in (0.5, 1.0, 1.5)]
    assert w.tolist() == pytest.approx([3 * v / sum(e) for v in e])


def test_gradnorm_targets_loss_and_renormalization_by_hand():
    norms, L, L0 = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.5]), torch.tensor([2.0, 1.0])
    t = gradnorm_targets(norms, L, L0, 1.5)
    ratio = [0.5, 1.5]
    r = [x / 1.0 for x in ratio]  # mean ratio is 1.0
    assert t.tolist() == pytest.approx([2.0 * r[0] ** 1.5, 2.0 * r[1] ** 1.5])
    assert float(gradnorm_loss(norms, t)) == pytest.approx(abs(1 - t[0]) + abs(3 - t[1]))
    assert renormalize(torch.tensor([1.0, 3.0, 4.0])).tolist() == pytest.approx([0.375, 1.125,
                                                                                1.5])


def test_pcgrad_leaves_agreeing_gradients_and_removes_the_conflict_exactly():
    g = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 1.0]])  # dot > 0
    assert torch.equal(project_conflicting(g, [[1], [0]]), g)
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    out = project_conflicting(g, [[1], [0]])
    # g_0 - (-1 / 2) g_1 and g_1 - (-1 / 1) g_0
    assert out[0].tolist() == pytest.approx([0.5, 0.5]) and out[1].tolist() == pytest.approx(
        [0.0, 1.0])
    torch.manual_seed(0)
    for _ in range(20):
        g = torch.randn(2, 6, dtype=torch.float64)
        out = project_conflicting(g, [[1], [0]])
        if g[0] @ g[1] < 0:
            assert abs(float(out[0] @ g[1])) < 1e-12 and abs(float(out[1] @ g[0])) < 1e-12
            # only the conflicting component went: what is left of g_0 off g_1 is untouched
            u = g[1] / g[1].norm()
            torch.testing.assert_close(out[0] - (out[0] @ u) * u, g[0] - (g[0] @ u) * u)
        else:
            assert torch.equal(out, g)


def _qp(gram: np.ndarray) -> float:
    n = len(gram)
    res = minimize(lambda a: a @ gram @ a, np.full(n, 1 / n), jac=lambda a: 2 * gram @ a,
                   bounds=[(0, 1)] * n, constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return float(res.fun)


@pytest.mark.parametrize("n_tasks", [2, 3, 5])
def test_min_norm_matches_a_qp_solver_and_is_a_descent_direction_for_every_task(n_tasks):
    g = torch.Generator().manual_seed(n_tasks)
    for trial in range(15):
        grads = torch.randn(n_tasks, 8, generator=g, dtype=torch.float64)
        if trial % 3 == 0:  # a common direction, so that a strict descent direction exists
            grads += 2.0 * torch.randn(1, 8, generator=g, dtype=torch.float64)
        gram = grads @ grads.T
        alpha = min_norm_weights(gram)  # the authors' 250 Frank-Wolfe steps at most
        assert float(alpha.min()) >= 0 and float(alpha.sum()) == pytest.approx(1.0)
        value, best = float(alpha @ gram @ alpha), _qp(gram.numpy())
        m_alpha = gram @ alpha
        gap = 2 * float(value - m_alpha.min())  # Frank-Wolfe duality gap: value - best <= gap
        assert best - 1e-9 <= value <= best + gap + 1e-9
        if n_tasks == 2:
            assert value == pytest.approx(best, rel=1e-7, abs=1e-9)  # closed form: exact
        else:  # Frank-Wolfe converges slowly once the optimum is on a face: a few percent
            assert value == pytest.approx(best, rel=5e-2, abs=1e-6)
            long = min_norm_weights(gram, max_iter=3000, tol=1e-12)
            assert float(long @ gram @ long) <= value + 1e-12
        d = alpha @ grads
        assert float((grads @ d).min()) >= -1e-9  # no task's loss increases along -d
        if trial % 3 == 0:
            assert float((grads @ d).min()) > 0


def test_min_norm_on_an_accelerator_takes_the_same_steps():
    from lifelong.plugins.multitask.mgda_ub import _frank_wolfe_numpy, _frank_wolfe_torch
    g = torch.Generator().manual_seed(1)
    grads = torch.randn(4, 6, generator=g, dtype=torch.float64)
    gram = grads @ grads.T
    torch.testing.assert_close(_frank_wolfe_torch(gram, 40),
                               torch.from_numpy(_frank_wolfe_numpy(gram.numpy(), 40, 0.0)))


def test_min_norm_closed_form_for_two_tasks():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    gamma = min_norm_pair(g1 @ g1, g1 @ g2, g2 @ g2)
    assert float(gamma) == pytest.approx(0.8)  # 0.8 g1 + 0.2 g2 = (0.8, 0.4) is the min norm
    assert min_norm_weights(torch.stack([g1, g2]) @ torch.stack([g1, g2]).T).tolist() == \
        pytest.approx([0.8, 0.2])


# ---------------------------------------------------------------------------- glue


def _one_step(plugin):
    s = tiny_multitask_stream()
    learner = make_learner([plugin], s)
    learner.begin(s, evaluate=False)
    batch = next(next(s.experiences()).batches(8))
    return learner, s, batch


def _manual_grads(learner, batch, weights_shared):
    """Per-task gradients on the shared parameters of a copy of the model, before the step."""
    model = learner.model
    out = model(batch.x)
    losses = [torch.nn.functional.cross_entropy(out["a"], batch.targets["a"]),
              torch.nn.functional.cross_entropy(out["b"], batch.targets["b"]),
              torch.nn.functional.mse_loss(out["c"][:, 0], batch.targets["c"])]
    return losses, task_gradients(losses, model.shared_parameters())


def test_pcgrad_sets_the_shared_gradient_to_the_sum_of_projected_task_gradients():
    plugin = PCGrad(seed=3)
    learner, _, batch = _one_step(plugin)
    losses, grads = _manual_grads(learner, batch, None)
    gen = torch.Generator().manual_seed(3)
    from lifelong.plugins.multitask.pcgrad import random_orders
    want = project_conflicting(grads, random_orders(3, gen)).sum(0)
    learner.optimizer.step = lambda: None  # look at the gradient the optimizer would use
    learner.train_batch(batch)
    got = torch.cat([p.grad.reshape(-1) for p in learner.model.shared_parameters()])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("on", ["parameters", "representation"])
def test_mgda_shared_gradient_is_the_min_norm_combination(on):
    plugin = MGDAUB(on=on)
    learner, _, batch = _one_step(plugin)
    losses, grads = _manual_grads(learner, batch, None)
    learner.optimizer.step = lambda: None
    learner.train_batch(batch)
    alpha = plugin.alpha_
    assert float(alpha.sum()) == pytest.approx(1.0)
    if on == "parameters":
        torch.testing.assert_close(alpha.double(), min_norm_weights((grads @ grads.T).double()))
    got = torch.cat([p.grad.reshape(-1) for p in learner.model.shared_parameters()])
    torch.testing.assert_close(got, alpha @ grads, rtol=1e-5, atol=1e-6)
    head = learner.model.heads["c"].weight.grad  # heads keep their own, unweighted gradient
    torch.testing.assert_close(head, torch.autograd.grad(losses[2], learner.model.heads["c"].weight)[0])


def test_gradnorm_weight_gradient_is_the_papers():
    plugin = GradNorm(lr=0.01)
    learner, _, batch = _one_step(plugin)
    model = learner.model
    out = model(batch.x)
    losses = torch.stack([torch.nn.functional.cross_entropy(out["a"], batch.targets["a"]),
                          torch.nn.functional.cross_entropy(out["b"], batch.targets["b"]),
                          torch.nn.functional.mse_loss(out["c"][:, 0], batch.targets["c"])])
    W = model.last_shared_parameters()
    n = torch.stack([torch.autograd.grad(li, W, retain_graph=True)[0].norm() for li in losses])
    # first step: L(0) = L, so r_i = 1 and the target is mean_i G_i = mean(n) (w = 1)
    want = torch.sign(n - n.mean()) * n
    learner.train_batch(batch)
    w = plugin.weights_.detach()
    assert float(w.sum()) == pytest.approx(3.0)
    # Adam's first step moves each weight by lr against the sign of its gradient
    moved = torch.ones(3) - 0.01 * torch.sign(want)
    torch.testing.assert_close(w, renormalize(moved), rtol=1e-5, atol=1e-6)


def test_dwa_weights_follow_the_period_averages():
    s = tiny_multitask_stream()
    plugin = DWA(period=3)
    learner = make_learner([plugin], s)
    learner.fit(s, stop_after=5)
    assert torch.equal(plugin.weights_, torch.ones(3))  # first two "epochs": weight 1
    learner2 = make_learner([plugin2 := DWA(period=3)], s)
    learner2.fit(s, stop_after=7)
    h = plugin2._history
    torch.testing.assert_close(plugin2.weights_, dwa_weights(h[1], h[0], 2.0))
    assert not torch.equal(plugin2.weights_, torch.ones(3))


def test_uncertainty_log_variances_settle_where_the_paper_says():
    """For fixed losses the optimum is sigma^2 = 2 L (classification) and sigma^2 = L (regression)."""
    from types import SimpleNamespace
    tasks = (TaskSpec("a", "classification", 3), TaskSpec("r", "regression", 1))
    learner = SimpleNamespace(device=torch.device("cpu"), lr=0.05, optimizer_spec="adam",
                              momentum=0.0, tasks=tasks)
    plugin = UncertaintyWeighting()
    plugin.before_training(learner, SimpleNamespace(tasks=tasks))
    fixed = {"ce/a": torch.tensor(0.3), "mse/r": torch.tensor(40.0), "ewc": torch.tensor(1.0)}
    for _ in range(1500):
        total = plugin.combine_losses(learner, None, fixed)
        total.backward()
        plugin.after_update(learner, None)
    torch.testing.assert_close(plugin.log_vars_.detach(), torch.tensor([math.log(0.6),
                                                                        math.log(40.0)]),
                               atol=2e-2, rtol=0)
    assert plugin.weights().tolist() == pytest.approx([1 / 0.6, 0.5 / 40.0], rel=0.03)
    s_ = plugin.log_vars_.detach()
    want = math.exp(-s_[0]) * 0.3 + s_[0] / 2 + 0.5 * math.exp(-s_[1]) * 40 + s_[1] / 2 + 1.0
    assert float(plugin.combine_losses(learner, None, fixed).detach()) == pytest.approx(float(want))


# ---------------------------------------------------------------------------- bad input


def test_gradnorm_with_one_task_is_refused_naming_it():
    base = tiny_multitask_stream()
    exp = next(base.experiences())
    one = multi_target(exp.x, {"a": exp.targets["a"]}, base.test[0].x,
                       {"a": base.test[0].targets["a"]},
                       tasks=(TaskSpec("a", "classification", 6),))
    with pytest.raises(ConfigError, match="task 'a'"):
        make_learner([GradNorm()], one).fit(one)


def test_two_deciders_two_owners_and_a_weighting_under_a_gradient_method_are_refused():
    s = tiny_multitask_stream()
    with pytest.raises(CompositionError, match="combine_losses"):
        make_learner([UncertaintyWeighting(), DWA()], s)
    with pytest.raises(CompositionError, match="gradient stage"):
        make_learner([PCGrad(), MGDAUB()], s)
    with pytest.raises(CompositionError, match="uncertainty"):
        make_learner([PCGrad(), UncertaintyWeighting()], s).fit(s)
    with pytest.raises(CompositionError, match="one target per sample"):
        single = __import__("lifelong.testing", fromlist=["tiny_stream"]).tiny_stream()
        make_learner([DWA()], single).fit(single)


def test_mgda_ub_on_a_cross_stitch_network_asks_for_parameters():
    from lifelong.multitask import cross_stitch
    s = tiny_multitask_stream()
    net = cross_stitch(input_shape=s.input_shape, num_classes=6, tasks=s.tasks, hidden=[8])
    with pytest.raises(CompositionError, match="on: parameters"):
        Learner(net, plugins=[MGDAUB()], device="cpu").fit(s)
    Learner(net, plugins=[MGDAUB(on="parameters")], device="cpu", lr=1e-3).fit(s)


def _scaled(scale: float):
    base = tiny_multitask_stream()
    xs = torch.cat([e.x for e in base.experiences()])
    ts = {k: torch.cat([e.targets[k] for e in base.experiences()]) for k in "abc"}
    xt = torch.cat([t.x for t in base.test])
    tt = {k: torch.cat([t.targets[k] for t in base.test]) for k in "abc"}
    ts["c"], tt["c"] = ts["c"] * scale, tt["c"] * scale
    return multi_target(xs, ts, xt, tt, tasks=base.tasks, n_experiences=1, name="scaled")


def test_shared_bottom_model_is_used_for_multitask_runs():
    s = tiny_multitask_stream()
    assert isinstance(make_learner([], s).model, type(shared_bottom(
        input_shape=s.input_shape, num_classes=6, tasks=s.tasks)))
