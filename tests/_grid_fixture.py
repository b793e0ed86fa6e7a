"""Rows of a benchmark grid in the schema of ``bench_runs.jsonl``, for the report tests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

ACC = {"naive": 0.45, "ewc": 0.55, "er": 0.80}
SPEED = {"naive": 9000.0, "ewc": 6000.0, "er": 4000.0}


def grid_rows(*, streams: tuple[str, ...] = ("split_mnist", "permuted_mnist"),
              seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict[str, Any]]:
    rng = random.Random(0)
    rows = []
    cells: list[tuple[str, dict[str, Any]]] = [("naive", {}), ("ewc", {}),
                                               ("er", {"strategy.mem_size": 200}),
                                               ("er", {"strategy.mem_size": 500})]
    for stream in streams:
        for strat, axes in cells:
            bonus = 0.05 if axes.get("strategy.mem_size") == 500 else 0.0
            for seed in seeds:
                acc = ACC[strat] + bonus + rng.uniform(-0.03, 0.03)
                rows.append({
                    "hash": f"{stream}-{strat}-{axes}-{seed}", "status": "ok", "error": None,
                    "strategy": strat, "stream": stream, "seed": seed, "axes": axes,
                    "final_avg_accuracy": acc, "avg_forgetting": 0.9 - acc, "bwt": acc - 0.9,
                    "fwt": -0.01, "prequential_accuracy": acc + 0.05,
                    "samples_per_second": SPEED[strat] * rng.uniform(0.9, 1.1),
                    "wall_time_s": 4000 / SPEED[strat], "peak_rss_mb": 500.0, "threads": 1,
                    "accuracy_matrix": [[0.99, 0.0], [acc, 0.98]], "config": {"seed": seed},
                    "run_dir": None, "extra_key": 1})
    rows.append({"hash": "failed-one", "status": "failed", "error": "ConfigError: bad lr",
                 "strategy": "ewc", "stream": streams[0], "seed": 9, "axes": {},
                 "run_dir": None})
    return rows


def write_grid(path: Path, rows: list[dict[str, Any]] | None = None, tail: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in (grid_rows() if rows is None else rows))
    (path / "bench_runs.jsonl").write_text(text + tail)
    return path
