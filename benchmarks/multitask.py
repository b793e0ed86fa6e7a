"""Multi-task learning on one learner: loss balancing and gradient methods, two architectures.

Streams: ``multi_mnist`` (tasks left, right; Sener & Koltun 2018) and
``mixed_scale_mnist`` (digit, parity, and the ink-mass regression whose
squared error starts ~1000x the cross-entropies). For each seed: one
single-task model per task (the baselines of Delta_MTL, Maninis et al.
2019), then every method on a shared-bottom MLP and on a cross-stitch
network of the same MLP (Misra et al. 2016, paper init and lr multiplier):
equal weights (the plain sum), uncertainty weighting, GradNorm, DWA,
MGDA-UB, PCGrad. Metrics on the held-out data after one pass: accuracy
(classification), mean squared error (regression); Delta_MTL in percent.

Settings (the same for every method): Adam, lr 1e-3, batch 32, one pass
over 4000 training images, MLP hidden [64], one torch thread. DWA's
"epoch" is ``--dwa-period`` batches (a stream has no epochs). MGDA-UB
works on the shared representation for the shared bottom, on the shared
parameters for cross-stitch networks (they have no shared representation).
``uncertainty_lr0.05`` is uncertainty weighting with its log-variances
stepped at 0.05 instead of the network's rate (the default), to show how
far they get in one pass.

Continual section (multi-task learning composed with the continual methods):
``permuted_multitask_mnist`` (tasks left, right on MultiMNIST; experience
1 permutes the pixels), two experiences, a shared-bottom MLP [100], SGD lr
0.05, batch 32, 2 passes per experience, 3 seeds: naive fine-tuning, ER
(reservoir 200, every task's target replayed), EWC (lambda 10, Fisher of
every head on 500 samples), LwF (every head distilled, T 2), A-GEM (memory
200, reference batch 32, the sum of the tasks' losses). Per task: accuracy
averaged over both experiences' test sets after the last experience, and
forgetting (best earlier accuracy on experience 0's test set minus the
final one).

Run: ``python benchmarks/multitask.py`` (3 seeds, a few minutes on one
thread; ``--seeds 1`` for a quick look). The last line is one JSON object:
``"stream/architecture/method" -> {"tasks": {task: metric}, "delta_mtl": ...}``
(means over seeds), plus ``"meta"`` and ``"continual"``: method -> {"tasks": {task:
final accuracy}, "forgetting": {task: ...}} (means over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from lifelong.learner import Learner
from lifelong.multitask import cross_stitch, shared_bottom
from lifelong.plugins.evaluation import TaskMetrics
from lifelong.plugins.multitask import DWA, MGDAUB, GradNorm, PCGrad, UncertaintyWeighting
from lifelong.stream.base import Stream
from lifelong.stream.multitask import mixed_scale_mnist, multi_mnist, multi_target

METHODS = ("equal", "uncertainty", "uncertainty_lr0.05", "gradnorm", "dwa", "mgda_ub", "pcgrad")
ARCHS = ("shared_bottom", "cross_stitch")


def plugins_for(method: str, arch: str, dwa_period: int, seed: int) -> list[Any]:
    if method == "equal":
        return []
    if method == "uncertainty":
        return [UncertaintyWeighting()]
    if method == "uncertainty_lr0.05":
        return [UncertaintyWeighting(lr=0.05)]
    if method == "gradnorm":
        return [GradNorm()]
    if method == "dwa":
        return [DWA(period=dwa_period)]
    if method == "mgda_ub":
        return [MGDAUB(on="representation" if arch == "shared_bottom" else "parameters")]
    if method == "pcgrad":
        return [PCGrad(seed=seed)]
    raise ValueError(method)


def single_task(stream: Stream, task: str) -> Stream:
    """The same data with only ``task``'s targets (a single-task baseline's stream)."""
    exps = list(stream.experiences())
    x = torch.cat([e.x for e in exps])
    tg = {task: torch.cat([e.targets[task] for e in exps])}
    xt = torch.cat([t.x for t in stream.test])
    tt = {task: torch.cat([t.targets[task] for t in stream.test])}
    spec = tuple(t for t in stream.tasks if t.name == task)
    return multi_target(x, tg, xt, tt, tasks=spec, shuffle=False, name=f"{stream.name}:{task}")


def train(stream: Stream, arch: str, plugins: list[Any], seed: int, args: Any) -> dict[str, float]:
    torch.manual_seed(seed)
    factory = shared_bottom if arch == "shared_bottom" else cross_stitch
    model = factory(input_shape=stream.input_shape, num_classes=stream.num_classes,
                    tasks=stream.tasks, hidden=[args.hidden])
    view = TaskMetrics()
    Learner(model, plugins=[*plugins, view], optimizer="adam", lr=args.lr,
            batch_size=args.batch_size, epochs=args.epochs, device="cpu", seed=seed).fit(stream)
    return view.final()


def delta(metrics: dict[str, float], base: dict[str, float], kinds: dict[str, str]) -> float:
    from lifelong.metrics import delta_mtl

    return delta_mtl(metrics, base, [t for t, k in kinds.items() if k == "regression"])


def relative(row: dict[str, list[float]], base: dict[str, list[float]], task: str,
             kind: str) -> float:
    """Relative change of ``task``'s mean metric against the baseline, higher is better."""
    b = statistics.fmean(base[task])
    change = (statistics.fmean(row[task]) - b) / b
    return -change if kind == "regression" else change


CONTINUAL = ("naive", "er", "ewc", "lwf", "agem")


def continual_plugins(method: str, seed: int) -> list[Any]:
    from lifelong.plugins.regularization import EWC, LwF
    from lifelong.plugins.replay import AGEM, ER

    return {"naive": [], "er": [ER(mem_size=200, seed=seed)],
            "ewc": [EWC(ewc_lambda=10.0, fisher_samples=500, seed=seed)], "lwf": [LwF()],
            "agem": [AGEM(mem_size=200, batch_size=32, seed=seed)]}[method]


def continual(seeds: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    """method -> {"final"|"forgetting": {task: per-seed values}} on permuted MultiMNIST."""
    from lifelong.stream.multitask import permuted_multitask_mnist

    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for seed in range(seeds):
        stream = permuted_multitask_mnist(n_experiences=2, seed=seed)
        for method in CONTINUAL:
            torch.manual_seed(seed)
            model = shared_bottom(input_shape=stream.input_shape, num_classes=10,
                                  tasks=stream.tasks, hidden=[100])
            view = TaskMetrics()
            Learner(model, plugins=[*continual_plugins(method, seed), view], lr=0.05,
                    batch_size=32, epochs=2, device="cpu", seed=seed).fit(stream)
            row = out.setdefault(method, {"final": {}, "forgetting": {}})
            for task, rows in view.rows_.items():
                row["final"].setdefault(task, []).append(statistics.fmean(rows[-1]))
                forget = statistics.fmean(max(r[j] for r in rows[:-1]) - rows[-1][j]
                                          for j in range(len(rows[-1]) - 1))
                row["forgetting"].setdefault(task, []).append(forget)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--dwa-period", type=int, default=25)
    ap.add_argument("--streams", nargs="+", default=["multi_mnist", "mixed_scale_mnist"])
    ap.add_argument("--continual-seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cont = continual(args.continual_seeds) if args.continual_seeds else {}
    if cont:
        print(f"  continual section done ({time.perf_counter() - t0:.0f} s)", flush=True)
    makers = {"multi_mnist": multi_mnist, "mixed_scale_mnist": mixed_scale_mnist}
    results: dict[str, dict[str, list[float]]] = {}  # key -> metric name -> per-seed values
    kinds_of: dict[str, dict[str, str]] = {}
    for sname in args.streams:
        for seed in range(args.seeds):
            stream = makers[sname](seed=seed)
            kinds = {t.name: t.kind for t in stream.tasks}
            kinds_of[sname] = kinds
            base = {}
            for task in kinds:
                base.update(train(single_task(stream, task), "shared_bottom", [], seed, args))
            row = results.setdefault(f"{sname}/single_task", {})
            for k, v in base.items():
                row.setdefault(k, []).append(v)
            row.setdefault("delta_mtl", []).append(0.0)
            for arch in ARCHS:
                for method in METHODS:
                    fin = train(stream, arch, plugins_for(method, arch, args.dwa_period, seed),
                                seed, args)
                    row = results.setdefault(f"{sname}/{arch}/{method}", {})
                    for k, v in fin.items():
                        row.setdefault(k, []).append(v)
                    row.setdefault("delta_mtl", []).append(delta(fin, base, kinds))
            print(f"  {sname} seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)

    def mean(v: list[float]) -> float:
        return statistics.fmean(v)

    def sd(v: list[float]) -> float:
        return statistics.stdev(v) if len(v) > 1 else 0.0

    print(f"\nmulti-task benchmark: {args.seeds} seeds, torch threads {torch.get_num_threads()}, "
          f"Adam lr {args.lr}, batch {args.batch_size}, {args.epochs} pass(es), "
          f"MLP [{args.hidden}]; accuracy for classification, MSE for regression (lower is "
          "better); Delta_MTL in % vs the single-task models (higher is better)")
    verdicts = []
    for sname in args.streams:
        kinds = kinds_of[sname]
        names = list(kinds)
        head = f"{'method':<36}" + "".join(f"{n:>18}" for n in names) + f"{'Delta_MTL':>18}"
        print(f"\n{sname}\n{head}\n{'-' * len(head)}")
        for key, row in results.items():
            if not key.startswith(sname + "/"):
                continue
            cells = "".join(f"{mean(row[n]):>10.3f} ±{sd(row[n]):>6.3f}" for n in names)
            print(f"{key[len(sname) + 1:]:<36}{cells}{mean(row['delta_mtl']):>10.2f} "
                  f"±{sd(row['delta_mtl']):>6.2f}")
        if sname == "mixed_scale_mnist":
            base = results[f"{sname}/single_task"]
            for arch in ARCHS:
                eq = results[f"{sname}/{arch}/equal"]
                starved = min(names, key=lambda n: relative(eq, base, n, kinds[n]))
                for m in ("uncertainty", "uncertainty_lr0.05", "gradnorm"):
                    row = results[f"{sname}/{arch}/{m}"]
                    better = (mean(row[starved]) < mean(eq[starved]) if kinds[starved] ==
                              "regression" else mean(row[starved]) > mean(eq[starved]))
                    verdicts.append(f"{arch}: equal weights starve {starved!r} "
                                    f"({mean(eq[starved]):.3f}); {m} gives "
                                    f"{mean(row[starved]):.3f}: "
                                    f"{'beats' if better else 'does NOT beat'} equal weights")
    if verdicts:
        print("\nthe papers' claim on the mixed-scale stream:")
        for v in verdicts:
            print("  " + v)
    if cont:
        tasks = list(next(iter(cont.values()))["final"])
        print(f"\ncontinual: permuted_multitask_mnist, 2 experiences, {args.continual_seeds} "
              "seeds, shared bottom [100], SGD lr 0.05, batch 32, 2 passes; accuracy after the "
              "last experience (mean over both test sets) and forgetting of experience 0")
        head = f"{'method':<10}" + "".join(f"{t + ' acc':>18}{t + ' forgetting':>20}"
                                           for t in tasks)
        print(f"{head}\n{'-' * len(head)}")
        for method, row in cont.items():
            print(f"{method:<10}" + "".join(
                f"{mean(row['final'][t]):>11.3f} ±{sd(row['final'][t]):>5.3f}"
                f"{mean(row['forgetting'][t]):>13.3f} ±{sd(row['forgetting'][t]):>5.3f}"
                for t in tasks))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    out: dict[str, Any] = {
        key: {"tasks": {n: round(mean(v), 4) for n, v in row.items() if n != "delta_mtl"},
              "delta_mtl": round(mean(row["delta_mtl"]), 2)}
        for key, row in results.items()}
    out["meta"] = {"seeds": args.seeds, "torch_threads": torch.get_num_threads(),
                   "epochs": args.epochs, "lr": args.lr, "optimizer": "adam",
                   "batch_size": args.batch_size, "hidden": args.hidden,
                   "dwa_period": args.dwa_period, "torch": torch.__version__}
    out["continual"] = {
        method: {"tasks": {t: round(mean(v), 4) for t, v in row["final"].items()},
                 "forgetting": {t: round(mean(v), 4) for t, v in row["forgetting"].items()}}
        for method, row in cont.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
