"""A plugin installed by another package (entry-point group ``lifelong``) is found and runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lifelong.registry import reset_registry

MODULE = '''
"""A third-party package contributing a plugin and a strategy."""
import torch
from lifelong import hookimpl
from lifelong.strategies import Strategy


class L2Anchor:
    """Penalise the squared norm of the weights (a toy regularizer)."""

    name = "l2_anchor"

    def __init__(self, *, strength: float = 0.01):
        self.strength = strength
        self.calls_ = 0

    @hookimpl
    def loss_terms(self, learner, step):
        self.calls_ += 1
        return {"l2_anchor": self.strength * sum((p ** 2).sum() for p in learner.model.parameters())}

    def summary(self):
        return {"l2_anchor_calls": self.calls_}


def l2_preset(*, strength: float = 0.05):
    """Fine-tuning with the toy L2 penalty."""
    return Strategy(plugins=[{"name": "l2_anchor", "strength": strength}])


@hookimpl
def register(registry):
    registry.add("plugin", "l2_anchor", L2Anchor)
    registry.add("strategy", "l2_preset", l2_preset)
'''


@pytest.fixture()
def installed_package(tmp_path, monkeypatch):
    (tmp_path / "lifelong_extra.py").write_text(MODULE)
    info = tmp_path / "lifelong_extra-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lifelong-extra\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lifelong]\nextra = lifelong_extra\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry()
    yield tmp_path
    reset_registry()
    sys.modules.pop("lifelong_extra", None)


def test_entry_point_plugin_is_registered_and_runs(installed_package):
    from lifelong.registry import get_registry
    from lifelong.run import run_config

    reg = get_registry()
    assert reg.get("plugin", "l2_anchor").origin == "lifelong-extra"
    assert "l2_preset" in reg.names("strategy")
    m = run_config({"stream": {"name": "blobs", "n_per_class": 10}, "device": "cpu",
                    "plugins": [{"name": "l2_anchor", "strength": 0.0}]})
    assert m["l2_anchor_calls"] == 6  # 3 experiences x 2 classes x 10 samples / batch 10
    m = run_config({"stream": {"name": "blobs", "n_per_class": 10}, "device": "cpu",
                    "strategy": "l2_preset"})
    assert m["plugins"] == ["l2_anchor"] and m["l2_anchor_calls"] == 6


def test_entry_point_plugin_passes_the_contract(installed_package):
    from lifelong.registry import get_registry
    from lifelong.testing import check_plugin

    check_plugin(get_registry().get("plugin", "l2_anchor").factory)


def test_lifelong_list_shows_installed_plugin(installed_package):
    env = {**os.environ, "PYTHONPATH": f"{installed_package}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "lifelong.cli", "list", "plugin"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "l2_anchor" in out.stdout and "lifelong-extra" in out.stdout


def test_broken_entry_point_warns_and_is_skipped_unless_asked_for(tmp_path, monkeypatch):
    info = tmp_path / "broken_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lifelong]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry()
    from lifelong.errors import RegistryError
    from lifelong.registry import get_registry
    from lifelong.run import run_config

    try:
        with pytest.warns(UserWarning, match="skipping installed package broken-pkg"):
            reg = get_registry()
        assert "ewc" in reg.names("plugin")          # the built-ins still load
        m = run_config({"stream": {"name": "blobs", "n_per_class": 10}, "device": "cpu"})
        assert m["final_avg_accuracy"] is not None   # a run that does not use it works
        with pytest.raises(RegistryError, match="broken-pkg.*failed to load.*no_such_module_xyz"):
            reg.get("plugin", "broken_method")       # asked for: the failure is named
    finally:
        reset_registry()
