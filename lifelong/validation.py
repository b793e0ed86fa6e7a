"""Small checks shared by every plugin, backbone and stream: parameters, checkpoint state, memory.

Parameters are checked when a run is assembled, one line naming the owner and
the key (``plugin 'er': mem_size must be an integer >= 1, got -5``)::

    check_number("plugin 'er'", "mem_size", mem_size, min=1, integer=True)

A plugin's ``load_state_dict`` checks what it reads against the stream and the
model and raises :class:`~lifelong.errors.CheckpointError` on anything off::

    buf = state_tensor(state, "x", owner=self.name, shape=(None, *stream.input_shape),
                       dtype="float")

While :meth:`lifelong.Learner.load_state_dict` runs, :func:`loading_learner`
returns the learner being restored, so a helper can compare saved tensors with
``learner.stream`` (input shape, classes) and ``learner.model`` without a new
argument. :func:`check_memory` refuses a size that cannot fit before training,
naming the bytes it would need.

Examples
--------
>>> check_number("plugin 'x'", "alpha", 0.5, min=0.0)
>>> check_number("plugin 'x'", "alpha", float("nan"), min=0.0)
Traceback (most recent call last):
...
lifelong.errors.ConfigError: plugin 'x': alpha must be a finite number >= 0.0, got nan
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import torch

from lifelong.errors import CheckpointError, ConfigError

__all__ = ["check_number", "check_choice", "check_stream_params", "STREAM_RANGES", "check_memory",
           "available_bytes", "state_get",
           "state_number", "state_tensor", "check_tensor", "state_rng", "state_optimizer",
           "state_module", "state_floats", "loading", "loading_learner", "loading_counters",
           "model_output_width"]

_LOADING: ContextVar[Any] = ContextVar("lifelong_loading", default=None)


# ---------------------------------------------------------------------------- parameters


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_number(owner: str, key: str, value: Any, *, min: float | None = None,
                 max: float | None = None, above: float | None = None, integer: bool = False,
                 allow_none: bool = False) -> None:
    """:class:`ConfigError` unless ``value`` is a finite number in range.

    :param owner: who the parameter belongs to, as the message shows it (``"plugin 'er'"``).
    :param min, max: inclusive bounds; ``above``: exclusive lower bound (``above=0``: > 0).
    :param integer: must be an ``int``; ``allow_none``: ``None`` is accepted.
    """
    if value is None and allow_none:
        return
    parts = []
    if min is not None:
        parts.append(f">= {min}")
    if above is not None:
        parts.append(f"> {above}")
    if max is not None:
        parts.append(f"<= {max}")
    want = ("an integer" if integer else "a finite number") + (" " + " and ".join(parts)
                                                                 if parts else "")
    ok = _is_number(value) and (not integer or isinstance(value, int))
    if ok:
        v = value
        ok = (math.isfinite(v) and (min is None or v >= min) and (max is None or v <= max)
              and (above is None or v > above))
    if not ok:
        raise ConfigError(f"{owner + ': ' if owner else ''}{key} must be {want}"
                          f"{' (or null)' if allow_none else ''}, got {value!r}")


# Ranges of the numeric parameters the built-in streams share, by name (a stream's own
# factory may check more); applied when a run is assembled, before the stream is built.
STREAM_RANGES: dict[str, dict[str, Any]] = {
    "n_experiences": {"min": 1, "max": 10**6, "integer": True},
    "classes_per_experience": {"min": 1, "max": 10**5, "integer": True},
    "n_per_class": {"min": 1, "integer": True},
    "n_test_per_class": {"min": 0, "integer": True},
    "n_samples": {"min": 1, "max": 10**12, "integer": True},
    "n_concepts": {"min": 1, "integer": True},
    "n_test": {"min": 1, "max": 10**7, "integer": True},
    "n_features": {"min": 1, "max": 10**5, "integer": True},
    "n_classes": {"min": 2, "max": 10**5, "integer": True},
    "n_centroids": {"min": 1, "max": 10**5, "integer": True},
    "separation": {"min": 0.0},
    "test_fraction": {"above": 0.0, "max": 0.9},
    "width": {"min": 0.0},
    "noise": {"min": 0.0, "max": 1.0},
    "perturbation": {"min": 0.0, "max": 1.0},
    "mag_change": {"min": 0.0},
    "blur": {"min": 0.0, "max": 1.0},
    "max_angle": {"min": -3600.0, "max": 3600.0},
    "seed": {"min": 0, "max": 2**63 - 1, "integer": True},
}


def check_stream_params(name: str, params: Mapping[str, Any]) -> None:
    """Range-check a stream's numeric parameters by name (see :data:`STREAM_RANGES`)."""
    for key, value in params.items():
        if key in STREAM_RANGES and not isinstance(value, bool):
            check_number(f"stream {name!r}", key, value, **STREAM_RANGES[key])


def check_choice(owner: str, key: str, value: Any, choices: Sequence[Any]) -> None:
    """:class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{owner}: {key} must be one of {', '.join(map(repr, choices))}, "
                          f"got {value!r}")


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Memory a new allocation can use: free device memory on CUDA, else available RAM."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**62


def check_memory(owner: str, key: str, nbytes: float, *, device: str | torch.device = "cpu",
                 fix: str = "lower it") -> None:
    """:class:`ConfigError` when an allocation of ``nbytes`` cannot fit in available memory."""
    free = available_bytes(device)
    if not math.isfinite(nbytes) or nbytes > free:
        need = nbytes / 2**30 if math.isfinite(nbytes) else float("inf")
        raise ConfigError(f"{owner}: {key} needs about {need:,.2f} GiB "
                          f"({nbytes:,.0f} bytes) on {torch.device(device).type}, only "
                          f"{free / 2**30:,.2f} GiB is available: {fix}")


# ---------------------------------------------------------------------------- checkpoint state


@contextlib.contextmanager
def loading(learner: Any, counters: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Within the block, :func:`loading_learner` returns ``learner`` and
    :func:`loading_counters` the run counters of the state being loaded."""
    token = _LOADING.set((learner, counters or {}))
    try:
        yield
    finally:
        _LOADING.reset(token)


def loading_counters() -> Mapping[str, Any]:
    """The counters (``samples_seen``, ``step_index``...) of the checkpoint being loaded."""
    value = _LOADING.get()
    return value[1] if value is not None else {}


def state_floats(state: Any, key: str, *, owner: str, min: float | None = None,
                 max: float | None = None, depth: int = 1, allow_none: bool = False) -> Any:
    """A list (``depth`` 1) or list of lists (2) of finite numbers in range."""
    value = state_get(state, key, owner=owner)
    if value is None and allow_none:
        return None

    def ok(v: Any, d: int) -> bool:
        if d == 0:
            return _is_number(v) and math.isfinite(v) and (min is None or v >= min) and (
                max is None or v <= max)
        return isinstance(v, list | tuple) and all(ok(x, d - 1) for x in v)

    if not ok(value, depth):
        rng = f" in [{min}, {max}]" if min is not None or max is not None else ""
        raise _bad(_owner(owner), f"{key} must be {'a list' if depth == 1 else 'lists'} of "
                                  f"finite numbers{rng}, got {str(value)[:60]}")
    return value


def model_output_width(learner: Any) -> int | None:
    """The number of logits ``learner.model`` outputs, from one forward pass on zeros."""
    stream = getattr(learner, "stream", None)
    shape = getattr(stream, "input_shape", None)
    if shape is None:
        return None
    model = learner.model
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            x = torch.zeros((1, *shape), device=learner.device)
            task = (torch.zeros(1, dtype=torch.long, device=learner.device)
                    if getattr(learner, "_task_conditioned", False) else None)
            out = learner.forward(x, task)
        return int(out.shape[-1]) if isinstance(out, torch.Tensor) else None
    except Exception:  # noqa: BLE001 - a model that cannot take zeros: no width check
        return None
    finally:
        model.train(was)


def loading_learner() -> Any:
    """The learner whose checkpoint is being loaded, or ``None`` outside a load."""
    value = _LOADING.get()
    return value[0] if value is not None else None


def _bad(owner: str, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint state of {owner}: {what}; the checkpoint is corrupted or "
                           "was written by another version of the plugin")


def _owner(owner: str) -> str:
    return owner if " " in owner else f"plugin {owner!r}"


def state_get(state: Any, key: str, *, owner: str) -> Any:
    """``state[key]``, or a :class:`CheckpointError` naming the owner and the key."""
    if not isinstance(state, Mapping):
        raise _bad(_owner(owner), f"expected a mapping, got {type(state).__name__}")
    if key not in state:
        raise _bad(_owner(owner), f"{key!r} is missing")
    return state[key]


def state_number(state: Any, key: str, *, owner: str, min: float | None = None,
                 max: float | None = None, integer: bool = False,
                 allow_none: bool = False, finite: bool = True) -> Any:
    """A number from ``state`` checked like :func:`check_number`; errors are CheckpointErrors.

    ``finite=False`` accepts +-inf (running minima start there), never NaN.
    """
    value = state_get(state, key, owner=owner)
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if not finite and _is_number(value) and math.isinf(value):
        return value
    try:
        check_number("", key, value, min=min, max=max, integer=integer)
    except ConfigError as exc:
        raise _bad(_owner(owner), str(exc)) from None
    return value


def _dtype_ok(t: torch.Tensor, dtype: Any) -> bool:
    if dtype is None:
        return True
    if dtype == "float":
        return t.is_floating_point()
    if dtype == "int":
        return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool
    return t.dtype == dtype


def state_tensor(state: Any, key: str, *, owner: str, shape: Sequence[int | None] | None = None,
                 dtype: Any = None, min: float | None = None, max: float | None = None,
                 finite: bool = False, allow_none: bool = False) -> Any:
    """A tensor from ``state`` with the expected shape (``None``: any size), dtype and range.

    ``dtype`` is a ``torch.dtype``, ``"float"`` (any floating type) or ``"int"``.
    """
    value = state_get(state, key, owner=owner)
    if value is None and allow_none:
        return None
    return check_tensor(value, key, owner=owner, shape=shape, dtype=dtype, min=min, max=max,
                        finite=finite)


def check_tensor(value: Any, key: str, *, owner: str, shape: Sequence[int | None] | None = None,
                 dtype: Any = None, min: float | None = None, max: float | None = None,
                 finite: bool = False) -> torch.Tensor:
    """:func:`state_tensor` for a value already in hand."""
    who = _owner(owner)
    if not isinstance(value, torch.Tensor):
        raise _bad(who, f"{key} must be a tensor, got {type(value).__name__}")
    if shape is not None and (value.dim() != len(shape) or any(
            s is not None and s != d for s, d in zip(shape, value.shape))):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise _bad(who, f"{key} has shape {tuple(value.shape)}, expected {want}")
    if not _dtype_ok(value, dtype):
        raise _bad(who, f"{key} has dtype {value.dtype}, expected {dtype}")
    if value.numel() and (min is not None or max is not None or finite):
        v = value.detach()
        if finite and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise _bad(who, f"{key} holds NaN or infinite values")
        if min is not None and bool((v < min).any()):
            raise _bad(who, f"{key} holds values below {min} (smallest {v.min().item()})")
        if max is not None and bool((v > max).any()):
            raise _bad(who, f"{key} holds values above {max} (largest {v.max().item()})")
    return value


def state_optimizer(state: Any, key: str, *, owner: str,
                    optimizer: torch.optim.Optimizer) -> Any:
    """An optimizer's saved state that fits ``optimizer`` (groups, per-parameter shapes)."""
    from lifelong import _state_check

    value = state_get(state, key, owner=owner)
    if not isinstance(value, Mapping):
        raise _bad(_owner(owner), f"{key} must be an optimizer state mapping, got "
                                  f"{type(value).__name__}")
    try:
        _state_check.check_optimizer(optimizer, value)
    except CheckpointError as exc:
        raise _bad(_owner(owner), f"{key}: {str(exc).removeprefix('checkpoint: ')}") from None
    return value


def state_module(state: Any, key: str, *, owner: str, module: torch.nn.Module) -> Any:
    """A module's saved ``state_dict`` with exactly the module's tensor names, shapes, dtypes."""
    from lifelong import _state_check

    value = state_get(state, key, owner=owner)
    if not isinstance(value, Mapping):
        raise _bad(_owner(owner), f"{key} must be a module state mapping, got "
                                  f"{type(value).__name__}")
    try:
        _state_check.check_model(module, value)
    except CheckpointError as exc:
        raise _bad(_owner(owner), f"{key}: {str(exc).removeprefix('checkpoint: ')}") from None
    return value


def state_rng(state: Any, key: str, *, owner: str, generator: torch.Generator | None = None,
              allow_none: bool = False) -> Any:
    """A generator state: a uint8 tensor of the size this torch's generator expects."""
    value = state_get(state, key, owner=owner)
    if value is None and allow_none:
        return None
    size = (generator.get_state() if generator is not None else torch.get_rng_state()).numel()
    check_tensor(value, key, owner=owner, shape=(size,), dtype=torch.uint8)
    return value
