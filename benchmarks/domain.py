"""Domain adaptation on shipped digit domains: source-only, each method, target-supervised.

Pairs (no downloads): scikit-learn's digits resized to MNIST's 28x28 layout
-> the MNIST subset (``digits_to_mnist``), the reverse (``mnist_to_digits``)
and a synthetic shift, MNIST -> MNIST rotated by 45 degrees
(``mnist_to_rotated``). Every run trains an MLP (one hidden layer of 256)
on the labeled source stream with an unlabeled target stream beside it and
reports the accuracy on the target's held-out split; the target's labels
are used for nothing else. ``source_only`` is the lower reference,
``target_supervised`` (trained on the target's own labeled training split)
the upper bound. Same training settings for every method (SGD, lr 0.01,
momentum 0.9: DANN's; batch 64; a few epochs over the source), each
method with its module's defaults except where listed in ``METHODS``
(self-training's t1/t2 count steps and are scaled to the run). ADDA adapts
the seed's source-only model (its pre-trained source encoder and
classifier) with Adam at lr 2e-4, the authors' setting for the adversarial
stage, for as many epochs as the others train. Means over
``--seeds`` seeds (3), one torch thread, CPU.

Last line: one JSON object, method -> {"digits_to_mnist": acc,
"mnist_to_digits": acc, "mnist_to_rotated": acc} (mean target accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from lifelong.run import build

PAIRS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "digits_to_mnist": ({"name": "digits_domain"}, {"name": "mnist_domain"}),
    "mnist_to_digits": ({"name": "mnist_domain"}, {"name": "digits_domain"}),
    "mnist_to_rotated": ({"name": "mnist_domain"}, {"name": "mnist_domain", "rotate": 45.0}),
}
EPOCHS = {"digits_to_mnist": 10, "mnist_to_digits": 4, "mnist_to_rotated": 4}
BATCH = 64


def methods(pair: str) -> dict[str, list[dict[str, Any]]]:
    src = PAIRS[pair][0]
    n_train = {"digits_domain": 1438, "mnist_domain": 4000}[src["name"]]
    steps = -(-n_train // BATCH) * EPOCHS[pair]
    return {
        "source_only": [],
        "coral": [{"name": "coral"}],
        "mmd": [{"name": "mmd"}],
        "dann": [{"name": "dann"}],
        "importance_weighting": [{"name": "importance_weighting"}],
        "self_training": [{"name": "self_training", "t1": steps // 5, "t2": 3 * steps // 5}],
        "adda": [{"name": "adda"}],  # source: the seed's source-only model (see run_one)
        "target_supervised": [],
    }


BACKBONE = {"name": "mlp", "hidden": [256]}
TRAIN = {"batch_size": BATCH, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9}
#: ADDA's adversarial stage: Adam with the authors' learning rate, from a pre-trained source
ADDA_TRAIN = {"batch_size": BATCH, "optimizer": "adam", "lr": 2e-4}


def run_one(pair: str, method: str, plugins: list[dict[str, Any]], seed: int,
            save_to: str | None = None, source_model: str | None = None) -> tuple[float, float]:
    source, target = PAIRS[pair]
    if method == "target_supervised":
        source = target
    train = dict(TRAIN)
    if method == "adda":
        assert source_model is not None, "ADDA adapts the seed's source-only model"
        plugins = [{**plugins[0], "source": {"backbone": BACKBONE, "checkpoint": source_model}}]
        train = dict(ADDA_TRAIN)
    cfg = {"seed": seed, "device": "cpu", "stream": source, "target": target,
           "backbone": BACKBONE, "plugins": plugins, "train": {**train, "epochs": EPOCHS[pair]},
           "eval": {"prequential": False}}
    run = build(cfg)
    run.learner.fit(run.stream)
    if save_to is not None:
        torch.save(run.learner.model.state_dict(), save_to)
    view = next(p for p in run.learner.plugins if type(p).__name__ == "DomainAccuracy")
    s = view.summary()
    return float(s["final_source_accuracy"]), float(s["final_target_accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pairs", nargs="*", default=list(PAIRS))
    ap.add_argument("--methods", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    table: dict[str, dict[str, list[float]]] = {}
    source_acc: dict[str, dict[str, list[float]]] = {}
    tmp = tempfile.mkdtemp(prefix="domain-bench-")
    for pair in args.pairs:
        for method, plugins in methods(pair).items():
            if args.methods and method not in args.methods and method != "source_only":
                continue
            for seed in range(args.seeds):
                path = os.path.join(tmp, f"{pair}-{seed}.pt")
                s, t = run_one(pair, method, plugins, seed,
                               save_to=path if method == "source_only" else None,
                               source_model=path)
                table.setdefault(method, {}).setdefault(pair, []).append(t)
                source_acc.setdefault(method, {}).setdefault(pair, []).append(s)
    print(f"torch threads: {torch.get_num_threads()}, seeds: {args.seeds}, "
          f"wall time: {time.perf_counter() - t0:.0f} s")
    print("target accuracy, mean ± sd over seeds (source accuracy in brackets)")
    head = f"{'method':<22}" + "".join(f"{p:>30}" for p in args.pairs)
    print(head)
    print("-" * len(head))
    base = {p: statistics.mean(table["source_only"][p]) for p in args.pairs
            if "source_only" in table}
    for method, by_pair in table.items():
        cells = []
        for p in args.pairs:
            v, sv = by_pair[p], source_acc[method][p]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            mark = ""
            if p in base and method not in ("source_only", "target_supervised"):
                mark = " +" if statistics.mean(v) > base[p] else " -"
            cells.append(f"{statistics.mean(v):.3f} ± {sd:.3f} [{statistics.mean(sv):.3f}]{mark}")
        print(f"{method:<22}" + "".join(f"{c:>30}" for c in cells))
    print("(+ / -: mean target accuracy above / not above source-only)")
    print(json.dumps({m: {p: round(statistics.mean(v), 4) for p, v in by_pair.items()}
                      for m, by_pair in table.items()}))


if __name__ == "__main__":
    main()
