"""Checks of a learner checkpoint's parts before they are loaded (used by ``Learner.load_state_dict``).

Each check compares one part of a :meth:`Learner.state_dict` with the run it is
loaded into and raises :class:`~lifelong.errors.CheckpointError` naming the part.
Plugin states get generic checks here (present, of the type and with the keys
the plugin's own state has, tensors keyed by model parameter names shaped like
those parameters) and then the plugin's own ``load_state_dict``, whose failures
of any kind become a CheckpointError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import CheckpointError

TOP = ("model", "optimizer", "plugins", "rng", "counters")
COUNTERS = ("step_index", "samples_seen", "experience_index", "batch_in_experience",
            "skipped_batches", "boundaries_detected")
FIX = "the checkpoint is corrupted or was written for another run"


def _bad(what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint: {what}; {FIX}")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_top(state: Any) -> None:
    if not isinstance(state, Mapping):
        raise _bad(f"the learner state is a {type(state).__name__}, not a mapping")
    missing = [k for k in TOP if k not in state]
    if missing:
        raise _bad(f"the learner state has no {', '.join(missing)}")
    for k in ("model", "optimizer", "plugins", "rng", "counters"):
        if not isinstance(state[k], Mapping):
            raise _bad(f"{k} is a {type(state[k]).__name__}, not a mapping")


def check_model(model: nn.Module, saved: Mapping[str, Any]) -> None:
    """Same tensor names, shapes and dtypes as the model, finite floating values."""
    own = model.state_dict()
    missing = [k for k in own if k not in saved]
    extra = [k for k in saved if k not in own]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if extra:
            parts.append(f"unexpected {', '.join(map(str, extra[:3]))}")
        raise _bad(f"the model tensors do not match the model ({'; '.join(parts)})")
    for k, ref in own.items():
        v = saved[k]
        if not isinstance(v, Tensor):
            raise _bad(f"model tensor {k!r} is a {type(v).__name__}")
        if v.shape != ref.shape or v.dtype != ref.dtype:
            raise _bad(f"model tensor {k!r} has shape {tuple(v.shape)} and dtype {v.dtype}, the "
                       f"model has {tuple(ref.shape)} and {ref.dtype}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise _bad(f"model tensor {k!r} holds NaN or infinite values")


def check_optimizer(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any]) -> None:
    """Same parameter groups; per-parameter state shaped like its parameter; sane settings."""
    groups = saved.get("param_groups")
    st = saved.get("state")
    if not isinstance(groups, list) or not isinstance(st, Mapping):
        raise _bad("the optimizer state has no param_groups list or state mapping")
    own = optimizer.param_groups
    if len(groups) != len(own):
        raise _bad(f"the optimizer state has {len(groups)} parameter groups, the run "
                   f"{len(own)}")
    shapes: dict[int, torch.Size] = {}
    for g, mine in zip(groups, own):
        if not isinstance(g, Mapping) or not isinstance(g.get("params"), list) or \
                len(g["params"]) != len(mine["params"]):
            raise _bad("the optimizer's parameter groups do not match the model's parameters")
        for idx, p in zip(g["params"], mine["params"]):
            if not _int(idx):
                raise _bad(f"optimizer parameter index {idx!r} is not an integer")
            shapes[idx] = p.shape
        for key, ref in mine.items():
            if key == "params":
                continue
            if key not in g:
                raise _bad(f"the optimizer's parameter group has no {key!r}")
            v = g[key]
            same = (isinstance(v, bool) if isinstance(ref, bool) else
                    v is None if ref is None else
                    isinstance(v, int | float) and not isinstance(v, bool)
                    if isinstance(ref, int | float) else
                    isinstance(v, tuple | list) and len(v) == len(ref)
                    if isinstance(ref, tuple | list) else True)
            if not same:
                raise _bad(f"optimizer setting {key} = {v!r} is not like the run's {ref!r}")
        for key, v in g.items():
            if key == "params" or isinstance(v, bool) or v is None:
                continue
            nums = v if isinstance(v, tuple | list) else [v]
            for n in nums:
                if isinstance(n, int | float) and not isinstance(n, bool) and (
                        not math.isfinite(n) or n < 0 or (key == "lr" and n > 1e6)):
                    raise _bad(f"optimizer setting {key} = {v!r} is out of range")
    layouts = {tuple(sorted(map(str, e))) for e in st.values() if isinstance(e, Mapping)}
    if len(layouts) > 1:
        raise _bad(f"the optimizer's per-parameter states hold different entries "
                   f"({' vs '.join(map(str, sorted(layouts)))[:120]})")
    for idx, entry in st.items():
        if idx not in shapes:
            raise _bad(f"the optimizer holds state for parameter {idx!r}, which the run lacks")
        if not isinstance(entry, Mapping):
            raise _bad(f"optimizer state of parameter {idx} is a {type(entry).__name__}")
        for name, v in entry.items():
            if not isinstance(v, Tensor):
                if isinstance(v, int | float) and not isinstance(v, bool) and (
                        not math.isfinite(v) or v < 0):
                    raise _bad(f"optimizer state {name} of parameter {idx} is {v!r}")
                continue
            if not v.is_floating_point():
                raise _bad(f"optimizer state {name} of parameter {idx} has dtype {v.dtype}, "
                           "torch's optimizers keep floating-point state")
            if v.dim() == 0 and shapes[idx] != ():  # a step count
                if not (math.isfinite(float(v)) and float(v) >= 0):
                    raise _bad(f"optimizer state {name} of parameter {idx} is {float(v)!r}")
                continue
            if v.shape != shapes[idx]:
                raise _bad(f"optimizer state {name} of parameter {idx} has shape "
                           f"{tuple(v.shape)}, the parameter {tuple(shapes[idx])}")
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise _bad(f"optimizer state {name} of parameter {idx} holds NaN or inf")


def check_rng(rng: Mapping[str, Any]) -> None:
    size = torch.get_rng_state().numel()
    t = rng.get("torch")
    if not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.shape != (size,):
        got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
        raise _bad(f"the torch RNG state is {got}, expected ({size},) torch.uint8")
    if "cuda" not in rng:
        raise _bad("the RNG states have no 'cuda' entry")
    cuda = rng["cuda"]
    if not isinstance(cuda, list | tuple) or not all(
            isinstance(c, Tensor) and c.dtype == torch.uint8 and c.dim() == 1 for c in cuda):
        raise _bad("the CUDA RNG states are not a list of uint8 tensors")
    if cuda and torch.cuda.is_available():
        ref = torch.cuda.get_rng_state_all()
        if len(cuda) != len(ref) or any(c.shape != r.shape for c, r in zip(cuda, ref)):
            raise _bad("the CUDA RNG states do not match this machine's devices")


def _batches_in(learner: Any, index: int) -> int | None:
    stream = learner.stream
    if stream is None:
        return None
    for i, exp in enumerate(stream.experiences()):
        if i == index:
            n = getattr(exp, "n_samples", None)
            return None if n is None else math.ceil(n / learner.batch_size) * learner.epochs
    return None


def _total_batches(learner: Any) -> int | None:
    stream = learner.stream
    if stream is None or getattr(stream, "n_experiences", None) is None:
        return None
    total = 0
    for exp in stream.experiences():
        n = getattr(exp, "n_samples", None)
        if n is None:
            return None
        total += math.ceil(n / learner.batch_size) * learner.epochs
    return total


def check_counters(learner: Any, c: Mapping[str, Any]) -> None:
    """Counters are non-negative integers consistent with each other and with the stream."""
    for k in COUNTERS[:-1]:
        v = c.get(k)
        if not _int(v) or v < 0:
            raise _bad(f"counter {k} is {v!r}, expected an integer >= 0")
    steps, seen = c["step_index"], c["samples_seen"]
    if seen > steps * learner.batch_size:
        raise _bad(f"counter samples_seen={seen} is more than step_index={steps} batches of "
                   f"{learner.batch_size} can hold")
    stream = learner.stream
    n_exp = getattr(stream, "n_experiences", None) if stream is not None else None
    total = _total_batches(learner)
    if total is not None:
        for k in ("step_index", "skipped_batches"):
            if c[k] > total:
                raise _bad(f"counter {k}={c[k]} is beyond the stream's {total} batches")
    if n_exp is not None and c["experience_index"] > n_exp:
        raise _bad(f"counter experience_index={c['experience_index']} is beyond the stream's "
                   f"{n_exp} experiences")
    if n_exp is None or c["experience_index"] < n_exp:
        most = _batches_in(learner, c["experience_index"])
        if most is not None and c["batch_in_experience"] > most:
            raise _bad(f"counter batch_in_experience={c['batch_in_experience']} is beyond the "
                       f"{most} batches of experience {c['experience_index']}")
    b = c.get("boundaries_detected")
    if not isinstance(b, list | tuple) or not all(_int(v) and 0 <= v <= seen for v in b) or \
            any(x > y for x, y in zip(b, b[1:])):
        raise _bad("boundaries_detected must be a sorted list of sample counts within "
                   f"0..samples_seen ({seen})")


def check_timing(t: Any) -> None:
    ok = isinstance(t, Mapping) and all(
        isinstance(t.get(k), int | float) and not isinstance(t.get(k), bool)
        and math.isfinite(t[k]) and t[k] >= 0 for k in ("wall_time_s", "eval_time_s"))
    if not ok or not _int(t.get("segments")) or t["segments"] < 1:
        raise _bad(f"the run timing {t!r} is not {{wall_time_s, eval_time_s >= 0, segments >= 1}}")


# ---------------------------------------------------------------------------- plugins


def _param_keyed(value: Any, model_state: Mapping[str, Tensor], where: str, depth: int = 0,
                 trainable: set[str] | None = None) -> None:
    """Dicts keyed by model tensor names hold tensors of those tensors' shapes."""
    if depth > 4 or not isinstance(value, Mapping):
        if isinstance(value, list | tuple) and depth <= 4:
            for i, v in enumerate(value[:64]):
                _param_keyed(v, model_state, f"{where}[{i}]", depth + 1, trainable)
        return
    keys = list(value)
    if keys and all(isinstance(k, str) and k in model_state for k in keys):
        for k in keys:
            v, ref = value[k], model_state[k]
            if not isinstance(v, Tensor) or v.shape != ref.shape or (
                    ref.is_floating_point() and not v.is_floating_point()):
                got = f"{tuple(v.shape)} {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
                raise CheckpointError(f"checkpoint state of {where}: {k!r} is {got}, the "
                                      f"model's {k!r} is {tuple(ref.shape)} {ref.dtype}; {FIX}")
        return
    for k, v in value.items():
        _param_keyed(v, model_state, f"{where}.{k}", depth + 1, trainable)


def _like_template(saved: Any, template: Any, where: str, depth: int = 0) -> None:
    """Tensors at the same place as a non-empty tensor of the plugin's own state keep its
    dtype and number of dimensions (sizes may differ: buffers fill, histories grow)."""
    if depth > 6:
        return
    if isinstance(template, Tensor):
        if template.numel() and isinstance(saved, Tensor) and (
                saved.dtype != template.dtype or saved.dim() != template.dim()):
            raise CheckpointError(f"checkpoint state of {where} is {tuple(saved.shape)} "
                                  f"{saved.dtype}, expected {template.dim()} dimension(s) of "
                                  f"{template.dtype}; {FIX}")
        if template.numel() and not isinstance(saved, Tensor):
            raise CheckpointError(f"checkpoint state of {where} is a {type(saved).__name__}, "
                                  f"expected a tensor; {FIX}")
        return
    if isinstance(template, Mapping) and isinstance(saved, Mapping):
        for k, v in template.items():
            if k in saved:
                _like_template(saved[k], v, f"{where}.{k}", depth + 1)


def _optimizer_like(value: Any, where: str, depth: int = 0) -> None:
    """Optimizer states inside a plugin's state (an auxiliary network's): scalar step counts,
    finite floating moments, the same entries for every parameter."""
    if depth > 4 or not isinstance(value, Mapping):
        return
    if isinstance(value.get("state"), Mapping) and isinstance(value.get("param_groups"), list):
        st = value["state"]
        layouts = {tuple(sorted(map(str, e))) for e in st.values() if isinstance(e, Mapping)}
        if len(layouts) > 1 or any(not isinstance(e, Mapping) for e in st.values()):
            raise CheckpointError(f"checkpoint state of {where}: its optimizer's per-parameter "
                                  f"states hold different entries; {FIX}")
        for idx, entry in st.items():
            for name, v in entry.items():
                if not isinstance(v, Tensor):
                    continue
                if not v.is_floating_point() or (name == "step" and v.dim() != 0) or not bool(
                        torch.isfinite(v).all()):
                    raise CheckpointError(f"checkpoint state of {where}: optimizer state {name} "
                                          f"of parameter {idx} is {tuple(v.shape)} {v.dtype}"
                                          f"; {FIX}")
        return
    for k, v in value.items():
        _optimizer_like(v, f"{where}.{k}", depth + 1)


def load_plugin(learner: Any, plugin: Any, key: str, states: Mapping[str, Any]) -> None:
    """Generic checks of one plugin's saved state, then its own ``load_state_dict``."""
    name = key.split(":", 1)[-1]
    who = f"plugin {name!r}"
    if key not in states:
        raise CheckpointError(f"checkpoint: no state for {who} (entry {key!r}); it was saved "
                              f"without it or by another plugin list; {FIX}")
    saved = states[key]
    try:
        template = plugin.state_dict()
    except Exception:  # noqa: BLE001 - a plugin that cannot describe itself yet: skip the template
        template = None
    if template is not None:
        if isinstance(template, Mapping) != isinstance(saved, Mapping):
            raise CheckpointError(f"checkpoint state of {who} is a {type(saved).__name__}, the "
                                  f"plugin's state is a {type(template).__name__}; {FIX}")
        if isinstance(template, Mapping):
            missing = [k for k in template if k not in saved]
            if missing:
                raise CheckpointError(f"checkpoint state of {who}: {', '.join(map(repr, missing))}"
                                      f" missing; {FIX}")
    if template is not None:
        _like_template(saved, template, who)
    _optimizer_like(saved, who)
    if isinstance(saved, Mapping):  # an auxiliary optimizer saved under its attribute's name
        opts = [v for v in vars(plugin).values() if isinstance(v, torch.optim.Optimizer)]
        like = [k for k, v in saved.items() if isinstance(v, Mapping) and "param_groups" in v]
        for k, v in saved.items():
            opt = getattr(plugin, f"{k}_", None) if isinstance(k, str) else None
            opt = opt if opt is not None or not isinstance(k, str) else getattr(plugin, k, None)
            if opt is None and len(opts) == 1 and like == [k]:  # the plugin's only optimizer
                opt = opts[0]
            if isinstance(opt, torch.optim.Optimizer) and isinstance(v, Mapping):
                try:
                    check_optimizer(opt, v)
                except CheckpointError as exc:
                    raise CheckpointError(f"checkpoint state of {who}.{k}: "
                                          f"{str(exc).removeprefix('checkpoint: ')}") from None
    trainable = {n for n, p in learner.model.named_parameters() if p.requires_grad}
    _param_keyed(saved, learner.model.state_dict(), who, trainable=trainable)
    try:
        plugin.load_state_dict(saved)
    except CheckpointError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - e.g. a Rust PanicException from a detector
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"checkpoint state of {who} cannot be loaded "
                              f"({type(exc).__name__}{': ' + first if first else ''}); "
                              f"{FIX}") from exc
