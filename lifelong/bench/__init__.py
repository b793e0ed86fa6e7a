"""Benchmark grids: strategies x streams x axes x seeds, run in-process, on local workers or on Ray.

:mod:`~lifelong.bench.grid` expands and validates a grid (command line or
YAML) into cells with a config hash each; :mod:`~lifelong.bench.runner`
runs them on a backend; :mod:`~lifelong.bench.rows` appends one row per
run to ``bench_runs.jsonl`` / ``bench_runs.csv`` and resumes a grid;
:mod:`~lifelong.bench.summary` gives mean +- 95 % CI per cell.
``lifelong bench`` (:mod:`~lifelong.bench.command`) puts them together.
"""

from lifelong.bench.grid import Cell, GridSpec, config_hash, expand, load_grid_file
from lifelong.bench.rows import METRIC_KEYS, ROW_KEYS, RowLog, read_csv, read_jsonl
from lifelong.bench.runner import Outcome, run_cells
from lifelong.bench.summary import mean_ci, summarize

__all__ = ["Cell", "GridSpec", "METRIC_KEYS", "Outcome", "ROW_KEYS", "RowLog", "config_hash",
           "expand", "load_grid_file", "mean_ci", "read_csv", "read_jsonl", "run_cells",
           "summarize"]
