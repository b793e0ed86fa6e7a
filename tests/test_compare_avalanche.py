"""``lifelong bench --against avalanche``: the mapping, the missing extra, torchvision beside a CPU
torch, and (where avalanche-lib is installed) both libraries on the same runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lifelong.cli import main
from lifelong.compare import avalanche as cmp
from lifelong.compare.avalanche import AvalancheSpec, NoCounterpart, avalanche_spec, plugin_params
from lifelong.errors import ConfigError
from lifelong.registry import get_registry
from lifelong.run import make_plugin

ROOT = Path(__file__).resolve().parent.parent
BLOBS = """
seed: 1
device: cpu
stream: {name: blobs, n_experiences: 3, n_per_class: 20}
backbone: {name: mlp, hidden: [16]}
train: {batch_size: 5, lr: 0.05}
"""


def preset_spec(strategy: str, n_experiences: int = 5, run_batch_size: int = 10,
                **params) -> AvalancheSpec | NoCounterpart:
    specs = get_registry().get("strategy", strategy).factory(**params).plugins
    plugins = [make_plugin(s["name"], {k: v for k, v in s.items() if k != "name"}, seed=0)
               for s in specs]
    return avalanche_spec([(s["name"], plugin_params(p)) for s, p in zip(specs, plugins)],
                          n_experiences=n_experiences, batch_size=run_batch_size)


# The ten strategies at their defaults, by hand from each plugin's documented defaults and
# Avalanche's way of writing the same objective.
EXPECTED = {
    "naive": ("Naive", {}, None, None),
    "ewc": ("EWC", {"ewc_lambda": 50.0, "mode": "separate"}, None, None),
    "online_ewc": ("EWC", {"ewc_lambda": 50.0, "mode": "online", "decay_factor": 1.0}, None, None),
    "si": ("SynapticIntelligence", {"si_lambda": 0.2, "eps": 0.1}, None, None),
    "lwf": ("LwF", {"alpha": 1.0, "temperature": 2.0}, None, None),
    "er": ("Naive", {}, {"mem_size": 200, "batch_size_mem": 10}, None),
    "gem": ("GEM", {"patterns_per_exp": 1024, "memory_strength": 0.5}, None, None),
    "agem": ("AGEM", {"patterns_per_exp": 40, "sample_size": 128}, None, None),
    "der": ("DER", {"mem_size": 200, "batch_size_mem": 10, "alpha": 0.2, "beta": 0.0}, None, None),
    "derpp": ("DER", {"mem_size": 200, "batch_size_mem": 128, "alpha": 0.2, "beta": 1.0}, None,
              None),
    "dgr": ("GenerativeReplay", {"increasing_replay_size": True, "replay_size": None}, None,
            {"latent_dim": 32, "lr": 1e-3, "epochs": 10}),
}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_each_strategy_maps_to_avalanche_with_the_same_hyper_parameters(strategy):
    spec = preset_spec(strategy)
    assert isinstance(spec, AvalancheSpec)
    assert (spec.strategy, spec.kwargs, spec.replay, spec.generator) == EXPECTED[strategy]


def test_the_mapping_follows_non_default_parameters():
    assert preset_spec("ewc", ewc_lambda=30.0).kwargs["ewc_lambda"] == 15.0
    assert preset_spec("online_ewc", gamma=0.7).kwargs["decay_factor"] == 0.7
    assert preset_spec("si", c=0.5, xi=0.01).kwargs == {"si_lambda": 1.0, "eps": 0.01}
    assert preset_spec("lwf", lwf_lambda=2.0, temperature=3.0).kwargs == {"alpha": 2.0,
                                                                          "temperature": 3.0}
    assert preset_spec("er", mem_size=500, batch_size=32).replay == {"mem_size": 500,
                                                                     "batch_size_mem": 32}
    assert preset_spec("er", batch_size=None, mem_size=50).replay["batch_size_mem"] == 10
    assert preset_spec("gem", mem_size=200, memory_strength=0.1, n_experiences=4).kwargs == {
        "patterns_per_exp": 50, "memory_strength": 0.1}
    assert preset_spec("agem", mem_size=100, batch_size=16).kwargs == {"patterns_per_exp": 20,
                                                                      "sample_size": 16}
    assert preset_spec("derpp", mem_size=300, batch_size=8, alpha=0.3, beta=0.5).kwargs == {
        "mem_size": 300, "batch_size_mem": 8, "alpha": 0.3, "beta": 0.5}
    # a fixed ratio r: b real + n generated rows under one mean weigh the real ones b/(b+n) = r
    dgr = preset_spec("dgr", ratio=0.25, generator_steps=3, latent_dim=8)
    assert dgr.kwargs == {"increasing_replay_size": False, "replay_size": 30}
    assert dgr.generator == {"latent_dim": 8, "lr": 1e-3, "epochs": 3}
    # Avalanche's own variants of ER and DER carry no note about the memory policy
    er_av = avalanche_spec([("er", {"memory": "experience_balanced_end",
                                    "replay_loss": "joint_mean"})], n_experiences=5, batch_size=10)
    assert er_av.notes == ()
    assert any("reservoir" in n for n in preset_spec("er").notes)


@pytest.mark.parametrize("plugins, kw, words", [
    ([("mas", {})], {}, "'mas' is not mapped"),
    ([("pnn", {})], {}, "'pnn' is not mapped"),
    ([("ewc", {"consolidate_every": 50})], {}, "consolidate_every=50"),
    ([("lwf", {"multihead": True})], {}, "multihead"),
    ([("ewc", {}), ("er", {})], {}, "ewc + er"),
    ([("er", {})], {"task_aware": False}, "task-free"),
    ([], {"task_conditioned": True}, "task-conditioned"),
    ([("gem", {})], {"n_experiences": None}, "does not say how many"),
])
def test_configurations_without_a_counterpart_say_why(plugins, kw, words):
    args = {"n_experiences": 5, "batch_size": 10, **kw}
    spec = avalanche_spec(plugins, **args)
    assert isinstance(spec, NoCounterpart) and words in spec.reason


def test_missing_extra_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # "not installed", whatever is there
    monkeypatch.setitem(sys.modules, "avalanche", None)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(BLOBS)
    code = main(["bench", "--config", str(cfg), "--strategies", "naive", "--seeds", "0",
                 "--against", "avalanche", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --against avalanche needs Avalanche")
    assert "pip install 'lifelong[avalanche]'" in err
    assert not (tmp_path / "b").exists()  # refused before anything ran


def test_core_and_lifelong_run_never_import_avalanche(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(BLOBS + "strategy: naive\n")
    code = textwrap.dedent(f"""
        import sys
        import lifelong
        from lifelong.cli import main
        assert main(["run", {str(cfg)!r}, "--quiet"]) == 0
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("avalanche", "torchvision"))
        assert not bad, bad
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


# ---------------------------------------------------------------------------
# torchvision beside a CPU-only torch, reproduced with a stand-in package
# ---------------------------------------------------------------------------

FAKE_TORCHVISION = '''
import torch.library
from . import extension

@torch.library.register_fake("torchvision::nms")   # as torchvision 0.28's _meta_registrations
def meta_nms(dets, scores, iou_threshold):
    return dets.new_empty(0, dtype=torch.long)
'''


def fake_torchvision(tmp_path, monkeypatch, init: str, has_ops: bool = False) -> None:
    pkg = tmp_path / "site" / "torchvision"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(init)
    (pkg / "extension.py").write_text(f"def _has_ops():\n    return {has_ops}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(sys.modules, "avalanche", None)
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)


def drop_torchvision() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        del sys.modules[name]


def test_torchvision_whose_ops_did_not_load_imports_with_the_workaround(tmp_path, monkeypatch):
    fake_torchvision(tmp_path, monkeypatch, FAKE_TORCHVISION)
    original = torch.library.register_fake
    try:
        with pytest.raises(RuntimeError, match="operator torchvision::nms does not exist"):
            import torchvision  # noqa: F401  the failure itself, exactly as seen with the wheels
        drop_torchvision()
        with pytest.raises(ConfigError, match=r"pip install 'lifelong\[avalanche\]'"):
            cmp.import_avalanche()  # torchvision now imports; avalanche is "not installed"
        assert "torchvision" in sys.modules and sys.modules["torchvision"].meta_nms
        assert torch.library.register_fake is original  # the patch lived for that import only
    finally:
        drop_torchvision()


def test_the_workaround_is_not_used_for_other_failures(tmp_path, monkeypatch):
    count = tmp_path / "imports"
    fake_torchvision(tmp_path, monkeypatch, f"import pathlib\np = pathlib.Path({str(count)!r})\n"
                     "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
                     "raise RuntimeError('something else broke')\n")
    try:
        with pytest.raises(RuntimeError, match="something else broke"):
            cmp.import_avalanche()
        assert count.read_text() == "x"  # raised as it came: no second, patched import
    finally:
        drop_torchvision()


def test_the_patch_skips_only_torchvision_fakes_whose_ops_did_not_load(monkeypatch):
    original = torch.library.register_fake
    fn = lambda *a: None  # noqa: E731
    monkeypatch.setitem(sys.modules, "torchvision.extension", SimpleNamespace(_has_ops=lambda: False))
    with cmp._skip_fake_kernels_of_unloaded_torchvision_ops():
        assert torch.library.register_fake("torchvision::nms")(fn) is fn
        assert torch.library.register_fake("torchvision::qnms", fn) is fn
        with pytest.raises(RuntimeError, match="does not exist"):  # other namespaces: untouched
            torch.library.register_fake("lifelong_test::nms")(fn)
    monkeypatch.setitem(sys.modules, "torchvision.extension", SimpleNamespace(_has_ops=lambda: True))
    with cmp._skip_fake_kernels_of_unloaded_torchvision_ops():  # ops loaded: the real registration
        with pytest.raises(RuntimeError, match="does not exist"):
            torch.library.register_fake("torchvision::nms")(fn)
    assert torch.library.register_fake is original


# ---------------------------------------------------------------------------
# With avalanche-lib installed (pip install 'lifelong[avalanche]'): skipped otherwise
# ---------------------------------------------------------------------------

needs_avalanche = pytest.mark.skipif(
    importlib.util.find_spec("avalanche") is None,
    reason="avalanche-lib is not installed (pip install 'lifelong[avalanche]')")


@needs_avalanche
def test_naive_is_the_same_run_in_both_libraries_and_the_bench_shows_both(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(BLOBS)
    code = main(["bench", "--config", str(cfg), "--strategies", "naive,er,mas", "--seeds", "0",
                 "--against", "avalanche", "--out", str(tmp_path / "b")])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = {r["strategy"]: r for r in json.loads((tmp_path / "b" / "bench_avalanche.json").read_text())}
    # same initial weights, same batches in the same order, same SGD: the same model
    assert rows["naive"]["acc_avalanche"] == pytest.approx(rows["naive"]["acc_lifelong"], abs=1e-9)
    assert 0.0 <= rows["er"]["acc_avalanche"] <= 1.0 and rows["er"]["sps_avalanche"] > 0
    assert rows["mas"]["acc_avalanche"] is None and "not mapped" in rows["mas"]["avalanche"]
    assert "no Avalanche counterpart" in out
    lines = (tmp_path / "b" / "bench_avalanche_runs.jsonl").read_text().splitlines()
    assert {(json.loads(x)["strategy"], json.loads(x)["library"]) for x in lines} == {
        ("naive", "lifelong"), ("naive", "avalanche"), ("er", "lifelong"), ("er", "avalanche"),
        ("mas", "lifelong"), ("mas", "avalanche")}


@needs_avalanche
def test_every_mapped_strategy_trains_in_avalanche():
    for strategy in ("ewc", "online_ewc", "si", "lwf", "gem", "agem", "der", "derpp", "dgr"):
        res = cmp.compare_run({**_blobs(), "strategy": strategy})
        assert 0.0 <= res.avalanche["final_avg_accuracy"] <= 1.0, strategy


def _blobs() -> dict:
    import yaml

    cfg = yaml.safe_load(BLOBS)
    cfg["stream"]["n_per_class"] = 10
    return cfg


@needs_avalanche
@pytest.mark.parametrize("task_labels", [[0, 0], [0, 1]])
def test_fit_accepts_an_avalanche_benchmark(task_labels):
    import lifelong

    cmp.import_avalanche()
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
        create_generic_benchmark_from_tensor_lists,
    )

    g = torch.Generator().manual_seed(0)
    y = [torch.tensor([0, 1] * 10), torch.tensor([2, 3] * 10)]
    x = [torch.randn(20, 4, generator=g) + yy[:, None] for yy in y]
    bm = create_generic_benchmark_from_tensor_lists(
        [[a, b] for a, b in zip(x, y)], [[a[:6], b[:6]] for a, b in zip(x, y)],
        task_labels=task_labels)
    result = lifelong.fit(bm, backbone={"name": "mlp", "hidden": [8]}, lr=0.05, batch_size=5)
    s = result.stream
    assert s.n_experiences == 2 and s.num_classes == 4 and s.input_shape == (4,)
    assert s.task_labels == (task_labels == [0, 1])
    exps = list(s.experiences())
    assert [e.classes for e in exps] == [(0, 1), (2, 3)]
    batch = next(exps[1].batches(5))
    if s.task_labels:
        assert batch.task.tolist() == [1] * 5
    else:
        assert batch.task is None
    assert len(result.metrics["accuracy_matrix"]) == 2
