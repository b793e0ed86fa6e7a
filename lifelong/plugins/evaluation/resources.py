"""Wall time, throughput (samples/s of training, eval
  excluded), peak resident memory and peak CUDA memory, and the model's
  parameter count after each experience (``params_per_experience``: it
  grows under expansion methods).

Every plugin here has ``summary() -> dict`` that goes into ``metrics.json``.

Its ``summary() -> dict`` goes into ``metrics.json``.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from lifelong.hookspecs import hookimpl

__all__ = ["Resources"]


class Resources:
    """Wall time, training throughput and peak memory of the run."""

    name = "resources"

    def __init__(self) -> None:
        self._t0: float | None = None
        self.wall_time_s_ = 0.0
        self.samples_ = 0
        self.params_per_experience_: list[int] = []

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        self._t0 = time.perf_counter()
        if learner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(learner.device)

    @hookimpl
    def after_experience(self, learner: Any, experience: Any) -> None:
        self.params_per_experience_.append(sum(p.numel() for p in learner.model.parameters()))

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
            "params_per_experience": list(self.params_per_experience_),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.wall_time_s_,
                "params_per_experience": list(self.params_per_experience_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wall_time_s_ = state["wall_time_s"]
        self.params_per_experience_ = [int(n) for n in state.get("params_per_experience", [])]


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "resources", Resources)
