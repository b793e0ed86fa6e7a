"""train.threads: a rule from the step's arithmetic, recorded, and applied to every pool."""

import json
import os

import pytest
import torch
import yaml

from lifelong.backbones import cnn, mlp, resnet
from lifelong.checkpoint import Checkpointer
from lifelong.cli import main
from lifelong.errors import ConfigError
from lifelong.plugins.regularization import LwF
from lifelong.plugins.replay import AGEM, ER, GEM, DERpp
from lifelong.run import build
from lifelong.threads import (
    FLOPS_PER_THREAD,
    available_cores,
    choose_threads,
    idle_cores,
    plugin_rows,
    step_flops,
)

BLOBS = """
seed: 1
device: cpu
stream: {name: blobs, n_experiences: 2, n_per_class: 10}
backbone: {name: mlp, hidden: [16]}
train: {batch_size: 5, lr: 0.05}
"""


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_step_flops_count_linear_and_conv_layers():
    m = mlp(input_shape=(1, 28, 28), num_classes=10, hidden=[256, 256])
    per_sample = 2 * (784 * 256 + 256 * 256 + 256 * 10)
    assert step_flops(m, (1, 28, 28), 10) == 3 * per_sample * 10
    c = cnn(input_shape=(1, 8, 8), num_classes=3, channels=[4])
    # conv: 2 * (1 * 3 * 3) * 4 channels * 8 * 8 outputs; head: 2 * (4 * 4 * 4) * 3
    assert step_flops(c, (1, 8, 8), 2) == 3 * 2 * (2 * 9 * 4 * 64 + 2 * 64 * 3)


def test_rule_gives_one_thread_to_small_steps_and_more_to_large_ones():
    small = mlp(input_shape=(1, 28, 28), num_classes=10)
    assert choose_threads(small, (1, 28, 28), 10, cores=16)[0] == 1
    big = resnet(input_shape=(1, 28, 28), num_classes=10)
    flops = step_flops(big, (1, 28, 28), 32)
    n, why = choose_threads(big, (1, 28, 28), 32, cores=4, idle=None)
    assert flops > 4 * FLOPS_PER_THREAD and n == 4 and "MFLOP" in why
    assert choose_threads(big, (1, 28, 28), 32, cores=64, idle=None)[0] == int(flops // FLOPS_PER_THREAD)
    assert choose_threads(big, (1, 28, 28), 32, setting=1, cores=4) == (1, "set by train.threads")


def test_plugins_rows_count_and_gem_on_an_mlp_gets_threads_the_batch_alone_would_not():
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    per_row = step_flops(model, (1, 28, 28), 1)
    er, derpp, agem, gem = ER(mem_size=50), DERpp(mem_size=50, batch_size=32), AGEM(), GEM()
    assert plugin_rows([er], 10) == 10 and plugin_rows([ER(mem_size=50, batch_size=7)], 10) == 7
    assert plugin_rows([derpp], 10) == 64 and plugin_rows([agem], 10) == 128
    assert plugin_rows([gem], 10) == 2560 and plugin_rows([LwF(), object()], 9) == 3
    assert plugin_rows([er, derpp], 10) == 74

    class Bad:
        name = "bad"

        def rows_per_step(self, batch_size):
            return "many"

    with pytest.raises(ConfigError, match="plugin 'bad': rows_per_step"):
        plugin_rows([Bad()], 10)
    assert choose_threads(model, (1, 28, 28), 10, cores=8, plugins=[er], idle=None)[0] == 1
    n, why = choose_threads(model, (1, 28, 28), 10, cores=8, plugins=[gem], idle=None)
    assert n == min(8, int(per_row * 2570 // FLOPS_PER_THREAD)) > 1 and "10+2560 rows" in why
    assert choose_threads(model, (1, 28, 28), 10, cores=8, idle=None)[0] == 1


def test_idle_cores_cap_the_count_and_are_measured_only_when_more_than_one_thread_is_wanted():
    model = mlp(input_shape=(1, 28, 28), num_classes=10)
    calls = []

    def idle():
        calls.append(1)
        return 1.2

    n, why = choose_threads(model, (1, 28, 28), 10, cores=8, plugins=[GEM()], idle=idle)
    assert n == 1 and calls and "1.2 idle at the start: 1 instead of" in why
    assert choose_threads(model, (1, 28, 28), 10, cores=8, plugins=[GEM()], idle=3.6)[0] == 4
    calls.clear()
    assert choose_threads(model, (1, 28, 28), 10, cores=8, idle=idle)[0] == 1 and not calls
    free = idle_cores(0.01)
    assert free is None or 0.0 <= free <= (os.cpu_count() or 1)


def test_a_resumed_auto_run_keeps_the_checkpoint_count_and_a_set_count_wins():
    big = resnet(input_shape=(1, 28, 28), num_classes=10)
    assert choose_threads(big, (1, 28, 28), 32, cores=4, resumed=3, idle=None)[0] == 3
    n, why = choose_threads(big, (1, 28, 28), 32, cores=4, resumed=3, idle=None)
    assert "checkpoint recorded" in why
    n, why = choose_threads(big, (1, 28, 28), 32, cores=2, resumed=3, idle=None)
    assert n == 2 and why == choose_threads(big, (1, 28, 28), 32, cores=2, idle=None)[1]
    assert choose_threads(big, (1, 28, 28), 32, cores=4, resumed=3, setting=1) == (1, "set by train.threads")


def test_resume_runs_with_the_count_the_checkpoint_recorded(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    torch.set_num_threads(1)
    run = build(yaml.safe_load(BLOBS))
    run.learner.fit(run.stream, stop_after=2)
    torch.set_num_threads(2)  # the first run's count, as the checkpoint records it
    Checkpointer(out, run.config, every=1).save(run.learner)
    torch.set_num_threads(1)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["threads"] == min(2, available_cores()) and "checkpoint recorded" in m["threads_rule"]


@pytest.mark.parametrize("bad", [0, -2, "two", 2.5, True, 999])
def test_bad_thread_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="train.threads"):
        choose_threads(mlp(input_shape=(4,), num_classes=2), (4,), 1, setting=bad, cores=2)


def test_the_choice_is_applied_printed_and_recorded(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BLOBS)
    torch.set_num_threads(2)
    assert main(["run", str(cfg), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "1 thread(s) (auto:" in out
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["threads"] == 1 and m["threads_rule"].startswith("auto:")
    assert torch.get_num_threads() == 1
    assert main(["run", str(cfg), "--out", str(tmp_path / "b"), "--threads", "1", "--quiet"]) == 0
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["config"]["train"]["threads"] == 1 and m["threads_rule"] == "set by train.threads"


def test_bad_threads_flag_is_one_error_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BLOBS)
    assert main(["run", str(cfg), "--threads", "lots", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --threads")
