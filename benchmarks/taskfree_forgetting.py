"""Faithfulness of task-free consolidation: does a detector make a regularizer forget less?

On a task-free stream with known change points, compare for each regularizer:

* ``finetune`` — no regularizer (the lower bound);
* ``<reg> never`` — the regularizer, never consolidated (an ``every_n`` whose period
  exceeds the stream: no boundary before the stream's end);
* ``<reg> + <detector>`` — consolidated whenever the detector fires;
* ``<reg> oracle`` — consolidated at the true change points (the same stream with
  its boundaries announced): the reference a detector tries to approach.

Regularizers: ``ewc, si, mas`` by default, each with its paper defaults; any
registered name and parameters via ``--regularizers``, e.g. ``si:c=10.0``.

Stream: ``permuted_mnist`` (task-free, 5 experiences of 4000 images;
domain-incremental, where parameter regularization is known to help), MLP
784-256-256-10, Adam lr 1e-3 (plain SGD at a useful rate is unstable with EWC's
lambda=100, see benchmarks/regularization.py), batch 10, one pass, one thread,
seeds 0,1,2. Detectors: ``page_hinkley`` watching for rising loss (threshold 5),
``adwin`` with its defaults, ``plateau`` with a mean threshold of 0.3.

Reported: final average accuracy (ACC) and average forgetting over the true
experiences, and prequential accuracy. Last line: ``{"<row>": {"acc": ..,
"forgetting": .., "prequential": .., "boundaries": ..}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch

from lifelong.registry import build_registry
from lifelong.run import build, collect_metrics

REGULARIZERS = ("ewc", "si", "mas")
DETECTORS: dict[str, dict[str, Any]] = {
    "page_hinkley": {"name": "page_hinkley", "mode": "up", "threshold": 5.0},
    "adwin": {"name": "adwin"},
    "plateau": {"name": "plateau", "mean_threshold": 0.3},
}


def run_one(reg: Any, stream: dict[str, Any], plugins: list[dict[str, Any]],
            seed: int) -> dict[str, Any]:
    cfg = {"seed": seed, "device": "cpu", "stream": stream, "plugins": plugins,
           "train": {"batch_size": 10, "optimizer": "adam", "lr": 1e-3}, "eval": {"every": 0}}
    r = build(cfg, registry=reg)
    r.learner.fit(r.stream)
    m = collect_metrics(r)
    return {"acc": m["final_avg_accuracy"], "forgetting": m["avg_forgetting"],
            "prequential": m["prequential_accuracy"],
            "boundaries": len(m["boundaries_detected"])}


def run(reg: Any, stream: dict[str, Any], plugins: list[dict[str, Any]],
        seeds: list[int]) -> dict[str, Any]:
    """Mean over seeds of each figure (and the forgetting's spread)."""
    runs = [run_one(reg, stream, plugins, s) for s in seeds]
    out = {k: statistics.mean(r[k] for r in runs) for k in runs[0]}
    out["forgetting_std"] = statistics.pstdev(r["forgetting"] for r in runs)
    return out


def parse_spec(item: str) -> dict[str, Any]:
    """``"si:c=10"`` -> ``{"name": "si", "c": 10.0}``."""
    name, _, rest = item.partition(":")
    spec: dict[str, Any] = {"name": name}
    for kv in filter(None, rest.split(";")):
        key, _, value = kv.partition("=")
        spec[key] = float(value) if any(ch in value for ch in ".e") else int(value)
    return spec


def label(spec: dict[str, Any]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({extra})" if extra else spec["name"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", default="permuted_mnist")
    ap.add_argument("--regularizers", default=",".join(REGULARIZERS))
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    reg = build_registry()
    specs = [parse_spec(item) for item in args.regularizers.split(",")]
    for spec in specs:
        reg.get("plugin", spec["name"])  # an unknown name fails here, naming what exists
    seeds = [int(s) for s in args.seeds.split(",")]
    free = {"name": args.stream, "task_free": True}
    aware = {"name": args.stream, "task_free": False}
    rows: dict[str, dict[str, Any]] = {"finetune": run(reg, free, [], seeds)}
    for spec in specs:
        name = label(spec)
        rows[f"{name} never"] = run(reg, free, [spec, {"name": "every_n", "every": 10**9}],
                                    seeds)
        for dname, det in DETECTORS.items():
            rows[f"{name} + {dname}"] = run(reg, free, [spec, det], seeds)
        rows[f"{name} oracle"] = run(reg, aware, [spec], seeds)
    print(f"seeds {seeds}; means over seeds")
    print(f"{'run':28s} {'ACC':>6s} {'forgetting':>16s} {'prequential':>11s} {'boundaries':>10s}")
    for k, v in rows.items():
        print(f"{k:28s} {v['acc']:6.3f} {v['forgetting']:8.3f} ± {v['forgetting_std']:5.3f} "
              f"{v['prequential']:11.3f} {v['boundaries']:10.1f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
