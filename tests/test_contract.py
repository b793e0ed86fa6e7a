"""Every registered plugin and strategy goes through the same contract."""

from __future__ import annotations

import pytest
import torch

from lifelong import hookimpl
from lifelong.testing import (
    check_params_stored,
    check_resume_exact,
    check_state_roundtrip,
    plugin_checks,
    strategy_checks,
)

PLUGIN_CASES = plugin_checks()
STRATEGY_CASES = strategy_checks()


@pytest.mark.parametrize("check", [c for _, c in PLUGIN_CASES],
                         ids=[i for i, _ in PLUGIN_CASES])
def test_plugin_contract(check):
    check()


@pytest.mark.parametrize("check", [c for _, c in STRATEGY_CASES],
                         ids=[i for i, _ in STRATEGY_CASES])
def test_strategy_contract(check):
    check()


class ForgetsItsState:
    """Adds noise from a private generator that it does not checkpoint."""

    def __init__(self, *, scale: float = 0.1):
        self.scale = scale
        self._g = torch.Generator().manual_seed(0)

    @hookimpl
    def loss_terms(self, learner, step):
        noise = torch.randn((), generator=self._g) * self.scale
        return {"noise": noise * step.losses["ce"]}


class ComputesInInit:
    def __init__(self, *, width: int = 4):
        self.width = width * 2

    @hookimpl
    def after_update(self, learner, step):
        pass


class PicklesTensorsOnly:
    def __init__(self):
        self.history_ = []

    @hookimpl
    def after_update(self, learner, step):
        self.history_.append(step.index)

    def state_dict(self):
        return {"history": self.history_, "fn": lambda: 0}

    def load_state_dict(self, state):
        self.history_ = state["history"]


def test_contract_catches_state_left_out_of_checkpoint():
    with pytest.raises(AssertionError, match="resumed vs uninterrupted"):
        check_resume_exact(ForgetsItsState)


def test_contract_catches_parameters_not_stored_as_given():
    with pytest.raises(AssertionError, match="width"):
        check_params_stored(ComputesInInit)


def test_contract_catches_state_that_weights_only_cannot_load():
    with pytest.raises(Exception):  # noqa: B017 - torch's pickling error type varies
        check_state_roundtrip(PicklesTensorsOnly)
