"""Test-then-train accuracy on the stream itself
(Dawid 1984; Gama et al. 2013): each batch is predicted before it is
trained on, by the model as it stands before the update, in evaluation
mode (dropout off, batch norm on its running statistics; see
:mod:`lifelong.predictions`: the training forward's logits are reused only
when the model provably behaves the same in both modes). Counted on the
device, synced once per window. With delayed labels (``Batch.predict``)
the predictions scored are those made when the samples arrived, before
their labels were known.

Its ``summary() -> dict`` goes into ``metrics.json``.
"""

from __future__ import annotations

from typing import Any

import torch

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.predictions import prequential_logits
from lifelong.validation import check_number

__all__ = ["Prequential"]


class Prequential:
    """Test-then-train accuracy on the stream, overall and per window of ``window`` batches."""

    name = "prequential"
    scores_stream = True  # the learner gives eval-mode logits before the update (predictions.py)

    def __init__(self, *, window: int = 100) -> None:
        check_number(f"plugin {self.name!r}", "window", window, min=1, integer=True)
        if window < 1:
            raise ConfigError(f"prequential window must be >= 1, got {window}")
        self.window = window
        self._correct: torch.Tensor | None = None  # hits of the open window, on the device
        self._carry = 0  # hits of the open window counted before a resume
        self._n = 0
        self._steps = 0
        self._cum = 0
        self._pending: list[tuple[int, torch.Tensor | None, int, int]] = []
        self.windows_: list[tuple[int, float]] = []
        self.correct_total_ = 0
        self.seen_total_ = 0

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        arrived = step.batch.predict
        if step.logits is None:  # multi-target stream without a classification task
            hit, n = None, 0
        elif arrived is None:  # labels come with the samples: score this step's forward pass
            hit = (prequential_logits(step).argmax(1) == step.batch.y).sum()
            n = step.n_stream
        elif step.predict_logits is not None:  # delayed labels: score the arrivals' predictions
            hit = (step.predict_logits.argmax(1) == arrived.y).sum()
            n = len(arrived)
        else:  # only late labels arrived: their samples were scored when they arrived
            hit, n = None, 0
        if hit is not None:
            self._correct = hit if self._correct is None else self._correct + hit
        self._n += n
        self._cum += n
        self._steps += 1
        if self._steps % self.window == 0:
            self._close_window()
            if len(self._pending) >= 16:
                self._flush()

    def _close_window(self) -> None:
        if self._n:
            self._pending.append((self._cum, self._correct, self._n, self._carry))
        self._correct, self._n, self._carry = None, 0, 0

    def _flush(self) -> None:
        """Read the closed windows' counts from the device (one sync)."""
        if not self._pending:
            return
        tensors = [c for _, c, _, _ in self._pending if c is not None]
        counts = iter(torch.stack(tensors).tolist() if tensors else [])
        for at, c, n, carry in self._pending:
            hits = (int(next(counts)) if c is not None else 0) + carry
            self.windows_.append((at, hits / n))
            self.correct_total_ += hits
            self.seen_total_ += n
        self._pending = []

    @hookimpl
    def after_training(self, learner: Any) -> None:
        self._close_window()
        self._flush()

    def summary(self) -> dict[str, Any]:
        self._flush()
        acc = self.correct_total_ / self.seen_total_ if self.seen_total_ else None
        return {"prequential_accuracy": acc,
                "prequential_windows": [list(w) for w in self.windows_]}

    def state_dict(self) -> dict[str, Any]:
        self._flush()  # closed windows only: the open one is saved as it stands
        open_hits = (int(self._correct) if self._correct is not None else 0) + self._carry
        return {"windows": self.windows_, "correct": self.correct_total_,
                "seen": self.seen_total_, "steps": self._steps, "cum": self._cum,
                "open": {"correct": open_hits, "seen": self._n}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from lifelong.errors import CheckpointError
        from lifelong.validation import state_floats, state_get, state_number

        who = self.name
        windows = state_floats(state, "windows", owner=who, min=0.0, depth=2)
        if any(len(w) != 2 or w[1] > 1.0 for w in windows):
            raise CheckpointError(f"checkpoint state of plugin {who!r}: windows must be "
                                  "(samples, accuracy in [0, 1]) pairs; the checkpoint is corrupted")
        correct = state_number(state, "correct", owner=who, min=0, integer=True)
        seen = state_number(state, "seen", owner=who, min=0, integer=True)
        state_number(state, "steps", owner=who, min=0, integer=True)
        cum = state_number(state, "cum", owner=who, min=0, integer=True)
        open_ = state_get(state, "open", owner=who)
        oc = state_number(open_, "correct", owner=who, min=0, integer=True)
        on = state_number(open_, "seen", owner=who, min=0, integer=True)
        if correct > seen or oc > on or cum < seen:
            raise CheckpointError(f"checkpoint state of plugin {who!r}: counts are inconsistent "
                                  f"(correct {correct} of {seen}, open window {oc} of {on}, "
                                  f"cumulative {cum}); the checkpoint is corrupted")
        self.windows_ = [tuple(w) for w in state["windows"]]  # type: ignore[misc]
        self.correct_total_, self.seen_total_ = state["correct"], state["seen"]
        self._steps = state["steps"]
        self._cum = state.get("cum", self.seen_total_)
        open_ = state.get("open", {"correct": 0, "seen": 0})
        self._correct, self._pending = None, []
        self._carry, self._n = open_["correct"], open_["seen"]


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "prequential", Prequential)
