"""Test-then-train scoring: eval mode, before the update (lifelong/predictions.py)."""

import torch
from torch import nn

from lifelong.backbones import mlp
from lifelong.learner import Learner, Step
from lifelong.plugins.boundaries import ADWIN
from lifelong.plugins.boundaries._signal import batch_signal
from lifelong.plugins.evaluation import Prequential
from lifelong.predictions import mode_dependent_modules, prequential_logits, wants_eval_logits
from lifelong.stream.base import Batch
from lifelong.testing import tiny_stream


class Oracle:
    """Counts the hits of eval-mode predictions taken before the forward (the definition)."""

    name = "oracle"

    def __init__(self):
        self.hits = 0
        self.seen = 0

    from lifelong.hookspecs import hookimpl

    @hookimpl
    def replay_batch(self, learner, step):
        logits = learner.predict(step.batch)
        self.hits += int((logits.argmax(1) == step.batch.y).sum())
        self.seen += len(step.batch)
        return None


def _run(model):
    stream = tiny_stream()
    oracle, preq = Oracle(), Prequential(window=5)
    Learner(model, plugins=[oracle, preq], device="cpu", seed=0, batch_size=8,
            lr=0.05).fit(stream)
    return oracle, preq


def test_prequential_is_eval_mode_before_the_update_with_dropout():
    torch.manual_seed(0)
    model = mlp(input_shape=(1, 4, 4), num_classes=6, hidden=[32], dropout=0.5)
    oracle, preq = _run(model)
    assert preq.seen_total_ == oracle.seen > 0
    assert preq.correct_total_ == oracle.hits


def test_prequential_is_eval_mode_before_the_update_with_batch_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 6))
    oracle, preq = _run(model)
    assert preq.correct_total_ == oracle.hits


def test_training_logits_reused_only_for_mode_free_models():
    plain = mlp(input_shape=(1, 4, 4), num_classes=6, hidden=[32])
    assert mode_dependent_modules(plain) == []
    assert not wants_eval_logits(plain, [Prequential()])
    drop = mlp(input_shape=(1, 4, 4), num_classes=6, hidden=[32], dropout=0.1)
    assert mode_dependent_modules(drop) == ["body.3"]
    assert not wants_eval_logits(drop, [])  # nobody scores the stream: no extra forward

    class Custom(nn.Linear):  # a subclass may read self.training in its forward
        pass

    assert mode_dependent_modules(nn.Sequential(Custom(2, 2))) == ["0"]
    oracle, preq = _run(plain)  # mode-free: the training logits are the same predictions
    assert preq.correct_total_ == oracle.hits


def test_error_signal_uses_the_eval_mode_predictions():
    y = torch.tensor([0, 1])
    step = Step(0, Batch(torch.zeros(2, 2), y), None)
    step.logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # training forward: one wrong
    assert float(batch_signal(step, "error")) == 0.5
    step.eval_logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # eval mode: none wrong
    assert float(batch_signal(step, "error")) == 0.0
    assert prequential_logits(step) is step.eval_logits
    drop = mlp(input_shape=(1, 4, 4), num_classes=6, hidden=[8], dropout=0.5)
    assert wants_eval_logits(drop, [ADWIN(signal="error")])
    assert not wants_eval_logits(drop, [ADWIN(signal="loss")])
