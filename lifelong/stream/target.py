"""The unlabeled target stream of domain adaptation, drawn beside the source stream.

A run may pair its (labeled, source) stream with a **target** stream built
from the same stream names and adapters (YAML ``target:`` next to
``stream:``). At each training step, when some plugin declares
``requires = ("target",)``, the learner draws a target batch of the same
size as the stream batch and puts its *inputs* in ``step.target``; the
target labels stay here and serve only the evaluation (``target.test``).

Source experience ``i`` is paired with target experience ``min(i, n - 1)``
(a one-experience target serves a whole continual stream). The target
batch at position ``k`` of an experience is the slice ``[k*b, k*b + n)`` of
an endless sequence of shuffles of that target experience, shuffle ``c``
seeded by :func:`~lifelong.stream.base.batch_seed` ``(seed + TARGET_SEED,
experience id, c)``: a pure function of where the run is, so a resumed run
draws exactly the batches an uninterrupted one draws, and the target order
is independent of the source order even when both are the same data.

Examples
--------
>>> from lifelong.testing import tiny_stream, shifted
>>> sampler = TargetSampler(shifted(tiny_stream()), seed=0)
>>> sampler.draw(0, 0, 8).shape
torch.Size([8, 1, 4, 4])
>>> bool((sampler.draw(0, 3, 8) == sampler.draw(0, 3, 8)).all())
True
"""

from __future__ import annotations

import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.stream.base import Experience, Stream, batch_seed

__all__ = ["TargetSampler", "TARGET_SEED"]

#: added to the run's seed for the target shuffles (decorrelates them from the source's)
TARGET_SEED = 7_919


class TargetSampler:
    """Deterministic, resumable target batches (inputs only) for a run.

    :param stream: the target stream; its experiences must hold their
        samples as tensors (every built-in image and tabular stream does).
    :param seed: the run's seed.
    """

    def __init__(self, stream: Stream, *, seed: int) -> None:
        self.stream = stream
        self.seed = int(seed) + TARGET_SEED
        self._exps: list[Experience] | None = None
        self._perms: dict[tuple[int, int], Tensor] = {}

    def experiences(self) -> list[Experience]:
        """The target experiences (materialized once, on first use)."""
        if self._exps is None:
            exps = list(self.stream.experiences())
            if not exps:
                raise ConfigError(f"target: stream {self.stream.name!r} has no experiences")
            for e in exps:
                if not isinstance(getattr(e, "x", None), Tensor):
                    raise ConfigError(f"target: stream {self.stream.name!r} feeds experience "
                                      f"{e.id} from an iterator; a target stream must hold its "
                                      "samples in memory (use a tensor, numpy or catalog stream)")
            self._exps = exps
        return self._exps

    def experience_for(self, index: int) -> Experience:
        exps = self.experiences()
        return exps[min(index, len(exps) - 1)]

    def _perm(self, exp: Experience, cycle: int) -> Tensor:
        key = (exp.id, cycle)
        perm = self._perms.get(key)
        if perm is None:
            if len(self._perms) > 8:
                self._perms.clear()
            g = torch.Generator().manual_seed(batch_seed(self.seed, exp.id, cycle))
            perm = self._perms[key] = torch.randperm(int(exp.n_samples or 0), generator=g)
        return perm

    def draw(self, experience_index: int, position: int, n: int, *, batch_size: int | None = None
             ) -> Tensor:
        """Inputs of ``n`` target samples for batch ``position`` of source experience ``experience_index``.

        ``batch_size`` (default ``n``) is the run's batch size: batch ``k``
        starts at sample ``k * batch_size`` of the endless shuffled sequence.
        """
        exp = self.experience_for(experience_index)
        size = int(exp.n_samples or 0)
        start = position * (batch_size or n)
        pos = torch.arange(start, start + n)
        cycles = pos // size
        idx = torch.empty(n, dtype=torch.long)
        for c in range(int(cycles[0]), int(cycles[-1]) + 1):  # one or two shuffles per batch
            sel = cycles == c
            idx[sel] = self._perm(exp, c)[pos[sel] - c * size]
        return exp.x[idx]  # type: ignore[attr-defined]
