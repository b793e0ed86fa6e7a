"""examples/kd_er.yaml: a teacher from a finished run guides KD + ER, and resumes exactly after a kill."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lifelong.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL_TEACHER = ["--set", "backbone.hidden=[32]", "--set", "train.epochs=1"]
VOLATILE = {"wall_time_s", "samples_per_second", "peak_rss_mb", "peak_cuda_mb", "config"}


def _student_args(teacher: Path) -> list[str]:
    return ["--set", f"plugins.1.teacher.run={teacher}", "--set", "device=cpu", "--quiet"]


def test_kd_er_example_resumes_exactly_after_a_kill(tmp_path):
    teacher = tmp_path / "teacher"
    assert main(["run", str(ROOT / "examples/teacher.yaml"), "--out", str(teacher),
                 "--set", "device=cpu", "--quiet", *SMALL_TEACHER]) == 0
    assert (teacher / "model.json").is_file()
    ref = tmp_path / "ref"
    assert main(["run", str(ROOT / "examples/kd_er.yaml"), "--out", str(ref),
                 *_student_args(teacher)]) == 0

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "run",
                             str(ROOT / "examples/kd_er.yaml"), "--out", str(out),
                             "--checkpoint-every", "9", *_student_args(teacher)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 240
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert not state["finished"], "the run ended before it was killed"
    kd_state = next(v for k, v in state["learner"]["plugins"].items() if k.endswith(":kd"))
    assert len(kd_state["teacher_digest"]) == 16
    res = subprocess.run([sys.executable, "-m", "lifelong.cli", "run", "--resume", str(out),
                          "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads((out / "metrics.json").read_text())
    want = json.loads((ref / "metrics.json").read_text())
    assert {k: v for k, v in got.items() if k not in VOLATILE} == \
        {k: v for k, v in want.items() if k not in VOLATILE}
    wa = torch.load(out / "model.pt", weights_only=True)
    wb = torch.load(ref / "model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
