"""Self-training with pseudo-labels: confident target predictions become training labels.

Each step the model's own predictions on the target rows of the learner's
one forward pass are taken as labels (the arg-max class, fixed: no
gradient through the label) for the rows whose top probability reaches
``threshold``; the loss adds ``alpha(t) * sum_i m_i CE(z_i, argmax z_i) / n``
over the ``n`` target rows (``m_i`` = 1 for the confident rows). The
pseudo-labels' share of the loss grows on the paper's schedule:
``alpha(t) = 0`` before step ``t1``, rising linearly to ``alpha_f`` at
step ``t2``, ``alpha_f`` afterwards (early pseudo-labels are wrong more
often). With ``threshold=0`` every target row is pseudo-labelled, as in
the paper; a threshold such as 0.9 keeps only the confident ones (the
thresholded form taught in Lampert's lectures).

Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning
Method for Deep Neural Networks", ICML 2013 Workshop on Challenges in
Representation Learning. Defaults from the paper: ``alpha_f=3.0``,
``t1=100``, ``t2=600`` (the paper counts epochs; here they count training
steps, so scale them to the run: the benchmark does); ``threshold=0.0``.

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([SelfTraining(t1=2, t2=10)], stream).fit(stream)
>>> learner.plugins[0].alpha(12)
3.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.plugins.domain._common import check_positive

__all__ = ["SelfTraining", "pseudo_label_loss", "alpha_schedule"]


def alpha_schedule(t: int, *, alpha_f: float, t1: int, t2: int) -> float:
    """Lee's weight of the pseudo-label loss at step ``t``.

    >>> [alpha_schedule(t, alpha_f=3.0, t1=10, t2=20) for t in (5, 10, 15, 20, 30)]
    [0.0, 0.0, 1.5, 3.0, 3.0]
    """
    if t < t1:
        return 0.0
    if t < t2:
        return (t - t1) / (t2 - t1) * alpha_f
    return float(alpha_f)


def pseudo_label_loss(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``sum_i m_i CE(z_i, argmax z_i) / n`` and the mask ``m`` of rows whose top probability >= threshold."""
    with torch.no_grad():
        conf, labels = F.softmax(logits, 1).max(1)
        mask = (conf >= threshold).to(logits.dtype)
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (ce * mask).sum() / max(len(logits), 1), mask


class SelfTraining:
    """Pseudo-labels on the target rows, weighted on Lee's schedule."""

    name = "self_training"
    requires = ("target",)

    def __init__(self, *, threshold: float = 0.0, alpha_f: float = 3.0, t1: int = 100,
                 t2: int = 600) -> None:
        check_positive("self_training", alpha_f=alpha_f)
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ConfigError(f"plugin 'self_training': threshold must be in [0, 1], "
                              f"got {threshold!r}")
        if not (isinstance(t1, int) and isinstance(t2, int) and 0 <= t1 < t2):
            raise ConfigError(f"plugin 'self_training': need integers 0 <= t1 < t2, got t1={t1!r}, "
                              f"t2={t2!r}")
        self.threshold = threshold
        self.alpha_f = alpha_f
        self.t1 = t1
        self.t2 = t2

    def alpha(self, t: int) -> float:
        """The pseudo-label loss weight at step ``t``."""
        return alpha_schedule(t, alpha_f=self.alpha_f, t1=self.t1, t2=self.t2)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor] | None:
        a = self.alpha(step.index)
        if step.target_logits is None or a == 0.0:
            return None
        loss, _ = pseudo_label_loss(step.target_logits, self.threshold)
        return {"pseudo_label": a * loss}


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "self_training", SelfTraining)
