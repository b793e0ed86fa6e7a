"""``lifelong serve``: a real server on 127.0.0.1, a real HTTP client (httpx)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong.checkpoint import load_checkpoint
from lifelong.cli import main
from lifelong.errors import CheckpointError
from lifelong.serve.log import LearnLog
from lifelong.stream.online import OnlineSession
from lifelong.teachers import weights_digest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

CONFIG = """\
seed: 3
stream: {name: online, n_features: 3, classes: [neg, pos]}
backbone: {name: mlp, hidden: [8]}
train: {batch_size: 2, lr: 0.05}
plugins: [{name: er, mem_size: 16}]
"""
TOKEN = "s3cret-token-for-tests-0123456789"


def start(out: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``lifelong serve`` on 127.0.0.1 and a free port; wait until it answers."""
    cfg = out.parent / "serve.yaml"
    cfg.write_text(CONFIG)
    (out / "server.json").unlink(missing_ok=True)
    log = open(out.parent / f"server-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifelong.cli", "serve", str(cfg), "--out", str(out), "--host",
         "127.0.0.1", "--port", "0", "--log-level", "info", *args],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    proc.log_path = log.name  # type: ignore[attr-defined]
    for _ in range(1200):  # bounded: at most 120 s on a loaded machine
        if proc.poll() is not None:
            raise AssertionError(Path(log.name).read_text())
        try:
            info = json.loads((out / "server.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
            continue
        if info["pid"] == proc.pid:
            return proc, f"http://127.0.0.1:{info['port']}"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start")


def rows(k: int, n: int = 3) -> tuple[list[list[float]], list[str]]:
    g = np.random.default_rng(k)
    x = g.normal(size=(n, 3)).round(3)
    return x.tolist(), ["pos" if v > 0 else "neg" for v in x.sum(1)]


def drained(client, timeout: float = 60.0) -> dict:
    for _ in range(int(timeout * 20)):
        m = client.get("/metrics").json()
        if m["applied_records"] == m["acknowledged_records"] and m["queue_depth"] == 0:
            return m
        time.sleep(0.05)
    raise AssertionError(f"the learner did not catch up: {m}")


def reference_digest(out: Path) -> tuple[str, int]:
    """An uninterrupted learner fed the whole log in order, in-process."""
    from lifelong.config import safe_load
    from lifelong.run import build

    run = build(safe_load(CONFIG))
    session = OnlineSession(run.learner, run.stream)
    log = LearnLog(out / "learn.log")
    for x, y in log.records(skip_rows=0):
        for i in range(0, len(y), 2):
            session.learn(torch.from_numpy(x[i:i + 2]), torch.from_numpy(y[i:i + 2]))
    log.close()
    return weights_digest(run.learner.model), run.learner.samples_seen


def test_concurrent_learning_bad_input_kill_9_token_and_sigterm_lose_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc, url = start(out, "--checkpoint-every", "7")
    try:
        client = httpx.Client(base_url=url, timeout=30)
        assert client.get("/health").json()["status"] == "ok"

        # predictions served while four clients learn at once
        errors: list[str] = []
        acked: list[int] = []

        def learner_client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                for i in range(12):
                    x, y = rows(100 * k + i)
                    r = c.post("/learn", json={"rows": x, "labels": y})
                    if r.status_code != 200:
                        errors.append(r.text)
                    else:
                        acked.append(r.json()["record"])

        def predict_client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                last = -1
                for i in range(15):
                    r = c.post("/predict", json={"rows": rows(k + i, 2)[0]})
                    body = r.json()
                    if r.status_code != 200 or body["version"] < last:
                        errors.append(r.text)
                    last = body["version"]
                    assert len(body["probabilities"]) == 2 and body["classes"] == ["neg", "pos"]

        threads = [threading.Thread(target=learner_client, args=(k,)) for k in range(4)]
        threads += [threading.Thread(target=predict_client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and sorted(acked) == list(range(48))
        m = drained(client)
        assert m["samples_learned"] == m["acknowledged_rows"] == 144
        assert m["prequential_accuracy"] is not None and m["checkpoints_saved"] >= 1
        assert m["weights_digest"] == reference_digest(out)[0]  # log order is learning order

        # label delay: labels for earlier predictions, by id
        x, y = rows(7, 2)
        ids = client.post("/predict", json={"rows": x}).json()["ids"]
        assert client.post("/learn", json={"ids": ids, "labels": y}).json()["accepted"] == 2
        again = client.post("/learn", json={"ids": ids[:1], "labels": y[:1]})
        assert again.status_code == 404 and "unknown" in again.json()["error"]

        # bad requests: one clear message each, and nothing changes
        before = drained(client)
        bad = [
            ({"rows": [[1.0, 2.0]], "labels": ["pos"]}, 422, "has 2 values; the model takes 3"),
            ({"rows": [[1.0, 2.0, 3.0]], "labels": ["maybe"]}, 422, "label 'maybe' (row 0) is not"),
            ({"rows": [[1.0, "a", 3.0]], "labels": ["pos"]}, 422, "features must be numbers"),
            ({"rows": [[1e39, 0.0, 0.0]], "labels": ["pos"]}, 422, "finite float32"),
            ({"rows": [[1.0, 2.0, 3.0]]}, 422, "'labels' must be a list of 1"),
            ({"rows": [[0.0, 0.0, 0.0]], "labels": ["pos"], "weight": 2}, 422, "unknown field"),
            ({"ids": ["x-1"], "labels": ["pos"]}, 404, "prediction id 'x-1' is unknown"),
        ]
        for body, status, fragment in bad:
            r = client.post("/learn", json=body)
            assert r.status_code == status and fragment in r.json()["error"], (body, r.text)
        for content, status, fragment in [
            (b'{"rows": [[NaN, 1, 2]], "labels": ["pos"]}', 400, "NaN and Infinity are refused"),
            (b"not json", 400, "not valid JSON"),
            (b"[1, 2]", 400, "must be a JSON object"),
            (b"0" * (2 << 20), 413, "larger than 1048576 bytes"),
        ]:
            r = client.post("/learn", content=content)
            assert r.status_code == status and fragment in r.json()["error"], r.text
        r = client.post("/predict", json={"rows": [[1.0, 2.0]]})
        assert r.status_code == 422
        after = drained(client)
        assert {k: after[k] for k in ("acknowledged_rows", "weights_digest", "samples_learned")} == \
            {k: before[k] for k in ("acknowledged_rows", "weights_digest", "samples_learned")}

        # kill -9 while a client is learning: every acknowledged record survives
        stop = threading.Event()
        acked_rows = [after["acknowledged_rows"]]

        def stream_learns() -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                for i in range(400):
                    if stop.is_set():
                        return
                    x, y = rows(5000 + i)
                    try:
                        r = c.post("/learn", json={"rows": x, "labels": y})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acked_rows[0] += 3

        sender = threading.Thread(target=stream_learns)
        sender.start()
        for _ in range(12000):  # bounded: 120 s
            if acked_rows[0] >= after["acknowledged_rows"] + 30 or not sender.is_alive():
                break
            time.sleep(0.01)
        assert sender.is_alive(), "the learning client stopped before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        stop.set()
        sender.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()

    # restart on the same directory, now with a token: the log is replayed before serving
    proc, url = start(out, "--checkpoint-every", "7", env={"LIFELONG_SERVE_TOKEN": TOKEN})
    try:
        client = httpx.Client(base_url=url, timeout=30)
        m = drained(client)
        assert m["acknowledged_rows"] >= acked_rows[0]  # nothing acknowledged was lost
        assert m["samples_learned"] == m["acknowledged_rows"]
        assert m["resumed_from_rows"] is not None and m["replayed_records"] >= 0
        digest, n = reference_digest(out)
        assert m["weights_digest"] == digest and n == m["samples_learned"]

        # /learn needs the bearer token; refusals say so and change nothing
        x, y = rows(9999, 5)
        body = {"rows": x, "labels": y}
        r = client.post("/learn", json=body)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
        for header in (f"Bearer {TOKEN}x", "Bearer short", f"Basic {TOKEN}", TOKEN):
            r = client.post("/learn", json=body, headers={"Authorization": header})
            assert r.status_code == 401 and TOKEN not in r.text
        assert client.post("/predict", json={"rows": x}).status_code == 200
        assert drained(client)["acknowledged_rows"] == m["acknowledged_rows"]

        # SIGTERM: stop taking requests, train on what was acknowledged, save
        r = client.post("/learn", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert TOKEN not in Path(proc.log_path).read_text()  # type: ignore[attr-defined]
    payload = load_checkpoint(out)
    digest, n = reference_digest(out)
    assert payload["learner"]["counters"]["samples_seen"] == n == m["acknowledged_rows"] + 5
    from lifelong.config import safe_load
    from lifelong.run import build

    model = build(safe_load(CONFIG)).learner.model
    model.load_state_dict(payload["learner"]["model"])
    assert weights_digest(model) == digest


def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(CONFIG)
    monkeypatch.delenv("LIFELONG_SERVE_TOKEN", raising=False)
    assert main(["serve", str(cfg), "--out", str(tmp_path / "o"), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a loopback address" in err and "LIFELONG_SERVE_TOKEN" in err
    monkeypatch.setenv("LIFELONG_SERVE_TOKEN", "short")
    assert main(["serve", str(cfg), "--out", str(tmp_path / "o"), "--host", "0.0.0.0"]) == 2
    assert "shorter than 16 characters" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("stream: {name: online, n_features: 3}\n")
    monkeypatch.delenv("LIFELONG_SERVE_TOKEN")
    assert main(["serve", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o"), "--port",
                 "0"]) == 2
    assert "declare the labels" in capsys.readouterr().err


def test_log_cuts_a_torn_tail_and_refuses_a_corrupt_middle(tmp_path):
    path = tmp_path / "learn.log"
    log = LearnLog(path)
    for k in range(3):
        log.append(np.full((2, 3), k, np.float32), np.array([0, 1]))
    log.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b"2 0000abcd {\"x\": [[1")  # a write cut short by kill -9
    log = LearnLog(path)
    assert (log.records_total, log.rows_total) == (3, 6) and path.read_bytes() == whole
    assert [int(x[0, 0]) for x, _ in log.records(skip_rows=2)] == [1, 2]
    with pytest.raises(CheckpointError, match="ends inside record 2"):
        list(log.records(skip_rows=3))
    with pytest.raises(CheckpointError, match="holds 6 rows but the checkpoint has trained on 8"):
        list(log.records(skip_rows=8))
    log.close()
    lines = whole.split(b"\n")
    lines[1] = lines[1].replace(b"1.0", b"7.0")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CheckpointError, match="record 2 is corrupt"):
        LearnLog(path)
