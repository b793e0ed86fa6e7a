"""Wall time, throughput (samples/s of training, eval excluded), peak resident
memory and peak CUDA memory, and the model's parameter count after each
experience (``params_per_experience``: it grows under expansion methods).

Its ``summary() -> dict`` goes into ``metrics.json``. Wall time and throughput
cover the whole run: a run resumed from a checkpoint adds the time of its earlier
segments up to the checkpoint it resumed from (time spent after the last
checkpoint of a killed segment was lost work and is not counted).
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
            self._t0 = None
        self.wall_time_s_, self._eval_s = learner.run_time()
        self._segments = getattr(learner, "segments", 1)
        self.samples_ = learner.samples_seen
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
        from lifelong.errors import CheckpointError
        from lifelong.validation import state_number

        wall = state_number(state, "wall_time_s", owner=self.name, min=0.0)
        params = state.get("params_per_experience", [])
        if not isinstance(params, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in params):
            raise CheckpointError("checkpoint state of plugin 'resources': params_per_experience "
                                  "must be a list of parameter counts; the checkpoint is corrupted")
        self.wall_time_s_ = wall
        self.params_per_experience_ = list(params)


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "resources", Resources)
