"""The ``online`` stream: rows that arrive one request at a time, not from a data set.

``stream: {name: online, n_features: N, classes: [...]}`` declares only the
shape of the data: ``N`` numeric inputs per row and the label values
(mapped to ``0..C-1`` in that order; ``n_classes: C`` when labels are
already ``0..C-1``). It has no experiences and no evaluation set: a
:class:`lifelong.river.Classifier` or ``lifelong serve`` feeds the learner
batch by batch, task-free, through :class:`OnlineSession`. Everything else
in the run config (backbone, strategy, plugins, train, seed) means what it
means in ``lifelong run``, and checkpoints are the same files.

Examples
--------
>>> from lifelong.run import build
>>> run = build({"stream": {"name": "online", "n_features": 3, "classes": ["a", "b"]},
...              "backbone": {"name": "mlp", "hidden": [8]}})
>>> session = OnlineSession(run.learner, run.stream)
>>> import torch
>>> session.learn(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])); session.learner.samples_seen
4
>>> session.predict_proba(torch.zeros(2, 3)).shape
torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.learner import Learner
from lifelong.stream.base import Batch, Stream

__all__ = ["online", "OnlineSession", "label_key"]


def label_key(v: Any) -> str:
    """The text a label is matched by: ``1``, ``1.0``, ``"1"`` and ``np.int64(1)`` are one label."""
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return str(bool(v))
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "item") and not isinstance(v, str):
        return label_key(v.item())
    return str(v)


def online(*, n_features: int, classes: list[Any] | None = None, n_classes: int | None = None,
           seed: int = 0) -> Stream:
    """Rows fed one request at a time (serve, river): declares n_features and the classes."""
    if not isinstance(n_features, int) or isinstance(n_features, bool) or n_features < 1:
        raise ConfigError(f"stream.n_features must be a positive int, got {n_features!r}")
    if classes is None:
        if n_classes is None or n_classes < 1:
            raise ConfigError("stream online: declare the labels: classes: [...] (label values) "
                              "or n_classes: C (labels already 0..C-1)")
        classes = list(range(n_classes))
    keys = [label_key(c) for c in classes]
    if len(set(keys)) != len(keys) or not keys:
        raise ConfigError(f"stream.classes {classes!r} must be distinct label values")
    if n_classes is not None and n_classes != len(keys):
        raise ConfigError(f"stream: n_classes={n_classes} but classes lists {len(keys)} values")
    return Stream("online", len(keys), (n_features,), list, [], task_aware=False,
                  n_experiences=None, seed=seed,
                  meta={"change_points": [], "classes": list(classes), "label_keys": keys})


class OnlineSession:
    """Feeds a learner batch by batch, outside :meth:`Learner.fit` (task-free, never closed).

    ``learn`` is one training step; ``predict_proba`` uses the current weights
    without changing anything. ``state_dict`` is the learner's, so a
    checkpoint (:mod:`lifelong.checkpoint`) of a session resumes exactly.
    """

    def __init__(self, learner: Learner, stream: Stream, *, state: dict[str, Any] | None = None
                 ) -> None:
        self.learner = learner
        self.stream = stream
        learner.begin(stream, evaluate=False)
        if state is not None:
            learner.load_state_dict(state)
        if learner.step_index == 0:  # as Learner.fit: the (only) experience opens before step 0
            learner.start_experience(None)
        learner.model.train()

    @property
    def classes(self) -> Sequence[Any]:
        return self.stream.meta.get("classes") or list(range(self.stream.num_classes))

    def learn(self, x: Tensor, y: Tensor) -> None:
        """One training step on ``(x, y)`` (CPU tensors; checked for NaN like a file stream)."""
        self.learner.train_batch(Batch(x, y))

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities ``(N, C)`` from the current weights (CPU tensor)."""
        x = x.to(self.learner.device)
        logits = self.learner.predict(Batch(x, torch.zeros(len(x), dtype=torch.long)))
        return torch.softmax(logits[:, : self.stream.num_classes].float(), dim=1).cpu()


@hookimpl
def register(registry: Any) -> None:
    registry.add("stream", "online", online)
