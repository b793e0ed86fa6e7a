"""train.threads: a rule from the step's arithmetic, recorded, and applied to every pool."""

import json

import pytest
import torch

from lifelong.backbones import cnn, mlp, resnet
from lifelong.cli import main
from lifelong.errors import ConfigError
from lifelong.threads import FLOPS_PER_THREAD, choose_threads, step_flops

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
    n, why = choose_threads(big, (1, 28, 28), 32, cores=4)
    assert flops > 4 * FLOPS_PER_THREAD and n == 4 and "MFLOP" in why
    assert choose_threads(big, (1, 28, 28), 32, cores=64)[0] == int(flops // FLOPS_PER_THREAD)
    assert choose_threads(big, (1, 28, 28), 32, setting=1, cores=4) == (1, "set by train.threads")


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
