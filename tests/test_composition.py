"""Methods compose: a replay method, a regularizer and a boundary detector in one run,
on a task-free stream, resumed mid-run with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import io

import pytest
import torch

from lifelong import hookimpl
from lifelong.registry import get_registry
from lifelong.run import make_plugin
from lifelong.testing import assert_same_state, make_learner, tiny_stream

TRIOS = [
    ("derpp", "ewc", "adwin"),
    ("er", "si", "plateau"),
    ("agem", "mas", "every_n"),
    ("gem", "lwf", "every_n"),
    ("generative_replay", "online_ewc", "page_hinkley"),
]


def plugins(names):
    reg = get_registry()
    params = {"every_n": {"every": 7}, "generative_replay": {"generator_steps": 1},
              "gem": {"mem_size": 60}}
    return [make_plugin(n, params.get(n, {}), seed=0, registry=reg) for n in names]


def weights(learner):
    return {k: v.clone() for k, v in learner.model.state_dict().items()}


@pytest.mark.parametrize("trio", TRIOS, ids=["+".join(t) for t in TRIOS])
def test_trio_composes_on_a_task_free_stream_and_resumes_exactly(trio):
    stream = tiny_stream(task_aware=False, n_per_class=30)
    full = make_learner(plugins(trio), stream, optimizer="adam", lr=1e-3)
    full.fit(stream)
    assert all(torch.isfinite(p).all() for p in full.model.parameters())

    first = make_learner(plugins(trio), stream, optimizer="adam", lr=1e-3)
    first.fit(stream, stop_after=13)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second = make_learner(plugins(trio), stream, optimizer="adam", lr=1e-3)
    second.fit(stream, state=torch.load(buf, weights_only=True))
    assert_same_state(weights(full), weights(second), "+".join(trio))


class Spy:
    """Records the names of the loss terms of every step."""

    def __init__(self):
        self.names: set[str] = set()

    @hookimpl
    def after_update(self, learner, step):
        self.names |= set(step.losses)


def test_loss_terms_of_a_trio_are_all_present():
    stream = tiny_stream(n_per_class=20)
    spy = Spy()
    learner = make_learner([*plugins(("derpp", "ewc", "every_n")), spy], stream,
                           optimizer="adam", lr=1e-3)
    learner.fit(stream)
    assert {"ce", "ewc"} <= spy.names and any(k.startswith("der") for k in spy.names), spy.names
