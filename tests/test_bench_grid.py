"""`lifelong bench` grids: axes, hashes, rows (JSONL + CSV), resume, failed rows, backends, the CI."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import pytest

from lifelong.bench import ROW_KEYS, config_hash, expand, mean_ci, read_csv, read_jsonl
from lifelong.bench.grid import GridSpec, grid_from_args, load_grid_file
from lifelong.bench.runner import thread_share, with_threads
from lifelong.cli import main, make_parser
from lifelong.config import resolve
from lifelong.errors import ConfigError

TINY = """
seed: 0
device: cpu
stream: {name: blobs, n_experiences: 2, n_per_class: 8, n_test_per_class: 4}
backbone: {name: mlp, hidden: [8]}
train: {batch_size: 4, lr: 0.05}
"""
#: the accuracy metrics a backend must reproduce exactly (timings and memory may differ)
SAME = ("final_avg_accuracy", "avg_forgetting", "bwt", "fwt", "prequential_accuracy",
        "accuracy_matrix", "samples_seen")


def base_file(tmp_path: Path) -> str:
    p = tmp_path / "base.yaml"
    p.write_text(TINY)
    return str(p)


def parse(argv: list[str]) -> argparse.Namespace:
    return make_parser().parse_args(["bench", *argv])


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "bench_runs.jsonl").read_text().splitlines()]


def by_hash(rows: list[dict]) -> dict[str, dict]:
    return {r["hash"]: r for r in rows}


@pytest.fixture(scope="module")
def real_grid(tmp_path_factory):
    """naive,er x 2 seeds, in-process, with real runs (shared by several tests)."""
    tmp = tmp_path_factory.mktemp("grid")
    out = tmp / "in"
    code = main(["bench", "--config", base_file(tmp), "--strategies", "naive,er", "--seeds", "0,1",
                 "--set", "strategy.mem_size=[8,16]", "--out", str(out), "--quiet"])
    assert code == 0
    return tmp, out


# ---------------------------------------------------------------------------- grid


def test_axes_expand_in_order_and_strategy_axes_reach_only_strategies_that_take_them(tmp_path):
    notes: list[str] = []
    spec = grid_from_args(parse(["--config", base_file(tmp_path), "--strategies", "naive,er",
                                 "--seeds", "0,1", "--set", "strategy.mem_size=[8,16]",
                                 "--set", "train.lr=[0.1,0.03]", "--set", "train.batch_size=2"]))
    cells = expand(spec, notes=notes)
    # naive: 2 lr x 2 seeds; er: 2 mem x 2 lr x 2 seeds
    assert len(cells) == 4 + 8
    assert [(c.strategy, c.axes, c.seed) for c in cells[:5]] == [
        ("naive", {"train.lr": 0.1}, 0), ("naive", {"train.lr": 0.1}, 1),
        ("naive", {"train.lr": 0.03}, 0), ("naive", {"train.lr": 0.03}, 1),
        ("er", {"strategy.mem_size": 8, "train.lr": 0.1}, 0)]
    er = [c for c in cells if c.strategy == "er"]
    assert {(c.config["strategy"]["mem_size"], c.config["train"]["lr"]) for c in er} == {
        (8, 0.1), (8, 0.03), (16, 0.1), (16, 0.03)}
    assert all(c.config["train"]["batch_size"] == 2 for c in cells)  # a scalar --set: every cell
    assert notes == ["naive has no mem_size: the axis strategy.mem_size does not apply to it"]
    assert len({c.hash for c in cells}) == len(cells)


def test_grid_file_gives_the_same_cells_as_the_flags(tmp_path):
    base_file(tmp_path)
    (tmp_path / "grid.yaml").write_text(
        "config: base.yaml\nstrategies: [naive, {name: er, mem_size: 8}, [ewc, {name: lwf}]]\n"
        "seeds: [3]\naxes: {train.lr: [0.1, 0.03], backbone.hidden: [[4, 4]]}\n")
    cells = expand(load_grid_file(tmp_path / "grid.yaml"))
    assert [c.strategy for c in cells] == ["naive", "naive", "er(mem_size=8)", "er(mem_size=8)",
                                          "ewc+lwf", "ewc+lwf"]
    assert all(c.config["backbone"]["hidden"] == [4, 4] for c in cells)  # a one-value axis: fixed
    plug = cells[-1].config
    assert plug["strategy"] is None and [p["name"] for p in plug["plugins"]] == ["ewc", "lwf"]
    flags = expand(grid_from_args(parse([str(tmp_path / "grid.yaml"), "--strategies", "naive",
                                         "--seeds", "3"])))
    assert [c.hash for c in flags] == [c.hash for c in cells[:2]]  # flags replace the file's keys


@pytest.mark.parametrize("argv, msg", [
    (["--set", "train.lr=[0.1,0.1]"], "the values [0.1, 0.1] repeat"),
    (["--set", "train.lr=[]"], "non-empty list"),
    (["--set", "seed=[1,2]"], "seeds are the grid's own axis"),
    (["--set", "eval.window=[a,b]"], "a --set or axes: list is an axis"),
    (["--set", "train.lr=[0.1,-1]"], "train.lr"),
    (["--strategies", "naive,ewc+nope"], "unknown plugin 'nope'"),
    (["--strategies", "naive,naive"], "names one twice"),
    (["--strategies", "naive,derpp", "--set", "strategy.mem_size=[50,500]"],
     "grid cell derpp on blobs (strategy.mem_size=50), seed 0: plugin 'derpp': the replay batch"),
])
def test_a_bad_grid_is_one_error_before_any_run(tmp_path, capsys, monkeypatch, argv, msg):
    import lifelong.run as run_mod

    calls: list = []
    monkeypatch.setattr(run_mod, "run_config", lambda raw, **kw: calls.append(raw))
    args = ["--strategies", "naive,er"] if "--strategies" not in argv else []
    assert main(["bench", "--config", base_file(tmp_path), *args, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and msg in err and err.count("\n") == 1, err
    assert calls == []


def test_unknown_grid_file_key_is_named(tmp_path):
    (tmp_path / "g.yaml").write_text("strategies: [naive]\nseed: [1]\n")
    with pytest.raises(ConfigError, match=r"seed: unknown grid key; allowed: config, strategies"):
        load_grid_file(tmp_path / "g.yaml")


def test_hash_is_sha256_of_the_canonical_resolved_config_seed_included(tmp_path):
    cfg = {"seed": 0, "train": {"lr": 0.1, "batch_size": 10}, "stream": {"name": "blobs"}}
    text = '{"seed":0,"stream":{"name":"blobs"},"train":{"batch_size":10,"lr":0.1}}'
    assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:16] == "12a9137a7f657ebc"
    reordered = {"stream": {"name": "blobs"}, "train": {"batch_size": 10, "lr": 0.1}, "seed": 0}
    assert config_hash(reordered) == config_hash(cfg)
    assert config_hash({**cfg, "seed": 1}) != config_hash(cfg)
    cells = expand(grid_from_args(parse(["--config", base_file(tmp_path), "--strategies", "naive",
                                         "--seeds", "0,1"])))
    for c in cells:
        assert c.hash == config_hash(resolve(c.raw))
        # the thread share of a backend is not part of the hash: a resume on another backend skips
        assert c.hash == expand(GridSpec(base=c.raw, seeds=[c.seed]))[0].hash
        assert with_threads(c, 3)["train"]["threads"] == 3 and "threads" not in c.raw["train"]
    assert thread_share(2, cores=5) == 2 and thread_share(8, cores=2) == 1


# ---------------------------------------------------------------------------- rows


def test_rows_have_the_schema_and_each_run_its_metrics_json(real_grid):
    tmp, out = real_grid
    rows = rows_of(out)
    assert len(rows) == 2 + 4
    for r in rows:
        assert set(ROW_KEYS) <= set(r) and r["status"] == "ok" and r["error"] is None
        m = json.loads((out / r["run_dir"] / "metrics.json").read_text())
        assert r["run_dir"] == f"runs/{r['hash']}/"
        for k in SAME:
            assert r[k] == m[k], k
        assert r["config"] == m["config"] and r["config"]["seed"] == r["seed"]
        assert r["threads"] == m["threads"] >= 1 and r["wall_time_s"] > 0
    assert {json.dumps(r["axes"]) for r in rows} == {
        "{}", '{"strategy.mem_size": 8}', '{"strategy.mem_size": 16}'}


def test_csv_round_trips_to_the_jsonl_rows(real_grid):
    _, out = real_grid
    assert read_csv(out / "bench_runs.csv") == read_jsonl(out / "bench_runs.jsonl") == rows_of(out)


def test_summary_is_mean_and_student_t_interval_per_cell(real_grid):
    _, out = real_grid
    summary = json.loads((out / "bench.json").read_text())
    rows = rows_of(out)
    assert [(e["strategy"], e["axes"]) for e in summary] == [
        ("naive", {}), ("er", {"strategy.mem_size": 8}), ("er", {"strategy.mem_size": 16})]
    for e in summary:
        accs = [r["final_avg_accuracy"] for r in rows
                if r["strategy"] == e["strategy"] and r["axes"] == e["axes"]]
        m = sum(accs) / 2
        s = math.sqrt(sum((a - m) ** 2 for a in accs) / 1)
        assert e["n"] == 2 and e["final_avg_accuracy"] == pytest.approx(m)
        assert e["final_avg_accuracy_ci95"] == pytest.approx(12.7062 * s / math.sqrt(2), rel=1e-4)


def test_ci_math_against_a_hand_computation():
    # mean 0.6, s = 0.1, t(0.975, 2) = 4.3027 (the t table), half-width 4.3027 * 0.1 / sqrt(3)
    m, ci = mean_ci([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6) and ci == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    # n = 4, t(0.975, 3) = 3.1824: values 1, 2, 3, 6 -> mean 3, s = sqrt(14 / 3)
    m, ci = mean_ci([1, 2, 3, 6])
    assert m == 3 and ci == pytest.approx(3.1824 * math.sqrt(14 / 3) / 2, rel=1e-4)
    assert mean_ci([0.7]) == (0.7, None) and mean_ci([]) == (None, None)


# ---------------------------------------------------------------------------- resume, failures


def fake_metrics(raw: dict) -> dict:
    acc = 0.5 + 0.01 * raw["seed"] + (0.1 if raw.get("strategy") == "er" else 0.0)
    return {"final_avg_accuracy": acc, "avg_forgetting": 0.1 + 1e-17, "bwt": -0.1, "fwt": 0.0,
            "prequential_accuracy": 0.1 + 0.2, "samples_per_second": 1234.5, "wall_time_s": 0.25,
            "peak_rss_mb": 300.0, "threads": 1, "accuracy_matrix": [[acc]], "samples_seen": 16,
            "config": resolve(raw)}


@pytest.fixture
def fake_runs(monkeypatch):
    import lifelong.run as run_mod

    calls: list[dict] = []
    fail: set[tuple[str, int]] = set()

    def run_config(raw, **kw):
        calls.append(raw)
        if (raw.get("strategy"), raw["seed"]) in fail:
            raise RuntimeError("boom\nsecond line")
        return fake_metrics(raw)

    monkeypatch.setattr(run_mod, "run_config", run_config)
    return calls, fail


def test_rerun_skips_finished_runs_and_reruns_failed_ones(tmp_path, capsys, fake_runs):
    calls, fail = fake_runs
    out = tmp_path / "o"
    argv = ["bench", "--config", base_file(tmp_path), "--strategies", "naive,er", "--seeds", "0,1",
            "--out", str(out), "--quiet"]
    fail.add(("er", 1))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "failed: er on blobs, seed 1: RuntimeError: boom" in err and "1 of 4 runs failed" in err
    rows = rows_of(out)
    bad = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(bad) == 1 and bad[0]["run_dir"] is None
    assert bad[0]["error"] == "RuntimeError: boom" and bad[0]["final_avg_accuracy"] is None
    assert set(ROW_KEYS) <= set(bad[0]) and bad[0]["config"]["seed"] == 1
    assert json.loads((out / "bench.json").read_text())[1]["failed_seeds"] == [1]
    fail.clear()
    calls.clear()
    assert main(argv) == 0
    assert "3 of 4 runs already finished there are skipped; 1 failed run(s) run again" in (
        capsys.readouterr().out)
    assert [(c["strategy"], c["seed"]) for c in calls] == [("er", 1)]
    latest = {r["hash"]: r for r in rows_of(out)}  # the failed row stays, the new ok row counts
    assert len(rows_of(out)) == 5 and all(r["status"] == "ok" for r in latest.values())
    calls.clear()
    assert main(argv) == 0 and calls == []
    assert "4 of 4 runs already finished" in capsys.readouterr().out
    assert read_csv(out / "bench_runs.csv") == rows_of(out)


def test_another_grid_on_the_same_out_is_refused_and_nothing_changes(tmp_path, capsys, fake_runs):
    calls, _ = fake_runs
    out = tmp_path / "o"
    cfg = base_file(tmp_path)
    assert main(["bench", "--config", cfg, "--strategies", "naive,er", "--seeds", "0,1", "--out",
                 str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    calls.clear()
    capsys.readouterr()
    assert main(["bench", "--config", cfg, "--strategies", "naive", "--seeds", "0", "--out",
                 str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "holds 3 run(s) of another grid" in err
    assert "--extend" in err and err.count("\n") == 1 and calls == []
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # a larger grid holding the old one resumes it; --extend adds a different grid beside it
    assert main(["bench", "--config", cfg, "--strategies", "naive,er", "--seeds", "0,1,2",
                 "--out", str(out), "--quiet"]) == 0 and len(calls) == 2
    assert main(["bench", "--config", cfg, "--strategies", "naive", "--seeds", "5", "--out",
                 str(out), "--quiet", "--extend"]) == 0 and len(calls) == 3
    assert len(rows_of(out)) == 7


def test_a_half_written_last_row_is_kept_aside_and_its_run_runs_again(tmp_path, capsys, fake_runs):
    calls, _ = fake_runs
    out = tmp_path / "o"
    argv = ["bench", "--config", base_file(tmp_path), "--strategies", "naive", "--seeds", "0,1,2",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    log = out / "bench_runs.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    torn = lines[2][:40]
    log.write_text("".join(lines[:2]) + torn)  # killed while writing the third row
    calls.clear()
    capsys.readouterr()
    assert main(argv) == 0
    out_text, err = capsys.readouterr()
    assert "the last line was cut short" in err and "bench_runs.jsonl.torn" in err
    assert (out / "bench_runs.jsonl.torn").read_text() == torn + "\n"
    assert [c["seed"] for c in calls] == [2] and "2 of 3 runs already finished" in out_text
    rows = rows_of(out)
    assert [r["seed"] for r in rows] == [0, 1, 2] and read_csv(out / "bench_runs.csv") == rows
    log.write_text(log.read_text().replace('{"hash"', "garbage", 1))  # not the last line: refused
    assert main(argv) == 2
    assert "bench_runs.jsonl: line 1 is not a benchmark row" in capsys.readouterr().err


# ---------------------------------------------------------------------------- backends


def test_workers_give_the_same_runs_as_in_process(real_grid, capsys):
    tmp, ref = real_grid
    out = tmp / "workers"
    assert main(["bench", "--config", str(tmp / "base.yaml"), "--strategies", "naive,er",
                 "--seeds", "1", "--set", "strategy.mem_size=[16]", "--out", str(out),
                 "--quiet", "--workers", "2"]) == 0
    a, b = by_hash(rows_of(ref)), by_hash(rows_of(out))
    assert len(b) == 2 and set(b) <= set(a)
    for h in b:
        assert b[h]["backend"] == "workers" and b[h]["threads"] == thread_share(2)
        for k in SAME:
            assert a[h][k] == b[h][k], (a[h]["strategy"], k)


def test_ray_backend_gives_the_same_runs_as_in_process(real_grid, capsys):
    pytest.importorskip("ray")
    tmp, ref = real_grid
    out = tmp / "ray"
    assert main(["bench", "--config", str(tmp / "base.yaml"), "--strategies", "er", "--seeds",
                 "0,1", "--set", "strategy.mem_size=[8]", "--out", str(out), "--quiet",
                 "--backend", "ray", "--workers", "1"]) == 0
    a, b = by_hash(rows_of(ref)), by_hash(rows_of(out))
    assert len(b) == 2 and set(b) <= set(a)
    for h in b:
        assert b[h]["backend"] == "ray"
        for k in SAME:
            assert a[h][k] == b[h][k], k


def test_missing_ray_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch, fake_runs):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["bench", "--config", base_file(tmp_path), "--strategies", "naive", "--seeds", "0",
                 "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'lifelong[ray]'" in err and err.count("\n") == 1 and fake_runs[0] == []


@pytest.mark.parametrize("argv, msg", [
    (["--workers", "0"], "--workers 0"),
    (["--ray-address", "auto"], "--ray-address needs --backend ray"),
    (["--backend", "in-process", "--workers", "2"], "one run at a time"),
])
def test_bad_backend_flags(tmp_path, capsys, argv, msg):
    assert main(["bench", "--config", base_file(tmp_path), "--strategies", "naive", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_shipped_grid_files_expand():
    root = Path(__file__).parent.parent / "examples" / "grids"
    files = sorted(root.glob("*.yaml"))
    assert files
    for path in files:
        cells = expand(load_grid_file(path))
        assert cells and len({c.hash for c in cells}) == len(cells), path


def test_workers_hand_each_run_its_share_of_the_threads(tmp_path, monkeypatch, fake_runs):
    import concurrent.futures

    import lifelong.threads

    calls, _ = fake_runs
    pools = []

    class Pool(concurrent.futures.ThreadPoolExecutor):  # the same interface, in this process
        def __init__(self, max_workers, mp_context):
            pools.append((max_workers, mp_context.get_start_method()))
            super().__init__(max_workers)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(lifelong.threads, "available_cores", lambda: 7)
    out = tmp_path / "o"
    assert main(["bench", "--config", base_file(tmp_path), "--strategies", "naive,er", "--seeds",
                 "0,1", "--out", str(out), "--quiet", "--workers", "3"]) == 0
    assert pools == [(3, "spawn")]
    assert sorted(c["train"]["threads"] for c in calls) == [2, 2, 2, 2]  # 7 // 3
    assert len(rows_of(out)) == 4 and {r["backend"] for r in rows_of(out)} == {"workers"}
