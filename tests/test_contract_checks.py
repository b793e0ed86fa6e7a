"""The contract checks themselves: each must fail for the mistake it names."""

import functools

import numpy as np
import pytest
import torch

from lifelong.checkpoint import save_checkpoint
from lifelong.errors import CheckpointError
from lifelong.hookspecs import hookimpl
from lifelong.testing import (
    check_no_global_rng,
    check_params_stored,
    check_state_roundtrip,
    make_learner,
    tiny_stream,
)


class Scaled:
    """A toy regularizer with one parameter."""

    name = "scaled"

    def __init__(self, *, strength: float = 0.01):
        self.strength = strength

    @hookimpl
    def loss_terms(self, learner, step):
        return {"scaled": self.strength * sum((p ** 2).sum() for p in learner.model.parameters())}


class Doubled(Scaled):
    def __init__(self, *, strength: float = 0.01):
        self.strength = 2 * strength


class GlobalDraw(Scaled):
    @hookimpl
    def after_update(self, learner, step):
        torch.rand(1)  # the global generator: forbidden


class NumpyState(Scaled):
    def state_dict(self):
        return {"seen": np.zeros(3)}

    def load_state_dict(self, state):
        pass


def test_factories_with_given_parameters_pass():
    check_params_stored(lambda: Scaled(strength=1.0))
    check_params_stored(functools.partial(Scaled, strength=1.0))


def test_parameters_stored_transformed_fail_even_from_a_factory():
    with pytest.raises(AssertionError, match="store parameters as given"):
        check_params_stored(Doubled)
    with pytest.raises(AssertionError, match="stores 4.0"):
        check_params_stored(lambda: Doubled(strength=1.0))


def test_a_plugin_drawing_from_the_global_rng_fails_the_contract():
    check_no_global_rng(Scaled)
    with pytest.raises(AssertionError, match="torch's global random generator"):
        check_no_global_rng(GlobalDraw)


def test_numpy_in_a_plugin_state_is_a_clear_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"NumpyState.state_dict\(\)\['seen'\] is a "
                                              r"numpy.ndarray.*torch.from_numpy"):
        check_state_roundtrip(NumpyState)
    stream = tiny_stream()
    learner = make_learner([NumpyState()], stream)
    learner.fit(stream, stop_after=3)
    with pytest.raises(CheckpointError, match=r"plugin 'scaled' state_dict\(\)\['seen'\]"):
        save_checkpoint(tmp_path, learner, {})
    assert not (tmp_path / "checkpoint.pt").exists()


def test_contributing_shows_where_hookimpl_comes_from():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "CONTRIBUTING.md").read_text()
    assert "from lifelong.hookspecs import hookimpl" in text


def test_fit_runs_numpy_arrays_and_tensors_from_python():
    import lifelong

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    x = (rng.normal(size=(80, 5)) + y[:, None]).astype("float32")
    result = lifelong.fit((x, y, y // 2), test=(x, y, y // 2), backbone={"name": "mlp",
                          "hidden": [16]}, plugins=["ewc", Scaled()], lr=0.05, device="cpu")
    assert len(result.metrics["accuracy_matrix"]) == 2
    assert result.metrics["prequential_accuracy"] is not None
    model = torch.nn.Sequential(torch.nn.Linear(5, 4))
    tens = lifelong.fit((torch.from_numpy(x), torch.from_numpy(y)), backbone=model,
                        device="cpu")
    assert tens.model is model and tens.stream.n_experiences == 1
    with pytest.raises(lifelong.ConfigError, match="fit: stream must be"):
        lifelong.fit([1, 2, 3])
