"""CSV logger: the run's scalars as rows ``step,metric,value`` of ``log_dir/<run name>/metrics.csv``.

What is logged and when is :mod:`lifelong.plugins.logging._common`'s convention (step =
training samples seen). Written with the standard library's :mod:`csv` (no extra
needed); read it back with ``csv.DictReader`` or ``pandas.read_csv``. A resumed run
cuts the file back to what its checkpoint had written, then appends: the rows an
interrupted run wrote after that checkpoint are written again by the resumed run, once.

Parameters: ``log_dir="runs"``, ``run_name=None`` (the config's ``name``, else
``<strategy>-<stream>-seed<seed>``; a name already used gets a ``-2``, ``-3`` suffix),
``log_every=100`` (training steps between loss rows).

Examples
--------
>>> import csv, tempfile
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> log = CSVLogger(log_dir=tempfile.mkdtemp(), run_name="demo", log_every=5)
>>> learner = make_learner([log], stream).fit(stream)
>>> rows = list(csv.DictReader(open(log.path())))
>>> rows[0]["metric"], [r["metric"] for r in rows][-1].startswith("final/")
('eval/accuracy/exp0', True)
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lifelong.errors import CheckpointError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.logging._common import Logger

__all__ = ["CSVLogger"]

HEADER = ("step", "metric", "value")


class CSVLogger(Logger):
    """Scalars as ``step,metric,value`` rows of ``log_dir/<run name>/metrics.csv``."""

    name = "csv"

    def __init__(self, *, log_dir: str = "runs", run_name: str | None = None,
                 log_every: int = 100) -> None:
        super().__init__(run_name=run_name, log_every=log_every)
        self.log_dir = log_dir
        self.offset_ = 0  # bytes written when the last state was taken
        self._wfile: Any = None
        self._wcsv: Any = None

    @classmethod
    def contract_kwargs(cls) -> dict[str, Any]:
        import tempfile

        return {"log_dir": tempfile.mkdtemp(prefix="lifelong-csv-"), "log_every": 5}

    def path(self) -> Path:
        """The CSV file of this run (once it has written)."""
        assert self.run_name_ is not None, "nothing written yet"
        return self._dir(self.log_dir, self.run_name_) / "metrics.csv"

    def _taken(self, name: str) -> bool:
        return (self._dir(self.log_dir, name) / "metrics.csv").exists()

    def _open(self, learner: Any, resumed: bool) -> None:
        p = self.path()
        if resumed:
            size = p.stat().st_size if p.is_file() else -1
            if size < self.offset_:
                raise CheckpointError(f"plugin 'csv': {p} holds {max(size, 0)} bytes, the "
                                      f"checkpoint says {self.offset_} were written; the log "
                                      "was moved or cut: restore it, or set another run_name")
            with open(p, "r+b") as fh:
                fh.truncate(self.offset_)  # what the interrupted run wrote after the checkpoint
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
        self._wfile = open(p, "a", newline="", encoding="utf-8")
        self._wcsv = csv.writer(self._wfile)
        if not resumed or self.offset_ == 0:
            self._wcsv.writerow(HEADER)

    def _write(self, step: int, items: list[tuple[str, float]]) -> None:
        self._wcsv.writerows((step, k, repr(v)) for k, v in items)
        self._wfile.flush()

    def _flush(self) -> None:
        self._wfile.flush()
        os.fsync(self._wfile.fileno())
        self.offset_ = self._wfile.tell()

    def _close(self) -> None:
        self._wfile.close()
        self._wfile = self._wcsv = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "offset": self.offset_}

    def _load_extra(self, state: dict[str, Any]) -> None:
        from lifelong.validation import state_number

        self.offset_ = int(state_number(state, "offset", owner=self.name, min=0, integer=True))


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "csv", CSVLogger)
