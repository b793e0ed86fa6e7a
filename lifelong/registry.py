"""Names -> factories for streams, backbones, plugins and strategies.

Built-in modules are listed in :data:`DEFAULT_PLUGINS` and loaded on first
use, never at import; installed packages contribute through the entry-point
group ``lifelong`` (each entry point names a module or object with
``register(registry)`` hook implementations). ``lifelong list`` shows both.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from lifelong import hookspecs
from lifelong.errors import RegistryError

ENTRY_POINT_GROUP = "lifelong"
KINDS = ("stream", "backbone", "plugin", "strategy")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "lifelong.stream.catalog",
    "lifelong.stream.synthetic",
    "lifelong.stream.drift",
    "lifelong.stream.files",
    "lifelong.stream.online",
    "lifelong.stream.domains",
    "lifelong.stream.multitask",
    "lifelong.backbones",
    "lifelong.multitask",
    "lifelong.plugins.evaluation.accuracy_matrix",
    "lifelong.plugins.evaluation.anytime",
    "lifelong.plugins.evaluation.prequential",
    "lifelong.plugins.evaluation.resources",
    "lifelong.plugins.evaluation.domain_accuracy",
    "lifelong.plugins.evaluation.task_metrics",
    "lifelong.plugins.logging.tensorboard",
    "lifelong.plugins.logging.mlflow",
    "lifelong.plugins.logging.csv",
    "lifelong.plugins.replay.er",
    "lifelong.plugins.replay.gem",
    "lifelong.plugins.replay.agem",
    "lifelong.plugins.replay.der",
    "lifelong.plugins.replay.generative_replay",
    "lifelong.plugins.regularization.ewc",
    "lifelong.plugins.regularization.si",
    "lifelong.plugins.regularization.lwf",
    "lifelong.plugins.regularization.mas",
    "lifelong.plugins.expansion.pnn",
    "lifelong.plugins.expansion.den",
    "lifelong.plugins.multitask.uncertainty",
    "lifelong.plugins.multitask.gradnorm",
    "lifelong.plugins.multitask.dwa",
    "lifelong.plugins.multitask.mgda_ub",
    "lifelong.plugins.multitask.pcgrad",
    "lifelong.plugins.boundaries.adwin",
    "lifelong.plugins.boundaries.page_hinkley",
    "lifelong.plugins.boundaries.kswin",
    "lifelong.plugins.boundaries.plateau",
    "lifelong.plugins.boundaries.every_n",
    "lifelong.plugins.distillation.l2t_ww",
    "lifelong.plugins.distillation.kd",
    "lifelong.plugins.distillation.fitnet",
    "lifelong.plugins.distillation.attention",
    "lifelong.plugins.distillation.jacobian",
    "lifelong.plugins.distillation.rkd",
    "lifelong.plugins.distillation.vid",
    "lifelong.plugins.distillation.crd",
    "lifelong.plugins.transfer.finetune",
    "lifelong.plugins.transfer.discriminative",
    "lifelong.plugins.transfer.scale_bias",
    "lifelong.plugins.transfer.width_augment",
    "lifelong.plugins.domain.coral",
    "lifelong.plugins.domain.mmd",
    "lifelong.plugins.domain.dann",
    "lifelong.plugins.domain.importance_weighting",
    "lifelong.plugins.domain.self_training",
    "lifelong.plugins.domain.adda",
    "lifelong.strategies",
    "lifelong.strategies.replay",
    "lifelong.strategies.generative",
    "lifelong.strategies.regularization",
)


@dataclass(frozen=True)
class Entry:
    """One registered name."""

    kind: str
    name: str
    factory: Callable[..., Any]
    origin: str = "built-in"

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def family(self) -> str:
        """The method family: ``<family>`` of ``lifelong.plugins.<family>.<module>`` for
        built-in plugins, the distribution name for an installed package's, else ``""``."""
        if self.origin != "built-in":
            return self.origin
        parts = (getattr(self.factory, "__module__", "") or "").split(".")
        if len(parts) >= 4 and parts[:2] == ["lifelong", "plugins"]:
            return parts[2]
        return ""

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The keyword parameters the factory accepts (what YAML may set)."""
        target = self.factory
        sig = inspect.signature(target.__init__ if inspect.isclass(target) else target)
        return {
            n: p for n, p in sig.parameters.items()
            if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


class Registry:
    """The table of everything usable by name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._origin = "built-in"
        #: installed entry points that failed to load: "<dist> (<entry point>)" -> the error
        self.broken: dict[str, str] = {}

    def add(self, kind: str, name: str, factory: Callable[..., Any]) -> None:
        """Register ``factory`` as ``name`` of ``kind`` (stream, backbone, plugin, strategy)."""
        if kind not in self._entries:
            raise RegistryError(f"unknown registry kind {kind!r}; one of {', '.join(KINDS)}")
        if name in self._entries[kind]:
            other = self._entries[kind][name].origin
            raise RegistryError(f"{kind} {name!r} is registered twice ({other} and {self._origin})")
        self._entries[kind][name] = Entry(kind, name, factory, self._origin)

    def get(self, kind: str, name: str) -> Entry:
        """The entry, or a :class:`RegistryError` listing what exists."""
        table = self._entries[kind]
        if name not in table:
            close = difflib.get_close_matches(name, table, n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            broken = "".join(f"; installed package {k} failed to load and may provide it: {v}"
                             for k, v in self.broken.items())
            raise RegistryError(f"unknown {kind} {name!r}{hint}; known {kind}s: "
                                f"{', '.join(sorted(table)) or 'none'}{broken}")
        return table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._entries.get(kind, {})


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("lifelong")
    pm.add_hookspecs(hookspecs)
    return pm


def build_registry(*, load_entry_points: bool = True) -> Registry:
    """Load every built-in module and installed entry point into a new registry."""
    reg = Registry()
    for modname in DEFAULT_PLUGINS:
        pm = _plugin_manager()
        pm.register(importlib.import_module(modname), name=modname)
        pm.check_pending()
        pm.hook.register(registry=reg)
    if load_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
            reg._origin = dist
            try:  # a broken third-party package must not stop runs that do not use it
                obj = ep.load()
                pm = _plugin_manager()
                pm.register(obj, name=f"{dist}:{ep.name}")
                pm.check_pending()
                pm.hook.register(registry=reg)
            except Exception as exc:
                key = f"{dist} (entry point {ep.name!r})"
                reg.broken[key] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"lifelong: skipping installed package {key}, which failed to load "
                              f"({type(exc).__name__}: {exc}); fix or uninstall it", stacklevel=2)
        reg._origin = "built-in"
    return reg


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the cached registry (after installing a plugin package, in tests)."""
    global _REGISTRY
    _REGISTRY = None
