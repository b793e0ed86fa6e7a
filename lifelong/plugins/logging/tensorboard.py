"""TensorBoard logger: the run's scalars as event files of ``log_dir/<run name>``.

What is logged and when is :mod:`lifelong.plugins.logging._common`'s convention (step =
training samples seen; ``train/loss`` every ``log_every`` steps, accuracies at each
evaluation, ``final/...`` at the end); the resolved config is the run's ``config`` text.
Written with :class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard``
package: ``pip install 'lifelong[tensorboard]'``). A resumed run writes to the same
directory with ``purge_step`` one past the last step its checkpoint had written, so
TensorBoard hides what an interrupted run wrote after that checkpoint.

Parameters: ``log_dir="runs"`` (TensorBoard's own default), ``run_name=None`` (the
config's ``name``, else ``<strategy>-<stream>-seed<seed>``; a name already used gets a
``-2``, ``-3`` suffix), ``log_every=100`` (training steps between loss scalars).

Examples
--------
>>> import tempfile
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> tb = TensorBoardLogger(log_dir=tempfile.mkdtemp(), run_name="demo", log_every=5)
>>> learner = make_learner([tb], stream).fit(stream)
>>> sorted(p.name.split(".")[0] for p in tb.run_dir().iterdir())
['events']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lifelong.hookspecs import hookimpl
from lifelong.plugins.logging._common import Logger, require

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(Logger):
    """Scalars to TensorBoard event files in ``log_dir/<run name>``; step = samples seen."""

    name = "tensorboard"
    extra = "tensorboard"

    def __init__(self, *, log_dir: str = "runs", run_name: str | None = None,
                 log_every: int = 100) -> None:
        require("tensorboard", extra=self.extra, owner=self.name)
        super().__init__(run_name=run_name, log_every=log_every)
        self.log_dir = log_dir
        self._writer: Any = None

    @classmethod
    def contract_kwargs(cls) -> dict[str, Any]:
        import tempfile

        return {"log_dir": tempfile.mkdtemp(prefix="lifelong-tb-"), "log_every": 5}

    def run_dir(self) -> Path:
        """The event directory of this run (once it has written)."""
        assert self.run_name_ is not None, "nothing written yet"
        return self._dir(self.log_dir, self.run_name_)

    def _taken(self, name: str) -> bool:
        d = self._dir(self.log_dir, name)
        return d.is_dir() and any(d.glob("events.out.tfevents.*"))

    def _open(self, learner: Any, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = self.last_step_ + 1 if resumed and self.last_step_ >= 0 else None
        self._writer = SummaryWriter(log_dir=str(self.run_dir()), purge_step=purge)
        if not resumed and self.config_ is not None:
            text = json.dumps(self.config_, indent=2, default=str)
            self._writer.add_text("config", f"```\n{text}\n```", global_step=0)

    def _write(self, step: int, items: list[tuple[str, float]]) -> None:
        for k, v in items:
            self._writer.add_scalar(k, v, global_step=step)

    def _flush(self) -> None:
        self._writer.flush()

    def _close(self) -> None:
        self._writer.close()
        self._writer = None


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "tensorboard", TensorBoardLogger)
