"""The plugins are arranged by family; the flat paths of earlier releases still import."""

import importlib
import sys

import pytest

from lifelong.plugins import MOVED
from lifelong.registry import get_registry


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_flat_paths_import_with_a_warning_naming_the_new_path(old):
    sys.modules.pop(f"lifelong.plugins.{old}", None)
    with pytest.warns(DeprecationWarning, match=MOVED[old][0].replace(".", r"\.")):
        mod = importlib.import_module(f"lifelong.plugins.{old}")
    new = importlib.import_module(MOVED[old][0])
    public = [n for n in getattr(new, "__all__", []) if not n.startswith("_")]
    for name in public:
        assert getattr(mod, name) is getattr(new, name)
    with pytest.raises(AttributeError, match="moved to"):
        mod.no_such_name  # noqa: B018


def test_old_from_import_gives_the_same_class():
    from lifelong.plugins.replay.er import ER as New

    with pytest.warns(DeprecationWarning):
        sys.modules.pop("lifelong.plugins.er", None)
        from lifelong.plugins.er import ER as Old
    assert Old is New
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("lifelong.plugins.drift", None)
        from lifelong.plugins.drift import ADWIN, batch_signal  # noqa: F401


def test_every_built_in_plugin_lives_in_a_family_package():
    families = {"replay", "regularization", "boundaries", "evaluation", "distillation",
                "multitask", "domain", "expansion", "transfer", "logging"}
    for entry in get_registry().entries("plugin"):
        mod = entry.factory.__module__
        if not mod.startswith("lifelong."):
            continue
        parts = mod.split(".")
        assert parts[1] == "plugins" and parts[2] in families and len(parts) == 4, mod
