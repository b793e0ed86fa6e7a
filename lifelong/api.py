"""``lifelong.fit``: one call from your own data (tensors, numpy arrays, a Stream) to a trained run.

What ``lifelong run CONFIG`` does from YAML, for data that lives in Python::

    import numpy as np, lifelong
    x = np.random.rand(600, 20).astype("float32"); y = np.arange(600) % 6
    result = lifelong.fit((x, y, y // 2), backbone={"name": "mlp", "hidden": [64]},
                          plugins=["ewc"], lr=0.05)
    result.metrics["final_avg_accuracy"], result.learner.model

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = np.repeat(np.arange(4), 30)
>>> x = rng.normal(size=(120, 5)).astype("float32") + y[:, None]
>>> result = fit((x, y, y // 2), plugins=[{"name": "er", "mem_size": 20}], lr=0.05,
...              test=(x, y, y // 2))
>>> len(result.metrics["accuracy_matrix"]), result.stream.n_experiences
(2, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lifelong.errors import ConfigError
from lifelong.learner import Learner
from lifelong.plugins.evaluation import AccuracyMatrix, AnytimeAccuracy, Prequential, Resources
from lifelong.registry import get_registry
from lifelong.stream.base import Stream

__all__ = ["fit", "Fitted"]


@dataclass
class Fitted:
    """What :func:`fit` returns: the trained learner, its stream and the run's metrics."""

    learner: Learner
    stream: Stream
    metrics: dict[str, Any]

    @property
    def model(self) -> nn.Module:
        return self.learner.model


def _as_stream(data: Any, test: Any, seed: int) -> Stream:
    if isinstance(data, Stream):
        if test is not None:
            raise ConfigError("fit: test= is for array data; a Stream carries its own test sets")
        return data
    if hasattr(data, "train_stream") and hasattr(data, "test_stream"):  # an Avalanche benchmark
        from lifelong.stream.adapters import from_avalanche

        if test is not None:
            raise ConfigError("fit: test= is for array data; an Avalanche benchmark brings its "
                              "test_stream")
        return from_avalanche(data, seed=seed)
    if isinstance(data, str):
        entry = get_registry().get("stream", data)
        return entry.factory(**({"seed": seed} if "seed" in entry.parameters() else {}))
    if isinstance(data, tuple) and len(data) in (2, 3):
        from lifelong.stream.adapters import from_numpy, from_tensors

        tensors = all(isinstance(a, torch.Tensor) for a in data)
        make = from_tensors if tensors else from_numpy
        x, y, ids = (*data, None)[:3]
        kw: dict[str, Any] = {"experience_ids": ids, "seed": seed, "name": "data"}
        if test is not None:
            if not (isinstance(test, tuple) and len(test) in (2, 3)):
                raise ConfigError("fit: test= must be (x_test, y_test) or (x_test, y_test, "
                                  "experience_ids)")
            xt, yt, tids = (*test, None)[:3]
            kw.update(x_test=xt, y_test=yt, test_experience_ids=tids)
        return make(x, y, **kw)
    raise ConfigError(f"fit: stream must be a Stream, an Avalanche benchmark, a registered stream "
                      f"name, or a tuple "
                      f"(x, y) / (x, y, experience_ids) of arrays or tensors; got "
                      f"{type(data).__name__}")


def _as_model(backbone: Any, stream: Stream, seed: int) -> nn.Module:
    if isinstance(backbone, nn.Module):
        return backbone
    if isinstance(backbone, str):
        backbone = {"name": backbone}
    if not isinstance(backbone, Mapping) or "name" not in backbone:
        raise ConfigError("fit: backbone must be a registered name ('mlp', 'cnn', 'resnet'), "
                          "a dict {'name': ..., **params}, or a torch.nn.Module")
    params = {k: v for k, v in backbone.items() if k != "name"}
    torch.manual_seed(seed)
    return get_registry().get("backbone", backbone["name"]).factory(
        input_shape=stream.input_shape, num_classes=stream.num_classes, **params)


def _as_plugin(spec: Any, seed: int) -> Any:
    from lifelong.run import make_plugin

    if isinstance(spec, str):
        return make_plugin(spec, {}, seed=seed)
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError(f"fit: plugin spec {dict(spec)!r} has no 'name'")
        return make_plugin(spec["name"], {k: v for k, v in spec.items() if k != "name"},
                           seed=seed)
    return spec  # a plugin object


def fit(stream: Any, *, backbone: Any = "mlp", plugins: Sequence[Any] = (),
        strategy: str | Mapping[str, Any] | None = None, test: Any = None,
        optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.0,
        weight_decay: float = 0.0, batch_size: int = 10, epochs: int = 1,
        device: str = "auto", seed: int = 0, nan_policy: str = "raise",
        prequential: bool = True, matrix: bool = True, every: int = 0) -> Fitted:
    """Train a backbone with plugins on ``stream``; return the learner and the metrics.

    :param stream: a :class:`~lifelong.stream.base.Stream` (e.g. from
        :func:`lifelong.stream.from_numpy`), an Avalanche benchmark (its
        ``train_stream`` / ``test_stream``, through
        :func:`lifelong.stream.from_avalanche`), a registered stream name, or a tuple
        ``(x, y)`` / ``(x, y, experience_ids)`` of numpy arrays or tensors (one
        experience per distinct id, in increasing order; one experience without ids).
    :param backbone: a registered backbone name, ``{"name": ..., **params}``, or your
        own ``torch.nn.Module`` (its output size must cover the labels).
    :param plugins: plugin objects, registered names, or ``{"name": ..., **params}``.
    :param strategy: a registered preset (name or ``{"name": ..., **params}``); its
        plugins come first.
    :param test: held-out ``(x, y)`` / ``(x, y, experience_ids)`` for array data.
    :param prequential, matrix, every: the evaluation views (as ``eval:`` in YAML).
    The remaining keywords are the ``train:`` section of a YAML run.
    """
    s = _as_stream(stream, test, seed)
    specs: list[Any] = []
    if strategy is not None:
        sname = strategy if isinstance(strategy, str) else strategy["name"]
        sparams = {} if isinstance(strategy, str) else {k: v for k, v in strategy.items()
                                                       if k != "name"}
        preset = get_registry().get("strategy", sname).factory(**sparams)
        specs.extend(preset.plugins)
    specs.extend(plugins)
    model = _as_model(backbone, s, seed)
    made = [_as_plugin(p, seed) for p in specs]
    observers: list[Any] = [Resources()]
    if matrix:
        observers.append(AccuracyMatrix())
    if prequential:
        observers.append(Prequential())
    if every:
        observers.append(AnytimeAccuracy(every=every))
    learner = Learner(model, plugins=made + observers, optimizer=optimizer, lr=lr,
                      momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                      epochs=epochs, device=device, seed=seed, nan_policy=nan_policy)
    learner.fit(s)
    metrics: dict[str, Any] = {}
    for p in learner.plugins:
        if hasattr(p, "summary"):
            metrics.update(p.summary())
    metrics.update({"skipped_batches": learner.skipped_batches,
                    "boundaries_detected": list(learner.boundaries_detected)})
    return Fitted(learner, s, metrics)
