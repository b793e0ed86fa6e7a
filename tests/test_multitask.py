"""Multi-target streams, multi-output models, per-task losses and evaluation, Delta_MTL."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong import metrics
from lifelong.errors import ConfigError, DataError
from lifelong.hookspecs import hookimpl
from lifelong.learner import Learner
from lifelong.multitask import CrossStitch, cross_stitch, shared_bottom
from lifelong.plugins.evaluation import TaskMetrics
from lifelong.run import build
from lifelong.stream.base import Batch, IterableExperience, Stream, TaskSpec, validate_targets
from lifelong.stream.multitask import mixed_scale_mnist, multi_mnist, multi_target
from lifelong.testing import (
    _roundtrip,
    assert_same_state,
    make_learner,
    tiny_multitask_stream,
)

TASKS = (TaskSpec("a", "classification", 6), TaskSpec("b", "classification", 2),
         TaskSpec("c", "regression", 1))


class Recorder:
    """Decides combine_losses: records the names and values it was handed, returns their sum."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    @hookimpl
    def combine_losses(self, learner, step, losses):
        self.seen.append({k: v.detach().clone() for k, v in losses.items()})
        return sum(losses.values())


# ---------------------------------------------------------------------------- streams


def test_batches_carry_one_target_per_task_and_y_is_the_first_classification():
    s = tiny_multitask_stream()
    assert [t.name for t in s.tasks] == ["a", "b", "c"]
    b = next(next(s.experiences()).batches(5))
    assert sorted(b.targets) == ["a", "b", "c"]
    assert torch.equal(b.y, b.targets["a"]) and torch.equal(b.targets["b"], b.targets["a"] % 2)
    assert b.targets["c"].dtype == torch.float32 and b.targets["c"].shape == (5,)
    moved = b.to("cpu")
    assert sorted(moved.targets) == ["a", "b", "c"]


def test_resumed_batches_keep_their_targets():
    exp = next(tiny_multitask_stream().experiences())
    full = list(exp.batches(8, seed=3))
    tail = list(exp.batches(8, seed=3, start=2))
    for a, b in zip(full[2:], tail):
        for k in a.targets:
            assert torch.equal(a.targets[k], b.targets[k])


def test_bad_targets_are_one_line_errors_naming_the_task():
    x = torch.rand(4, 3)
    good = {"a": torch.tensor([0, 1, 2, 3]), "b": torch.tensor([0, 1, 0, 1]), "c": torch.rand(4)}
    validate_targets(good, TASKS, 4, where="here")
    cases = [
        ({k: v for k, v in good.items() if k != "b"}, "'b'"),
        ({**good, "d": torch.zeros(4)}, "'d'"),
        ({**good, "c": torch.tensor([0.0, float("nan"), 1.0, 2.0])}, "'c'"),
        ({**good, "a": torch.tensor([0, 1, 2, 9])}, "'a'"),
        ({**good, "c": torch.zeros(4, dtype=torch.long)}, "'c'"),
        ({**good, "b": torch.zeros(3, dtype=torch.long)}, "'b'"),
    ]
    for targets, name in cases:
        with pytest.raises(DataError) as e:
            multi_target(x, targets, x, good, tasks=TASKS)
        assert name in str(e.value) and "\n" not in str(e.value)


def test_streamed_multi_target_data_is_checked_at_the_batch():
    def source(bs):
        yield Batch(torch.rand(4, 3), torch.zeros(4, dtype=torch.long),
                    targets={"a": torch.zeros(4, dtype=torch.long),
                             "b": torch.zeros(4, dtype=torch.long),
                             "c": torch.tensor([0.0, 1.0, float("nan"), 0.0])})
    exp = IterableExperience(0, source, num_classes=6, input_shape=(3,), tasks=TASKS)
    with pytest.raises(DataError, match="task 'c'.*NaN"):
        list(exp.batches(4))


def test_multi_mnist_overlays_two_digits_top_left_and_bottom_right():
    s = multi_mnist(test_fraction=0.2, seed=0)
    assert [t.name for t in s.tasks] == ["left", "right"] and s.input_shape == (1, 28, 28)
    e = next(s.experiences())
    assert e.n_samples == 4000 and len(s.test[0]) == 1000
    assert not torch.equal(e.targets["left"], e.targets["right"])
    mean = e.x.mean(0)[0]
    assert mean[:6, :6].sum() > mean[-6:, :6].sum()  # ink where the digits are, not elsewhere
    assert mean[-6:, -6:].sum() > mean[:6, -6:].sum()


def test_mixed_scale_losses_differ_by_orders_of_magnitude():
    s = mixed_scale_mnist(seed=0)
    torch.manual_seed(0)
    model = shared_bottom(input_shape=s.input_shape, num_classes=10, tasks=s.tasks, hidden=[32])
    learner = Learner(model, device="cpu", plugins=[])
    learner.begin(s, evaluate=False)
    step = learner.train_batch(next(next(s.experiences()).batches(256)))
    ce, mse = step.losses["ce/parity"].item(), step.losses["mse/ink"].item()
    assert mse > 100 * ce


# ---------------------------------------------------------------------------- learner


def test_learner_names_one_loss_per_task_and_hands_all_to_combine_losses():
    s = tiny_multitask_stream()
    rec = Recorder()
    learner = make_learner([rec], s)
    batch = next(next(s.experiences()).batches(8))
    model = copy.deepcopy(learner.model)
    learner.begin(s, evaluate=False)
    step = learner.train_batch(batch)
    assert list(rec.seen[0]) == ["ce/a", "ce/b", "mse/c"]
    out = model(batch.x)
    torch.testing.assert_close(rec.seen[0]["ce/a"], F.cross_entropy(out["a"], batch.targets["a"]))
    torch.testing.assert_close(rec.seen[0]["ce/b"], F.cross_entropy(out["b"], batch.targets["b"]))
    torch.testing.assert_close(rec.seen[0]["mse/c"],
                               ((out["c"][:, 0] - batch.targets["c"]) ** 2).mean())
    assert sorted(step.outputs) == ["a", "b", "c"] and step.logits is step.outputs["a"]


def test_heads_that_do_not_match_the_tasks_are_refused_before_training():
    s = tiny_multitask_stream()
    two = shared_bottom(input_shape=s.input_shape, num_classes=6, tasks=TASKS[:2], hidden=[8])
    with pytest.raises(DataError, match="no output \\(head\\) for task 'c'"):
        Learner(two, device="cpu").fit(s)
    extra = shared_bottom(input_shape=s.input_shape, num_classes=6,
                          tasks=(*TASKS, TaskSpec("d", "regression", 2)), hidden=[8])
    with pytest.raises(DataError, match="head for task 'd'"):
        Learner(extra, device="cpu").fit(s)
    wrong = shared_bottom(input_shape=s.input_shape, num_classes=6,
                          tasks=(TASKS[0], TaskSpec("b", "classification", 3), TASKS[2]),
                          hidden=[8])
    with pytest.raises(DataError, match="task 'b'.*size 2"):
        Learner(wrong, device="cpu").fit(s)
    single = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))
    with pytest.raises(DataError, match="single output"):
        Learner(single, device="cpu").fit(s)


def test_evaluation_reports_each_task_per_experience():
    s = tiny_multitask_stream()
    learner = make_learner([], s)
    learner.begin(s, evaluate=False)
    report = learner.evaluate(kind="anytime")
    assert sorted(report.tasks) == ["a", "b", "c"] and len(report.tasks["a"]) == 3
    with torch.no_grad():
        learner.model.eval()
        for j, es in enumerate(s.test):
            out = learner.model(es.x)
            acc_b = (out["b"].argmax(1) == es.targets["b"]).float().mean().item()
            mse_c = ((out["c"][:, 0] - es.targets["c"]) ** 2).mean().item()
            assert report.tasks["b"][j] == pytest.approx(acc_b)
            assert report.tasks["c"][j] == pytest.approx(mse_c, rel=1e-5)
            assert report.class_il[j] == pytest.approx(report.tasks["a"][j])


def test_delta_mtl_matches_a_hand_computation():
    got = metrics.delta_mtl({"a": 0.9, "b": 0.6, "c": 2.0}, {"a": 0.8, "b": 0.6, "c": 4.0},
                            lower_is_better=["c"])
    assert got == pytest.approx(100 * ((0.9 - 0.8) / 0.8 + 0 - (2.0 - 4.0) / 4.0) / 3)


def test_task_metrics_rows_and_delta_mtl_and_unknown_task():
    s = tiny_multitask_stream()
    view = TaskMetrics(baselines={"a": 0.5, "c": 2.0})
    make_learner([view], s).fit(s)
    summ = view.summary()
    assert [len(summ["task_matrix"][k]) for k in "abc"] == [3, 3, 3]
    fin = summ["final_task_metrics"]
    want = 100 * ((fin["a"] - 0.5) / 0.5 - (fin["c"] - 2.0) / 2.0) / 2
    assert summ["delta_mtl"] == pytest.approx(want)
    with pytest.raises(ConfigError, match="task 'z'"):
        make_learner([TaskMetrics(baselines={"z": 1.0})], s).fit(s)


def test_run_config_on_a_multi_target_stream_and_a_task_name_it_lacks():
    cfg = {"stream": {"name": "multi_mnist"}, "backbone": {"name": "shared_bottom"},
           "device": "cpu", "eval": {"baselines": {"left": 0.9, "middle": 0.9}}}
    run = build(cfg)
    assert sorted(run.learner.model.heads) == ["left", "right"]
    with pytest.raises(ConfigError, match="task 'middle'"):
        run.learner.begin(run.stream, evaluate=False)
    with pytest.raises(ConfigError, match="label_delay"):
        build({**cfg, "stream": {"name": "multi_mnist", "label_delay": 2}})
    with pytest.raises(ConfigError, match="one head per task"):
        build({"stream": {"name": "split_digits"}, "backbone": {"name": "shared_bottom"}})


def test_multi_target_stream_resumes_exactly_from_a_checkpoint():
    s = tiny_multitask_stream()
    full = make_learner([TaskMetrics()], s)
    full.fit(s)
    first = make_learner([TaskMetrics()], s)
    first.fit(s, stop_after=11)
    state = _roundtrip(first.state_dict())
    second = make_learner([TaskMetrics()], s)
    second.fit(s, state=state)
    assert_same_state(full.model.state_dict(), second.model.state_dict(), "weights")
    assert_same_state(full.plugins[0].summary(), second.plugins[0].summary(), "task metrics")


# ---------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("base,shape,kw", [("mlp", (1, 4, 4), {"hidden": [8, 8]}),
                                           ("cnn", (1, 8, 8), {"channels": [4, 6]}),
                                           ("resnet", (3, 8, 8), {"nf": 4})])
def test_shared_bottom_and_cross_stitch_for_each_base(base, shape, kw):
    torch.manual_seed(0)
    x = torch.rand(5, *shape)
    for factory in (shared_bottom, cross_stitch):
        model = factory(input_shape=shape, num_classes=6, tasks=TASKS, base=base, **kw)
        out = model(x)
        assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (5, 6), "b": (5, 2),
                                                              "c": (5, 1)}
        assert model.last_shared_parameters() and model.shared_parameters()


@pytest.mark.parametrize("base,shape,kw", [("mlp", (1, 4, 4), {"hidden": [8, 8]}),
                                           ("cnn", (1, 8, 8), {"channels": [4, 6]})])
def test_cross_stitch_with_identity_alphas_equals_independent_networks(base, shape, kw):
    torch.manual_seed(0)
    net = cross_stitch(input_shape=shape, num_classes=6, tasks=TASKS, base=base,
                       alpha_same=1.0, alpha_diff=0.0, **kw)
    for col in net.columns[1:]:  # columns start equal: give each its own weights
        for p in col.parameters():
            p.data.normal_()
    x = torch.rand(7, *shape)
    out = net(x)
    for t, (name, head) in enumerate(net.heads.items()):
        alone = nn.Sequential(*copy.deepcopy(list(net.columns[t])), copy.deepcopy(net.tail),
                              copy.deepcopy(head))
        torch.testing.assert_close(out[name], alone(x), rtol=0, atol=1e-6)
    out["b"].sum().backward()  # one task's loss reaches only its own column
    assert all(p.grad is None or not p.grad.any() for p in net.columns[0].parameters())
    assert any(p.grad is not None and p.grad.any() for p in net.columns[1].parameters())


def test_cross_stitch_paper_init_and_its_learning_rate_multiplier():
    s = tiny_multitask_stream()
    net = cross_stitch(input_shape=s.input_shape, num_classes=6, tasks=s.tasks, hidden=[8])
    a = net.stitch["0"].alpha
    assert a.shape == (8, 3, 3)
    assert torch.all(a.diagonal(dim1=1, dim2=2) == 0.9) and a[0, 0, 1] == a[0, 2, 1] == 0.1
    learner = Learner(net, device="cpu", lr=0.01)
    lrs = {id(p): g["lr"] for g in learner.optimizer.param_groups for p in g["params"]}
    assert lrs[id(a)] == pytest.approx(10.0) and lrs[id(net.heads["a"].weight)] == 0.01
    with pytest.raises(ConfigError, match="stitch_after"):
        cross_stitch(input_shape=s.input_shape, num_classes=6, tasks=s.tasks, stitch_after=[5])
    assert isinstance(net, CrossStitch)


def test_single_target_streams_still_see_plain_ce():
    s = Stream("x", 2, (3,), lambda: [], test=[])
    assert s.tasks == ()


def test_cross_stitch_unit_mixes_channel_by_channel_as_written():
    from lifelong.multitask import CrossStitchUnit

    unit = CrossStitchUnit(2, 2, alpha_same=0.9, alpha_diff=0.1)
    with torch.no_grad():
        unit.alpha.copy_(torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[1.0, 2.0], [0.0, -1.0]]]))
    xa, xb = torch.tensor([[1.0, 2.0]]), torch.tensor([[10.0, 20.0]])
    oa, ob = unit([xa, xb])
    # channel 0: a~ = 0.9 a + 0.1 b, b~ = 0.3 a + 0.7 b; channel 1: a~ = a + 2 b, b~ = -b
    assert oa[0].tolist() == pytest.approx([0.9 + 1.0, 2.0 + 40.0])
    assert ob[0].tolist() == pytest.approx([0.3 + 7.0, -20.0])


@pytest.mark.parametrize("name", ["er", "der", "si"])
def test_replay_and_si_train_on_a_multi_target_stream(name):
    from lifelong.registry import get_registry

    s = tiny_multitask_stream()
    learner = make_learner([get_registry().get("plugin", name).factory()], s).fit(s)
    assert learner.samples_seen == sum(e.n_samples for e in s.experiences())
