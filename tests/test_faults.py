"""Faults a hostile or unlucky user causes: resume, overwrite, tampered checkpoints, bad
parameters, hostile YAML, a full disk, Python API misuse, a failing benchmark run.

Each test here failed before the fix it covers; ``benchmarks/chaos.py`` runs a
larger seeded battery of the same classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lifelong.checkpoint import Checkpointer, load_checkpoint
from lifelong.cli import main
from lifelong.errors import DataError
from lifelong.run import build

SMALL = """
seed: 1
device: cpu
stream: {name: blobs, n_experiences: 2, n_per_class: 30, n_test_per_class: 5}
backbone: {name: mlp, hidden: [8]}
train: {batch_size: 6}
"""


def write_cfg(tmp_path: Path, text: str = SMALL, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def half_run(tmp_path: Path, *, every: int = 5, stop: int = 10) -> Path:
    """A checkpoint of SMALL taken at batch ``stop``, written with schedule ``every``."""
    out = tmp_path / "out"
    out.mkdir()
    run = build(__import__("yaml").safe_load(SMALL))
    run.learner.fit(run.stream, stop_after=stop)
    Checkpointer(out, run.config, every=every).save(run.learner)
    return out


def tamper(out: Path, change) -> None:
    """Change a checkpoint's contents consistently (its checksum recomputed), as a user
    editing it with torch would, so that the contents themselves must be checked."""
    from lifelong.checkpoint import payload_digest

    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    change(payload)
    payload["digest"] = payload_digest(payload)
    torch.save(payload, out / "checkpoint.pt")


# ---------------------------------------------------------------------------- resume


def test_resume_keeps_the_checkpoint_schedule_and_marks_the_run_finished(tmp_path, monkeypatch):
    import lifelong.checkpoint as ck

    out = half_run(tmp_path, every=5, stop=10)
    saved = []
    real = ck.save_checkpoint

    def spy(directory, learner, config, **kw):
        saved.append((learner.step_index, kw.get("finished", False)))
        return real(directory, learner, config, **kw)

    monkeypatch.setattr(ck, "save_checkpoint", spy)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    periodic = [s for s, fin in saved if not fin]
    assert periodic and all(s % 5 == 0 and s > 10 for s in periodic)
    assert saved[-1][1] is True
    assert load_checkpoint(out)["finished"] is True
    assert main(["run", "--resume", str(out), "--quiet"]) == 2  # finished: not trained again


def test_checkpoint_every_overrides_the_stored_schedule(tmp_path, monkeypatch):
    import lifelong.checkpoint as ck

    out = half_run(tmp_path, every=5, stop=10)
    steps = []
    real = ck.save_checkpoint
    monkeypatch.setattr(ck, "save_checkpoint", lambda d, lr, c, **kw: (
        steps.append(lr.step_index), real(d, lr, c, **kw))[1])
    assert main(["run", "--resume", str(out), "--checkpoint-every", "3", "--quiet"]) == 0
    assert steps[:-1] and all(s % 3 == 0 for s in steps[:-1])
    assert load_checkpoint(out)["schedule"]["every"] == 3


def test_resumed_run_reports_whole_run_wall_time_and_throughput(tmp_path):
    out = half_run(tmp_path)

    def earlier_segment(p):
        p["timing"] = {"wall_time_s": 100.0, "eval_time_s": 20.0, "segments": 1}
    tamper(out, earlier_segment)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["wall_time_s"] > 100.0
    assert m["samples_per_second"] <= m["samples_seen"] / 80.0


def test_mid_run_checkpoint_holds_the_time_so_far(tmp_path):
    out = half_run(tmp_path)
    timing = load_checkpoint(out)["timing"]
    assert timing["wall_time_s"] > 0.0 and timing["segments"] == 1


def test_new_run_into_a_directory_holding_another_run_is_refused(tmp_path, capsys):
    cfg = write_cfg(tmp_path)
    out = half_run(tmp_path)
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "--resume" in err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert not (out / "checkpoint.pt").exists()  # a later --resume cannot pick up the old run
    assert (out / "metrics.json").exists()
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2  # results count too


def test_thread_count_is_recorded_and_a_mismatch_warned(tmp_path, capsys):
    from lifelong.threads import available_cores

    out = half_run(tmp_path)
    assert load_checkpoint(out)["torch_threads"] == torch.get_num_threads()
    # more threads than this machine's cores: resumed with fewer, so not bit-identical
    tamper(out, lambda p: p.update(torch_threads=available_cores() + 1))
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "torch thread" in err and "bit-identical" in err


def test_disk_full_while_writing_the_model(tmp_path, capsys, monkeypatch):
    cfg = write_cfg(tmp_path)
    real = torch.save

    def full_disk(obj, f, *a, **kw):
        if hasattr(f, "write") and "model.pt" in str(getattr(f, "name", "")):
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "No space left" in err
    assert not list(out.glob(".*.tmp")) and not (out / "model.pt").exists()


# ---------------------------------------------------------------------------- YAML


BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['x'] * 9)}]\n"
               for c, p in zip("abcdefgh", [None, *"abcdefg"]))


@pytest.mark.parametrize("content, message", [
    (BOMB + SMALL, "expands to more than"),
    (b"\x00\x01lifelong\xff" * 40, "not a YAML text file"),
    (b"stream: {name: \xff\xfe}\n", "invalid UTF-8"),
    (SMALL + "name: " + "x" * 20000 + "\n", "characters"),
    ("a: " + "[" * 200 + "]" * 200 + "\n", "nested"),
    ("x" * (2 << 20), "bytes"),
], ids=["alias-bomb", "binary", "not-utf8", "long-string", "deep", "too-big"])
def test_hostile_yaml_is_one_error_line(tmp_path, capsys, content, message):
    cfg = tmp_path / "run.yaml"
    if isinstance(content, bytes):
        cfg.write_bytes(content)
    else:
        cfg.write_text(content)
    assert main(["run", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1


def test_checkpoint_every_must_be_a_finite_positive_interval(tmp_path, capsys):
    cfg = write_cfg(tmp_path)
    for bad in ("nans", "infs", "-3", "0", "1e999s"):
        assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--checkpoint-every", bad,
                     "--quiet"]) == 2
        assert "--checkpoint-every" in capsys.readouterr().err


# ---------------------------------------------------------------------------- Python API


def test_zero_dim_tensors_to_from_tensors_are_a_data_error():
    from lifelong.stream.adapters import from_tensors

    with pytest.raises(DataError, match="0-dim"):
        from_tensors(torch.tensor(1.0), torch.tensor(1))
    with pytest.raises(DataError, match="y must be a tensor with one row per sample"):
        from_tensors(torch.randn(4, 2), torch.tensor(1))


def test_river_rows_that_are_not_pairs_are_a_data_error():
    from lifelong.stream.adapters import from_river
    from lifelong.testing import make_learner

    with pytest.raises(DataError, match=r"row 0 is dict .*expected an \(x, y\) pair"):
        s = from_river(lambda: ({"a": 1.0} for _ in range(10)), num_classes=2, n_samples=10)
        make_learner([], s).fit(s)

    def later():
        for i in range(40):
            yield ({"a": 1.0}, 0) if i < 30 else {"a": 1.0}

    s = from_river(later, num_classes=2, n_samples=40, chunk=8)
    with pytest.raises(DataError, match="row 30 is dict"):
        make_learner([], s).fit(s)


def test_head_too_small_without_a_test_set_is_a_data_error():
    from lifelong.backbones import mlp
    from lifelong.learner import Learner
    from lifelong.stream.adapters import from_river

    s = from_river(lambda: (({"a": 1.0, "b": 0.0}, i % 5) for i in range(20)), num_classes=5,
                   n_samples=20)
    learner = Learner(mlp(input_shape=s.input_shape, num_classes=2, hidden=[4]), device="cpu")
    with pytest.raises(DataError, match="has 5 classes; size the head"):
        learner.fit(s)
    assert learner.step_index == 0


# ---------------------------------------------------------------------------- checkpoint contents

TASKFREE = """
seed: 2
device: cpu
stream: {name: blobs, n_experiences: 2, n_per_class: 40, n_test_per_class: 5, task_aware: false}
backbone: {name: mlp, hidden: [8]}
train: {batch_size: 4, optimizer: adam, lr: 0.01}
plugins:
  - {name: er, mem_size: 20, batch_size: 4}
  - {name: ewc}
  - {name: adwin, clock: 1}
"""
DER = TASKFREE.replace("  - {name: er, mem_size: 20, batch_size: 4}\n  - {name: ewc}\n"
                       "  - {name: adwin, clock: 1}\n", "  - {name: der, mem_size: 20, batch_size: 4}\n")


def _plugin(p, name):
    return next(v for k, v in p["learner"]["plugins"].items() if k.endswith(":" + name))


def _adwin_blob(p, rehash):
    import hashlib

    det = _plugin(p, "adwin")["detector"]
    w = det["window"].clone()
    w[len(w) // 2:] = 255 - w[len(w) // 2:]
    det["window"] = w
    if rehash:
        det["sha256"] = hashlib.sha256(w.numpy().tobytes()).hexdigest()


def _first_key(d):
    return next(iter(d))


TAMPER = {
    "model tensor wrong shape": lambda p: p["learner"]["model"].update(
        {"head.weight": p["learner"]["model"]["head.weight"][:-1]}),
    "model tensors swapped": lambda p: p["learner"]["model"].update(
        {"head.weight": p["learner"]["model"]["body.1.weight"],
         "body.1.weight": p["learner"]["model"]["head.weight"]}),
    "model tensor missing": lambda p: p["learner"]["model"].pop("head.bias"),
    "model weights NaN": lambda p: p["learner"]["model"]["head.bias"].fill_(float("nan")),
    "optimizer missing": lambda p: p["learner"].pop("optimizer"),
    "optimizer state wrong shape": lambda p: p["learner"]["optimizer"]["state"][0].update(
        exp_avg=torch.zeros(3)),
    "optimizer lr huge": lambda p: p["learner"]["optimizer"]["param_groups"][0].update(lr=1e300),
    "rng wrong size": lambda p: p["learner"]["rng"].update(torch=p["learner"]["rng"]["torch"][:-8]),
    "step_index negative": lambda p: p["learner"]["counters"].update(step_index=-5),
    "batch_in_experience huge": lambda p: p["learner"]["counters"].update(
        batch_in_experience=10**9),
    "experience_index beyond": lambda p: p["learner"]["counters"].update(experience_index=7),
    "samples_seen float": lambda p: p["learner"]["counters"].update(samples_seen=3.5),
    "buffer slots out of range": lambda p: _plugin(p, "er")["buffer"].update(
        slots=_plugin(p, "er")["buffer"]["slots"] + 1000),
    "buffer inputs wrong dtype": lambda p: _plugin(p, "er")["buffer"]["columns"].update(
        x=_plugin(p, "er")["buffer"]["columns"]["x"].long()),
    "buffer inputs wrong shape": lambda p: _plugin(p, "er")["buffer"]["columns"].update(
        x=_plugin(p, "er")["buffer"]["columns"]["x"][..., :2]),
    "buffer labels out of classes": lambda p: _plugin(p, "er")["buffer"]["columns"].update(
        y=_plugin(p, "er")["buffer"]["columns"]["y"] + 100),
    "buffer seen negative": lambda p: _plugin(p, "er")["buffer"]["selection"].update(seen=-3),
    "er state deleted": lambda p: p["learner"]["plugins"].pop(
        next(k for k in p["learner"]["plugins"] if k.endswith(":er"))),
    "er state a string": lambda p: p["learner"]["plugins"].update(
        {next(k for k in p["learner"]["plugins"] if k.endswith(":er")): "hello"}),
    "ewc recent inputs wrong shape": lambda p: _plugin(p, "ewc")["recent"].update(
        x=_plugin(p, "ewc")["recent"]["x"][:1]),
    "ewc fisher wrong shape": lambda p: _plugin(p, "ewc").update(
        weight={"head.weight": torch.zeros(1)}),
    "adwin blob corrupted": lambda p: _adwin_blob(p, rehash=False),
    "adwin blob that panics in river": lambda p: _adwin_blob(p, rehash=True),
    "adwin detections unsorted": lambda p: _plugin(p, "adwin").update(detections=[9, 3]),
    "timing negative": lambda p: p.update(
        timing={"wall_time_s": -1.0, "eval_time_s": 0.0, "segments": 1}),
    "schedule nan": lambda p: p.update(schedule={"every": 5, "every_seconds": float("nan")}),
    "finished a string": lambda p: p.update(finished="yes"),
}


@pytest.fixture(scope="module")
def taskfree_checkpoint(tmp_path_factory):
    import yaml

    out = tmp_path_factory.mktemp("ckpt")
    run = build(yaml.safe_load(TASKFREE))
    run.learner.fit(run.stream, stop_after=12)
    assert _plugin({"learner": run.learner.state_dict()}, "adwin")["detector"] is not None
    Checkpointer(out, run.config, every=5).save(run.learner)
    return out / "checkpoint.pt"


@pytest.mark.parametrize("name", list(TAMPER))
def test_tampered_checkpoint_never_trains(taskfree_checkpoint, tmp_path, capfd, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(taskfree_checkpoint.read_bytes())
    tamper(out, TAMPER[name])
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (out / "metrics.json").exists()


def test_bytes_changed_on_disk_are_refused_by_the_checksum(taskfree_checkpoint, tmp_path, capsys):
    import random

    data = taskfree_checkpoint.read_bytes()
    rng = random.Random(3)
    for i in range(6):
        out = tmp_path / f"o{i}"
        out.mkdir()
        b = bytearray(data)
        for _ in range(3):
            b[rng.randrange(len(b) // 3, len(b))] ^= 0x5A
        (out / "checkpoint.pt").write_bytes(bytes(b))
        assert main(["run", "--resume", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_stored_logits_of_the_wrong_width_are_refused(tmp_path, capsys):
    import yaml

    out = tmp_path / "out"
    out.mkdir()
    run = build(yaml.safe_load(DER))
    run.learner.fit(run.stream, stop_after=8)
    Checkpointer(out, run.config, every=5).save(run.learner)
    tamper(out, lambda p: _plugin(p, "der")["buffer"]["columns"].update(
        logits=_plugin(p, "der")["buffer"]["columns"]["logits"][:, :2]))
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    assert "stored logits" in capsys.readouterr().err


# ---------------------------------------------------------------------------- parameters


BAD_PARAMS = [
    ("train: {momentum: -1}", "train.momentum"),
    ("train: {weight_decay: -1}", "train.weight_decay"),
    ("train: {lr: 1e300}", "train.lr"),
    ("train: {check_every: -3}", "train.check_every"),
    ("backbone: {name: mlp, dropout: 2.0}", "dropout"),
    ("backbone: {name: mlp, dropout: .nan}", "backbone.dropout"),
    ("backbone: {name: mlp, hidden: [-5]}", "hidden[0]"),
    ("backbone: {name: mlp, hidden: [0]}", "hidden[0]"),
    ("seed: 100000000000000000000000", "seed"),
    ("device: tpu9", "device"),
    ("plugins: [{name: adwin, clock: 0}]", "plugin 'adwin': clock"),
    ("plugins: [{name: adwin, max_buckets: -1}]", "plugin 'adwin': max_buckets"),
    ("plugins: [{name: kswin, alpha: -1}]", "plugin 'kswin': alpha"),
    ("plugins: [{name: kswin, alpha: .nan}]", "(kswin).alpha"),
    ("plugins: [{name: page_hinkley, threshold: -2.0}]", "plugin 'page_hinkley': threshold"),
    ("plugins: [{name: plateau, variance_threshold: .nan}]", "(plateau).variance_threshold"),
    ("plugins: [{name: der, alpha: -0.5}]", "plugin 'der': alpha"),
    ("plugins: [{name: derpp, beta: -1.0}]", "plugin 'derpp': beta"),
    ("plugins: [{name: ewc, ewc_lambda: .inf}]", "(ewc).ewc_lambda"),
    ("plugins: [{name: si, xi: 0.0}]", "plugin 'si': xi"),
    ("plugins: [{name: gem, eps: -1.0}]", "plugin 'gem': eps"),
    ("eval: {window: 0}", "eval.window"),
    ("checkpoint: {every_seconds: .nan}", "checkpoint.every_seconds"),
]


@pytest.mark.parametrize("line, names", BAD_PARAMS, ids=[b[0][:40] for b in BAD_PARAMS])
def test_out_of_range_parameters_are_one_line_naming_the_key(tmp_path, capsys, line, names):
    base = SMALL.replace("seed: 1\n", "").replace("device: cpu\n", "")
    head = line.split(":")[0]
    keep = "\n".join(ln for ln in base.splitlines() if not ln.startswith(head + ":"))
    cfg = write_cfg(tmp_path, keep + "\n" + line + "\n" + ("" if head == "device" else
                                                           "device: cpu\n"))
    assert main(["run", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and names in err and err.count("\n") == 1, err


@pytest.mark.parametrize("line, key", [
    ("plugins: [{name: er, mem_size: 1000000000000}]", "mem_size"),
    ("plugins: [{name: ewc, fisher_samples: 1000000000000}]", "fisher_samples"),
    ("plugins: [{name: mas, importance_samples: 1000000000000}]", "importance_samples"),
    ("plugins: [{name: generative_replay, hidden: 1000000000000}]", "hidden"),
    ("backbone: {name: mlp, hidden: [10000000, 10000000]}", "hidden"),
], ids=["er", "ewc", "mas", "generative_replay", "mlp"])
def test_sizes_that_cannot_fit_are_refused_before_training(tmp_path, capsys, line, key):
    head = line.split(":")[0]
    keep = "\n".join(ln for ln in SMALL.splitlines() if not ln.startswith(head + ":"))
    cfg = write_cfg(tmp_path, keep + "\n" + line + "\n")
    assert main(["run", str(cfg), "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert key in err and "GiB" in err and "bytes" in err and "available" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_synthetic_stream_too_big_is_refused_with_the_bytes_needed():
    from lifelong.errors import ConfigError
    from lifelong.stream.synthetic import blobs

    with pytest.raises(ConfigError, match=r"n_per_class needs about .* bytes"):
        blobs(n_per_class=10**11)


# ---------------------------------------------------------------------------- bench


def test_bench_validates_the_whole_grid_before_the_first_run(tmp_path, capsys, monkeypatch):
    import lifelong.run as run_mod

    calls = []
    monkeypatch.setattr(run_mod, "run_config", lambda raw, **kw: calls.append(raw))
    cfg = write_cfg(tmp_path)
    for args, msg in ((["--strategies", "naive,ERR"], "unknown strategy 'ERR'"),
                      (["--strategies", "naive", "--seeds", "0,a"], "'a' is not an integer"),
                      (["--strategies", "naive", "--streams", "blobs,nope"], "unknown stream"),
                      (["--strategies", "naive", "--set", "train.lr=-1"], "train.lr")):
        assert main(["bench", "--config", str(cfg), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and msg in err and err.count("\n") == 1, err
    bad_out = tmp_path / "file"
    bad_out.write_text("x")
    assert main(["bench", "--config", str(cfg), "--strategies", "naive", "--out",
                 str(bad_out / "sub")]) == 2
    assert "--out" in capsys.readouterr().err
    assert calls == []


def test_bench_keeps_going_past_a_failed_run_and_writes_results_as_they_come(tmp_path, capsys):
    cfg = write_cfg(tmp_path, SMALL.replace("train: {batch_size: 6}",
                                            "train: {batch_size: 6, lr: 50.0}"))
    out = tmp_path / "b"
    code = main(["bench", "--config", str(cfg), "--strategies", "naive,joint", "--seeds", "0,1",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    runs = [json.loads(line) for line in (out / "bench_runs.jsonl").read_text().splitlines()]
    assert len(runs) == 4
    failed = [r for r in runs if r["status"] == "failed"]
    if failed:
        assert code == 2 and "runs failed" in err
        r = failed[0]
        assert f"{r['strategy']} on blobs, seed {r['seed']}" in err and r["error"]
    rows = json.loads((out / "bench.json").read_text())
    assert {r["strategy"] for r in rows} == {"naive", "joint"}


def test_bench_failed_run_is_a_row_naming_strategy_stream_and_seed(tmp_path, capsys, monkeypatch):
    import lifelong.run as run_mod
    from lifelong.errors import NonFiniteLossError

    real = run_mod.run_config

    def flaky(raw, **kw):
        if raw["strategy"] == "joint" and raw["seed"] == 1:
            raise NonFiniteLossError("the training loss is NaN or infinite at batch 3")
        return real(raw, **kw)

    monkeypatch.setattr(run_mod, "run_config", flaky)
    out = tmp_path / "b"
    code = main(["bench", "--config", str(write_cfg(tmp_path)), "--strategies", "naive,joint",
                 "--seeds", "0,1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "failed: joint on blobs, seed 1: the training loss is NaN" in err
    runs = [json.loads(line) for line in (out / "bench_runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in runs] == ["ok", "ok", "ok", "failed"]
    rows = {r["strategy"]: r for r in json.loads((out / "bench.json").read_text())}
    assert rows["joint"]["failed_seeds"] == [1] and rows["naive"]["failed_seeds"] == []
    assert rows["joint"]["final_avg_accuracy"] is not None


# ---------------------------------------------------------------------------- contract check


class _SimpleState:
    """A plugin whose state is an auxiliary module and a per-parameter dict, loaded plainly."""

    def __init__(self, *, scale: float = 0.1):
        self.scale = scale
        self.anchor_: dict = {}
        self.critic_ = torch.nn.Linear(3, 2)

    from lifelong import hookimpl as _h

    @_h
    def after_update(self, learner, step):
        self.anchor_ = {n: p.detach().clone() for n, p in learner.model.named_parameters()}

    def state_dict(self):
        return {"anchor": self.anchor_, "critic": self.critic_.state_dict()}

    def load_state_dict(self, state):
        self.anchor_ = dict(state["anchor"])
        self.critic_.load_state_dict(state["critic"])


class _LoadsAnything(_SimpleState):
    """Keeps a growing tensor (empty at first) that it never checks."""

    history_ = torch.zeros(0)

    @_SimpleState._h
    def after_experience(self, learner, experience):
        self.history_ = torch.cat([self.history_, torch.ones(1)])

    def state_dict(self):
        return {**super().state_dict(), "history": self.history_}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.history_ = state["history"]


def test_contract_check_passes_a_simple_plugin_without_validation_code_and_catches_one_that_loads_anything():  # noqa: E501
    from lifelong.testing import check_rejects_corrupted_state

    check_rejects_corrupted_state(_SimpleState)
    with pytest.raises(AssertionError, match="history"):
        check_rejects_corrupted_state(_LoadsAnything)


def test_resumed_run_without_a_schedule_still_marks_its_end_finished(tmp_path):
    out = half_run(tmp_path, every=0)  # e.g. the state Ctrl-C saved
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert load_checkpoint(out)["finished"] is True


class _RaisesOnLoad:
    """A plugin whose load_state_dict fails with something other than a CheckpointError."""

    def __init__(self, *, kind: str = "key"):
        self.kind = kind

    from lifelong import hookimpl as _h

    @_h
    def after_update(self, learner, step):
        pass

    def state_dict(self):
        return {"n": 1}

    def load_state_dict(self, state):
        class PanicException(BaseException):  # what pyo3 raises when Rust panics
            pass

        raise {"key": KeyError("n"), "panic": PanicException("index out of bounds")}[self.kind]


@pytest.mark.parametrize("kind", ["key", "panic"])
def test_any_failure_inside_a_plugins_load_becomes_a_checkpoint_error(kind):
    from lifelong.errors import CheckpointError
    from lifelong.testing import make_learner, tiny_stream

    stream = tiny_stream()
    first = make_learner([_RaisesOnLoad(kind=kind)], stream)
    first.fit(stream, stop_after=3)
    state = first.state_dict()
    second = make_learner([_RaisesOnLoad(kind=kind)], stream)
    second.begin(stream, evaluate=False)
    with pytest.raises(CheckpointError, match="plugin '_RaisesOnLoad'|_RaisesOnLoad"):
        second.load_state_dict(state)


def test_adwin_window_that_decodes_but_panics_when_updated_is_refused_before_training():
    import hashlib
    import random

    from river import drift

    from lifelong.errors import CheckpointError
    from lifelong.plugins.boundaries.adwin import ADWIN, _quiet_stderr

    d = drift.ADWIN(clock=1)
    r = random.Random(0)
    for i in range(300):
        d.update(r.random() + (i > 150))
    blob = bytearray(d._helper.__getstate__())
    bad = None
    with _quiet_stderr():
        for _ in range(500):  # a corruption that decodes, then panics inside update()
            b = bytearray(blob)
            for _ in range(r.randint(1, 4)):
                b[r.randrange(len(b))] = r.randrange(256)
            h = drift.ADWIN(clock=1)
            try:
                h._helper.__setstate__(bytes(b))
            except BaseException:  # noqa: BLE001
                continue
            try:
                for _ in range(20):
                    h.update(0.5)
            except BaseException:  # noqa: BLE001
                bad = bytes(b)
                break
    assert bad is not None
    plugin = ADWIN(clock=1)
    plugin.detector_ = plugin._make()
    state = plugin.state_dict()
    state["detector"]["window"] = torch.frombuffer(bytearray(bad), dtype=torch.uint8).clone()
    state["detector"]["sha256"] = hashlib.sha256(bad).hexdigest()
    fresh = ADWIN(clock=1)
    fresh.detector_ = fresh._make()
    with pytest.raises(CheckpointError, match="cannot be used"):
        fresh.load_state_dict(state)
