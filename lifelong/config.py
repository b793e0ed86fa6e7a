"""YAML -> a validated run configuration; every error names the bad key.

A run config::

    seed: 0
    device: auto                  # auto | cpu | cuda | cuda:N
    stream:   {name: split_mnist, n_experiences: 5}   # + label_delay: k (batches)
                                  # + first_experiences: k / skip_experiences: k (any stream)
    target:   {name: mnist_domain, rotate: 45}        # optional unlabeled target domain
    backbone: {name: mlp, hidden: [256, 256]}
    strategy: er                  # a preset name, or {name: er, mem_size: 200}
    plugins:                      # more plugins, composed with the preset's
      - {name: ewc, ewc_lambda: 100}
    train: {batch_size: 10, epochs: 1, optimizer: sgd, lr: 0.1}
    eval:  {every: 0, prequential: true, window: 100}  # task-free streams: every = window

YAML is read with ``yaml.safe_load`` (no object construction). Plugin,
stream and backbone parameters are checked against the factory's keyword
parameters: unknown names and wrong types are refused before anything runs.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from pathlib import Path
from typing import Any

import yaml

from lifelong.errors import ConfigError
from lifelong.registry import Registry, get_registry

TOP_KEYS = {"seed", "device", "stream", "backbone", "strategy", "plugins", "train", "eval",
            "checkpoint", "name", "target"}
TRAIN_KEYS: dict[str, tuple[type, ...]] = {
    "batch_size": (int,), "epochs": (int,), "optimizer": (str,), "lr": (float, int),
    "momentum": (float, int), "weight_decay": (float, int), "nan_policy": (str,),
    "check_every": (int,), "detect_in_task_aware": (bool,), "threads": (int, str),
    "compile": (bool,),
}
EVAL_KEYS: dict[str, tuple[type, ...]] = {
    "every": (int,), "prequential": (bool,), "window": (int,), "matrix": (bool,),
    "baselines": (dict,),
}
CHECKPOINT_KEYS: dict[str, tuple[type, ...]] = {
    "every": (int,), "every_seconds": (float, int), "dir": (str,),
}
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "backbone": {"name": "mlp"},
    "strategy": None,
    "plugins": [],
    "train": {"batch_size": 10, "epochs": 1, "optimizer": "sgd", "lr": 0.1, "momentum": 0.0,
              "weight_decay": 0.0, "nan_policy": "raise"},
    "eval": {"every": 0, "prequential": True, "window": 100, "matrix": True},
    "checkpoint": {},
}
INJECTED = {"input_shape", "num_classes", "tasks"}  # filled by the run, not by the user
#: keys any stream takes: the experiences ``skip_experiences .. first_experiences-1`` only
#: (:func:`lifelong.stream.scenarios.select_experiences`; used by ``lifelong tune``)
SELECTION_KEYS = ("first_experiences", "skip_experiences")


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.1 reads a string)."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """Parse YAML text without constructing arbitrary objects."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


MAX_CONFIG_BYTES = 1 << 20  # a run config is a few hundred bytes; 1 MiB is generous
MAX_NODES = 100_000          # values after alias expansion (a YAML "billion laughs" has 10^9)
MAX_DEPTH = 64
MAX_STRING = 10_000
MAX_ITEMS = 10_000


def check_bounds(data: Any, where: str) -> None:
    """Refuse configs that are too big once YAML aliases are expanded, too deep, or too long.

    Aliases make a small file stand for a huge value (every alias is a shared
    reference that JSON, deep copies and printing expand); the expanded size is
    counted without expanding it (sizes of shared nodes are memoized).
    """
    sizes: dict[int, int] = {}

    def size(v: Any, depth: int, path: str) -> int:
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep at {path[:60]}...")
        if isinstance(v, str):
            if len(v) > MAX_STRING:
                raise ConfigError(f"{where}: the string at {path} has {len(v):,} characters; "
                                  f"at most {MAX_STRING:,} are allowed")
            return 1
        if not isinstance(v, dict | list | tuple):
            return 1
        if id(v) in sizes:
            return sizes[id(v)]
        if len(v) > MAX_ITEMS:
            raise ConfigError(f"{where}: {path} has {len(v):,} items; at most {MAX_ITEMS:,} are "
                              "allowed")
        items = v.items() if isinstance(v, dict) else enumerate(v)
        n = 1
        for k, item in items:
            n += size(k, depth + 1, path) + size(item, depth + 1, f"{path}.{k}" if path else str(k))
            if n > MAX_NODES:
                raise ConfigError(f"{where}: the config expands to more than {MAX_NODES:,} values "
                                  "(YAML aliases &/* repeated inside each other?); write the "
                                  "values out or make the config smaller")
        sizes[id(v)] = n
        return n

    size(data, 0, "")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML run config safely; a missing file or bad YAML is a :class:`ConfigError`.

    Bounds: at most 1 MiB of UTF-8 text, and at most 100,000 values once YAML
    aliases are expanded (see :func:`check_bounds`); a binary file is refused.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: the config file has {size:,} bytes; a run config may have "
                              f"at most {MAX_CONFIG_BYTES:,}")
        data_bytes = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror or exc})") from exc
    nul = data_bytes.find(b"\x00")
    if nul >= 0:
        raise ConfigError(f"{p}: not a YAML text file (binary content, a NUL byte at offset "
                          f"{nul}); pass the YAML run config")
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a YAML text file (invalid UTF-8 at byte {exc.start}); "
                          "save the config as UTF-8 text") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from exc
    except RecursionError:
        raise ConfigError(f"{p}: the YAML is nested too deeply to read") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
    check_bounds(data, str(p))
    return data


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars/lists)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=0.05")
        key, raw = item.split("=", 1)
        try:
            value = safe_load(raw)
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw[:80]!r}") from exc
        check_bounds(value, f"--set {key}")
        parts = key.strip().split(".")
        node: Any = cfg
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = _list_item(node, part, parts[: i + 1])
                continue
            if part == "strategy" and isinstance(node.get(part), str):
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a mapping")
        if isinstance(node, list):
            idx = _index(parts[-1], parts)
            if idx >= len(node):
                raise ConfigError(f"--set {key}: index {idx} is out of range")
            node[idx] = value
        else:
            node[parts[-1]] = value
    return cfg


def _index(part: str, parts: list[str]) -> int:
    if not part.isdigit():
        raise ConfigError(f"--set {'.'.join(parts)}: {part!r} must be a list index")
    return int(part)


def _list_item(node: list[Any], part: str, parts: list[str]) -> Any:
    idx = _index(part, parts)
    if idx >= len(node):
        raise ConfigError(f"--set {'.'.join(parts)}: index {idx} is out of range")
    return node[idx]


def _type_ok(value: Any, annotation: Any, default: Any) -> bool:
    """Loose check of a YAML value against a factory parameter's annotation/default."""
    ann = annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                   str(annotation))
    if value is None:
        return "None" in ann or default is None
    if ann in ("", "_empty", "Any") or annotation is inspect.Parameter.empty:
        if default is None or default is inspect.Parameter.empty:
            return True
        return _type_ok(value, type(default).__name__, None)
    allowed: list[type] = []
    for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str),
                    ("list", list), ("tuple", list), ("Sequence", list), ("dict", dict)):
        if name in ann:
            allowed.append(t)
    if "float" in ann:
        allowed.append(int)
    if not allowed:
        return True
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, tuple(allowed))


def _non_finite(value: Any, path: str) -> str | None:
    """The path of the first NaN or infinite number in ``value`` (lists and dicts searched)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            bad = _non_finite(v, f"{path}[{i}]")
            if bad:
                return bad
    if isinstance(value, dict):
        for k, v in value.items():
            bad = _non_finite(v, f"{path}.{k}")
            if bad:
                return bad
    return None


def check_params(kind: str, name: str, params: dict[str, Any], registry: Registry,
                 where: str) -> dict[str, Any]:
    """Check ``params`` against the registered factory's keyword parameters.

    NaN and infinite numbers are refused for every parameter of every factory
    (each factory range-checks its own values when it is called).
    """
    entry = registry.get(kind, name)
    accepted = {k: p for k, p in entry.parameters().items() if k not in INJECTED}
    for key, value in params.items():
        if key not in accepted:
            allowed = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(f"{where}.{key}: unknown parameter of {kind} {name!r}; "
                              f"allowed: {allowed}")
        p = accepted[key]
        bad = _non_finite(value, f"{where}.{key}")
        if bad:
            raise ConfigError(f"{bad}: {value!r} is not a finite number; give a finite value "
                              f"(`lifelong list {kind}` lists the parameters)")
        if not _type_ok(value, p.annotation, p.default):
            ann = p.annotation if isinstance(p.annotation, str) else getattr(
                p.annotation, "__name__", str(p.annotation))
            raise ConfigError(f"{where}.{key}: expected {ann}, got {type(value).__name__} "
                              f"{value!r}")
    missing = [k for k, p in accepted.items()
               if p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ConfigError(f"{where}: {kind} {name!r} needs {', '.join(missing)}")
    return params


def _named(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict):
        if "name" not in value:
            raise ConfigError(f"{where}: missing 'name'")
        if not isinstance(value["name"], str):
            raise ConfigError(f"{where}.name: expected a string, got {value['name']!r}")
        rest = {k: v for k, v in value.items() if k != "name"}
        return value["name"], rest
    raise ConfigError(f"{where}: expected a name or a mapping with 'name', got "
                      f"{type(value).__name__}")


def _check_section(cfg: dict[str, Any], key: str, allowed: dict[str, tuple[type, ...]]) -> None:
    section = cfg.get(key)
    if not isinstance(section, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(section).__name__}")
    for k, v in section.items():
        if k not in allowed:
            raise ConfigError(f"{key}.{k}: unknown key; allowed: {', '.join(sorted(allowed))}")
        types = allowed[k]
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{key}.{k}: expected {names}, got {type(v).__name__} {v!r}")


def _check_ranges(cfg: dict[str, Any]) -> None:
    """Numeric values of the train / eval / checkpoint sections, one line naming the key."""
    from lifelong.validation import check_number

    t, e, c = cfg["train"], cfg["eval"], cfg["checkpoint"]
    for key, most in (("batch_size", 10**7), ("epochs", 10**6)):
        if isinstance(t.get(key), int) and t[key] > most:  # below 1: the learner says so
            raise ConfigError(f"train.{key} must be at most {most:,}, got {t[key]:,}")
    if t.get("check_every") is not None:
        check_number("", "train.check_every", t["check_every"], min=1, integer=True)
    for key, kw in (("lr", {"above": 0.0, "max": 100.0}), ("momentum", {"min": 0.0, "max": 1.0}),
                    ("weight_decay", {"min": 0.0, "max": 100.0})):
        if key in t:
            check_number("", f"train.{key}", t[key], **kw)
    if "momentum" in t and t["momentum"] == 1:
        raise ConfigError("train.momentum must be below 1, got 1")
    for key, kw in (("every", {"min": 0}), ("window", {"min": 1})):
        if key in e:
            check_number("", f"eval.{key}", e[key], integer=True, **kw)
    if "every" in c:
        check_number("", "checkpoint.every", c["every"], min=0, integer=True)
    if "every_seconds" in c:
        check_number("", "checkpoint.every_seconds", c["every_seconds"], min=0.0)


def resolve(raw: dict[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Validate ``raw`` and fill in defaults; returns the resolved config (plain data)."""
    reg = registry or get_registry()
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping")
    check_bounds(raw, "config")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{key}: unknown top-level key; allowed: {', '.join(sorted(TOP_KEYS))}")
    if "stream" not in raw:
        raise ConfigError("stream: missing; name a stream, e.g. stream: {name: split_mnist} "
                          "(see `lifelong list`)")
    cfg: dict[str, Any] = copy.deepcopy(DEFAULTS)
    for k, v in raw.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict) and k not in ("backbone",):
            cfg[k] = {**cfg[k], **copy.deepcopy(v)}
        else:
            cfg[k] = copy.deepcopy(v)
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise ConfigError(f"seed: expected int, got {cfg['seed']!r}")
    if not 0 <= cfg["seed"] < 2**63:
        raise ConfigError(f"seed: must be in 0..2**63-1, got {cfg['seed']!r}")
    if not isinstance(cfg["device"], str):
        raise ConfigError(f"device: expected a string (auto, cpu, cuda), got {cfg['device']!r}")
    for key, allowed in (("train", TRAIN_KEYS), ("eval", EVAL_KEYS),
                         ("checkpoint", CHECKPOINT_KEYS)):
        _check_section(cfg, key, allowed)
    _check_ranges(cfg)

    name, params = _named(cfg["stream"], "stream")
    delay = params.pop("label_delay", None)
    if delay is not None and (not isinstance(delay, int) or isinstance(delay, bool) or delay < 0):
        raise ConfigError(f"stream.label_delay: expected a non-negative int (batches), got {delay!r}")
    free = None
    if "task_free" in params and "task_free" not in reg.get("stream", name).parameters():
        free = params.pop("task_free")  # any stream: the learner is not told its boundaries
        if not isinstance(free, bool):
            raise ConfigError(f"stream.task_free: expected true or false, got {free!r}")
    selection = {k: params.pop(k) for k in SELECTION_KEYS
                 if k in params and k not in reg.get("stream", name).parameters()}
    for k, v in selection.items():  # any stream: a contiguous run of its experiences
        if not isinstance(v, int) or isinstance(v, bool) or v < (1 if k == "first_experiences" else 0):
            raise ConfigError(f"stream.{k}: expected an integer >= "
                              f"{1 if k == 'first_experiences' else 0}, got {v!r}")
    cfg["stream"] = {"name": name, **check_params("stream", name, params, reg, "stream"),
                     **selection}
    if free is not None:
        cfg["stream"]["task_free"] = free
    if delay is not None:
        cfg["stream"]["label_delay"] = delay
    if cfg.get("target") is not None:
        name, params = _named(cfg["target"], "target")
        if "label_delay" in params:
            raise ConfigError("target.label_delay: the target stream is unlabeled for training; "
                              "set label_delay on stream: only")
        cfg["target"] = {"name": name, **check_params("stream", name, params, reg, "target")}
    name, params = _named(cfg["backbone"], "backbone")
    cfg["backbone"] = {"name": name, **check_params("backbone", name, params, reg, "backbone")}
    if cfg["strategy"] is not None:
        name, params = _named(cfg["strategy"], "strategy")
        cfg["strategy"] = {"name": name,
                           **check_params("strategy", name, params, reg, "strategy")}
    if not isinstance(cfg["plugins"], list):
        raise ConfigError(f"plugins: expected a list, got {type(cfg['plugins']).__name__}")
    plugins = []
    for i, item in enumerate(cfg["plugins"]):
        name, params = _named(item, f"plugins[{i}]")
        plugins.append({"name": name, **check_params("plugin", name, params, reg,
                                                     f"plugins[{i}] ({name})")})
    cfg["plugins"] = plugins
    return cfg
