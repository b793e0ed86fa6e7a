"""Prequential accuracy: eval mode before the update vs the training forward's logits.

Prequential (test-then-train) accuracy scores each stream batch with the
model as it stands before it trains on that batch. The training forward
runs in train mode: dropout is on, and batch norm normalizes the stream +
replay batch with its own statistics. Scoring those logits is scoring a
different model. ``lifelong`` now scores eval-mode predictions taken before
the training forward (:mod:`lifelong.predictions`) whenever the model has a
train/eval-dependent module. This script runs each setting once per seed
and scores both definitions in the same run (the training-forward count is
an observer that reads ``step.stream_logits``, the old definition).

Settings (split digits, 5 x 2 classes, online, batch 10, SGD 0.1, 3 seeds):
ResNet (nf 20) + ER (buffer 200); MLP 256-256 with dropout 0.5, fine-tuning;
and a plain MLP + ER (mode-free: both definitions must agree exactly).

Usage: ``python benchmarks/prequential_modes.py``. Last line:
``{"<setting>": {"eval_mode": ..., "train_logits": ...}, ..., "torch_threads": N}``.
"""

from __future__ import annotations

import json
import statistics
import sys

import torch

from lifelong.hookspecs import hookimpl
from lifelong.run import build

SEEDS = (0, 1, 2)
SETTINGS = {
    "resnet_er": ({"name": "resnet"}, {"name": "er", "mem_size": 200}),
    "mlp_dropout_naive": ({"name": "mlp", "hidden": [256, 256], "dropout": 0.5}, {"name": "naive"}),
    "mlp_er": ({"name": "mlp", "hidden": [256, 256]}, {"name": "er", "mem_size": 200}),
}


class TrainLogits:
    """The old definition: hits of the training forward's stream rows."""

    name = "train_logits_score"

    def __init__(self) -> None:
        self.hits = 0
        self.seen = 0

    @hookimpl
    def after_update(self, learner, step):  # type: ignore[no-untyped-def]
        self.hits += int((step.stream_logits.detach().argmax(1) == step.batch.y).sum())
        self.seen += step.n_stream


def one(backbone: dict, strategy: dict, seed: int) -> tuple[float, float]:
    raw = {"seed": seed, "device": "cpu", "stream": {"name": "split_digits"},
           "backbone": backbone, "strategy": strategy,
           "train": {"batch_size": 10, "epochs": 1, "optimizer": "sgd", "lr": 0.1},
           "eval": {"prequential": True, "matrix": False}}
    run = build(raw)
    old = TrainLogits()
    run.learner.pm.register(old, name="train_logits_score")
    run.learner.hooks.has["after_update"] = True
    run.learner.fit(run.stream, evaluate=False)
    preq = next(p for p in run.learner.plugins if getattr(p, "name", "") == "prequential")
    return preq.summary()["prequential_accuracy"], old.hits / old.seen


def main() -> None:
    torch.set_num_threads(1)
    out: dict[str, object] = {}
    print(f"{'setting':<20} {'eval mode, before update':>26} {'training logits (old)':>24}")
    for name, (bb, st) in SETTINGS.items():
        new, old = zip(*(one(bb, st, s) for s in SEEDS))
        print(f"{name:<20} {statistics.mean(new):>18.3f} +- {statistics.stdev(new):.3f} "
              f"{statistics.mean(old):>16.3f} +- {statistics.stdev(old):.3f}")
        out[name] = {"eval_mode": round(statistics.mean(new), 4),
                     "train_logits": round(statistics.mean(old), 4)}
        sys.stdout.flush()
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
