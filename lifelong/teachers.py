"""Teachers and sources: frozen networks loaded from a finished run or a checkpoint file.

A teacher is given in YAML in one of two forms:

* ``{run: runs/src}`` — a directory that ``lifelong run --out`` wrote: its
  ``model.pt`` (a plain state dict) and ``model.json`` (the backbone config,
  input shape and number of classes; for older runs the resolved config in
  ``metrics.json`` is used instead);
* ``{backbone: {name: cnn, channels: [32, 64]}, checkpoint: path/model.pt}``
  — a backbone config and a weights file; ``input_shape`` and
  ``num_classes`` default to the student's stream.

Weights are read with ``torch.load(weights_only=True)`` (a file holding
anything but tensors is refused, never executed), loaded strictly (a config
that does not match the weights names the mismatching keys), moved to the
learner's device, put in eval mode for good and frozen (no parameter
requires gradient). A teacher's architecture may differ from the student's.
Every problem is a :class:`~lifelong.errors.ConfigError` raised before the
first batch.

Examples
--------
>>> import torch, tempfile, pathlib
>>> from lifelong.backbones import mlp
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> torch.save(mlp(input_shape=(4,), num_classes=3, hidden=[5]).state_dict(), d / "w.pt")
>>> t = load_teacher({"backbone": {"name": "mlp", "hidden": [5]}, "checkpoint": str(d / "w.pt")},
...                  input_shape=(4,), num_classes=3)
>>> t.training, any(p.requires_grad for p in t.parameters())
(False, False)
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError, LifelongError

__all__ = ["load_teacher", "freeze", "weights_digest", "model_description", "TEACHER_KEYS"]

TEACHER_KEYS = ("run", "backbone", "checkpoint", "input_shape", "num_classes")


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode for good (``train()`` is a no-op afterwards) and no gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # a partial of a module-level function (not a lambda): a frozen teacher still pickles
    model.train = functools.partial(_stay_in_eval, model)  # type: ignore[method-assign]
    return model


def _stay_in_eval(model: nn.Module, mode: bool = True) -> nn.Module:
    return model


def weights_digest(model: nn.Module) -> str:
    """A short hash of a model's weights: checkpoints record which teacher they were trained with."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                 if v.numel() else b"")
    return h.hexdigest()[:16]


def model_description(config: Mapping[str, Any], input_shape: Sequence[int],
                      num_classes: int) -> dict[str, Any]:
    """What ``model.json`` holds: enough to rebuild the backbone without the stream."""
    return {"backbone": dict(config["backbone"]), "input_shape": [int(s) for s in input_shape],
            "num_classes": int(num_classes)}


def _read_weights(path: Path, owner: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"{owner}: weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{owner}: {str(path)!r} is not a plain weights file ({first[:200]}); "
                          "give the model.pt that lifelong run wrote, or a torch.save(state_dict)") from exc
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping) \
            and not all(isinstance(v, Tensor) for v in state.values()):
        state = state["model"]  # a whole checkpoint's model part
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{owner}: {str(path)!r} holds no state dict of tensors; give the "
                          "model.pt that lifelong run wrote, or a torch.save(model.state_dict())")
    return dict(state)


def _from_run(directory: Path, owner: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not directory.is_dir():
        raise ConfigError(f"{owner}: run directory {str(directory)!r} does not exist; give the "
                          "--out directory of a finished lifelong run")
    weights = _read_weights(directory / "model.pt", owner)
    desc_path = directory / "model.json"
    if desc_path.is_file():
        try:
            desc = json.loads(desc_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{owner}: {desc_path} is not valid JSON ({exc})") from exc
        return desc, weights
    metrics_path = directory / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{owner}: {str(directory)!r} has model.pt but neither model.json nor "
                          "metrics.json; give the --out directory of a finished lifelong run")
    try:
        cfg = json.loads(metrics_path.read_text())["config"]
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{owner}: {metrics_path} holds no resolved config ({exc})") from exc
    from lifelong.registry import get_registry

    reg = get_registry()
    sentry = reg.get("stream", cfg["stream"]["name"])
    skip = ("name", "label_delay") + (("task_free",) if "task_free" not in sentry.parameters() else ())
    stream = sentry.factory(**{k: v for k, v in cfg["stream"].items() if k not in skip})
    return model_description(cfg, stream.input_shape, stream.num_classes), weights


def load_teacher(spec: Mapping[str, Any], *, input_shape: Sequence[int] | None = None,
                 num_classes: int | None = None, device: str | torch.device = "cpu",
                 owner: str = "teacher") -> nn.Module:
    """Build, load and freeze the network ``spec`` describes (see the module docstring).

    :param input_shape, num_classes: the student stream's, used where the spec
        gives none (a backbone + checkpoint teacher).
    :param owner: how errors name the source of the spec (``"plugin 'kd': teacher"``).
    """
    from lifelong.registry import get_registry

    if isinstance(spec, nn.Module):
        return freeze(spec.to(device))
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{owner} must be a mapping ({{run: DIR}} or {{backbone: ..., "
                          f"checkpoint: FILE}}), got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(TEACHER_KEYS))
    if unknown:
        raise ConfigError(f"{owner}: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(TEACHER_KEYS)}")
    if ("run" in spec) == ("checkpoint" in spec):
        raise ConfigError(f"{owner}: give either run: DIR or backbone: + checkpoint: FILE")
    if "run" in spec:
        desc, weights = _from_run(Path(str(spec["run"])), owner)
    else:
        if not isinstance(spec.get("backbone"), Mapping) or "name" not in spec["backbone"]:
            raise ConfigError(f"{owner}: checkpoint: needs backbone: {{name: ..., ...}} beside it")
        desc = {"backbone": dict(spec["backbone"]),
                "input_shape": spec.get("input_shape", input_shape),
                "num_classes": spec.get("num_classes", num_classes)}
        weights = _read_weights(Path(str(spec["checkpoint"])), owner)
        if desc["input_shape"] is None or desc["num_classes"] is None:
            raise ConfigError(f"{owner}: input_shape and num_classes are needed for a "
                              "checkpoint teacher outside a run")
    bparams = {k: v for k, v in desc["backbone"].items() if k != "name"}
    try:
        entry = get_registry().get("backbone", desc["backbone"]["name"])
        with torch.random.fork_rng(devices=[]):  # its init is overwritten by the weights below
            model = entry.factory(input_shape=tuple(desc["input_shape"]),
                                  num_classes=int(desc["num_classes"]), **bparams)
    except LifelongError as exc:
        raise ConfigError(f"{owner}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}: cannot build backbone {desc['backbone']!r}: {exc}") from exc
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
        raise ConfigError(f"{owner}: the weights do not match backbone {desc['backbone']!r}: "
                          f"{' '.join(lines)[:400]}") from exc
    return freeze(model.to(device))
