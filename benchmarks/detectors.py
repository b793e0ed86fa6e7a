"""Boundary detectors against known change points: delay, missed changes, false alarms.

Streams (task-free, sudden switches, true change points known):

* ``mnist`` — ``mnist_endless``: class-incremental MNIST subset, 5 experiences of
  two classes, 25,000 noisy draws (change every 5,000 samples);
* ``stagger`` — ``stagger_drift``: STAGGER's three boolean concepts, 30,000 samples;
* ``sea`` — ``sea_drift``: SEA variants 0, 2, 3, 1 (thresholds 8, 7, 9.5, 9), 40,000
  samples: small changes, only a few percent of the labels flip.

Learner: naive fine-tuning, MLP with one hidden layer of 64, SGD lr 0.05, batch 10,
one thread, seed 0 (``--seeds`` for more). Each detector runs as a plugin in its own
run; a naive learner does not react to boundaries, so every detector sees the same
losses. Detectors: the five registered ones with their defaults (river 0.26's for
ADWIN, Page-Hinkley and KSWIN; the reference implementation's for the plateau rule;
every_n every 100 batches), plus two variants: Page-Hinkley watching for increases
only (``mode="up"``) and ADWIN on the batch error rate.

Scoring (:func:`lifelong.metrics.report_detections`): a change is detected by the
first detection within ``tolerance`` samples after it (half a segment); delay is
counted in samples; detections outside those windows are false alarms (the plateau
rule's first consolidation, before any change, counts as one: it marks the end of
learning, not a change). Numbers are summed over streams and seeds; delay is the
mean over detected changes.

Last line: ``{"<detector>": {"delay": ..., "false_alarms": ..., "missed": ...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from lifelong import Learner
from lifelong.backbones import mlp
from lifelong.metrics import report_detections
from lifelong.plugins.boundaries import ADWIN, KSWIN, PageHinkley
from lifelong.plugins.boundaries.every_n import EveryN
from lifelong.plugins.boundaries.plateau import Plateau
from lifelong.stream.drift import mnist_endless, sea_drift, stagger_drift

STREAMS: dict[str, Callable[[int], Any]] = {
    "mnist": lambda seed: mnist_endless(n_samples=25_000, n_experiences=5, seed=seed),
    "stagger": lambda seed: stagger_drift(n_samples=30_000, n_concepts=3, seed=seed),
    "sea": lambda seed: sea_drift(n_samples=40_000, variants=[0, 2, 3, 1], seed=seed),
}

DETECTORS: dict[str, Callable[[], Any]] = {
    "adwin": ADWIN,
    "page_hinkley": PageHinkley,
    "kswin": KSWIN,
    "plateau": Plateau,
    "every_n": EveryN,
    "page_hinkley[up]": lambda: PageHinkley(mode="up"),
    "adwin[error]": lambda: ADWIN(signal="error"),
}


def run_one(stream: Any, detector: Any, seed: int) -> tuple[list[int], float]:
    torch.manual_seed(seed)
    model = mlp(input_shape=stream.input_shape, num_classes=stream.num_classes, hidden=[64])
    learner = Learner(model, plugins=[detector], device="cpu", batch_size=10, lr=0.05, seed=seed)
    t0 = time.perf_counter()
    learner.fit(stream, evaluate=False)
    return list(detector.detections_ if hasattr(detector, "detections_")
                else learner.boundaries_detected), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--streams", default=",".join(STREAMS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    streams = args.streams.split(",")
    totals = {d: {"delays": [], "false_alarms": 0, "missed": 0, "changes": 0, "detections": 0,
                  "seconds": 0.0, "samples": 0} for d in DETECTORS}
    rows = []
    for sname in streams:
        for seed in seeds:
            stream = STREAMS[sname](seed)
            cps = stream.change_points
            tolerance = min(b - a for a, b in zip([0, *cps], [*cps, stream.meta["n_train"]])) // 2
            for dname, make in DETECTORS.items():
                detections, seconds = run_one(stream, make(), seed)
                r = report_detections(cps, detections, tolerance)
                t = totals[dname]
                t["delays"] += r["delays"]
                t["false_alarms"] += r["false_alarms"]
                t["missed"] += r["missed"]
                t["changes"] += len(cps)
                t["detections"] += r["detections"]
                t["seconds"] += seconds
                t["samples"] += stream.meta["n_train"]
                rows.append((sname, seed, dname, r, detections))
                print(f"{sname:8s} seed {seed} {dname:17s} detections {r['detections']:3d}  "
                      f"delays {r['delays']}  missed {r['missed']}  false alarms "
                      f"{r['false_alarms']}  (first: {detections[:6]})", flush=True)
    print()
    print(f"{'stream':8s} {'detector':18s} {'changes':>7s} {'missed':>6s} {'mean delay':>10s} "
          f"{'false alarms':>12s}")
    for sname in streams:
        for dname in DETECTORS:
            rs = [r for s, _, d, r, _ in rows if s == sname and d == dname]
            delays = [x for r in rs for x in r["delays"]]
            delay = f"{sum(delays) / len(delays):.0f}" if delays else "-"
            print(f"{sname:8s} {dname:18s} {sum(r['detected'] + r['missed'] for r in rs):7d} "
                  f"{sum(r['missed'] for r in rs):6d} {delay:>10s} "
                  f"{sum(r['false_alarms'] for r in rs):12d}")
    print()
    print(f"{'detector':18s} {'changes':>7s} {'missed':>6s} {'mean delay':>10s} "
          f"{'false alarms':>12s} {'detections':>10s} {'samples/s':>9s}")
    out = {}
    for dname, t in totals.items():
        delay = sum(t["delays"]) / len(t["delays"]) if t["delays"] else None
        rate = t["samples"] / t["seconds"] if t["seconds"] else 0.0
        print(f"{dname:18s} {t['changes']:7d} {t['missed']:6d} "
              f"{'-' if delay is None else f'{delay:.0f}':>10s} {t['false_alarms']:12d} "
              f"{t['detections']:10d} {rate:9.0f}")
        out[dname] = {"delay": delay, "false_alarms": t["false_alarms"], "missed": t["missed"],
                      "changes": t["changes"], "detections": t["detections"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
