"""The Avalanche side of benchmarks/vs_avalanche.py, run with a Python where avalanche-lib imports.

Reads the exported stream and initial weights, trains one strategy with
Avalanche's implementation, prints one JSON line (train seconds, samples,
final average accuracy, threads). Not part of the lifelong package.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


def mlp() -> nn.Module:
    class MLP(nn.Module):   # lifelong's mlp backbone, layer for layer (same state-dict keys)
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(),
                                      nn.Linear(256, 256), nn.ReLU())
            self.head = nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    return MLP()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from lifelong.compare.avalanche import import_avalanche

    import_avalanche()  # beside a CPU torch, PyPI's torchvision needs lifelong's import shim
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
        create_generic_benchmark_from_tensor_lists,
    )
    from avalanche.training import plugins as P
    from avalanche.training import supervised as S
    from avalanche.training.plugins import EvaluationPlugin

    d = torch.load(args.data, weights_only=True)
    torch.manual_seed(args.seed)
    model = mlp()
    model.load_state_dict(d["init"])
    bm = create_generic_benchmark_from_tensor_lists(
        [[x, y] for x, y in d["train"]], [[x, y] for x, y in d["test"]],
        task_labels=[0] * len(d["train"]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    common = dict(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(), train_mb_size=10,
                  train_epochs=1, eval_mb_size=1000, device="cpu",
                  evaluator=EvaluationPlugin(loggers=[]))
    s = args.side
    if s == "naive":
        strat = S.Naive(**common)
    elif s in ("er200", "er200_av", "er500"):
        strat = S.Naive(**common, plugins=[P.ReplayPlugin(mem_size=int(s[2:5]))])
    elif s == "der":
        strat = S.DER(**common, mem_size=200, batch_size_mem=10, alpha=0.2, beta=0.0)
    elif s in ("derpp", "derpp_av"):  # Avalanche's DER++: one replay batch for both terms
        strat = S.DER(**common, mem_size=200, batch_size_mem=128, alpha=0.2, beta=1.0)
    elif s == "ewc":
        strat = S.EWC(**common, ewc_lambda=100.0, mode="separate")
    elif s == "online_ewc":
        strat = S.EWC(**common, ewc_lambda=100.0, mode="online", decay_factor=1.0)
    elif s == "si":
        strat = S.SynapticIntelligence(**common, si_lambda=0.1, eps=0.1)
    elif s == "lwf":
        strat = S.LwF(**common, alpha=1.0, temperature=2.0)
    elif s == "agem":
        strat = S.AGEM(**common, patterns_per_exp=40, sample_size=128)
    elif s == "gem":
        strat = S.GEM(**common, patterns_per_exp=1024, memory_strength=0.5)
    elif s == "generative_replay":
        strat = S.GenerativeReplay(**common)
    else:
        raise SystemExit(f"unknown strategy {s!r}")
    t = c = 0.0
    for exp in bm.train_stream:
        t0, c0 = time.perf_counter(), time.process_time()
        strat.train(exp, shuffle=False, num_workers=0)
        t += time.perf_counter() - t0
        c += time.process_time() - c0
    model.eval()
    accs = []
    with torch.no_grad():
        for x, y in d["test"]:
            accs.append(float((model(x).argmax(1) == y).float().mean()))
    print(json.dumps({"train_s": t, "cpu_s": c, "samples": sum(len(y) for _, y in d["train"]),
                      "acc": sum(accs) / len(accs), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
