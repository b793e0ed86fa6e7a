"""A benchmark grid: its spec (command line or YAML), its cells, each cell's config and hash.

A grid is strategies x streams x every axis x seeds over one base run
config. A strategy is a preset name (``er``), a preset with parameters
(``{name: er, mem_size: 500}``), or a list of plugins without a preset
(``ewc+er_buffer`` on the command line, a YAML list in a grid file). An
axis is a dotted config key with a list of values (``--set
strategy.mem_size=[200,500]``; in a grid file ``axes: {train.lr: [0.1,
0.03]}``); a one-value list is a plain override, so a list-valued key is
set with ``[[64, 64]]``.

A grid file::

    config: ../examples/quickstart.yaml   # base run config: a path (relative to this file) or a mapping
    strategies: [naive, er, {name: er, mem_size: 500}, [ewc, lwf]]
    streams: [split_mnist, {name: blobs, n_experiences: 2}]
    seeds: [0, 1, 2]
    axes: {strategy.mem_size: [200, 500], train.lr: [0.1, 0.03]}

Each cell's hash is the first 16 hex digits of the SHA-256 of the
canonical JSON (sorted keys, no spaces) of its resolved config, seed
included; the thread share a backend gives a run is not part of it, so a
grid resumed on another backend skips the same runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError

__all__ = ["Cell", "GridSpec", "config_hash", "expand", "grid_from_args", "load_grid_file"]

GRID_KEYS = ("config", "strategies", "streams", "seeds", "axes")


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of ``config``'s canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class GridSpec:
    """What a grid is made of, before expansion (all plain data)."""

    base: dict[str, Any] = field(default_factory=dict)
    strategies: list[Any] | None = None  # None: the base config's strategy and plugins
    streams: list[Any] | None = None  # None: the base config's stream
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    axes: dict[str, list[Any]] = field(default_factory=dict)
    sets: list[tuple[str, Any]] = field(default_factory=list)  # fixed overrides of every cell


@dataclass
class Cell:
    """One run of a grid."""

    strategy: str  # label
    stream: str | None  # label
    seed: int
    axes: dict[str, Any]
    raw: dict[str, Any]  # the run config handed to the run
    config: dict[str, Any]  # ``raw`` resolved
    hash: str

    @property
    def key(self) -> tuple[str, str | None, str]:
        """The summary cell it belongs to: strategy, stream and the axes' values."""
        return self.strategy, self.stream, _canon(self.axes)

    def describe(self) -> str:
        axes = ", ".join(f"{k}={v}" for k, v in self.axes.items())
        return (f"{self.strategy} on {self.stream}{' (' + axes + ')' if axes else ''}, "
                f"seed {self.seed}")


# ---------------------------------------------------------------------------- parsing


def _parse_list(flag: str, text: str) -> list[str]:
    items = [s.strip() for s in text.split(",")]
    if not items or any(i == "" for i in items):
        raise ConfigError(f"{flag}: an empty name in {text!r}")
    return items


def parse_seeds(flag: str, value: Any) -> list[int]:
    """``"0,1,2"`` or ``[0, 1, 2]`` -> ``[0, 1, 2]``; anything else is a ConfigError."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{flag}: expected a list of integers, e.g. 0,1,2, got {value!r}")
    seeds = []
    for s in items:
        try:
            if isinstance(s, bool) or isinstance(s, float):
                raise ValueError
            seeds.append(int(s.strip()) if isinstance(s, str) else int(s))
        except (ValueError, TypeError):
            shown = s.strip() if isinstance(s, str) else s
            raise ConfigError(f"{flag} {value!r}: {shown!r} is not an integer; give "
                              "comma-separated integers, e.g. 0,1,2") from None
    return seeds


def split_sets(flag: str, items: list[str]) -> tuple[list[tuple[str, Any]], dict[str, list[Any]]]:
    """``--set`` items -> (plain overrides, axes): a list value is an axis."""
    from lifelong.config import check_bounds, safe_load

    plain: list[tuple[str, Any]] = []
    axes: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. train.lr=0.05")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = safe_load(text)
        except Exception as exc:  # noqa: BLE001 - any YAML failure is the user's value
            raise ConfigError(f"{flag} {key}: cannot parse value {text[:80]!r}") from exc
        check_bounds(value, f"{flag} {key}")
        if isinstance(value, list):
            if key in axes:
                raise ConfigError(f"{flag} {key}: given twice as an axis; give all its values "
                                  "in one list")
            axes[key] = value
        else:
            plain.append((key, value))
    return plain, axes


def check_axes(where: str, axes: Any) -> dict[str, list[Any]]:
    """Validate an axes mapping; one-value axes stay (the caller applies them as overrides)."""
    if not isinstance(axes, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted keys to lists of values, e.g. "
                          "{train.lr: [0.1, 0.03]}")
    for key, values in axes.items():
        if not isinstance(key, str) or not key or any(p == "" for p in key.split(".")):
            raise ConfigError(f"{where}: {key!r} is not a dotted config key (e.g. train.lr)")
        if key.split(".")[0] == "seed":
            raise ConfigError(f"{where}.{key}: seeds are the grid's own axis; use --seeds / seeds:")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
        seen = [_canon(v) for v in values]
        if len(set(seen)) != len(seen):
            raise ConfigError(f"{where}.{key}: the values {values!r} repeat; an axis lists each "
                              "value once (to set one list value write it inside a list: "
                              "[[64, 64]])")
    return axes


def load_grid_file(path: str | Path) -> GridSpec:
    """Read a grid YAML file (the keys of :data:`GRID_KEYS`); the base config path is relative to it."""
    from lifelong.config import load_yaml

    p = Path(path)
    data = load_yaml(p)
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{p}: {unknown[0]}: unknown grid key; allowed: {', '.join(GRID_KEYS)} "
                          "(a run config goes under config:)")
    spec = GridSpec()
    base = data.get("config", {})
    if isinstance(base, str):
        bp = Path(base)
        spec.base = load_yaml(bp if bp.is_absolute() else p.parent / bp)
    elif isinstance(base, dict):
        spec.base = base
    else:
        raise ConfigError(f"{p}: config: expected a path to a run config or a mapping, got "
                          f"{type(base).__name__}")
    for key in ("strategies", "streams"):
        if key in data:
            if not isinstance(data[key], list) or not data[key]:
                raise ConfigError(f"{p}: {key}: expected a non-empty list, got {data[key]!r}")
            setattr(spec, key, data[key])
    if "seeds" in data:
        spec.seeds = parse_seeds(f"{p}: seeds", data["seeds"])
    if "axes" in data:
        spec.axes = check_axes(f"{p}: axes", data["axes"])
    return spec


def grid_from_args(args: Any) -> GridSpec:
    """The grid of ``lifelong bench``: the grid file if any, then the flags on top of it."""
    from lifelong.config import load_yaml

    grid_path = getattr(args, "grid", None) or getattr(args, "grid_file", None)
    if getattr(args, "grid", None) and getattr(args, "grid_file", None):
        raise ConfigError("give the grid file once: `lifelong bench GRID.yaml` or --grid GRID.yaml")
    spec = load_grid_file(grid_path) if grid_path else GridSpec()
    if getattr(args, "config", None):
        spec.base = load_yaml(args.config)
    plain, set_axes = split_sets("--set", list(args.set or []))
    spec.sets = plain
    spec.axes = {**spec.axes, **check_axes("--set", set_axes)}
    if args.strategies:
        spec.strategies = _parse_list("--strategies", args.strategies)
    if args.streams:
        spec.streams = _parse_list("--streams", args.streams)
    if args.seeds is not None:
        spec.seeds = parse_seeds("--seeds", args.seeds)
    if not grid_path and not args.strategies:
        raise ConfigError("lifelong bench needs --strategies NAMES (or a grid file: "
                          "`lifelong bench GRID.yaml`)")
    return spec


# ---------------------------------------------------------------------------- expansion


def _strategy_entry(item: Any, reg: Any, where: str) -> tuple[str, Any, list[Any]]:
    """(label, strategy value for the config, plugins added to the base's)."""
    if isinstance(item, str) and "+" in item:
        names = [n.strip() for n in item.split("+")]
        if any(n == "" for n in names):
            raise ConfigError(f"{where}: {item!r}: an empty plugin name; join plugin names with "
                              "+, e.g. ewc+er_buffer")
        for n in names:
            reg.get("plugin", n)
        return item, None, names
    if isinstance(item, str):
        if ("strategy", item) not in reg and ("plugin", item) in reg:
            return item, None, [item]  # a plugin on its own
        reg.get("strategy", item)  # RegistryError with suggestions
        return item, item, []
    if isinstance(item, list):
        if not item:
            raise ConfigError(f"{where}: an empty plugin list")
        names = [p if isinstance(p, str) else p.get("name") if isinstance(p, dict) else None
                 for p in item]
        if any(not isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: a plugin list holds names or {{name: ..., param: ...}} "
                              f"mappings, got {item!r}")
        return "+".join(names), None, copy.deepcopy(item)
    if isinstance(item, dict):
        item = dict(item)
        label = item.pop("label", None)
        if "plugins" in item and "name" not in item:
            plugins = item.pop("plugins")
            if item:
                raise ConfigError(f"{where}: a plugin-list entry takes plugins: and label: only, "
                                  f"got {sorted(item)}")
            sub, _, plist = _strategy_entry(plugins, reg, where)
            return str(label or sub), None, plist
        if not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}: expected a strategy name, {{name: ..., param: ...}}, or "
                              f"a plugin list, got {item!r}")
        reg.get("strategy", item["name"])
        params = ", ".join(f"{k}={v}" for k, v in item.items() if k != "name")
        return str(label or (f"{item['name']}({params})" if params else item["name"])), item, []
    raise ConfigError(f"{where}: expected a strategy name, a mapping or a plugin list, got "
                      f"{type(item).__name__} {item!r}")


def _stream_entry(item: Any, base: dict[str, Any], reg: Any, where: str) -> tuple[str, Any]:
    """(label, stream section for the config)."""
    if isinstance(item, str):
        reg.get("stream", item)
        old = base.get("stream")
        params = old if isinstance(old, dict) else {}
        return item, {**params, "name": item}
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        item = dict(item)
        label = item.pop("label", None)
        reg.get("stream", item["name"])
        params = ", ".join(f"{k}={v}" for k, v in item.items() if k != "name")
        return str(label or (f"{item['name']}({params})" if params else item["name"])), item
    raise ConfigError(f"{where}: expected a stream name or {{name: ..., param: ...}}, got {item!r}")


def _apply_axis(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    from lifelong.config import apply_overrides

    # apply_overrides parses YAML text: hand it the value as JSON, which YAML reads back exactly
    return apply_overrides(raw, [f"{key}={json.dumps(value)}"])


def _takes(strategy: Any, key: str, reg: Any) -> bool:
    """Whether an axis ``strategy.<param>`` reaches ``strategy`` (a preset with that parameter)."""
    parts = key.split(".")
    if parts[0] != "strategy" or len(parts) != 2:
        return True
    if strategy is None:
        return False
    name = strategy if isinstance(strategy, str) else strategy.get("name")
    if not isinstance(name, str) or ("strategy", name) not in reg:
        return True  # resolve() names the mistake
    return parts[1] in reg.get("strategy", name).parameters()


def expand(spec: GridSpec, *, registry: Any = None, notes: list[str] | None = None) -> list[Cell]:
    """Every cell of the grid, each config resolved (so every mistake shows before the first run).

    Order: streams, strategies, axes (in the order given, last varying fastest), seeds. An
    axis ``strategy.<param>`` runs only for the strategies that have that parameter (the
    others run once per seed, without it); ``notes`` receives one line saying so.
    """
    from lifelong.config import resolve
    from lifelong.registry import get_registry

    reg = registry or get_registry()
    base = copy.deepcopy(spec.base)
    for what, items in (("strategies", spec.strategies), ("streams", spec.streams),
                        ("seeds", spec.seeds)):
        if items is not None:
            seen = [_canon(i) for i in items]
            if len(set(seen)) != len(seen):
                raise ConfigError(f"--{what}: {items!r} names one twice")
    if spec.strategies is None:
        strategies = [(_base_label(base), base.get("strategy"), [])]
        base_plugins = base.get("plugins") or []
    else:
        strategies = [_strategy_entry(s, reg, f"strategies[{i}]")
                      for i, s in enumerate(spec.strategies)]
        base_plugins = base.get("plugins") or []
    if spec.streams is None:
        bs = base.get("stream")
        label = bs if isinstance(bs, str) else bs.get("name") if isinstance(bs, dict) else None
        streams = [(label, None)]
    else:
        streams = [_stream_entry(s, base, reg, f"streams[{i}]") for i, s in enumerate(spec.streams)]
    fixed = [*spec.sets, *((k, v[0]) for k, v in spec.axes.items() if len(v) == 1)]
    varying = {k: v for k, v in spec.axes.items() if len(v) > 1}
    cells: list[Cell] = []
    checked: set[str] = set()
    for strat_label, strategy, _ in strategies:
        skip = [k for k in [*varying, *(k for k, _ in fixed)] if not _takes(strategy, k, reg)]
        if skip and notes is not None:
            notes.append(f"{strat_label} has no {', '.join(k.split('.', 1)[1] for k in skip)}: "
                         f"the axis {', '.join(skip)} does not apply to it")
    for stream_label, stream in streams:
        for strat_label, strategy, plugins in strategies:
            mine = {k: v for k, v in varying.items() if _takes(strategy, k, reg)}
            labels = list(mine)
            for combo in itertools.product(*mine.values()):
                axes = dict(zip(labels, combo))
                for seed in spec.seeds:
                    raw = copy.deepcopy(base)
                    if stream is not None:
                        raw["stream"] = copy.deepcopy(stream)
                    if spec.strategies is not None:
                        raw["strategy"] = copy.deepcopy(strategy)
                        if plugins:
                            raw["plugins"] = [*copy.deepcopy(base_plugins), *plugins]
                    for key, value in [*fixed, *axes.items()]:
                        if _takes(raw.get("strategy"), key, reg):
                            raw = _apply_axis(raw, key, value)
                    raw["seed"] = seed
                    what = Cell(strat_label, stream_label, seed, axes, raw, {}, "")
                    try:
                        cfg = resolve(raw, reg)
                    except ConfigError as exc:
                        hint = (" (a --set or axes: list is an axis of values; write [[...]] "
                                "for one list value)") if axes else ""
                        raise type(exc)(f"grid cell {what.describe()}: {exc}{hint}") from None
                    try:
                        _check_plugins(cfg, reg, checked)
                    except ConfigError as exc:
                        raise type(exc)(f"grid cell {what.describe()}: {exc}") from None
                    what.config = cfg
                    what.hash = config_hash(cfg)
                    cells.append(what)
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.hash in seen:
            raise ConfigError(f"grid cells {seen[c.hash].describe()} and {c.describe()} resolve to "
                              "the same run config; drop one (an axis that does not reach the "
                              "run, e.g. a parameter of a strategy the cell does not use?)")
        seen[c.hash] = c
    return cells


def _check_plugins(cfg: dict[str, Any], reg: Any, checked: set[str]) -> None:
    """Construct the cell's strategy preset and plugins (no data, no model), once per distinct set.

    Plugins check their own parameters when constructed (a replay batch larger than
    the buffer, say): this brings those errors before the first run of the grid.
    """
    key = _canon([cfg["strategy"], cfg["plugins"]])
    if key in checked:
        return
    from lifelong.run import make_plugin

    specs: list[dict[str, Any]] = []
    if cfg["strategy"] is not None:
        sp = {k: v for k, v in cfg["strategy"].items() if k != "name"}
        specs.extend(reg.get("strategy", cfg["strategy"]["name"]).factory(**sp).plugins)
    specs.extend(cfg["plugins"])
    for spec in specs:
        make_plugin(spec["name"], {k: v for k, v in spec.items() if k != "name"},
                    seed=cfg["seed"], registry=reg)
    checked.add(key)


def _base_label(base: dict[str, Any]) -> str:
    s = base.get("strategy")
    if isinstance(s, str):
        return s
    if isinstance(s, dict) and isinstance(s.get("name"), str):
        return s["name"]
    names = [p if isinstance(p, str) else p.get("name", "?") for p in base.get("plugins") or []
             if isinstance(p, str | dict)]
    return "+".join(names) or "naive"
