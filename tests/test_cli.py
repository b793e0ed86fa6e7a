"""`lifelong run|list|bench|plot` and the config validation behind them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lifelong.cli import main
from lifelong.config import apply_overrides, resolve
from lifelong.errors import ConfigError

BLOBS = """
seed: 1
device: cpu
stream: {name: blobs, n_experiences: 2, n_per_class: 20}
backbone: {name: mlp, hidden: [16]}
strategy: naive
train: {batch_size: 5, lr: 0.05}
eval: {every: 4}
"""


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_metrics_json(tmp_path, capsys):
    code, out, err = run_cli(["run", write(tmp_path, BLOBS), "--out", str(tmp_path / "o"),
                              "--quiet"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    for key in ("accuracy_matrix", "final_avg_accuracy", "avg_forgetting", "bwt", "fwt",
                "samples_per_second", "wall_time_s", "peak_rss_mb", "config"):
        assert key in m, key
    assert len(m["accuracy_matrix"]) == 2 and len(m["accuracy_matrix"][0]) == 2
    assert m["config"]["stream"]["name"] == "blobs" and m["config"]["seed"] == 1
    assert m["samples_seen"] == 80 and m["anytime_accuracy"]


def test_run_prints_tables(tmp_path, capsys):
    code, out, _ = run_cli(["run", write(tmp_path, BLOBS)], capsys)
    assert code == 0
    assert "accuracy matrix" in out and "final_avg_accuracy" in out


def test_set_overrides_keys(tmp_path, capsys):
    code, _, err = run_cli(["run", write(tmp_path, BLOBS), "--quiet", "--out",
                            str(tmp_path / "o"), "--set", "train.lr=0.01",
                            "--set", "stream.n_experiences=3"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["config"]["train"]["lr"] == 0.01 and len(m["accuracy_matrix"]) == 3


@pytest.mark.parametrize("text, fragment", [
    ("stream: {name: blobs\n  bad", "invalid YAML at line"),
    ("stream: {name: blobs}\ntrian: {lr: 0.1}", "trian: unknown top-level key"),
    ("stream: {name: blobs}\ntrain: {lr: fast}", "train.lr: expected float or int, got str"),
    ("stream: {name: blobs}\ntrain: {batchsize: 3}", "train.batchsize: unknown key"),
    ("stream: {name: blobz}", "unknown stream 'blobz' (did you mean 'blobs'?)"),
    ("stream: {name: blobs, n_exp: 2}", "stream.n_exp: unknown parameter of stream 'blobs'"),
    ("stream: {name: blobs, n_experiences: two}", "stream.n_experiences: expected int"),
    ("stream: {name: blobs}\nplugins: [{name: prequental}]", "unknown plugin 'prequental'"),
    ("stream: {name: blobs}\nplugins: [{name: anytime, evry: 3}]",
     "plugins[0] (anytime).evry: unknown parameter"),
    ("stream: {name: blobs}\nstrategy: naiv", "unknown strategy 'naiv'"),
    ("stream: {name: blobs}\ntrain: {optimizer: rmsprop}", "train.optimizer must be one of"),
    ("stream: {name: blobs}\ntrain: {batch_size: 0}", "train.batch_size must be >= 1"),
    ("stream: {name: blobs}\ndevice: cuda:7", "CUDA is not available"),
    ("backbone: {name: mlp}", "stream: missing"),
    ("- just\n- a list", "top level must be a mapping"),
    ("stream: {name: blobs}\nbackbone: {name: cnn, channels: [4]}\n"
     "eval: {matrix: true}", None),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, text, fragment):
    if fragment is None:  # a valid config that the backbone refuses: blobs are 1x4x4 images
        fragment = ""
    code, out, err = run_cli(["run", write(tmp_path, text), "--quiet"], capsys)
    if "CUDA" in (fragment or "") and __import__("torch").cuda.is_available():
        pytest.skip("CUDA present")
    if not fragment:
        assert code in (0, 2)
        return
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(["run", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "does not exist" in err


def test_conflicting_plugins_refused_before_training(tmp_path, capsys, monkeypatch):
    from lifelong import hookimpl
    from lifelong.registry import get_registry

    class Balance:
        """Toy loss combiner."""

        def __init__(self, *, weight: float = 1.0):
            self.weight = weight

        @hookimpl
        def combine_losses(self, learner, step, losses):
            return sum(losses.values()) * self.weight

    reg = get_registry()
    monkeypatch.setitem(reg._entries["plugin"], "balance_a", reg._entries["plugin"]["anytime"])
    reg._entries["plugin"].pop("balance_a")
    reg.add("plugin", "balance_a", Balance)
    reg.add("plugin", "balance_b", Balance)
    try:
        text = BLOBS + "plugins: [balance_a, {name: balance_b, weight: 2.0}]\n"
        code, _, err = run_cli(["run", write(tmp_path, text), "--quiet"], capsys)
    finally:
        reg._entries["plugin"].pop("balance_a")
        reg._entries["plugin"].pop("balance_b")
    assert code == 2
    assert "combine_losses" in err and "only one plugin" in err


def test_unwritable_out_dir_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["run", write(tmp_path, BLOBS), "--out", str(blocker / "sub")],
                           capsys)
    assert code == 2 and "cannot write there" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_out_dir(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run_cli(["run", write(tmp_path, BLOBS), "--out", str(ro)], capsys)
    assert code == 2 and "cannot write there" in err


def test_list_shows_every_kind(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in ("split_mnist", "blobs", "mlp", "cnn", "resnet", "prequential", "naive",
                 "joint", "cumulative"):
        assert name in out


def test_bench_grid(tmp_path, capsys):
    code, out, err = run_cli(["bench", "--config", write(tmp_path, BLOBS), "--strategies",
                              "naive,joint", "--seeds", "0,1", "--out", str(tmp_path / "b")],
                             capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())
    acc = {r["strategy"]: r["final_avg_accuracy"] for r in rows}
    assert acc["joint"] > acc["naive"]


def test_plot_writes_png(tmp_path, capsys):
    assert main(["run", write(tmp_path, BLOBS), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    code, _, err = run_cli(["plot", str(tmp_path / "o")], capsys)
    assert code == 0, err
    png = tmp_path / "o" / "plots" / "accuracy_matrix.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_overrides_parse_yaml_values_and_list_indices():
    cfg = {"plugins": [{"name": "anytime", "every": 3}], "strategy": "naive"}
    out = apply_overrides(cfg, ["plugins.0.every=7", "train.lr=1e-3", "strategy.name=joint"])
    assert out["plugins"][0]["every"] == 7 and out["train"]["lr"] == 1e-3
    assert out["strategy"] == {"name": "joint"}
    with pytest.raises(ConfigError, match="index 3 is out of range"):
        apply_overrides(cfg, ["plugins.3.every=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(cfg, ["train.lr"])


def test_resolve_fills_defaults():
    cfg = resolve({"stream": {"name": "blobs"}})
    assert cfg["train"]["batch_size"] == 10 and cfg["backbone"] == {"name": "mlp"}
    assert cfg["eval"]["prequential"] is True


def test_examples_are_valid_configs():
    from lifelong.config import load_yaml

    root = Path(__file__).parent.parent / "examples"
    # every run config, in subfolders too (examples/grids/ holds bench grids, not run configs)
    examples = sorted(p for p in root.rglob("*.yaml") if p.relative_to(root).parts[0] != "grids")
    assert examples and any(p.parent.name == "der_paper" for p in examples)
    for path in examples:
        resolve(load_yaml(path))


def test_list_groups_plugins_by_family_and_never_cuts_parameters(capsys):
    from lifelong.registry import get_registry

    code, out, _ = run_cli(["list", "plugins"], capsys)     # the plural is accepted
    assert code == 0
    for family in ("boundaries", "evaluation", "regularization", "replay"):
        assert family in out
    at = [out.index(f"│ {w} ") for w in ("boundaries", "adwin", "evaluation", "prequential",
                                           "regularization", "ewc", "replay", "der")]
    assert at == sorted(at)
    assert "…" not in out
    reg = get_registry()
    for e in reg.entries("plugin"):   # the family is the module's: lifelong.plugins.<family>.<m>
        if e.origin == "built-in":
            assert e.factory.__module__.split(".")[2] == e.family, e
        for k, p in e.parameters().items():       # every parameter in full, at 80 columns
            assert (f"{k}={p.default!r}" if p.default is not p.empty else k) in out
    code, out, _ = run_cli(["list"], capsys)
    assert "strategies" in out and "strategys" not in out


def test_version(capsys):
    from lifelong import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out


def test_progress_total_known_for_streams_of_known_length():
    from lifelong.cli import _total_samples
    from lifelong.stream.catalog import split_digits

    stream = split_digits()
    assert _total_samples(stream, 2) == 2 * sum(e.n_samples for e in stream.experiences())
