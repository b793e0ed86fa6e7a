"""A lifelong learner behind river's classifier interface.

:class:`Classifier` is a ``river.base.MiniBatchClassifier``: ``learn_one``,
``predict_one``, ``predict_proba_one``, ``learn_many``, ``predict_many`` and
``predict_proba_many``, so it runs inside ``river.evaluate.progressive_val_score``,
``river.compose`` pipelines and river's estimator checks. Inside, it is the
learner that ``lifelong run`` builds from the same settings (backbone,
strategy, plugins, optimizer, seed) over the ``online`` stream
(:mod:`lifelong.stream.online`), fed batch by batch: on the same stream it
gives the same prequential accuracy as ``lifelong run``.

Feature dicts become a fixed input vector of ``n_features`` slots: a key
takes the next free slot the first time it is seen (keys new in one dict in
sorted order, so the order of a dict never matters); a key absent from a
dict reads 0, as in river's linear models, where a missing feature
contributes nothing. ``n_features=None`` sizes the vector to the first dict
seen. A new key when every slot is taken is not used: it is counted in
``ignored_features_`` and warned about once (raise ``n_features`` to use it).
Values must be numbers; NaN or inf is refused (``nan_policy="skip"`` drops
such rows from training instead, counting them).

Labels: ``classes`` fixes the label values and their order (the head has one
output per class); without it classes get outputs in order of first
appearance, up to ``max_classes``, and probabilities are over the classes
seen so far, as river's classifiers report them.

``learn_one`` trains once ``batch_size`` rows are held (1: every row, as
river's models do); ``learn_many`` feeds the same buffer, so it matches a
``learn_one`` loop exactly. Predictions use the weights of the last step.

Examples
--------
>>> from river import datasets, evaluate, metrics
>>> model = Classifier(backbone_params={"hidden": [16]}, lr=0.05, classes=(False, True))
>>> evaluate.progressive_val_score(datasets.Phishing().take(200), model, metrics.Accuracy())
Accuracy: ...
>>> model.learner.samples_seen
200
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from typing import Any

import numpy as np
import torch
from river import base

from lifelong.errors import ConfigError, DataError

__all__ = ["Classifier"]


class Classifier(base.MiniBatchClassifier):
    """A lifelong learner (backbone + plugins) as a river classifier.

    :param backbone: a registered backbone name; ``backbone_params`` its parameters.
    :param strategy: a preset name (or ``{"name": ..., **params}``), as in a run config.
    :param plugins: plugin names or ``{"name": ..., **params}`` mappings, as in a run config.
    :param optimizer, lr, momentum, weight_decay: the optimizer, as ``train:`` in a run config.
    :param batch_size: rows per training step.
    :param n_features: input slots (``None``: the size of the first dict seen).
    :param classes: label values in output order (``None``: learned as they come).
    :param max_classes: head size when ``classes`` is not given.
    :param nan_policy: ``"raise"`` or ``"skip"`` for rows with NaN/inf values.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param threads: torch CPU threads (``train.threads``); ``None`` keeps the process's
        current setting, so building an estimator changes nothing global.
    :param seed: seeds the model's initialisation and every plugin.
    """

    def __init__(self, *, backbone: str = "mlp", backbone_params: dict[str, Any] | None = None,
                 strategy: str | dict[str, Any] | None = None, plugins: list[Any] | None = None,
                 optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, batch_size: int = 1, n_features: int | None = None,
                 classes: tuple[Any, ...] | None = None, max_classes: int = 10,
                 nan_policy: str = "raise", device: str = "cpu", threads: int | None = None,
                 seed: int = 0) -> None:
        self.backbone = backbone
        self.backbone_params = backbone_params
        self.strategy = strategy
        self.plugins = plugins
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_features = n_features
        self.classes = classes
        self.max_classes = max_classes
        self.nan_policy = nan_policy
        self.device = device
        self.threads = threads
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        self.features_: dict[Any, int] = {}
        self.ignored_features_: dict[Any, int] = {}
        self.classes_: list[Any] = list(self.classes) if self.classes is not None else []
        self._class_index: dict[Any, int] = {c: i for i, c in enumerate(self.classes_)}
        self._session: Any = None
        self._width: int | None = None
        self._buffer_x: list[np.ndarray] = []
        self._buffer_y: list[int] = []
        self.skipped_rows_ = 0

    # ------------------------------------------------------------------ river tags
    @property
    def _multiclass(self) -> bool:
        return True

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"backbone_params": {"hidden": [8]}, "n_features": 24, "lr": 0.05}

    @property
    def learner(self) -> Any:
        """The :class:`~lifelong.learner.Learner` inside (built at the first call)."""
        return None if self._session is None else self._session.learner

    # ------------------------------------------------------------------ assembly
    def config(self, n_features: int) -> dict[str, Any]:
        """The run config this estimator stands for (what ``lifelong run`` would build)."""
        head = len(self.classes) if self.classes is not None else self.max_classes
        cfg: dict[str, Any] = {
            "seed": self.seed, "device": self.device,
            "stream": {"name": "online", "n_features": n_features, "n_classes": head},
            "backbone": {"name": self.backbone, **(self.backbone_params or {})},
            "plugins": [dict(p) if isinstance(p, dict) else p for p in self.plugins or []],
            "train": {"batch_size": self.batch_size, "optimizer": self.optimizer,
                      "lr": self.lr, "momentum": self.momentum,
                      "weight_decay": self.weight_decay, "nan_policy": "raise",
                      "threads": self.threads if self.threads is not None
                      else torch.get_num_threads()},
            "eval": {"prequential": False, "matrix": False},
        }
        if self.strategy is not None:
            cfg["strategy"] = copy.deepcopy(self.strategy)
        return cfg

    def _ensure(self, n_keys: int) -> None:
        if self._session is not None:
            return
        from lifelong.run import build
        from lifelong.stream.online import OnlineSession

        if self.nan_policy not in ("raise", "skip"):
            raise ConfigError(f"Classifier: nan_policy must be 'raise' or 'skip', got "
                              f"{self.nan_policy!r}")
        if self.batch_size < 1:
            raise ConfigError(f"Classifier: batch_size must be >= 1, got {self.batch_size}")
        width = self.n_features if self.n_features is not None else max(n_keys, 1)
        run = build(self.config(width))
        self._width = width
        self._session = OnlineSession(run.learner, run.stream)

    # ------------------------------------------------------------------ features and labels
    def _slots(self, keys: Any) -> None:
        new = [k for k in keys if k not in self.features_ and k not in self.ignored_features_]
        if not new:
            return
        assert self._width is not None
        for k in sorted(new, key=lambda k: (type(k).__name__, str(k))):
            if len(self.features_) < self._width:
                self.features_[k] = len(self.features_)
            else:
                self.ignored_features_[k] = 0
                warnings.warn(f"lifelong.river.Classifier: feature {k!r} is new but all "
                              f"{self._width} input slots are taken, so it is not used; "
                              "create the Classifier with a larger n_features", stacklevel=3)

    def _vector(self, x: dict[Any, Any]) -> np.ndarray | None:
        """One row as a float32 vector; ``None`` if it holds NaN/inf and nan_policy is skip."""
        self._ensure(len(x))
        self._slots(x)
        v = np.zeros(self._width or 0, np.float32)
        for k, val in x.items():
            i = self.features_.get(k)
            if i is None:
                self.ignored_features_[k] += 1
                continue
            if isinstance(val, bool | np.bool_):
                val = float(val)
            try:
                v[i] = val
            except (TypeError, ValueError):
                raise DataError(f"Classifier: feature {k!r} is {val!r}, not a number; encode it "
                                "first (e.g. river.preprocessing.OneHotEncoder)") from None
        if not np.isfinite(v).all():
            bad = next(k for k, i in self.features_.items() if not math.isfinite(v[i]))
            if self.nan_policy == "skip":
                return None
            raise DataError(f"Classifier: feature {bad!r} is NaN or infinite; clean it first "
                            "(e.g. river.preprocessing.StatImputer) or use nan_policy='skip'")
        return v

    def _matrix(self, X: Any) -> np.ndarray:
        self._ensure(X.shape[1])
        cols = list(X.columns)
        self._slots(cols)
        out = np.zeros((len(X), self._width or 0), np.float32)
        for c in cols:
            i = self.features_.get(c)
            if i is None:
                self.ignored_features_[c] += len(X)
                continue
            try:
                out[:, i] = X[c].to_numpy(dtype=np.float32)
            except (TypeError, ValueError):
                raise DataError(f"Classifier: column {c!r} is not numeric; encode it first") from None
        return out

    def _label(self, y: Any) -> int:
        i = self._class_index.get(y)
        if i is not None:
            return i
        if self.classes is not None:
            raise DataError(f"Classifier: label {y!r} is not one of classes={list(self.classes)}")
        if len(self.classes_) >= self.max_classes:
            raise DataError(f"Classifier: label {y!r} would be class {len(self.classes_) + 1} but "
                            f"max_classes={self.max_classes}; raise max_classes or pass classes=")
        self._class_index[y] = len(self.classes_)
        self.classes_.append(y)
        return self._class_index[y]

    # ------------------------------------------------------------------ learning
    def _push(self, rows: np.ndarray, labels: list[int]) -> None:
        self._buffer_x.extend(rows)
        self._buffer_y.extend(labels)
        while len(self._buffer_y) >= self.batch_size:
            b = self.batch_size
            x = torch.from_numpy(np.stack(self._buffer_x[:b]))
            y = torch.tensor(self._buffer_y[:b], dtype=torch.long)
            del self._buffer_x[:b], self._buffer_y[:b]
            self._session.learn(x, y)

    def learn_one(self, x: dict[Any, Any], y: Any, **kwargs: Any) -> None:
        v = self._vector(x)
        if v is None:
            self.skipped_rows_ += 1
            return
        self._push(v[None], [self._label(y)])

    def learn_many(self, X: Any, y: Any, **kwargs: Any) -> None:
        m = self._matrix(X)
        keep = np.isfinite(m).all(axis=1)
        if not keep.all():
            if self.nan_policy == "raise":
                i = int(np.flatnonzero(~keep)[0])
                raise DataError(f"Classifier: row {X.index[i]!r} holds NaN or inf; clean it or "
                                "use nan_policy='skip'")
            self.skipped_rows_ += int((~keep).sum())
        labels = [self._label(v) for v, k in zip(y.tolist(), keep) if k]
        self._push(m[keep], labels)

    # ------------------------------------------------------------------ prediction
    def _proba(self, m: np.ndarray) -> np.ndarray:
        """Probabilities over the known classes, renormalised (rows of ``m``)."""
        k = len(self.classes_)
        p = self._session.predict_proba(torch.from_numpy(m))[:, :k].double().numpy()
        return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)

    def predict_proba_one(self, x: dict[Any, Any], **kwargs: Any) -> dict[Any, float]:
        if not self.classes_:
            return {}
        self._ensure(len(x))
        v = np.zeros(self._width or 0, np.float32)
        for k, val in x.items():
            i = self.features_.get(k)
            if i is not None:
                v[i] = float(val)
        p = self._proba(v[None])[0]
        return {c: float(p[i]) for i, c in enumerate(self.classes_)}

    def predict_proba_many(self, X: Any) -> Any:
        import pandas as pd

        if not self.classes_:
            return pd.DataFrame(index=X.index)
        self._ensure(X.shape[1])
        m = np.zeros((len(X), self._width or 0), np.float32)
        for c in X.columns:
            i = self.features_.get(c)
            if i is not None:
                m[:, i] = X[c].to_numpy(dtype=np.float32)
        return pd.DataFrame(self._proba(m), index=X.index, columns=list(self.classes_))

    def predict_many(self, X: Any) -> Any:
        import pandas as pd

        proba = self.predict_proba_many(X)
        if proba.shape[1] == 0:
            return pd.Series([None] * len(X), index=X.index, dtype=object)
        idx = proba.to_numpy().argmax(axis=1)
        return pd.Series([self.classes_[i] for i in idx], index=X.index)

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict[str, Any]:
        state = copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "_session"})
        learner_state = None
        if self._session is not None:  # as bytes: torch.save output is the same for the same state
            buf = io.BytesIO()
            torch.save(self.learner.state_dict(), buf)
            learner_state = buf.getvalue()
        state["_learner_state"] = learner_state
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        learner_state = state.pop("_learner_state")
        self.__dict__.update(state)
        self._session = None
        if learner_state is not None:
            from lifelong.run import build
            from lifelong.stream.online import OnlineSession

            run = build(self.config(self._width))
            loaded = torch.load(io.BytesIO(learner_state), weights_only=True)
            self._session = OnlineSession(run.learner, run.stream, state=loaded)
