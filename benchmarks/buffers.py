"""Buffer insertion cost: a batch of 10 into a full buffer of 1k vs 100k samples.

Each sample is an MNIST-sized input (1x28x28 float32), a label, a task id
and a 10-wide logit payload (what DER stores). Every buffer is filled to
capacity first; then inserts of 10 samples are timed one by one,
alternating between the two capacities in rounds so that load from other
processes hits both alike, and the median is reported. Reservoir is the
headline; the class-balanced and episodic selections are measured the same
way (10 classes, 5 tasks). One torch thread, CPU.

Last line: ``{"insert_ratio_100k_vs_1k": ..., ...}`` (reservoir; <= 1.2 is the target).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from lifelong.memory import Buffer, ClassBalanced, Episodic, Reservoir

CAPACITIES = (1_000, 100_000)
BATCH = 10
ROUNDS = 10
PER_ROUND = 200
SELECTIONS = {"reservoir": Reservoir, "class_balanced": ClassBalanced, "episodic": Episodic}


def batch(n: int, g: torch.Generator, task: int) -> dict[str, torch.Tensor]:
    return {"x": torch.rand(n, 1, 28, 28, generator=g),
            "y": torch.randint(0, 10, (n,), generator=g),
            "task": torch.full((n,), task),
            "logits": torch.randn(n, 10, generator=g)}


def filled(selection: str, capacity: int) -> Buffer:
    buf = Buffer(capacity, selection=SELECTIONS[selection](), seed=0)
    g = torch.Generator().manual_seed(1)
    seen = 0
    while seen < max(2 * capacity, 5000):  # past capacity, and every class and task seen
        b = batch(1000, g, (seen // 1000) % 5)
        buf.add(b["x"], b["y"], b["task"], logits=b["logits"])
        seen += 1000
    assert len(buf) >= 0.95 * capacity
    return buf


def time_inserts(buf: Buffer, batches: list[dict[str, torch.Tensor]]) -> list[float]:
    out = []
    for b in batches:
        t0 = time.perf_counter()
        buf.add(b["x"], b["y"], b["task"], logits=b["logits"])
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    pool = [batch(BATCH, g, i % 5) for i in range(PER_ROUND)]
    result: dict[str, float] = {}
    print(f"{'selection':<16}{'capacity':>10}{'median us/insert':>18}{'p90 us':>10}")
    for name in SELECTIONS:
        bufs = {c: filled(name, c) for c in CAPACITIES}
        times: dict[int, list[float]] = {c: [] for c in CAPACITIES}
        for _ in range(ROUNDS):
            for c in CAPACITIES:
                times[c].extend(time_inserts(bufs[c], pool))
        med = {c: statistics.median(v) for c, v in times.items()}
        for c in CAPACITIES:
            p90 = statistics.quantiles(times[c], n=10)[-1]
            print(f"{name:<16}{c:>10,}{med[c] * 1e6:>18.1f}{p90 * 1e6:>10.1f}")
        result[name] = med[CAPACITIES[1]] / med[CAPACITIES[0]]
        result[f"{name}_1k_us"] = med[CAPACITIES[0]] * 1e6
        result[f"{name}_100k_us"] = med[CAPACITIES[1]] * 1e6
        del bufs
    print(f"{ROUNDS * PER_ROUND} timed inserts of {BATCH} per buffer, interleaved; torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread; python {sys.version.split()[0]}")
    print(json.dumps({
        "insert_ratio_100k_vs_1k": round(result["reservoir"], 3),
        "class_balanced_ratio": round(result["class_balanced"], 3),
        "episodic_ratio": round(result["episodic"], 3),
        **{k: round(v, 1) for k, v in result.items() if k.endswith("_us")},
        "batch": BATCH,
    }))


if __name__ == "__main__":
    main()
