"""Chaos battery: a fixed, seeded set of hostile inputs and faults against lifelong.

Classes (each attempt is one of them): hostile YAML (alias bombs, binary and
non-UTF-8 files, huge strings and lists, deep nesting, object tags, wrong
types), out-of-range parameters of plugins / backbones / streams / the
optimizer, corrupted checkpoints (contents changed consistently, i.e. with the
checksum recomputed, so that the contents themselves must be checked; and bytes
changed on disk), a full disk while writing results, Python API misuse,
``lifelong bench`` with a bad grid or a failing run, and kills with resume
(``SIGKILL`` of a subprocess at a seeded moment, sometimes twice, then
``--resume`` until finished, compared with an uninterrupted run).

Each attempt is classified:

- ``clean_error``: exit status 2 and exactly one ``error: ...`` line (bench also
  lists its ``failed: ...`` runs), or a ``lifelong.errors`` exception from the API;
- ``traceback``: any other exception, exit status, or a traceback/panic on stderr;
- ``silently_wrong``: a hostile input that was accepted (or a resumed run whose
  results differ from the uninterrupted one, or a temporary file left behind);
- ``hang``: the attempt did not finish within its time limit;
- ``resume_identical``: a killed run resumed to bit-identical weights and metrics.

Run: ``OMP_NUM_THREADS=1 python benchmarks/chaos.py`` (a few minutes on two
cores). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)

from lifelong.checkpoint import Checkpointer, payload_digest  # noqa: E402
from lifelong.cli import main  # noqa: E402
from lifelong.errors import LifelongError  # noqa: E402
from lifelong.run import build  # noqa: E402

IN_PROCESS_LIMIT = 60  # seconds per in-process attempt
SMALL = {"seed": 1, "device": "cpu",
         "stream": {"name": "blobs", "n_experiences": 2, "n_per_class": 20, "n_test_per_class": 4},
         "backbone": {"name": "mlp", "hidden": [8]}, "train": {"batch_size": 5}}
TASKFREE = {"seed": 2, "device": "cpu",
            "stream": {"name": "blobs", "n_experiences": 2, "n_per_class": 40,
                       "n_test_per_class": 5, "task_aware": False},
            "backbone": {"name": "mlp", "hidden": [8]},
            "train": {"batch_size": 4, "optimizer": "adam", "lr": 0.01},
            "plugins": [{"name": "er", "mem_size": 20, "batch_size": 4}, {"name": "ewc"},
                        {"name": "adwin", "clock": 1}]}
KILLED = {"seed": 3, "device": "cpu",
          "stream": {"name": "blobs", "n_experiences": 3, "n_per_class": 150,
                     "n_test_per_class": 10, "task_aware": False},
          "backbone": {"name": "mlp", "hidden": [16]},
          "train": {"batch_size": 5, "optimizer": "adam", "lr": 0.001},
          "eval": {"every": 60, "window": 20},
          "plugins": [{"name": "er", "mem_size": 50}, {"name": "ewc", "fisher_samples": 64},
                      {"name": "every_n", "every": 40}]}
VOLATILE = {"wall_time_s", "samples_per_second", "peak_rss_mb", "peak_cuda_mb", "config"}


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


# ---------------------------------------------------------------------------- running


@contextlib.contextmanager
def captured() -> Any:
    """Capture stdout/stderr of this process, Python-level and file-descriptor-level."""
    out, err = io.StringIO(), io.StringIO()
    fd_file = tempfile.TemporaryFile(mode="w+b")
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd_file.fileno(), 2)
    box: dict[str, str] = {}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield box
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        fd_file.seek(0)
        box["err"] = err.getvalue() + fd_file.read().decode(errors="replace")
        box["out"] = out.getvalue()
        fd_file.close()


def in_process(fn: Any) -> tuple[Any, str, BaseException | None]:
    """``fn()`` under a time limit; returns (result, stderr, escaped exception)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(IN_PROCESS_LIMIT)
    result, exc = None, None
    try:
        with captured() as box:
            try:
                result = fn()
            except SystemExit as e:  # argparse
                result = e.code
            except BaseException as e:  # noqa: BLE001 - classified below
                exc = e
    finally:
        signal.alarm(0)
    return result, box["err"], exc


def classify_cli(rc: Any, err: str, exc: BaseException | None, expect: str) -> str:
    if isinstance(exc, Hang):
        return "hang"
    if exc is not None:
        return "traceback"
    if "Traceback (most recent call last)" in err or "panicked at" in err:
        return "traceback"
    if rc == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()
                 and not ln.startswith(("warning:", "failed:"))]
        return "clean_error" if len(lines) == 1 and lines[0].startswith("error: ") else "traceback"
    if rc == 0:
        return "silently_wrong" if expect == "error" else "ok"
    return "traceback"


def cli_attempt(argv: list[str], expect: str = "error") -> tuple[str, str]:
    rc, err, exc = in_process(lambda: main(argv))
    first = (err.strip().splitlines() or [""])[-1][:90] if exc is None else repr(exc)[:90]
    return classify_cli(rc, err, exc, expect), first


def api_attempt(fn: Any) -> tuple[str, str]:
    _, err, exc = in_process(fn)
    if isinstance(exc, Hang):
        return "hang", ""
    if exc is None:
        return "silently_wrong", "accepted"
    if isinstance(exc, LifelongError) and "Traceback" not in err:
        return "clean_error", f"{type(exc).__name__}: {str(exc)[:80]}"
    return "traceback", f"{type(exc).__name__}: {str(exc)[:80]}"


# ---------------------------------------------------------------------------- classes


def yaml_cases(rng: random.Random, work: Path) -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []

    def add(label: str, content: str | bytes) -> None:
        p = work / f"y{len(cases)}.yaml"
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        cases.append(("hostile YAML", label, lambda p=p: cli_attempt(["run", str(p), "--quiet"])))

    base = yaml.safe_dump(SMALL)
    for depth in (6, 7, 8, 9, 12):
        width = rng.randint(9, 12)
        lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
        bomb = "\n".join(lines) + "\n"
        add(f"alias bomb depth {depth}, width {width} (top level)", bomb + base)
        under = "name:\n" + "".join(f"  - {ln.split(': ', 1)[1]}\n" for ln in lines)
        add(f"alias bomb depth {depth}, width {width} under name:", base + under)
    for _ in range(5):
        n = rng.randint(16, 4096)
        data = bytes(rng.randrange(256) for _ in range(n))
        add(f"binary file ({n} bytes)", data)
    add("NUL byte inside text", base.encode() + b"\x00\n")
    add("latin-1 text", "stream: {name: caf\xe9}\n".encode("latin-1"))
    add("UTF-16 with BOM", base.encode("utf-16"))
    add("string of 50k chars", base + "name: " + "x" * 50_000 + "\n")
    add("list of 20k items", base + "name: [" + ", ".join(["1"] * 20_000) + "]\n")
    add("nested 100 deep", base + "name: " + "[" * 100 + "]" * 100 + "\n")
    add("nested 20000 deep", "name: " + "[" * 20_000 + "]" * 20_000 + "\n")
    add("file of 3 MB", base + "# " + "y" * (3 << 20) + "\n")
    add("python object tag", "stream: !!python/object/apply:os.system ['true']\n")
    add("python name tag", base + "name: !!python/name:os.system\n")
    add("stream is a number", "stream: 5\n")
    add("plugins is a string", base + "plugins: er\n")
    add("train is a list", base.replace("train:\n  batch_size: 5\n", "train: [1, 2]\n"))
    add("top level is a list", "- stream\n- blobs\n")
    add("top level is a scalar", "42\n")
    add("empty file", "")
    add("unknown top-level key", base + "trian: {lr: 0.1}\n")
    add("unknown plugin parameter", base + "plugins: [{name: er, mem_sz: 5}]\n")
    add("bad YAML syntax", "stream: {name: blobs\n  backbone: [\n")
    add("tab indentation", "stream:\n\tname: blobs\n")
    add("duplicate anchors and merge keys", base + "a: &a {x: 1}\nb: {<<: *a}\n")
    return cases


BAD_VALUES = {
    "train.lr": [-0.1, 0.0, 1e300, float("nan"), float("inf")],
    "train.momentum": [-1, 1.5, float("nan")],
    "train.weight_decay": [-1, float("inf")],
    "train.batch_size": [0, -4, 10**12],
    "train.epochs": [0, -1],
    "train.check_every": [-3, 0],
    "train.optimizer": ["sgdx", 3],
    "train.nan_policy": ["ignore"],
    "seed": [-1, 10**23, 1.5, "zero"],
    "device": ["tpu9", "cuda:x", "", 7],
    "eval.window": [0, -5],
    "eval.every": [-1],
    "checkpoint.every_seconds": [float("nan"), -1.0],
    "backbone.dropout": [2.0, -0.1, float("nan"), 1.0],
    "backbone.hidden": [[-5], [0], [], "wide", [10**7, 10**7]],
    "stream.n_per_class": [0, -3, 10**11],
    "stream.n_experiences": [0, -2],
    "stream.separation": [-1.0, float("nan")],
    "stream.label_delay": [-1, "soon"],
    "plugin.adwin.clock": [0, -1],
    "plugin.adwin.max_buckets": [0, -1],
    "plugin.adwin.delta": [0.0, 1.5, float("nan")],
    "plugin.kswin.alpha": [-1, float("nan")],
    "plugin.kswin.window_size": [0],
    "plugin.page_hinkley.threshold": [float("nan"), -1.0],
    "plugin.page_hinkley.min_instances": [0],
    "plugin.plateau.mean_threshold": [float("nan"), -1.0],
    "plugin.plateau.window": [0],
    "plugin.der.alpha": [-0.2, float("nan")],
    "plugin.derpp.beta": [-1.0, float("inf")],
    "plugin.er.mem_size": [0, -10, 10**12],
    "plugin.er.batch_size": [0, 10**6],
    "plugin.ewc.ewc_lambda": [-1.0, float("nan")],
    "plugin.ewc.fisher_samples": [0, 10**12],
    "plugin.mas.importance_samples": [10**12],
    "plugin.si.xi": [0.0, float("nan")],
    "plugin.lwf.temperature": [0.0, -2.0],
    "plugin.gem.memory_strength": [-1.0],
    "plugin.generative_replay.hidden": [0, 10**9],
    "plugin.every_n.every": [0, -3],
}


def params_cases(rng: random.Random, work: Path) -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    for key, values in BAD_VALUES.items():
        for value in values:
            cfg = copy.deepcopy(SMALL)
            if key.startswith("plugin."):
                _, name, param = key.split(".")
                cfg["plugins"] = [{"name": name, param: value}]
            else:
                parts = key.split(".")
                node: Any = cfg
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = value
            p = work / f"p{len(cases)}.yaml"
            p.write_text(yaml.safe_dump(cfg))
            cases.append(("out-of-range parameter", f"{key} = {value!r}"[:60],
                          lambda p=p: cli_attempt(["run", str(p), "--quiet"])))
    extra = [["--checkpoint-every", "nans"], ["--checkpoint-every", "infs"],
             ["--checkpoint-every", "-3"], ["--checkpoint-every", "0"],
             ["--checkpoint-every", "1e999s"], ["--set", "train.lr=-1"],
             ["--set", "plugins=[{name: er, mem_size: -1}]"], ["--set", "nope"]]
    p = work / "ok.yaml"
    p.write_text(yaml.safe_dump(SMALL))
    for args in extra:
        cases.append(("out-of-range parameter", " ".join(args)[:60],
                      lambda a=args: cli_attempt(["run", str(p), "--out", str(work / "o"),
                                                  "--quiet", *a])))
    return cases


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    out = [(path, obj)] if path else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_leaves(v, (*path, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_leaves(v, (*path, i)))
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


# corruptions that no valid state can hold (plausible-looking values, such as another
# finite weight, are valid checkpoints and not attempted)
def _ops(path: tuple[Any, ...], value: Any) -> list[tuple[str, Any]]:
    in_opt_state = len(path) >= 3 and path[0] == "optimizer" and path[1] == "state"
    ops: list[tuple[str, Any]] = []
    if isinstance(value, torch.Tensor):
        ops.append(("extra dimension", lambda t: t.unsqueeze(-1)))
        if t_rows(value) >= 2:
            ops.append(("one row dropped", lambda t: t[1:]))
        if value.is_floating_point():
            if value.numel():
                ops.append(("NaN inside", lambda t: t.clone().view(-1).index_fill_(
                    0, torch.tensor([t.numel() // 2]), float("nan")).view(t.shape)))
            ops.append(("retyped to int64", lambda t: t.to(torch.int64)))
        elif value.dtype not in (torch.uint8, torch.bool):
            if value.numel():
                ops.append(("negative ids", lambda t: t - 10**6))
                ops.append(("huge ids", lambda t: t + 10**6))
            ops.append(("retyped to float", lambda t: t.to(torch.float64) + 0.5))
        else:
            ops.append(("retyped to float", lambda t: t.to(torch.float64)))
    elif isinstance(value, bool):
        ops.append(("bool -> string", lambda v: "yes"))
    elif isinstance(value, int):
        ops.append(("negative", lambda v: -7))
        ops.append(("fractional", lambda v: v + 0.5))
        ops.append(("string", lambda v: "7"))
    elif isinstance(value, float):
        ops.append(("NaN", lambda v: float("nan")))
        ops.append(("negative", lambda v: -abs(v) - 1.0))
        ops.append(("string", lambda v: "0.5"))
    elif isinstance(value, list):
        ops.append(("list -> string", lambda v: "oops"))
        ops.append(("junk appended", lambda v: [*v, -1]))
    # an optimizer state entry deleted (or absent) is what a parameter that never received
    # a gradient has, so it is a valid state: not attempted
    elif isinstance(value, dict) and value and not in_opt_state and path != ("optimizer",
                                                                               "state"):
        ops.append(("key deleted", "delete"))
        ops.append(("dict -> None", lambda v: None))
    return ops


def t_rows(t: torch.Tensor) -> int:
    return int(t.shape[0]) if t.dim() else 0


def checkpoint_cases(rng: random.Random, work: Path) -> list[tuple[str, str, Any]]:
    base_dir = work / "ckpt_base"
    base_dir.mkdir()
    run = build(copy.deepcopy(TASKFREE))
    run.learner.fit(run.stream, stop_after=12)
    Checkpointer(base_dir, run.config, every=5).save(run.learner)
    base = (base_dir / "checkpoint.pt").read_bytes()
    payload0 = torch.load(base_dir / "checkpoint.pt", weights_only=True)
    leaves = [(p, v) for p, v in _leaves(payload0["learner"])
              if not (p[0] == "env") and not (isinstance(v, str))]
    candidates = [(p, v, label, op) for p, v in leaves for label, op in _ops(p, v)]
    rng.shuffle(candidates)
    # every part of the state at least once, then random picks
    seen_parts: dict[Any, int] = Counter()
    picked = []
    for c in candidates:
        part = c[0][:3]
        if seen_parts[part] < 1:
            picked.append(c)
            seen_parts[part] += 1
    rest = [c for c in candidates if c not in picked]
    picked += rest[: max(0, 44 - len(picked))]
    cases: list[tuple[str, str, Any]] = []

    def attempt(change: Any) -> tuple[str, str]:
        d = work / f"c{len(cases)}_{rng.randrange(10**9)}"
        d.mkdir()
        payload = torch.load(io.BytesIO(base), weights_only=True)
        change(payload)
        payload["digest"] = payload_digest(payload)
        torch.save(payload, d / "checkpoint.pt")
        return cli_attempt(["run", "--resume", str(d), "--quiet"])

    for path, _, label, op in picked[:44]:
        def change(payload: Any, path: tuple[Any, ...] = path, op: Any = op) -> None:
            parent = _get(payload["learner"], path[:-1])
            if op == "delete":
                node = parent[path[-1]]
                del node[rng.choice(sorted(node, key=str))]
            else:
                parent[path[-1]] = op(parent[path[-1]])
        where = ".".join(map(str, path))
        cases.append(("corrupted checkpoint", f"{where[-46:]}: {label}",
                      lambda c=change: attempt(c)))
    for label, change in (
            ("finished = 'yes'", lambda p: p.update(finished="yes")),
            ("schedule every_seconds NaN", lambda p: p.update(
                schedule={"every": 5, "every_seconds": float("nan")})),
            ("torch_threads = -2", lambda p: p.update(torch_threads=-2)),
            ("timing NaN", lambda p: p["timing"].update(wall_time_s=float("nan"))),
            # the config stored in a checkpoint is what its run is rebuilt from: an edited
            # config is a different run (and a plugin may anneal the optimizer's lr, so the
            # lr in the optimizer state cannot be held to the config's); not attempted
            ("format 7", lambda p: p.update(format=7)),
            ("learner state a list", lambda p: p.update(learner=[1, 2]))):
        cases.append(("corrupted checkpoint", label, lambda c=change: attempt(c)))

    def raw(mutate: Any) -> tuple[str, str]:
        d = work / f"r{rng.randrange(10**9)}"
        d.mkdir()
        (d / "checkpoint.pt").write_bytes(mutate(bytearray(base)))
        return cli_attempt(["run", "--resume", str(d), "--quiet"])

    for i in range(6):
        def flip(b: bytearray, k: int = i) -> bytes:
            r = random.Random(k)
            for _ in range(1 + k):
                b[r.randrange(len(b) // 4, len(b))] ^= 1 << r.randrange(8)
            return bytes(b)
        cases.append(("corrupted checkpoint", f"{i + 1} bit(s) flipped on disk",
                      lambda f=flip: raw(f)))
    for frac in (0.0, 0.3, 0.9):
        cases.append(("corrupted checkpoint", f"truncated to {frac:.0%}",
                      lambda fr=frac: raw(lambda b: bytes(b[: int(len(b) * fr)]))))
    cases.append(("corrupted checkpoint", "a text file", lambda: raw(lambda b: b"not a ckpt\n")))
    return cases


def disk_cases(work: Path) -> list[tuple[str, str, Any]]:
    cfg = work / "disk.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))

    def full(target: str, extra: list[str]) -> tuple[str, str]:
        out = work / f"disk_{target}_{len(extra)}"
        real_save, real_write = torch.save, Path.write_text

        def save(obj: Any, f: Any, *a: Any, **kw: Any) -> Any:
            if target in str(getattr(f, "name", f)):
                if hasattr(f, "write"):
                    f.write(b"partial")
                raise OSError(28, "No space left on device")
            return real_save(obj, f, *a, **kw)

        def write_text(self: Path, data: str, *a: Any, **kw: Any) -> Any:
            if target in self.name:
                real_write(self, data[: len(data) // 2], *a, **kw)
                raise OSError(28, "No space left on device")
            return real_write(self, data, *a, **kw)

        torch.save, Path.write_text = save, write_text  # type: ignore[method-assign]
        try:
            verdict, msg = cli_attempt(["run", str(cfg), "--out", str(out), "--quiet", *extra])
        finally:
            torch.save, Path.write_text = real_save, real_write  # type: ignore[method-assign]
        if verdict == "clean_error" and list(out.glob(".*.tmp")):
            return "silently_wrong", "temporary file left behind"
        return verdict, msg

    return [("full disk", "while writing model.pt", lambda: full("model.pt", [])),
            ("full disk", "while writing metrics.json", lambda: full("metrics.json", [])),
            ("full disk", "while writing a checkpoint",
             lambda: full("checkpoint.pt", ["--checkpoint-every", "3"]))]


def api_cases() -> list[tuple[str, str, Any]]:
    from lifelong.backbones import mlp
    from lifelong.learner import Learner
    from lifelong.stream.adapters import from_river, from_tensors
    from lifelong.testing import make_learner

    def river_fit(rows: Any, num_classes: int, head: int | None = None) -> None:
        s = from_river(rows, num_classes=num_classes, n_samples=20)
        if head is None:
            make_learner([], s).fit(s)
        else:
            Learner(mlp(input_shape=s.input_shape, num_classes=head, hidden=[4]),
                    device="cpu").fit(s)

    return [
        ("Python API", "from_tensors(0-dim x)",
         lambda: api_attempt(lambda: from_tensors(torch.tensor(1.0), torch.tensor(1)))),
        ("Python API", "from_tensors(0-dim y)",
         lambda: api_attempt(lambda: from_tensors(torch.randn(4, 2), torch.tensor(1)))),
        ("Python API", "from_tensors(NaN inputs)",
         lambda: api_attempt(lambda: from_tensors(torch.full((4, 2), float("nan")),
                                                  torch.arange(4) % 2))),
        ("Python API", "from_tensors(negative labels)",
         lambda: api_attempt(lambda: from_tensors(torch.randn(4, 2), torch.tensor([0, -1, 0, 1])))),
        ("Python API", "river rows as bare dicts",
         lambda: api_attempt(lambda: river_fit(lambda: ({"a": 1.0} for _ in range(20)), 2))),
        ("Python API", "head too small, no test set",
         lambda: api_attempt(lambda: river_fit(
             lambda: (({"a": 1.0, "b": 0.0}, i % 5) for i in range(20)), 5, head=2))),
        ("Python API", "river label out of range",
         lambda: api_attempt(lambda: river_fit(lambda: (({"a": 1.0}, 7) for _ in range(20)), 2))),
    ]


def bench_cases(work: Path) -> list[tuple[str, str, Any]]:
    cfg = work / "bench.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    blocker = work / "afile"
    blocker.write_text("x")

    def flaky() -> tuple[str, str]:
        import lifelong.run as run_mod
        from lifelong.errors import NonFiniteLossError

        real = run_mod.run_config

        def cell(raw: Any, **kw: Any) -> Any:
            if raw["strategy"] == "joint" and raw["seed"] == 1:
                raise NonFiniteLossError("the training loss is NaN or infinite at batch 2")
            return real(raw, **kw)

        run_mod.run_config = cell
        out = work / "bench_out"
        try:
            verdict, msg = cli_attempt(["bench", "--config", str(cfg), "--strategies",
                                        "naive,joint", "--seeds", "0,1", "--out", str(out),
                                        "--quiet"])
        finally:
            run_mod.run_config = real
        runs = [json.loads(ln) for ln in (out / "bench_runs.jsonl").read_text().splitlines()]
        if verdict == "clean_error" and sum(r["status"] == "ok" for r in runs) != 3:
            return "silently_wrong", "finished runs lost"
        return verdict, msg

    def bench(*args: str) -> Any:
        return lambda: cli_attempt(["bench", "--config", str(cfg), "--quiet", *args])

    return [("lifelong bench", "--seeds 0,a", bench("--strategies", "naive", "--seeds", "0,a")),
            ("lifelong bench", "--strategies naive,ERR", bench("--strategies", "naive,ERR")),
            ("lifelong bench", "--out under a file",
             bench("--strategies", "naive", "--out", str(blocker / "x"))),
            ("lifelong bench", "--set train.lr=nan", bench("--strategies", "naive", "--set",
                                                           "train.lr=.nan")),
            ("lifelong bench", "one run fails (NaN loss)", flaky)]


# ---------------------------------------------------------------------------- kills


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lifelong.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _stable(path: Path) -> Any:
    m = json.loads((path / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in VOLATILE}


def _same_weights(a: Path, b: Path) -> bool:
    wa = torch.load(a / "model.pt", weights_only=True)
    wb = torch.load(b / "model.pt", weights_only=True)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def kill_cases(rng: random.Random, work: Path, n: int) -> list[tuple[str, str, Any]]:
    cfg = work / "killed.yaml"
    cfg.write_text(yaml.safe_dump(KILLED))
    ref = work / "ref"
    state: dict[str, Any] = {}

    def reference() -> None:
        if "ok" not in state:
            r = subprocess.run(_cli("run", str(cfg), "--out", str(ref), "--quiet"), env=_env(),
                               capture_output=True, text=True, timeout=600)
            state["ok"] = r.returncode == 0
            state["err"] = r.stderr[-300:]

    def attempt(i: int, every: int, delays: list[float], how: int) -> tuple[str, str]:
        reference()
        if not state["ok"]:
            return "traceback", "reference run failed: " + state["err"]
        out = work / f"kill{i}"
        cmd = _cli("run", str(cfg), "--out", str(out), "--checkpoint-every", str(every),
                   "--quiet")
        t0 = time.time()
        for delay in delays:
            proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            while not (out / "checkpoint.pt").exists() and proc.poll() is None:
                if time.time() - t0 > 300:
                    proc.kill()
                    return "hang", "no checkpoint written"
                time.sleep(0.01)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL if how == signal.SIGKILL else how)
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                return "hang", "did not stop after the signal"
            if how != signal.SIGKILL and proc.returncode not in (130, 0, -how):
                return "traceback", f"exit {proc.returncode} after signal: {err[-120:]}"
            cmd = _cli("run", "--resume", str(out), "--quiet")
        from lifelong.checkpoint import load_checkpoint

        if load_checkpoint(out)["finished"] and len(delays) == 1:
            note = "the run finished before the signal"
            verdict = "ok"
        else:
            note, verdict = f"killed {len(delays)}x, checkpoint every {every}", "resume_identical"
        for _ in range(4):
            r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
            if r.returncode == 0:
                break
            if "already finished" in r.stderr:
                break
            if r.returncode != 2 or "Traceback" in r.stderr:
                return "traceback", r.stderr.strip()[-120:]
        else:
            return "hang", "resume never finished"
        if not (out / "metrics.json").exists():
            return "silently_wrong", "no metrics after resume"
        if _stable(out) != _stable(ref) or not _same_weights(out, ref):
            return "silently_wrong", "resumed run differs from the uninterrupted one"
        return verdict, note

    cases = []
    for i in range(n):
        every = rng.choice([3, 7, 11, 25])
        kills = 1 if i % 3 else 2
        delays = [rng.uniform(0.0, 0.8) for _ in range(kills)]
        how = signal.SIGKILL if i < n - 2 else (signal.SIGTERM if i == n - 2 else signal.SIGINT)
        name = {signal.SIGKILL: "SIGKILL", signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
        cases.append(("kill and resume",
                      f"{name[how]} x{kills} at +{', '.join(f'{d:.2f}s' for d in delays)}",
                      lambda i=i, e=every, d=delays, h=how: attempt(i, e, d, h)))
    return cases


# ---------------------------------------------------------------------------- main


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--only", help="run one class (a substring of its name), for development")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="lifelong-chaos-"))
    t_start = time.time()
    try:
        cases = (yaml_cases(rng, work) + params_cases(rng, work) + checkpoint_cases(rng, work)
                 + disk_cases(work) + api_cases() + bench_cases(work)
                 + kill_cases(rng, work, args.kills))
        if args.only:
            cases = [c for c in cases if args.only in c[0]]
        results = []
        for cls, label, fn in cases:
            t0 = time.time()
            try:
                verdict, detail = fn()
            except Exception as exc:  # noqa: BLE001 - a harness failure is a traceback too
                verdict, detail = "traceback", f"harness: {type(exc).__name__}: {exc}"[:90]
            results.append((cls, label, verdict, detail, time.time() - t0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by_class: dict[str, Counter[str]] = {}
    print(f"{'class':<24} {'attempt':<58} {'verdict':<16} seconds  detail")
    for cls, label, verdict, detail, secs in results:
        by_class.setdefault(cls, Counter())[verdict] += 1
        print(f"{cls:<24} {label[:58]:<58} {verdict:<16} {secs:6.2f}   {detail[:70]}")
    print()
    kinds = ("clean_error", "resume_identical", "ok", "traceback", "silently_wrong", "hang")
    print(f"{'class':<24} {'n':>4} " + " ".join(f"{k:>16}" for k in kinds))
    for cls, c in by_class.items():
        print(f"{cls:<24} {sum(c.values()):>4} " + " ".join(f"{c[k]:>16}" for k in kinds))
    total = Counter(v for _, _, v, _, _ in results)
    print(f"\nseed {args.seed}, torch threads {torch.get_num_threads()}, "
          f"{time.time() - t_start:.0f} s")
    summary = {"attempts": len(results), "clean_errors": total["clean_error"],
               "tracebacks": total["traceback"], "silently_wrong": total["silently_wrong"],
               "hangs": total["hang"], "resume_identical": total["resume_identical"],
               "torch_threads": torch.get_num_threads()}
    print(json.dumps(summary))
    return 0 if not (summary["tracebacks"] or summary["silently_wrong"] or summary["hangs"]) \
        else 1


if __name__ == "__main__":
    sys.exit(main_())
