"""``train.compile``: naive, ER, DER (and ER with Adam) compiled against eager and the bare loop, on CPU.

Protocol: benchmarks/floor.py's (online split MNIST subset, 5 experiences,
batch 10, SGD 0.1, MLP 784-256-256-10, one torch thread, seed 0); ER and
DER with a reservoir of 200; ``er_adam`` is ER with Adam at lr 0.001 (no
bare loop: floor.py's are SGD). With this model, optimizers and plugins
the whole training step runs as one compiled graph (lifelong.compiled).
For each method: one eager run, one compiled run that pays the compilation
(its time is reported apart), then ``--repeats`` rounds of a bare,
hand-written eager torch loop (floor.py's ``bare``), an eager lifelong run
and a compiled one, interleaved; compiled runs reuse the process's compiled
code (they share one model object, whose weights are reset to the seed's).
Time is the training loop's CPU time (``time.process_time``), as in
floor.py, and each column is the fastest of its repeats (floor.py's
estimator). Also checked, with compile on: determinism (two compiled runs,
same weights bit for bit), exact resume (a compiled run stopped half way,
checkpointed and resumed equals the uninterrupted compiled run), and the
largest weight difference from the eager run (rounding from Inductor's
fused kernels).

Last line: ``{"<method>": {"bare_cpu_s": .., "eager_cpu_s": .., "compiled_cpu_s": ..,
"compiled_over_eager": .., "compiled_over_bare": .., "first_compile_s": ..,
"acc_eager": .., "acc_compiled": ..}, "deterministic": .., "exact_resume": ..,
"max_abs_diff_vs_eager": .., "threads": .., "load_average": .., "compiler": ..}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time

import torch

from lifelong import Learner
from lifelong.backbones import mlp
from lifelong.plugins.replay import DER, ER
from lifelong.stream.catalog import split_mnist

try:  # floor.py's bare loops, run from the repository root or from benchmarks/
    from benchmarks.floor import bare
except ImportError:
    from floor import bare  # type: ignore[no-redef]

_MODELS: dict[str, torch.nn.Module] = {}


def learner(method: str, compile: bool) -> Learner:
    """A fresh learner; compiled runs of one method share one model object (its weights reset
    to the seed's initial ones), so they reuse its compiled code instead of recompiling."""
    torch.manual_seed(0)
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    if compile:
        shared = _MODELS.setdefault(method, model)
        shared.load_state_dict(model.state_dict())
        model = shared
    plugins = {"naive": [], "er": [ER(mem_size=200, seed=0)], "der": [DER(mem_size=200, seed=0)],
               "er_adam": [ER(mem_size=200, seed=0)]}[method]
    adam = {"optimizer": "adam", "lr": 0.001} if method == "er_adam" else {"lr": 0.1}
    return Learner(model, plugins=plugins, batch_size=10, device="cpu", seed=0, compile=compile,
                   **adam)


def timed(method: str, stream, compile: bool) -> tuple[float, Learner]:
    lr = learner(method, compile)
    t0 = time.process_time()
    lr.fit(stream, evaluate=False)
    return time.process_time() - t0, lr


def weights(lr: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lr.model.state_dict().items()}


def accuracy(lr: Learner) -> float:
    """Final average accuracy (Class-IL) over the stream's test sets."""
    report = lr.evaluate()
    return sum(report.class_il) / len(report.class_il)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="naive,er,der,er_adam")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache = tempfile.mkdtemp(prefix="lifelong-inductor-")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache)
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    stream = split_mnist(n_experiences=5, seed=0)
    result: dict[str, object] = {}
    print(f"{'method':<8}{'bare cpu s':>11}{'eager cpu s':>12}{'compiled cpu s':>15}"
          f"{'compiled/eager':>15}{'compiled/bare':>14}{'first compile s':>16}{'acc eager':>10}"
          f"{'acc compiled':>13}")
    ref: dict[str, dict[str, torch.Tensor]] = {}
    try:
        for m in args.methods.split(","):
            has_bare = m != "er_adam"                   # floor.py's loops are SGD
            timed(m, stream, False)                     # warm-up
            if has_bare:
                bare(m, stream, 0)
            t0 = time.perf_counter()
            _, first = timed(m, stream, True)           # pays the compilation
            first_s = time.perf_counter() - t0
            w_first = weights(first)                    # compiled runs share one model object
            acc_c = accuracy(first)
            bares, eager, comp = [], [], []
            for _ in range(args.repeats):
                if has_bare:
                    bares.append(bare(m, stream, 0))
                t, e = timed(m, stream, False)
                eager.append(t)
                w_eager = weights(e)
                t, c = timed(m, stream, True)
                comp.append(t)
                ref[m] = weights(c)
            acc_e = accuracy(e)
            if m == "naive" or "deterministic" not in result:
                result["deterministic"] = same(w_first, ref[m])
                result["max_abs_diff_vs_eager"] = max(
                    float((w_eager[k] - ref[m][k]).abs().max()) for k in ref[m])
            tb, te, tc = (min(bares) if bares else None), min(eager), min(comp)
            cb = None if tb is None else tc / tb
            print(f"{m:<8}{'-' if tb is None else f'{tb:.3f}':>11}{te:>12.3f}{tc:>15.3f}"
                  f"{tc / te:>15.3f}{'-' if cb is None else f'{cb:.3f}':>14}"
                  f"{first_s:>16.1f}{acc_e:>10.4f}{acc_c:>13.4f}")
            result[m] = {"bare_cpu_s": None if tb is None else round(tb, 3),
                         "eager_cpu_s": round(te, 3), "compiled_cpu_s": round(tc, 3),
                         "compiled_over_eager": round(tc / te, 3),
                         "compiled_over_bare": None if cb is None else round(cb, 3),
                         "first_compile_s": round(first_s, 1),
                         "acc_eager": round(acc_e, 4), "acc_compiled": round(acc_c, 4)}
        m = "er" if "er" in ref else next(iter(ref))
        n = sum(len(e.y) for e in stream.experiences()) // 10
        half = learner(m, True)
        half.fit(stream, evaluate=False, stop_after=n // 2)
        buf = io.BytesIO()
        torch.save(half.state_dict(), buf)
        buf.seek(0)
        resumed = learner(m, True)
        resumed.fit(stream, evaluate=False, state=torch.load(buf, weights_only=False))
        result["exact_resume"] = same(weights(resumed), ref[m])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    result.update({"threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2),
                   "compiler": compiler, "torch": torch.__version__})
    print(f"{args.repeats} interleaved repeats, fastest CPU seconds of training; torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}; C++ compiler {compiler}; "
          f"deterministic {result.get('deterministic')}, exact resume {result.get('exact_resume')}, "
          f"largest weight difference from eager {result.get('max_abs_diff_vs_eager')}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
