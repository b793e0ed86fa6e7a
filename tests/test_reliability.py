"""Checkpoint/resume at any batch, safe loading, hostile inputs, bounded resources."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lifelong import Batch
from lifelong.checkpoint import load_checkpoint, save_checkpoint
from lifelong.cli import main
from lifelong.errors import CheckpointError, ConfigError, DataError
from lifelong.stream.adapters import from_river
from lifelong.testing import make_learner, tiny_stream

ROOT = Path(__file__).resolve().parent.parent

# A run that combines replay, a regularizer and a boundary detector where the
# registry has them; every registered plugin also goes through the contract's
# exact-resume check.
PLUGINS = """
plugins:
  - {name: er, mem_size: 100}
  - {name: ewc}
  - {name: every_n, every: 40}
"""
BASE = """
seed: 3
device: cpu
stream: {name: blobs, n_experiences: 3, n_per_class: 1000, task_aware: false}
backbone: {name: mlp, hidden: [64, 64]}
train: {batch_size: 5, optimizer: adam, lr: 0.001}
eval: {every: 50, window: 20}
"""

VOLATILE = {"wall_time_s", "samples_per_second", "peak_rss_mb", "peak_cuda_mb", "config"}


def config_text() -> str:
    from lifelong.registry import get_registry

    reg = get_registry()
    have = all(("plugin", n) in reg for n in ("er", "ewc", "every_n"))
    return BASE + (PLUGINS if have else "plugins: [{name: anytime, every: 30}]\n")


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "lifelong.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, **kw)


def popen(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "lifelong.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def same_weights(a: Path, b: Path) -> bool:
    wa = torch.load(a / "model.pt", weights_only=True)
    wb = torch.load(b / "model.pt", weights_only=True)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    cfg = d / "run.yaml"
    cfg.write_text(config_text())
    out = cli("run", str(cfg), "--out", str(d / "out"), "--quiet")
    assert out.returncode == 0, out.stderr
    return cfg, d / "out", json.loads((d / "out" / "metrics.json").read_text())


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_sigkill_at_a_random_batch_then_resume_gives_identical_results(reference, tmp_path):
    cfg, ref_out, ref = reference
    out = tmp_path / "out"
    proc = popen("run", str(cfg), "--out", str(out), "--checkpoint-every", "7", "--quiet")
    wait_for(out / "checkpoint.pt", proc)
    time.sleep(random.Random().uniform(0.0, 0.4))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state = load_checkpoint(out)
    assert not state["finished"], "the run ended before it could be killed; make it longer"
    killed_at = state["learner"]["counters"]["step_index"]
    assert killed_at > 0 and killed_at % 7 == 0
    res = cli("run", "--resume", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    got = json.loads((out / "metrics.json").read_text())
    assert stable(got) == stable(ref)
    assert same_weights(out, ref_out)


def test_ctrl_c_saves_at_a_batch_boundary_and_resumes_exactly(reference, tmp_path):
    cfg, ref_out, ref = reference
    out = tmp_path / "out"
    proc = popen("run", str(cfg), "--out", str(out), "--checkpoint-every", "13", "--quiet")
    wait_for(out / "checkpoint.pt", proc)  # training has started
    time.sleep(random.Random().uniform(0.0, 0.2))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with: lifelong run --resume" in err
    res = cli("run", "--resume", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert stable(json.loads((out / "metrics.json").read_text())) == stable(ref)
    assert same_weights(out, ref_out)


def test_resuming_a_finished_run_is_refused(reference, tmp_path):
    cfg, _, _ = reference
    out = tmp_path / "out"
    assert cli("run", str(cfg), "--out", str(out), "--checkpoint-every", "50",
               "--quiet").returncode == 0
    res = cli("run", "--resume", str(out))
    assert res.returncode == 2 and "already finished" in res.stderr


def test_checkpoint_for_another_config_is_refused_naming_the_difference(tmp_path):
    from lifelong.run import build

    run = build({"stream": {"name": "blobs"}, "train": {"lr": 0.1}, "device": "cpu"})
    run.learner.fit(run.stream, stop_after=3)
    save_checkpoint(tmp_path, run.learner, run.config)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("stream: {name: blobs}\ntrain: {lr: 0.05}\ndevice: cpu\n")
    res = cli("run", str(cfg), "--resume", str(tmp_path))
    assert res.returncode == 2
    assert "different config" in res.stderr and "train.lr: 0.1 != 0.05" in res.stderr


def test_checkpoint_of_another_format_is_refused(tmp_path):
    torch.save({"format": 99, "lifelong": "9.0", "learner": {}, "config": {}},
               tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.target}",))


def test_crafted_checkpoint_cannot_execute_code(tmp_path):
    _Evil.target = str(tmp_path / "pwned")
    with open(tmp_path / "checkpoint.pt", "wb") as fh:
        pickle.dump({"format": 1, "learner": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="not loaded|not a readable"):
        load_checkpoint(tmp_path)
    torch.save({"format": 1, "learner": _Evil(), "config": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_yaml_cannot_construct_objects(tmp_path, capsys):
    target = tmp_path / "pwned"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"stream: !!python/object/apply:os.system ['touch {target}']\n")
    assert main(["run", str(cfg)]) == 2
    assert "invalid YAML" in capsys.readouterr().err
    assert not target.exists()


def test_crash_while_writing_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    stream = tiny_stream()
    learner = make_learner([], stream)
    learner.fit(stream, stop_after=3)
    save_checkpoint(tmp_path, learner, {"a": 1})
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    learner.fit(stream, stop_after=6, state=load_checkpoint(tmp_path)["learner"])
    with pytest.raises(CheckpointError, match="previous checkpoint .* is intact"):
        save_checkpoint(tmp_path, learner, {"a": 1})
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_full_disk_reported_before_training(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(BASE)
    code = main(["run", str(cfg), "--out", str(tmp_path / "o"), "--checkpoint-every", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "MiB free" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_checkpoint_every_needs_out(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(BASE)
    assert main(["run", str(cfg), "--checkpoint-every", "5"]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert main(["run", str(cfg), "--out", str(tmp_path), "--checkpoint-every", "x5"]) == 2
    assert "expected a number" in capsys.readouterr().err


def _river_rows(n: int, bad_at: int | None):
    def factory():
        g = random.Random(0)
        for i in range(n):
            v = float("nan") if i == bad_at else g.random()
            yield {"a": v, "b": g.random()}, int(g.random() > 0.5)
    return factory


def test_nan_inputs_in_a_streamed_source_stop_naming_the_batch():
    stream = from_river(_river_rows(60, bad_at=23), classes=[0, 1], n_samples=60)
    learner = make_learner([], stream)
    with pytest.raises(DataError, match=r"batch 2 of experience 0 .*NaN/inf.*first row 7"):
        learner.fit(stream)


def test_nan_inputs_skip_policy_drops_and_counts_the_batch():
    stream = from_river(_river_rows(60, bad_at=23), classes=[0, 1], n_samples=60)
    learner = make_learner([], stream, nan_policy="skip")
    learner.fit(stream)
    assert learner.skipped_batches == 1 and learner.samples_seen == 52


def test_labels_outside_declared_classes_in_a_streamed_source():
    def rows():
        for i in range(20):
            yield {"a": float(i)}, 5 if i == 13 else 0

    stream = from_river(rows, num_classes=2, n_samples=20)
    with pytest.raises(DataError, match="label 5 is outside the declared classes"):
        make_learner([], stream).fit(stream)


def test_same_config_and_seed_give_identical_results(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(config_text().replace("n_per_class: 1000", "n_per_class: 40"))
    runs = []
    for i in range(2):
        assert main(["run", str(cfg), "--out", str(tmp_path / f"o{i}"), "--quiet"]) == 0
        runs.append(json.loads((tmp_path / f"o{i}" / "metrics.json").read_text()))
    assert stable(runs[0]) == stable(runs[1])
    assert same_weights(tmp_path / "o0", tmp_path / "o1")


def test_config_error_for_bad_checkpoint_section(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(BASE + "checkpoint: {evry: 3}\n")
    assert main(["run", str(cfg)]) == 2
    assert "checkpoint.evry: unknown key" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        from lifelong.config import resolve
        resolve({"stream": {"name": "blobs"}, "checkpoint": {"every": "often"}})


def test_a_class_first_seen_mid_stream_trains_and_is_evaluated():
    def rows():
        g = random.Random(1)
        for i in range(300):
            label = g.randrange(2) if i < 150 else g.randrange(3)  # class 2 appears at 150
            yield {"a": label + g.gauss(0, 0.1), "b": g.random()}, label

    stream = from_river(rows, num_classes=3, n_samples=300)
    learner = make_learner([], stream, lr=0.2, epochs=3)
    learner.fit(stream)
    x = torch.tensor([[2.0, 0.5], [0.0, 0.5]])
    assert learner.predict(Batch(x, torch.tensor([2, 0]))).argmax(1).tolist() == [2, 0]
