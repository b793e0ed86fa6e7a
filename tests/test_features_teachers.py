"""Features by layer name and frozen teachers: the engine pieces that transfer methods build on."""

import json
import os

import pytest
import torch
from torch import nn

from lifelong.backbones import cnn, mlp
from lifelong.errors import ConfigError
from lifelong.features import FeatureCapture
from lifelong.hookspecs import hookimpl
from lifelong.teachers import load_teacher, weights_digest
from lifelong.testing import make_learner, tiny_stream


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_gives_the_module_output_with_its_graph():
    model = mlp(input_shape=(6,), num_classes=3, hidden=[5, 4])
    cap = FeatureCapture(model)
    cap.request("body.2")
    x = torch.randn(7, 6)
    out = model(x)
    want = torch.relu(model.body[3](torch.relu(model.body[1](x))))
    assert torch.equal(cap["body.2"], model.body[2](model.body[1](x)))
    assert cap["body.2"].requires_grad
    assert torch.allclose(model.head(want), out)


def test_shared_requests_share_one_hook_and_release_counts():
    model = mlp(input_shape=(6,), num_classes=3, hidden=[5])
    cap = FeatureCapture(model)
    cap.request("body.1")
    cap.request("body.1")
    assert _hooks(model) == 1
    cap.release("body.1")
    assert _hooks(model) == 1
    cap.release("body.1")
    assert _hooks(model) == 0


def test_unknown_layer_lists_the_module_names():
    model = mlp(input_shape=(6,), num_classes=3, hidden=[5])
    with pytest.raises(ConfigError, match=r"'body\.9'.*body\.1") as e:
        FeatureCapture(model).request("body.9", owner="kd", key="student_layer")
    assert "plugin 'kd'" in str(e.value) and "student_layer" in str(e.value)


def test_rebind_moves_hooks_to_the_new_model():
    a = mlp(input_shape=(6,), num_classes=3, hidden=[5])
    b = mlp(input_shape=(6,), num_classes=3, hidden=[5])
    cap = FeatureCapture(a)
    cap.request("body.1")
    cap.rebind(b)
    assert _hooks(a) == 0 and _hooks(b) == 1


class _Reader:
    """A plugin that reads the stream rows' features of one layer at every step."""

    name = "reader"

    def __init__(self, layer="body.2", fail_at=None):
        self.layer, self.fail_at, self.seen = layer, fail_at, []

    @hookimpl
    def before_training(self, learner, stream):
        learner.features.request(self.layer, owner=self.name)

    @hookimpl
    def loss_terms(self, learner, step):
        f = learner.features[self.layer][: step.n_stream]
        self.seen.append(tuple(f.shape))
        if self.fail_at is not None and step.index == self.fail_at:
            raise RuntimeError("boom")
        return {"reader": 0.0 * f.sum()}


def test_learner_capture_runs_in_the_training_forward_and_is_removed_after():
    stream = tiny_stream()
    plugin = _Reader()
    learner = make_learner([plugin], stream)
    learner.fit(stream)
    assert plugin.seen and all(s[1] == learner.model.body[1].out_features for s in plugin.seen)
    assert _hooks(learner.model) == 0


def test_hooks_are_removed_when_the_run_fails():
    stream = tiny_stream()
    learner = make_learner([_Reader(fail_at=3)], stream)
    with pytest.raises(RuntimeError, match="boom"):
        learner.fit(stream)
    assert _hooks(learner.model) == 0


def _save_mlp(path, **kw):
    m = mlp(input_shape=(4,), num_classes=3, **kw)
    torch.save(m.state_dict(), path)
    return m


def test_teacher_from_backbone_and_checkpoint_is_frozen_and_equal(tmp_path):
    src = _save_mlp(tmp_path / "w.pt", hidden=[5])
    t = load_teacher({"backbone": {"name": "mlp", "hidden": [5]}, "checkpoint": str(tmp_path / "w.pt")},
                     input_shape=(4,), num_classes=3)
    x = torch.randn(3, 4)
    assert torch.equal(t(x), src(x))
    t.train()
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    assert weights_digest(t) == weights_digest(src)


def test_teacher_from_a_finished_run(tmp_path):
    from lifelong.cli import main

    out = tmp_path / "src"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 0\nstream: {name: split_digits, n_experiences: 1}\n"
                   "backbone: {name: mlp, hidden: [16]}\ntrain: {batch_size: 32, lr: 0.1}\n")
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    desc = json.loads((out / "model.json").read_text())
    assert desc["backbone"]["hidden"] == [16]
    t = load_teacher({"run": str(out)})
    assert tuple(t.head.weight.shape)[1] == 16
    os.remove(out / "model.json")  # older runs: the config in metrics.json serves
    t2 = load_teacher({"run": str(out)})
    assert weights_digest(t2) == weights_digest(t)


@pytest.mark.parametrize("case", ["missing_dir", "missing_file", "pickle", "mismatch", "both", "junk_key"])
def test_bad_teachers_are_one_config_error(tmp_path, case):
    _save_mlp(tmp_path / "w.pt", hidden=[5])
    spec = {"backbone": {"name": "mlp", "hidden": [5]}, "checkpoint": str(tmp_path / "w.pt")}
    if case == "missing_dir":
        spec = {"run": str(tmp_path / "nope")}
    elif case == "missing_file":
        spec["checkpoint"] = str(tmp_path / "nope.pt")
    elif case == "pickle":
        import pickle

        (tmp_path / "p.pt").write_bytes(pickle.dumps({"a": object.__new__(nn.Module)}))
        spec["checkpoint"] = str(tmp_path / "p.pt")
    elif case == "mismatch":
        spec["backbone"] = {"name": "mlp", "hidden": [7]}
    elif case == "both":
        spec["run"] = str(tmp_path)
    else:
        spec["colour"] = "red"
    with pytest.raises(ConfigError):
        load_teacher(spec, input_shape=(4,), num_classes=3)


def test_teacher_may_differ_from_student():
    t = cnn(input_shape=(1, 8, 8), num_classes=4, channels=[4])
    t = load_teacher(t)
    cap = FeatureCapture(t, what="teacher")
    cap.request("body.0")
    with torch.no_grad():
        t(torch.randn(2, 1, 8, 8))
    assert tuple(cap["body.0"].shape) == (2, 4, 8, 8) and not cap["body.0"].requires_grad
