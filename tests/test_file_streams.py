"""Streams from CSV / Parquet / JSON Lines files and stdin: lazy, chunked, validated by line."""

from __future__ import annotations

import builtins
import io
import json
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from lifelong.cli import main
from lifelong.errors import ConfigError, DataError
from lifelong.learner import Learner
from lifelong.stream import files
from lifelong.testing import assert_same_state, make_learner

pa = pytest.importorskip("pyarrow")
pcsv = pytest.importorskip("pyarrow.csv")
pq = pytest.importorskip("pyarrow.parquet")


def table(n: int = 300, seed: int = 0, tasks: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    cols = {"f0": x[:, 0], "name": [f"r{i}" for i in range(n)], "f1": x[:, 1], "f2": x[:, 2],
            "label": np.array(["neg", "pos"])[y]}
    if tasks:
        cols["task"] = (np.arange(n) * 3 // n).astype(np.int64)
    return pa.table(cols), x, y


def write(tab, path: Path, fmt: str) -> Path:
    if fmt == "csv":
        pcsv.write_csv(tab, path)
    elif fmt == "parquet":
        pq.write_table(tab, path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in tab.to_pylist()) + "\n")
    return path


@pytest.mark.parametrize("fmt", files.FORMATS)
def test_rows_arrive_in_file_order_with_numeric_features_and_a_held_out_tail(tmp_path, fmt):
    tab, x, y = table()
    path = write(tab, tmp_path / f"d.{fmt}", fmt)
    s = files.from_file(fmt, str(path), target="label", chunk=64, test_tail=50)
    assert not s.task_aware and s.input_shape == (3,) and s.num_classes == 2
    assert s.meta["feature_names"] == ["f0", "f1", "f2"] and s.meta["classes"] == ["neg", "pos"]
    batches = list(next(s.experiences()).batches(32))
    got_x = torch.cat([b.x for b in batches])
    got_y = torch.cat([b.y for b in batches])
    assert [len(b) for b in batches[:-1]] == [32] * (len(batches) - 1)
    assert torch.equal(got_x, torch.from_numpy(x[:250])) and torch.equal(got_y, torch.from_numpy(y[:250]))
    (test,) = s.test
    assert torch.equal(test.x, torch.from_numpy(x[250:])) and torch.equal(test.y, torch.from_numpy(y[250:]))
    learner = make_learner([], s, batch_size=10).fit(s)
    assert learner.samples_seen == 250  # the held-out tail is never trained on


def test_second_file_is_the_evaluation_set_and_features_can_be_chosen(tmp_path):
    tab, x, y = table()
    train = write(tab.slice(0, 200), tmp_path / "train.csv", "csv")
    test = write(tab.slice(200), tmp_path / "test.csv", "csv")
    s = files.csv(path=str(train), target="label", features=["f2", "f0"], test_path=str(test),
                  classes=["pos", "neg"])
    assert s.input_shape == (2,) and s.meta["n_train"] is None if "n_train" in s.meta else True
    assert torch.equal(s.test[0].x, torch.from_numpy(x[200:][:, [2, 0]]))
    assert torch.equal(s.test[0].y, torch.from_numpy(1 - y[200:]))  # classes order decides ids


def test_task_column_makes_one_experience_per_run_of_ids_and_resumes_exactly(tmp_path):
    tab, x, y = table(tasks=True)
    path = write(tab, tmp_path / "t.parquet", "parquet")
    s = files.parquet(path=str(path), target="label", task="task", test_tail=30, chunk=64)
    assert s.task_aware and s.task_labels and s.meta["feature_names"] == ["f0", "f1", "f2"]
    exps = []
    for e in s.experiences():
        bs = list(e.batches(16))
        exps.append((e.task_id, sum(len(b) for b in bs), {int(t) for b in bs for t in b.task}))
    assert exps == [(0, 100, {0}), (1, 100, {1}), (2, 70, {2})]
    assert [(es.task_id, len(es)) for es in s.test] == [(2, 30)]

    full = make_learner([], s, batch_size=16).fit(s)
    part = make_learner([], s, batch_size=16).fit(s, stop_after=9)  # inside experience 1
    assert part.experience_index == 1
    resumed = make_learner([], s, batch_size=16).fit(s, state=part.state_dict())
    assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    assert resumed.samples_seen == full.samples_seen == 270


def test_task_free_file_stream_resumes_mid_file_exactly(tmp_path):
    tab, *_ = table()
    path = write(tab, tmp_path / "d.csv", "csv")
    s = files.csv(path=str(path), target="label", chunk=37)
    full = make_learner([], s, batch_size=10).fit(s)
    part = make_learner([], s, batch_size=10).fit(s, stop_after=13)
    resumed = make_learner([], s, batch_size=10).fit(s, state=part.state_dict())
    assert_same_state(full.state_dict()["model"], resumed.state_dict()["model"])


BAD = [
    ("a,b,y\n1,2,0\n3,4,1\n5,x,0\n", {"features": ["a", "b"]}, "line 4: column 'b' holds 'x', not a number"),
    ("a,b,y\n1,2,0\n3,,1\n5,6,0\n", {}, "line 3: column 'b' is missing, NaN or infinite"),
    ("a,b,y\n1,2,0\n3,nan,1\n", {}, "line 3: column 'b' is missing, NaN or infinite"),
    ("a,b,y\n1,2,0\n3,4,\n", {}, "line 3: has no label in column 'y'"),
    ("a,b,y\n1,2,0\n3,4,7\n", {"n_classes": 2}, "line 3: label '7' is not one of the classes"),
    ("a,b,y\n1,2,0\n3,4,1\n5,6\n", {}, "line 4: Expected 3 columns, got 2"),
    ("a,b,y\n1,2,0\n", {"features": ["a", "c"]}, "no column 'c'; the file has columns"),
    ("a,b,y\n1,2,0\n", {"test_tail": 5}, "test_tail=5 but the file has only 1 rows"),
]


@pytest.mark.parametrize(("text", "kw", "fragment"), BAD)
def test_bad_rows_name_their_line(tmp_path, text, kw, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        s = files.csv(path=str(path), target="y", **kw)
        list(next(s.experiences()).batches(2))
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_jsonl_line_numbers_count_blank_lines_and_nan_policy_skip_counts_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1, "y": 0}\n\n{"a": null, "y": 1}\n{"a": 2, "y": 1}\n'
                    '{"a": 3}\n{"a": 4, "y": 0}\n')
    with pytest.raises(DataError, match=r"line 3: column 'a' is missing"):
        list(next(files.jsonl(path=str(path), target="y", n_classes=2).experiences()).batches(9))
    s = files.jsonl(path=str(path), target="y", n_classes=2, nan_policy="skip")
    (b,) = next(s.experiences()).batches(9)
    assert b.x.flatten().tolist() == [1.0, 2.0, 4.0] and s.meta["skipped_rows"] == 2
    path.write_text('{"a": 1, "y": 0}\n{"a": 3}\n')
    with pytest.raises(DataError, match=r"line 2: has no label in column 'y'"):
        list(next(files.jsonl(path=str(path), target="y", n_classes=2).experiences()).batches(9))
    path.write_text('{"a": 1, "y": 0}\n{"a": NaN, "y": 1}\n{"a": 2, "y": null}\n{"a": 3, "y": 1}\n')
    s = files.jsonl(path=str(path), target="y", n_classes=2, nan_policy="skip")
    (b,) = next(s.experiences()).batches(9)
    assert b.x.flatten().tolist() == [1.0, 3.0] and b.y.tolist() == [0, 1]
    assert s.meta["skipped_rows"] == 2


def test_stdin_through_lifelong_run(tmp_path, monkeypatch, capsys):
    tab, *_ = table(200)
    buf = io.BytesIO()
    pcsv.write_csv(tab, buf)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(buf.getvalue()))))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("stream: {name: csv, path: '-', target: label, classes: [neg, pos], chunk: 50}\n"
                   "backbone: {name: mlp, hidden: [8]}\ntrain: {batch_size: 20}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["samples_seen"] == 200 and m["prequential_accuracy"] is not None


def test_stdin_mistakes_are_config_errors(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"a,y\n1,0\n"))))
    with pytest.raises(ConfigError, match="declare the labels"):
        files.csv(path="-", target="y")
    with pytest.raises(ConfigError, match="Parquet cannot be read from stdin"):
        files.parquet(path="-", target="y", n_classes=2)
    s = files.csv(path="-", target="y", n_classes=2)
    exp = next(s.experiences())
    assert len(list(exp.batches(4))) == 1
    with pytest.raises(ConfigError, match="stdin can be read only once"):
        list(exp.batches(4))


def test_missing_pyarrow_is_one_clear_error(tmp_path, monkeypatch):
    path = write(table(10)[0], tmp_path / "d.csv", "csv")
    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ConfigError, match=r"pip install 'lifelong\[io\]'"):
        files.csv(path=str(path), target="label")
    jl = write(table(10)[0], tmp_path / "d.jsonl", "jsonl")
    assert files.jsonl(path=str(jl), target="label").input_shape == (3,)  # needs no pyarrow


def test_config_checks_file_stream_keys(tmp_path):
    from lifelong.run import build

    path = write(table(40)[0], tmp_path / "d.csv", "csv")
    run = build({"stream": {"name": "csv", "path": str(path), "target": "label", "test_tail": 10},
                 "backbone": {"name": "mlp", "hidden": [4]}})
    assert run.stream.input_shape == (3,) and len(run.stream.test) == 1
    with pytest.raises(ConfigError, match="stream.colums: unknown parameter"):
        build({"stream": {"name": "csv", "path": str(path), "target": "label", "colums": []}})
    with pytest.raises(ConfigError, match="needs path, target"):
        build({"stream": {"name": "csv"}})


def test_two_million_rows_run_in_flat_memory(tmp_path):
    """A file far larger than what the learner holds at once: RSS stays flat while it is read."""
    n, chunk = 2_000_000, 250_000
    path = tmp_path / "big.csv"
    rng = np.random.default_rng(0)
    schema = pa.schema([("a", pa.int16()), ("b", pa.int16()), ("y", pa.int8())])
    with pcsv.CSVWriter(path, schema) as w:
        for _ in range(n // chunk):
            v = rng.integers(0, 100, size=(chunk, 2), dtype=np.int16)
            w.write_table(pa.table({"a": v[:, 0], "b": v[:, 1], "y": (v[:, 0] > 49).astype(np.int8)},
                                   schema=schema))
    s = files.csv(path=str(path), target="y", n_classes=2, chunk=100_000)
    proc = psutil.Process()
    rss: list[float] = []
    torch.manual_seed(0)
    learner = Learner(torch.nn.Linear(2, 2), device="cpu", batch_size=50_000, lr=1e-4)
    learner.fit(s, progress=lambda k: rss.append(proc.memory_info().rss))
    assert learner.samples_seen == n
    # all rows as tensors would take n * (2 * 4 + 8) bytes = 32 MB; growth after the first
    # tenth of the file stays far below that
    growth = max(rss) - rss[len(rss) // 10]
    assert growth < 12e6, f"RSS grew by {growth / 1e6:.1f} MB while reading"
