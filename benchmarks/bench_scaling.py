"""A 24-run `lifelong bench` grid in-process, on `--workers 2` and on a local Ray instance.

The grid: ER, DER, DER++ and A-GEM x buffer 200 and 500 x seeds 0, 1, 2 on
split_digits (scikit-learn's digits, 5 experiences of 2 classes, shipped),
an MLP 64-100-10, batch 10, SGD 0.1, one pass. Each backend runs the whole
grid into a fresh --out through `lifelong.cli.main`; the wall time includes
everything the user waits for (process spawns, Ray start-up and shut-down).
"identical" checks that the three backends give the same per-run metrics
(accuracy matrix, final accuracy, forgetting, BWT, FWT, prequential
accuracy, samples seen) for every run hash.

    python benchmarks/bench_scaling.py [--no-ray]

Last line: one JSON object {"in_process_s", "workers2_s", "ray_s",
"identical", "cores", "torch_threads", "runs"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lifelong.cli import main  # noqa: E402
from lifelong.threads import available_cores  # noqa: E402

GRID = """
config:
  device: cpu
  stream: {name: split_digits}
  backbone: {name: mlp, hidden: [100]}
  train: {batch_size: 10, epochs: 1, optimizer: sgd, lr: 0.1}
  eval: {prequential: true}
strategies: [er, der, derpp, agem]
seeds: [0, 1, 2]
axes: {strategy.mem_size: [200, 500]}
"""
SAME = ("final_avg_accuracy", "avg_forgetting", "bwt", "fwt", "prequential_accuracy",
        "accuracy_matrix", "samples_seen")
MODES = (("in-process", []), ("workers 2", ["--workers", "2"]),
         ("ray local (2 CPUs)", ["--backend", "ray", "--workers", "2"]))


def run(tmp: Path, name: str, extra: list[str]) -> tuple[float, dict[str, dict]]:
    out = tmp / name.split()[0]
    t0 = time.perf_counter()
    code = main(["bench", str(tmp / "grid.yaml"), "--out", str(out), "--quiet", *extra])
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{name}: lifelong bench exited {code}")
    rows = [json.loads(line) for line in (out / "bench_runs.jsonl").read_text().splitlines()]
    return wall, {r["hash"]: r for r in rows}


def main_() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "grid.yaml").write_text(GRID)
        results = {}
        for name, extra in MODES:
            if name.startswith("ray") and args.no_ray:
                continue
            results[name] = run(tmp, name, extra)
    ref = results["in-process"][1]
    identical = all(rows.keys() == ref.keys() and all(
        rows[h][k] == ref[h][k] for h in ref for k in SAME) for _, rows in results.values())
    console = Console(width=120)
    t = Table(title=f"24-run grid on split_digits, {available_cores()} core(s)")
    for c in ("backend", "runs", "wall s", "runs/min", "mean accuracy", "threads per run"):
        t.add_column(c, justify="right" if c != "backend" else "left")
    for name, (wall, rows) in results.items():
        acc = sum(r["final_avg_accuracy"] for r in rows.values()) / len(rows)
        threads = sorted({r["threads"] for r in rows.values()})
        t.add_row(name, str(len(rows)), f"{wall:.1f}", f"{60 * len(rows) / wall:.1f}",
                  f"{acc:.4f}", ",".join(map(str, threads)))
    console.print(t)
    console.print(f"identical per-run metrics across backends: {identical}")
    ray_s = results.get("ray local (2 CPUs)", (None,))[0]
    print(json.dumps({"in_process_s": round(results["in-process"][0], 2),
                      "workers2_s": round(results["workers 2"][0], 2),
                      "ray_s": None if ray_s is None else round(ray_s, 2),
                      "identical": identical, "cores": available_cores(),
                      "torch_threads": torch.get_num_threads(), "runs": len(ref)}))


if __name__ == "__main__":
    main_()
