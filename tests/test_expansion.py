"""Expansion methods: progressive networks, DEN, and resumable model surgery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lifelong.backbones import cnn, mlp, resnet
from lifelong.checkpoint import Checkpointer
from lifelong.cli import main
from lifelong.errors import CompositionError
from lifelong.learner import Learner
from lifelong.plugins.evaluation import AccuracyMatrix, Resources
from lifelong.plugins.expansion.den import DEN, unit_drift
from lifelong.plugins.expansion.pnn import PNN, Adapter
from lifelong.plugins.regularization.ewc import EWC
from lifelong.plugins.replay.er import ER
from lifelong.run import build
from lifelong.stream.synthetic import blobs
from lifelong.testing import assert_same_state, make_learner, tiny_stream

BACKBONES = {
    "mlp": lambda s: mlp(input_shape=s.input_shape, num_classes=s.num_classes, hidden=[16, 12]),
    "cnn": lambda s: cnn(input_shape=s.input_shape, num_classes=s.num_classes, channels=[4, 6]),
    "resnet": lambda s: resnet(input_shape=s.input_shape, num_classes=s.num_classes, nf=4),
}


def image_stream(n_per_class: int = 12, **kw):
    return blobs(n_experiences=3, classes_per_experience=2, n_per_class=n_per_class,
                 n_test_per_class=6, input_shape=[1, 8, 8], task_labels=True, **kw)


def pnn_learner(backbone: str, stream, plugins=(), **kw) -> Learner:
    torch.manual_seed(0)
    return Learner(BACKBONES[backbone](stream), plugins=[PNN(), *plugins, AccuracyMatrix(),
                                                         Resources()],
                   device="cpu", seed=0, batch_size=8, lr=0.05, **kw)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- PNN


@pytest.mark.parametrize("backbone", ["mlp", "cnn", "resnet"])
def test_pnn_old_task_outputs_are_bit_identical_after_later_tasks(backbone):
    stream = image_stream()
    learner = pnn_learner(backbone, stream)
    exps = list(stream.experiences())
    test0 = stream.test[0]
    task0 = torch.zeros(len(test0.y), dtype=torch.long)
    learner.begin(stream, evaluate=False)
    learner.train_experience(exps[0])
    learner.experience_index += 1
    learner.model.eval()
    before = learner.model(test0.x, task0).clone()
    for e in exps[1:]:
        learner.train_experience(e)
        learner.experience_index += 1
    learner.model.eval()
    assert learner.model.n_columns == 3
    assert torch.equal(learner.model(test0.x, task0), before)
    # the newest column did train: task 2's outputs differ from its fresh initialization
    assert not torch.equal(learner.model(test0.x, torch.full_like(task0, 2)), before)


@pytest.mark.parametrize("backbone", ["mlp", "cnn", "resnet"])
def test_pnn_laterals_receive_gradient_and_change_the_output(backbone):
    stream = image_stream()
    learner = pnn_learner(backbone, stream)
    learner.fit(stream)
    net = learner.model
    x = stream.test[2].x
    task = torch.full((len(x),), 2, dtype=torch.long)
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x, task), stream.test[2].y).backward()
    adapters = [m for m in net.adapters[-1].modules() if isinstance(m, Adapter)]
    assert len(adapters) == len(net.columns[-1]) - 1  # into every layer but the first
    for a in adapters:
        for name in ("alpha", "V.weight", "U.weight"):
            g = a.get_parameter(name).grad
            assert g is not None and g.abs().sum() > 0, f"no gradient reaches {name}"
    for p in (*net.columns[0].parameters(), *net.columns[1].parameters()):
        assert p.grad is None, "a frozen column received gradient"
    net.eval()
    out = net(x, task).clone()
    with torch.no_grad():
        adapters[-1].U.weight.add_(0.5)
    assert not torch.allclose(net(x, task), out), "the laterals do not reach the output"


def test_pnn_frozen_columns_have_no_optimizer_state_and_no_gradient():
    stream = tiny_stream(task_labels=True)
    learner = make_learner([PNN()], stream).fit(stream)
    net = learner.model
    opt_params = {id(p) for g in learner.optimizer.param_groups for p in g["params"]}
    newest = {id(p) for p in (*net.columns[-1].parameters(), *net.adapters[-1].parameters())}
    assert opt_params == newest
    for k in range(net.n_columns - 1):
        assert all(not p.requires_grad for p in net.columns[k].parameters())


def adapter_params(widths_in: list[int], widths_out: list[int], n_prev: int) -> int:
    """By hand: alpha + V (n_prev*n -> n, with bias) + U (n -> out, no bias), per layer >= 2."""
    return sum(1 + (n_prev * n * n + n) + n * o for n, o in zip(widths_in, widths_out))


def test_pnn_parameter_count_grows_by_one_column_plus_its_adapters():
    stream = tiny_stream(task_labels=True)  # inputs 16, hidden [16, 12], 6 classes
    learner = pnn_learner("mlp", stream)
    learner.fit(stream)
    column = n_params(mlp(input_shape=stream.input_shape, num_classes=6, hidden=[16, 12]))
    ins, outs = [16, 12], [12, 6]  # layers 2 and 3 of a column: their inputs and outputs
    expected = [column, 2 * column + adapter_params(ins, outs, 1),
                3 * column + adapter_params(ins, outs, 1) + adapter_params(ins, outs, 2)]
    assert learner.plugins[-1].summary()["params_per_experience"] == expected
    assert n_params(learner.model) == expected[-1]


def test_pnn_conv_adapters_use_1x1_projections():
    stream = image_stream()
    learner = pnn_learner("cnn", stream)
    learner.fit(stream)
    convs = [m for m in learner.model.adapters[-1].modules() if isinstance(m, Adapter)]
    assert convs[0].V.kernel_size == (1, 1) and convs[0].V.in_channels == 2 * 4
    assert convs[0].U.kernel_size == (3, 3)
    assert isinstance(convs[-1].V, torch.nn.Linear)  # into the head: a vector projection


def test_pnn_predicts_each_task_with_its_own_column():
    stream = tiny_stream(task_labels=True)
    learner = make_learner([PNN()], stream).fit(stream)
    net = learner.model
    net.eval()
    x = stream.test[0].x
    outs = net.column_outputs(x)
    for t in range(3):
        assert torch.equal(net(x, torch.full((len(x),), t)), outs[t])
    mixed = torch.tensor([t % 3 for t in range(len(x))])
    assert torch.equal(net(x, mixed), torch.stack(outs)[mixed, torch.arange(len(x))])
    assert torch.equal(net(x, torch.full((len(x),), 7)), outs[-1])  # no column yet: the newest


def test_pnn_refuses_streams_without_task_ids_and_task_free_streams():
    with pytest.raises(CompositionError, match="task labels"):
        make_learner([PNN()], tiny_stream()).fit(tiny_stream())
    from lifelong.plugins.boundaries.every_n import EveryN

    stream = tiny_stream(task_aware=False, task_labels=True)
    with pytest.raises(CompositionError, match="task-free"):
        make_learner([PNN(), EveryN(every=5)], stream).fit(stream)


def test_two_expansion_plugins_are_refused_before_training():
    with pytest.raises(CompositionError, match="expand_model"):
        make_learner([PNN(), PNN()], tiny_stream(task_labels=True))


@pytest.mark.parametrize("extra", [lambda: ER(mem_size=30), lambda: EWC(fisher_samples=32)],
                         ids=["er", "ewc"])
def test_pnn_composes_with_replay_and_regularization_and_resumes_exactly(extra):
    stream = tiny_stream(task_labels=True)
    full = make_learner([PNN(), extra()], stream).fit(stream)
    for stop in (4, 6, 8, 12):  # before, at, after one and after two expansions
        first = make_learner([PNN(), extra()], stream).fit(stream, stop_after=stop)
        state = first.state_dict()
        second = make_learner([PNN(), extra()], stream).fit(stream, state=state)
        assert_same_state(full.model.state_dict(), second.model.state_dict())
        assert full.plugins[-2].summary() == second.plugins[-2].summary()
    old = full.model.column_outputs(stream.test[0].x)[0]
    assert old.shape[1] == stream.num_classes


# ------------------------------------------------------------- resumable surgery (CLI)

GROWN_RUN = """
seed: 1
device: cpu
stream: {name: blobs, n_experiences: 3, n_per_class: 40, task_labels: true}
backbone: {name: mlp, hidden: [16, 16]}
plugins: [%s]
train: {batch_size: 8, optimizer: adam, lr: 0.01}
"""


class _Kill(Exception):
    pass


def _killed_run(raw: dict, out: Path, at: int, every: int) -> None:
    """``lifelong run --checkpoint-every EVERY`` killed right after batch ``at``."""
    run = build(raw)
    ck = Checkpointer(out, run.config, every=every)

    def progress(n: int) -> None:
        ck.after_batch(run.learner)
        if run.learner.step_index == at:
            raise _Kill

    with pytest.raises(_Kill):
        run.learner.fit(run.stream, progress=progress)


def _stable(path: Path) -> dict:
    m = json.loads((path / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in ("wall_time_s", "samples_per_second",
                                                    "peak_rss_mb", "peak_cuda_mb")}


@pytest.mark.parametrize("plugin", ["{name: pnn}", "{name: den, loss_thr: 0.0, spl_thr: 0.0}"],
                         ids=["pnn", "den"])
def test_killed_grown_run_resumes_with_identical_weights_and_metrics(tmp_path, plugin):
    import yaml

    text = GROWN_RUN % plugin
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    ref = tmp_path / "ref"
    assert main(["run", str(cfg), "--out", str(ref), "--quiet"]) == 0
    ref_w = torch.load(ref / "model.pt", weights_only=True)
    assert _stable(ref)["params_per_experience"][0] < _stable(ref)["params_per_experience"][-1]
    raw = yaml.safe_load(text)
    for at, every in ((7, 7), (13, 1), (18, 3), (26, 2)):  # 10 batches per experience
        out = tmp_path / f"out{at}"
        out.mkdir()
        _killed_run(raw, out, at, every)
        assert main(["run", "--resume", str(out), "--quiet"]) == 0
        got = torch.load(out / "model.pt", weights_only=True)
        assert got.keys() == ref_w.keys() and all(torch.equal(got[k], ref_w[k]) for k in got)
        assert _stable(out) == _stable(ref)


# ----------------------------------------------------------------------------- DEN


def den_stream(**kw):
    return tiny_stream(task_labels=True, n_per_class=60, **kw)  # 15 steps per experience


def den_learner(stream, den=None, backbone="mlp", plugins_extra=None, **kw) -> Learner:
    torch.manual_seed(0)
    model = (mlp(input_shape=stream.input_shape, num_classes=stream.num_classes, hidden=[32, 32])
             if backbone == "mlp" else BACKBONES[backbone](stream))
    extra = [plugins_extra] if plugins_extra is not None else []
    return Learner(model, plugins=[den or DEN(), *extra, AccuracyMatrix(), Resources()],
                   device="cpu", seed=0, batch_size=8, optimizer="adam", lr=0.01, **kw)


def test_den_l1_reaches_sparsity_on_the_first_task():
    stream = den_stream()
    zeros, acc = {}, {}
    for lam in (0.0, 1e-2):
        learner = den_learner(stream, DEN(l1_lambda=lam))
        learner.fit(stream, stop_after=15)  # the first task, trained whole with L1
        zeros[lam] = [float((w == 0).float().mean()) for w in learner.model.weights]
        acc[lam] = learner.plugins[1].rows_task_il_[0][0]
    # measured: no zero without L1; 52% / 73% of the two layers' weights at 1e-2
    assert zeros[0.0] == [0.0, 0.0]
    assert min(zeros[1e-2]) > 0.4 and acc[1e-2] >= 0.8


def test_den_selective_retraining_touches_only_the_selected_subnetwork():
    stream = den_stream()
    plugin = DEN(loss_thr=1e9)  # never expand: selective retraining to the end of task 1
    real = plugin._select

    def select(net):  # as L1 would leave it: units 0..15 of the top layer unused by the head
        with torch.no_grad():
            net.head_view(1)[:, :16] = 0
        real(net)

    plugin._select = select
    learner = den_learner(stream, plugin)
    learner.fit(stream, stop_after=15 + 8)  # inside task 1's selective retraining
    net, prev = learner.model, plugin.prev_
    top = plugin.masks_["biases.1"][:32]
    assert top.tolist() == [False] * 16 + [True] * 16
    w1, b1 = net.weights[1][:32, :32], net.biases[1][:32]
    assert torch.equal(w1[~top], prev[2][~top]) and torch.equal(b1[~top], prev[3][~top])
    assert not torch.equal(w1[top], prev[2][top]), "the selected units did not retrain"
    below = plugin.masks_["biases.0"][:32]  # units with a non-zero weight into a selected one
    assert torch.equal(below, (prev[2][top] != 0).any(0))
    w0 = net.weights[0][:32]
    assert torch.equal(w0[~below], prev[0][~below])
    assert not net.heads_w[0].requires_grad  # the first task's head is frozen


@pytest.mark.parametrize("backbone", ["mlp", "cnn"])
def test_den_grows_only_when_the_loss_demands_and_prunes_dead_units(backbone):
    stream = den_stream() if backbone == "mlp" else image_stream(40)
    counts, widths = {}, {}
    for name, den in {"never": DEN(loss_thr=1e9), "grow": DEN(loss_thr=0.0),
                      "all_dead": DEN(loss_thr=0.0, gl_lambda=1e3, spl_thr=1e9)}.items():
        learner = den_learner(stream, den, backbone)
        learner.fit(stream)
        counts[name] = learner.plugins[-1].summary()["params_per_experience"]
        widths[name] = learner.model.widths
        assert n_params(learner.model) == counts[name][-1]
    first = counts["never"][0]
    assert widths["never"] == widths["all_dead"]  # every new unit died and was removed
    assert [c - first for c in counts["never"]][1:] == [c - first for c in counts["all_dead"]][1:]
    assert counts["never"][1] > first  # a new head per task, nothing else
    base = widths["never"]
    assert all(w > b for w, b in zip(widths["grow"], base))  # ex_k units per layer kept
    assert all(w - b <= 2 * 2 * 10 for w, b in zip(widths["grow"], base))


def test_den_splits_drifted_units_and_restores_the_originals():
    stream = den_stream()
    plugin = DEN(loss_thr=0.0, spl_thr=0.0)  # expand, then every drifted unit is split
    learner = den_learner(stream, plugin)
    seen = {}
    real = plugin._prune_and_split

    def spy(net):
        seen["before"] = [w.detach().clone() for w in net.weights]
        seen["prev"] = [t.clone() for t in plugin.prev_]
        real(net)
        seen["after"] = [w.detach().clone() for w in net.weights]
        seen["splits"] = list(plugin.splits_)

    plugin._prune_and_split = spy
    learner.fit(stream, stop_after=15 + 10)  # task 1, just after the split
    n_old, k = plugin.n_old_[0], plugin.ex_k
    n_split = seen["splits"][0]
    assert n_split == k  # the reference's cap: the ex_k most drifted units

    rho = unit_drift(seen["before"][0], seen["prev"][0])
    d = torch.argsort(rho, descending=True)[:n_split]
    copies = n_old + k + torch.arange(n_split)
    assert torch.equal(seen["after"][0][copies], seen["before"][0][d])  # copies: current weights
    assert torch.equal(seen["after"][0][d, :seen["prev"][0].shape[1]], seen["prev"][0][d])
    learner = den_learner(stream, DEN(loss_thr=0.0, spl_thr=0.0))
    learner.fit(stream)
    stamps = learner.model.stamps()[0]
    assert stamps.count(1) >= k + 1 and stamps.count(2) >= k + 1  # expansion + copies, stamped


def _old_task_change(den: DEN, stream, *, timestamps: bool = True) -> tuple[float, float]:
    """Mean |change| of task 0's test logits from the end of task 0 to the end of the run,
    and the share of its predictions that stayed the same."""
    learner = den_learner(stream, den)
    exps = list(stream.experiences())
    x = stream.test[0].x
    task0 = torch.zeros(len(x), dtype=torch.long)
    learner.begin(stream, evaluate=False)
    learner.train_experience(exps[0])
    learner.experience_index += 1
    learner.model.eval()
    before = learner.model(x, task0).detach().clone()
    for e in exps[1:]:
        learner.train_experience(e)
        learner.experience_index += 1
    net = learner.model.eval()
    if not timestamps:  # the broken reading: every unit for every task
        net.set_stamps([[0] * w for w in net.widths])
    after = net(x, task0).detach()
    same = float((after.argmax(1) == before.argmax(1)).float().mean())
    return float((after - before).abs().mean()), same


def test_den_old_task_outputs_are_kept_by_timestamps_and_split():
    stream = den_stream()
    full, _ = _old_task_change(DEN(loss_thr=0.0), stream)
    without_stamps, agree = _old_task_change(DEN(loss_thr=0.0), stream, timestamps=False)
    without_split, _ = _old_task_change(DEN(loss_thr=0.0, spl_thr=1e9), stream)
    # measured: 0.32 (DEN), 1.42 (the same network read without timestamps), 0.41 (no split)
    assert full < 0.5 * without_stamps and full < 0.9 * without_split
    assert agree == 1.0 or full < 0.35


def test_den_refuses_per_parameter_regularizers_missing_task_ids_and_a_second_expander():
    stream = tiny_stream(task_labels=True)
    with pytest.raises(CompositionError, match="'den' and 'ewc' cannot compose"):
        make_learner([DEN(), EWC()], stream).fit(stream)
    with pytest.raises(CompositionError, match="task labels"):
        make_learner([DEN()], tiny_stream()).fit(tiny_stream())
    with pytest.raises(CompositionError, match="expand_model"):
        make_learner([DEN(), PNN()], stream)


def test_den_composes_with_replay_and_resumes_exactly_through_every_part():
    stream = den_stream()

    def learner():
        return den_learner(stream, DEN(loss_thr=0.0, spl_thr=0.0), plugins_extra=ER(mem_size=40))

    full = learner().fit(stream)
    assert full.plugins[0].history_[0]["expanded"]
    for stop in (15, 17, 21, 25, 30):  # a boundary, head-only, selective, expansion, split
        first = learner().fit(stream, stop_after=stop)
        second = learner().fit(stream, state=first.state_dict())
        assert_same_state(full.model.state_dict(), second.model.state_dict())
        assert full.plugins[-2].summary() == second.plugins[-2].summary()
        assert full.plugins[-1].summary()["params_per_experience"] == \
            second.plugins[-1].summary()["params_per_experience"]
