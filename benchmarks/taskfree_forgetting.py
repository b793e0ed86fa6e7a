"""Faithfulness of task-free consolidation: does a detector make a regularizer forget less?

On a task-free stream with known change points, compare for each regularizer:

* ``finetune`` — no regularizer (the lower bound);
* ``<reg> never`` — the regularizer, never consolidated (an ``every_n`` whose period
  exceeds the stream: no boundary before the stream's end);
* ``<reg> + <detector>`` — consolidated whenever the detector fires;
* ``<reg> oracle`` — consolidated at the true change points (the same stream with
  its boundaries announced): the reference a detector tries to approach.

Regularizers: those of ``ewc, online_ewc, si, mas, lwf`` that are registered (they
come from another branch); until they are, a stand-in L2 pull to the weights at the
last boundary (``--l2``, default 0.1: with 1 the stand-in stops learning new
experiences, with 100 and lr 0.05 it diverges) shows the machinery; it is an
isotropic pull, not EWC, and its numbers say nothing about the real regularizers.

Stream: ``permuted_mnist`` (task-free, 5 experiences of 4000 images;
domain-incremental, where parameter regularization is known to help), MLP
784-256-256-10, SGD lr 0.05, batch 10, one thread. Detectors: ``page_hinkley``
watching for rising loss (threshold 5), ``adwin`` with its defaults, ``plateau``
with a mean threshold of 0.3. This is a draft to be completed once the
regularizers are merged (their defaults, several seeds).

Reported: final average accuracy (ACC) and average forgetting over the true
experiences, and prequential accuracy. Last line: ``{"<row>": {"acc": ..,
"forgetting": .., "prequential": .., "boundaries": ..}, ...}``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from lifelong import hookimpl
from lifelong.registry import build_registry
from lifelong.run import build, collect_metrics

REGULARIZERS = ("ewc", "online_ewc", "si", "mas", "lwf")
DETECTORS: dict[str, dict[str, Any]] = {
    "page_hinkley": {"name": "page_hinkley", "mode": "up", "threshold": 5.0},
    "adwin": {"name": "adwin"},
    "plateau": {"name": "plateau", "mean_threshold": 0.3},
}


class StandinL2:
    """L2 pull to the weights at the last boundary (until the regularizers are merged)."""

    name = "standin_l2"
    requires = ("boundaries",)

    def __init__(self, *, strength: float = 0.1) -> None:
        self.strength = strength
        self.anchor_: list[torch.Tensor] | None = None

    @hookimpl
    def after_experience(self, learner: Any, experience: Any) -> None:
        self.anchor_ = [p.detach().clone() for p in learner.model.parameters()]

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, torch.Tensor] | None:
        if self.anchor_ is None:
            return None
        pull = sum(((p - a) ** 2).sum() for p, a in zip(learner.model.parameters(), self.anchor_))
        return {"l2_anchor": self.strength / 2 * pull}


def run(reg: Any, stream: dict[str, Any], plugins: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = {"seed": 0, "device": "cpu", "stream": stream, "plugins": plugins,
           "train": {"batch_size": 10, "lr": 0.05}, "eval": {"every": 0}}
    r = build(cfg, registry=reg)
    r.learner.fit(r.stream)
    m = collect_metrics(r)
    return {"acc": m["final_avg_accuracy"], "forgetting": m["avg_forgetting"],
            "prequential": m["prequential_accuracy"],
            "boundaries": len(m["boundaries_detected"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", default="permuted_mnist")
    ap.add_argument("--regularizers", default=",".join(REGULARIZERS))
    ap.add_argument("--l2", type=float, default=0.1, help="strength of the L2 stand-in")
    args = ap.parse_args()
    torch.set_num_threads(1)
    reg = build_registry()
    reg.add("plugin", "standin_l2", lambda: StandinL2(strength=args.l2))
    names = [n for n in args.regularizers.split(",") if ("plugin", n) in reg]
    if not names:
        print("note: none of the regularizers is registered yet; using the L2 stand-in")
        names = ["standin_l2"]
    free = {"name": args.stream, "task_free": True}
    aware = {"name": args.stream, "task_free": False}
    rows: dict[str, dict[str, Any]] = {"finetune": run(reg, free, [])}
    for name in names:
        rows[f"{name} never"] = run(reg, free, [{"name": name},
                                                {"name": "every_n", "every": 10**9}])
        for dname, det in DETECTORS.items():
            rows[f"{name} + {dname}"] = run(reg, free, [{"name": name}, det])
        rows[f"{name} oracle"] = run(reg, aware, [{"name": name}])
    print(f"{'run':28s} {'ACC':>6s} {'forgetting':>10s} {'prequential':>11s} {'boundaries':>10s}")
    for k, v in rows.items():
        print(f"{k:28s} {v['acc']:6.3f} {v['forgetting']:10.3f} {v['prequential']:11.3f} "
              f"{v['boundaries']:10d}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
