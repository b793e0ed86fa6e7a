"""examples/der_paper: the DER paper's MNIST rows load and validate (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifelong.config import load_yaml, resolve

PRESETS = sorted((Path(__file__).parent.parent / "examples" / "der_paper").glob("*.yaml"))
# (row, method, buffer) -> (lr, replay batch, alpha, beta): Buzzega et al. (NeurIPS 2020),
# appendix table of best hyper-parameters (aimagelab/mammoth utils/best_args.py)
PAPER = {
    ("seq_mnist", "er", 200): (0.01, 10, None, None),
    ("seq_mnist", "er", 500): (0.1, 10, None, None),
    ("seq_mnist", "der", 200): (0.03, 10, 0.2, None),
    ("seq_mnist", "der", 500): (0.03, 128, 1.0, None),
    ("seq_mnist", "derpp", 200): (0.03, 128, 0.2, 1.0),
    ("seq_mnist", "derpp", 500): (0.03, 10, 1.0, 0.5),
    ("p_mnist", "er", 200): (0.2, 128, None, None),
    ("p_mnist", "er", 500): (0.2, 128, None, None),
    ("p_mnist", "der", 200): (0.2, 128, 1.0, None),
    ("p_mnist", "der", 500): (0.2, 128, 1.0, None),
    ("p_mnist", "derpp", 200): (0.1, 128, 1.0, 1.0),
    ("p_mnist", "derpp", 500): (0.2, 128, 1.0, 0.5),
}


def test_every_row_has_a_preset():
    assert {p.stem for p in PRESETS} == {f"{r}_{m}_{b}" for r, m, b in PAPER}


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates_with_the_papers_hyper_parameters(path):
    row, method, buffer = path.stem.rsplit("_", 2)
    lr, replay, alpha, beta = PAPER[(row, method, int(buffer))]
    text = path.read_text()
    assert "Buzzega" in text and "best_args" in text  # the source is cited
    cfg = resolve(load_yaml(path))
    assert cfg["strategy"]["name"] == method and cfg["strategy"]["mem_size"] == int(buffer)
    assert cfg["train"]["lr"] == lr and cfg["train"]["epochs"] == 1
    assert cfg["strategy"]["batch_size"] == replay
    assert cfg["strategy"].get("alpha") == alpha and cfg["strategy"].get("beta") == beta
    assert cfg["backbone"] == {"name": "mlp", "hidden": [100, 100]}
    if row == "seq_mnist":  # Class-IL, 5 tasks of 2 digits, batch 10
        assert cfg["stream"] == {"name": "split_mnist", "n_experiences": 5}
        assert cfg["train"]["batch_size"] == 10
    else:  # Domain-IL, 20 permutations (the first one too), batch 128
        assert cfg["stream"] == {"name": "permuted_mnist", "n_experiences": 20,
                                 "keep_first": False}
        assert cfg["train"]["batch_size"] == 128
