"""Loggers: TensorBoard, MLflow and CSV read back; they never change training; resume
continues the same log, one point per (metric, step)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lifelong.errors import ConfigError
from lifelong.plugins.logging import CSVLogger, MLflowLogger, TensorBoardLogger
from lifelong.testing import assert_same_state, make_learner, tiny_stream

WALL = ("final/wall_time_s", "final/samples_per_second", "final/peak_rss_mb",
        "final/eval_time_s", "final/peak_cuda_mb")  # measured, not computed: differ per run


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def tb_scalars(d: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(d))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def csv_scalars(p: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in csv.DictReader(open(p)):
        out.setdefault(r["metric"], []).append((int(r["step"]), float(r["value"])))
    return out


def ml_scalars(logger: MLflowLogger) -> dict[str, list[tuple[int, float]]]:
    c = logger.client()
    keys = c.get_run(logger.run_id_).data.metrics
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(logger.run_id_, k))
            for k in keys}


def _computed(s: dict[str, list]) -> dict[str, list]:
    return {k: v for k, v in s.items() if k not in WALL}


def loggers(tmp: Path, name: str) -> list:
    return [TensorBoardLogger(log_dir=str(tmp / "tb"), run_name=name, log_every=2),
            MLflowLogger(tracking_uri=f"file:{tmp / 'ml'}", run_name=name, log_every=2),
            CSVLogger(log_dir=str(tmp / "csv"), run_name=name, log_every=2)]


def read(ls: list) -> list[dict[str, list[tuple[int, float]]]]:
    tb, ml, cs = ls
    return [tb_scalars(tb.run_dir()), ml_scalars(ml), csv_scalars(cs.path())]


def test_loggers_write_the_conventions_and_never_change_training(tmp_path):
    stream = tiny_stream()
    plain = make_learner([], stream).fit(stream)
    ls = loggers(tmp_path, "a")
    logged = make_learner([*ls], stream).fit(stream)
    assert_same_state(plain.model.state_dict(), logged.model.state_dict(), "weights")
    assert_same_state(plain.plugins[-2].summary(), logged.plugins[-2].summary(), "matrix")
    assert_same_state(plain.plugins[-1].summary(), logged.plugins[-1].summary(), "preq")
    matrix = logged.plugins[-2].summary()
    windows = logged.plugins[-1].summary()["prequential_windows"]
    assert windows[-1][0] == 144                       # the last window closes at the end
    for got in read(ls):
        assert got["prequential/accuracy"] == [(at, pytest.approx(a, abs=1e-6))
                                               for at, a in windows]
        assert [s for s, _ in got["train/loss"]] == list(range(16, 145, 16))  # samples seen
        assert set(got) >= {"train/ce", "eval/accuracy/exp2", "prequential/accuracy"}
        ends = [v for _, v in got["eval/avg_accuracy"]]
        want = [sum(r[:i + 1]) / (i + 1) for i, r in enumerate(matrix["accuracy_matrix"])]
        assert ends == pytest.approx(want, abs=1e-6)
        assert got["final/final_avg_accuracy"] == [(144, pytest.approx(
            matrix["final_avg_accuracy"], abs=1e-6))]
        assert [v for _, v in got["eval/accuracy/exp0"]][:1] == pytest.approx(
            [matrix["random_init_accuracy"][0]], abs=1e-6)  # the initial evaluation, step 0
    tb, ml, _ = ls
    assert sorted(p.name.split(".")[0] for p in tb.run_dir().iterdir()) == ["events"]
    assert ml.client().get_run(ml.run_id_).info.status == "FINISHED"
    again = CSVLogger(log_dir=str(tmp_path / "csv"), run_name="a")
    make_learner([again], stream).fit(stream)
    assert again.path().parent.name == "a-2"           # a name in use is not overwritten


def test_resume_continues_the_same_logs_once_per_step(tmp_path):
    stream = tiny_stream()
    full = loggers(tmp_path, "full")
    make_learner(full, stream).fit(stream)
    interrupted = loggers(tmp_path, "resumed")
    saved = {}

    def checkpoint(_n):
        if learner.step_index == 7:  # the checkpoint: the run goes on, then "crashes"
            saved["state"] = _roundtrip(learner.state_dict())

    learner = make_learner(interrupted, stream)
    learner.fit(stream, progress=checkpoint)  # its log runs past the checkpoint
    time.sleep(1.05)  # the resumed event file is named one second later, as after a restart
    resumed = loggers(tmp_path, "ignored")     # the name comes from the checkpoint
    make_learner(resumed, stream).fit(stream, state=saved["state"])
    assert [r.run_name_ for r in resumed] == ["resumed"] * 3
    assert resumed[1].run_id_ == interrupted[1].run_id_
    for want, got in zip(read(full), read(resumed)):
        assert _computed(got) == _computed(want)        # every point once, as uninterrupted
    assert not (tmp_path / "tb" / "ignored").exists()


def test_logging_reads_the_device_once_per_interval(tmp_path, monkeypatch):
    log = CSVLogger(log_dir=str(tmp_path), run_name="sync", log_every=5)
    calls = []
    for name in ("tolist", "item", "__float__", "cpu"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _r=real, _n=name, **k: (
            calls.append(_n), _r(self, *a, **k))[1])
    learner = SimpleNamespace(samples_seen=0, device=torch.device("cpu"), plugins=[],
                              seed=0, stream=None)
    for i in range(20):
        loss = torch.tensor(1.0 + i, requires_grad=True) * 1
        step = SimpleNamespace(index=i, loss=loss, losses={"ce": loss, "ewc": loss * 0.1},
                               n_stream=8)
        log.after_update(learner, step)
        learner.samples_seen += 8
    assert calls == ["tolist"] * 4                       # steps 5, 10, 15, 20: one read each
    log._flush()
    rows = csv_scalars(log.path())
    assert rows["train/loss"] == [(40, 5.0), (80, 10.0), (120, 15.0), (160, 20.0)]
    assert rows["train/ewc"][0] == (40, pytest.approx(0.5))


def test_mlflow_run_name_and_params_from_the_config(tmp_path):
    from lifelong.run import run_config

    cfg = {"seed": 3, "device": "cpu", "stream": {"name": "blobs", "n_experiences": 2,
                                                  "n_per_class": 10},
           "backbone": {"name": "mlp", "hidden": [8]}, "strategy": {"name": "naive"},
           "train": {"batch_size": 5, "lr": 0.05},
           "plugins": [{"name": "mlflow", "tracking_uri": f"file:{tmp_path}"},
                       {"name": "csv", "log_dir": str(tmp_path / "c")}]}
    run_config(cfg)
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"file:{tmp_path}")
    exp = c.get_experiment_by_name("lifelong")
    (run,) = c.search_runs([exp.experiment_id])
    assert run.info.run_name == "naive-blobs-seed3"
    p = run.data.params
    assert p["train.lr"] == "0.05" and p["stream.name"] == "blobs" and p["seed"] == "3"
    assert p["plugins.0.name"] == "mlflow" and p["backbone.hidden"] == "[8]"
    assert (tmp_path / "c" / "naive-blobs-seed3" / "metrics.csv").is_file()
    run_config({**cfg, "name": "exp-a"})
    names = {r.info.run_name for r in c.search_runs([exp.experiment_id])}
    assert names == {"naive-blobs-seed3", "exp-a"}


@pytest.mark.parametrize("name,module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_package_names_the_extra_before_training(monkeypatch, tmp_path, capsys,
                                                           name, module):
    import importlib.util

    from lifelong.cli import main
    from lifelong.plugins.logging import _common

    real = importlib.util.find_spec
    monkeypatch.setattr(_common.importlib.util, "find_spec",
                        lambda m, *a: None if m == module else real(m, *a))
    with pytest.raises(ConfigError, match=rf"pip install 'lifelong\[{name}\]'"):
        (TensorBoardLogger if name == "tensorboard" else MLflowLogger)()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"stream: {{name: blobs}}\nplugins: [{{name: {name}}}]\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"lifelong[{name}]" in err
    assert not (tmp_path / "o" / "metrics.json").exists()
