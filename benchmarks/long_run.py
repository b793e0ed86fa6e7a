"""Long task-free run: resident memory must stay flat over 1,000,000 samples.

What ``lifelong run`` does (``lifelong.run.build`` + ``learner.fit``) on a lazily
generated stream of ``--samples`` samples (default 1,000,000): ``mnist_endless``
(class-incremental MNIST subset, noisy draws, 5 experiences; nothing is stored),
MLP 784-256-256-10, Adam lr 1e-3 (EWC's lambda=100 is unstable with SGD at a
useful rate), batch 10, one thread, with a boundary detector (``--detector``,
default ADWIN), a replay plugin (``--replay``, default ``er``) and a regularizer
(``--regularizer``, default ``ewc``); ``none`` leaves one out. Default task-free
evaluation is on:
prequential (window 100 batches) and anytime accuracy on the held-out data of
the experiences seen so far, every 100 batches.

Resident memory (psutil RSS) is sampled every ``--every`` batches. Warm-up is the
first 10% of the stream; ``rss_growth = (rss_end - rss_after_warmup) /
rss_after_warmup``, where ``rss_after_warmup`` is the first sample at or after
the warm-up and ``rss_end`` the last one (after the last batch). Also reported:
the largest sample after warm-up and the least-squares slope after warm-up in
MB per 100,000 samples. Progress (rate, ETA) is printed every 10%.

Last line: ``{"rss_growth": ..., "samples": ..., "samples_per_second": ..., ...}``.
Quick check: ``python benchmarks/long_run.py --samples 100000``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any

import psutil
import torch

from lifelong.registry import build_registry
from lifelong.run import build, collect_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--stream", default="mnist_endless")
    ap.add_argument("--detector", default="adwin")
    ap.add_argument("--replay", default="er")
    ap.add_argument("--regularizer", default="ewc")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--every", type=int, default=500, help="batches between RSS samples")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    reg = build_registry()
    plugins: list[Any] = [{"name": n} for n in (args.detector, args.replay, args.regularizer)
                          if n != "none"]
    config = {
        "seed": 0, "device": "cpu",
        "stream": {"name": args.stream, "n_samples": args.samples},
        "backbone": {"name": "mlp"},
        "plugins": plugins,
        "train": {"batch_size": args.batch_size, "optimizer": "adam", "lr": 1e-3},
    }
    run = build(config, registry=reg)
    proc = psutil.Process()
    total = args.samples
    warmup = total // 10
    samples: list[tuple[int, int]] = []  # (samples seen, rss bytes)
    state = {"seen": 0, "batches": 0, "next_report": total // 10}
    t0 = time.perf_counter()

    def progress(n: int) -> None:
        state["seen"] += n
        state["batches"] += 1
        if state["batches"] % args.every == 0:
            samples.append((state["seen"], proc.memory_info().rss))
        if state["seen"] >= state["next_report"]:
            dt = time.perf_counter() - t0
            rate = state["seen"] / dt
            eta = (total - state["seen"]) / rate if rate else float("inf")
            print(f"{state['seen']:>9,d}/{total:,d} samples  {rate:8,.0f} samples/s  "
                  f"ETA {eta:5.0f} s  RSS {proc.memory_info().rss / 2**20:7.1f} MB", flush=True)
            state["next_report"] += total // 10

    gc.collect()
    rss_start = proc.memory_info().rss
    run.learner.fit(run.stream, progress=progress)
    seconds = time.perf_counter() - t0
    samples.append((state["seen"], proc.memory_info().rss))
    metrics = collect_metrics(run)

    after = [(s, r) for s, r in samples if s >= warmup]
    rss_warm, rss_end = after[0][1], after[-1][1]
    growth = (rss_end - rss_warm) / rss_warm
    slope = None
    if len(after) > 2:
        xs = torch.tensor([s for s, _ in after], dtype=torch.float64)
        ys = torch.tensor([r for _, r in after], dtype=torch.float64)
        xm, ym = xs.mean(), ys.mean()
        slope = float(((xs - xm) * (ys - ym)).sum() / ((xs - xm) ** 2).sum()) * 1e5 / 2**20
    mb = 2**20
    print(f"RSS before training {rss_start / mb:.1f} MB, after warm-up ({after[0][0]:,d} samples) "
          f"{rss_warm / mb:.1f} MB, end {rss_end / mb:.1f} MB, max after warm-up "
          f"{max(r for _, r in after) / mb:.1f} MB; growth {growth:+.2%}")
    print(json.dumps({
        "rss_growth": growth,
        "samples": state["seen"],
        "samples_per_second": state["seen"] / seconds,
        "rss_after_warmup_mb": rss_warm / mb,
        "rss_end_mb": rss_end / mb,
        "rss_max_after_warmup_mb": max(r for _, r in after) / mb,
        "rss_slope_mb_per_100k_samples": slope,
        "stream": args.stream,
        "plugins": [p["name"] for p in plugins],
        "boundaries_detected": len(metrics["boundaries_detected"]),
        "prequential_accuracy": metrics["prequential_accuracy"],
        "final_avg_accuracy": metrics["final_avg_accuracy"],
        "wall_time_s": seconds,
    }))


if __name__ == "__main__":
    main()
