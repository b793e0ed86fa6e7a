"""Load test of ``lifelong serve`` on 127.0.0.1: learn + predict from concurrent clients, kill -9 mid-load.

Starts the server (a subprocess on a free localhost port), then runs
``--clients`` asyncio tasks for ``--seconds`` (default 60): each task
alternates one ``/learn`` of ``--rows`` labelled rows and one ``/predict``
of ``--rows`` rows, bounded by ``--max-requests`` per task. Halfway through
the server is killed with SIGKILL and restarted on the same directory; the
clients retry until it answers again (a request without a 200 answer is
not acknowledged). At the end the learner must have caught up with the log,
SIGTERM saves a checkpoint, and every row acknowledged to a client must be
in it: ``lost = acknowledged - learned`` (never negative: a row logged just
before the kill whose answer never arrived is learned but not counted as
acknowledged).

Prints a table and, last, one JSON line::

    {"predict_p50_ms": .., "predict_p99_ms": .., "learn_rows_per_s": .., "acknowledged": ..,
     "learned": .., "lost": 0, ...}

Latencies are of predictions answered while learning goes on (the server is
never idle); ``learn_rows_per_s`` is acknowledged rows per second of the
load phase while the server was up (the restart's downtime excluded). Network traffic goes to 127.0.0.1 only.

    python benchmarks/serve.py               # 60 s
    python benchmarks/serve.py --seconds 10  # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

CONFIG = """\
seed: 0
stream: {name: online, n_features: 16, classes: [a, b, c, d]}
backbone: {name: mlp, hidden: [64, 64]}
train: {batch_size: 8, optimizer: adam, lr: 0.001}
plugins: [{name: er, mem_size: 500}]
"""


def start(out: Path, cfg: Path, threads: int) -> tuple[subprocess.Popen, str, float]:
    (out / "server.json").unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", str(cfg), "--out",
                             str(out), "--host", "127.0.0.1", "--port", "0",
                             "--checkpoint-every", "5s"],
                            stdout=subprocess.DEVNULL, stderr=open(out / "server.log", "ab"),
                            env=env)
    for _ in range(3000):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {(out / 'server.log').read_text()[-2000:]}")
        try:
            info = json.loads((out / "server.json").read_text())
            if info["pid"] == proc.pid:
                return proc, f"http://127.0.0.1:{info['port']}", time.perf_counter() - t0
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start within 150 s")


class State:
    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged = 0
        self.learn_requests = 0
        self.predict_ms: list[float] = []
        self.failed = 0


async def client_task(k: int, st: State, deadline: float, rows: int, max_requests: int) -> None:
    rng = np.random.default_rng(k)
    w = np.random.default_rng(12345).normal(size=(16, 4))
    async with httpx.AsyncClient(timeout=30) as c:
        for _ in range(max_requests):
            if time.perf_counter() >= deadline:
                return
            x = rng.normal(size=(rows, 16))
            y = np.array(["a", "b", "c", "d"])[(x @ w).argmax(1)]
            try:
                r = await c.post(st.url + "/learn", json={"rows": x.round(4).tolist(),
                                                          "labels": y.tolist()})
                if r.status_code == 200:
                    st.acknowledged += rows
                    st.learn_requests += 1
                else:
                    st.failed += 1
                t0 = time.perf_counter()
                r = await c.post(st.url + "/predict", json={"rows": x.round(4).tolist()})
                if r.status_code == 200:
                    st.predict_ms.append((time.perf_counter() - t0) * 1e3)
                else:
                    st.failed += 1
            except httpx.HTTPError:
                st.failed += 1
                await asyncio.sleep(0.05)  # the server is restarting


async def load(st: State, seconds: float, clients: int, rows: int, max_requests: int,
               kill_at: float, restart) -> float:
    t0 = time.perf_counter()
    deadline = t0 + seconds
    tasks = [asyncio.create_task(client_task(k, st, deadline, rows, max_requests))
             for k in range(clients)]
    await asyncio.sleep(kill_at)
    restart_s = await asyncio.to_thread(restart)
    await asyncio.gather(*tasks)
    del restart_s
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rows", type=int, default=8, help="rows per learn / predict request")
    ap.add_argument("--max-requests", type=int, default=100_000, help="per client task")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--out", help="server directory (default: a fresh temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="lifelong-serve-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "serve.yaml"
    cfg.write_text(CONFIG)
    proc, url, start_s = start(out, cfg, args.threads)
    st = State(url)
    info: dict[str, float] = {"start_s": start_s}

    def restart() -> float:
        nonlocal proc
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        info["acknowledged_at_kill"] = st.acknowledged
        proc, st.url, s = start(out, cfg, args.threads)
        info["restart_s"] = s
        info["down_s"] = time.perf_counter() - t0
        return s

    elapsed = asyncio.run(load(st, args.seconds, args.clients, args.rows, args.max_requests,
                               args.seconds / 2, restart))
    with httpx.Client(base_url=st.url, timeout=30) as c:
        for _ in range(6000):
            m = c.get("/metrics").json()
            if m["applied_records"] == m["acknowledged_records"]:
                break
            time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(120)
    import torch

    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    learned = int(payload["learner"]["counters"]["samples_seen"])
    lat = np.array(st.predict_ms) if st.predict_ms else np.array([float("nan")])
    result = {
        "predict_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "predict_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "learn_rows_per_s": round(st.acknowledged / max(elapsed - info["down_s"], 1e-9), 1),
        "acknowledged": st.acknowledged, "learned": learned,
        "lost": max(0, st.acknowledged - learned),
        "logged": int(m["acknowledged_rows"]), "replayed_records": int(m["replayed_records"]),
        "prequential_accuracy": m["prequential_accuracy"],
        "predictions": len(st.predict_ms), "failed_during_restart": st.failed,
        "restart_s": round(info["restart_s"], 2), "seconds": round(elapsed, 1),
        "clients": args.clients, "rows_per_request": args.rows,
        "server_torch_threads": args.threads, "sigterm_exit": rc,
    }
    print(f"lifelong serve load test: {args.clients} clients, {args.rows} rows per request, "
          f"{elapsed:.1f} s on 127.0.0.1, kill -9 at {args.seconds / 2:.0f} s "
          f"(server torch threads: {args.threads}, cpus: {os.cpu_count()})")
    for k in ("predictions", "predict_p50_ms", "predict_p99_ms", "learn_rows_per_s",
              "acknowledged", "logged", "learned", "lost", "replayed_records", "restart_s",
              "failed_during_restart", "prequential_accuracy", "sigterm_exit"):
        print(f"  {k:24s} {result[k]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
