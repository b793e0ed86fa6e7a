"""Evaluation plugins: views of the learner's one evaluation engine.

* :class:`AccuracyMatrix` — rows after each experience, Class-IL and Task-IL
  (logit masking), ACC, BWT, FWT, forgetting (Lopez-Paz & Ranzato 2017;
  Chaudhry et al. 2018).
* :class:`AnytimeAccuracy` — accuracy on held-out data of every experience
  seen so far, every ``every`` batches (Koh et al. 2022, "Online continual
  learning on class incremental blurry task configuration with anytime
  inference").
* :class:`Prequential` — test-then-train accuracy on the stream itself
  (Dawid 1984; Gama et al. 2013): each batch is predicted before it is
  trained on. Counted on the device, synced once per window. With delayed
  labels (``Batch.predict``) the predictions scored are those made when
  the samples arrived, before their labels were known.
* :class:`Resources` — wall time, throughput (samples/s of training, eval
  excluded), peak resident memory and peak CUDA memory.

Every plugin here has ``summary() -> dict`` that goes into ``metrics.json``.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from lifelong import metrics
from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl


class AccuracyMatrix:
    """Record the accuracy matrix and derive ACC, BWT, FWT and forgetting."""

    name = "accuracy_matrix"

    def __init__(self) -> None:
        self.rows_: list[list[float]] = []
        self.rows_task_il_: list[list[float]] = []
        self.initial_: list[float] | None = None

    @hookimpl
    def after_eval(self, learner: Any, report: Any) -> None:
        if report.kind == "initial":
            self.initial_ = list(report.class_il)
        elif report.kind == "experience_end":
            self.rows_.append(list(report.class_il))
            self.rows_task_il_.append(list(report.task_il))

    def summary(self) -> dict[str, Any]:
        R, Rt = self.rows_, self.rows_task_il_
        return {
            "accuracy_matrix": R,
            "accuracy_matrix_task_il": Rt,
            "final_avg_accuracy": metrics.average_accuracy(R),
            "final_avg_accuracy_task_il": metrics.average_accuracy(Rt),
            "avg_forgetting": metrics.average_forgetting(R),
            "avg_forgetting_task_il": metrics.average_forgetting(Rt),
            "bwt": metrics.backward_transfer(R),
            "fwt": metrics.forward_transfer(R, self.initial_),
            "random_init_accuracy": self.initial_,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows_, "rows_task_il": self.rows_task_il_, "initial": self.initial_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows_ = [list(r) for r in state["rows"]]
        self.rows_task_il_ = [list(r) for r in state["rows_task_il"]]
        self.initial_ = state["initial"]


class AnytimeAccuracy:
    """Every ``every`` batches, accuracy on the held-out data of all experiences seen so far."""

    name = "anytime"

    def __init__(self, *, every: int = 100) -> None:
        if every < 1:
            raise ConfigError(f"eval.every must be >= 1, got {every}")
        self.every = every
        self.curve_: list[tuple[int, float, float]] = []

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        if (step.index + 1) % self.every:
            return
        stream = learner.stream
        if stream is None or not stream.test:
            return
        seen = stream.test[: learner.experience_index + 1]
        rep = learner.evaluate(seen, kind="anytime")
        self.curve_.append((learner.samples_seen, sum(rep.class_il) / len(seen),
                            sum(rep.task_il) / len(seen)))

    def summary(self) -> dict[str, Any]:
        accs = [a for _, a, _ in self.curve_]
        return {"anytime_accuracy": [list(c) for c in self.curve_],
                "avg_anytime_accuracy": sum(accs) / len(accs) if accs else None}

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve_ = [tuple(c) for c in state["curve"]]  # type: ignore[misc]


class Prequential:
    """Test-then-train accuracy on the stream, overall and per window of ``window`` batches."""

    name = "prequential"

    def __init__(self, *, window: int = 100) -> None:
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
        if arrived is None:  # labels come with the samples: score this step's forward pass
            hit = (step.stream_logits.detach().argmax(1) == step.batch.y).sum()
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
        self.windows_ = [tuple(w) for w in state["windows"]]  # type: ignore[misc]
        self.correct_total_, self.seen_total_ = state["correct"], state["seen"]
        self._steps = state["steps"]
        self._cum = state.get("cum", self.seen_total_)
        open_ = state.get("open", {"correct": 0, "seen": 0})
        self._correct, self._pending = None, []
        self._carry, self._n = open_["correct"], open_["seen"]


class Resources:
    """Wall time, training throughput and peak memory of the run."""

    name = "resources"

    def __init__(self) -> None:
        self._t0: float | None = None
        self.wall_time_s_ = 0.0
        self.samples_ = 0

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self._t0 = time.perf_counter()
        if learner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(learner.device)

    @hookimpl
    def after_training(self, learner: Any) -> None:
        if learner.device.type == "cuda":
            torch.cuda.synchronize(learner.device)
        if self._t0 is not None:
            self.wall_time_s_ += time.perf_counter() - self._t0
            self._t0 = None
        self.samples_ = learner.samples_seen
        self._eval_s = learner.eval_time_s
        self._cuda = (torch.cuda.max_memory_allocated(learner.device) / 2**20
                      if learner.device.type == "cuda" else None)

    def summary(self) -> dict[str, Any]:
        train_s = max(self.wall_time_s_ - getattr(self, "_eval_s", 0.0), 1e-9)
        return {
            "samples_seen": self.samples_,
            "wall_time_s": self.wall_time_s_,
            "samples_per_second": self.samples_ / train_s if self.samples_ else 0.0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": getattr(self, "_cuda", None),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.wall_time_s_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wall_time_s_ = state["wall_time_s"]


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "accuracy_matrix", AccuracyMatrix)
    registry.add("plugin", "anytime", AnytimeAccuracy)
    registry.add("plugin", "prequential", Prequential)
    registry.add("plugin", "resources", Resources)
