"""The mutation catalogue of benchmarks/mutants.py stays applicable to the current code."""

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _catalogue():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "benchmarks" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutants", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod.MUTANTS


def test_every_mutation_applies_exactly_once_and_names_existing_tests():
    mutants = _catalogue()
    assert len(mutants) >= 30
    assert len({m.id for m in mutants}) == len(mutants)
    for m in mutants:
        text = (ROOT / m.file).read_text()
        assert text.count(m.old) == 1, f"{m.id}: old text occurs {text.count(m.old)} times in {m.file}"
        assert m.new != m.old and m.tests, m.id
        for target in m.tests:
            path, _, name = target.partition("::")
            assert (ROOT / path).is_file(), f"{m.id}: no test file {path}"
            if name:
                assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), \
                    f"{m.id}: no test {target}"
