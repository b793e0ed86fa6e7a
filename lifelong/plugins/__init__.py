"""Built-in methods, one subpackage per family and one module per method.

``replay/``, ``regularization/``, ``boundaries/`` (drift detectors, loss
plateaus, fixed schedules) and ``evaluation/``; later families
(``distillation/``, ``multitask/``, ``domain/``, ``expansion/``) follow the
same shape. Registry names, YAML and the entry-point group do not depend on
where a module lives.

The flat module paths of earlier releases (``lifelong.plugins.ewc``,
``lifelong.plugins.drift``, ...) still import, with a
:class:`DeprecationWarning` naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["MOVED"]

#: old module path -> the module(s) that now hold its names
MOVED: dict[str, tuple[str, ...]] = {
    "er": ("lifelong.plugins.replay.er",),
    "gem": ("lifelong.plugins.replay.gem",),
    "agem": ("lifelong.plugins.replay.agem",),
    "der": ("lifelong.plugins.replay.der",),
    "generative_replay": ("lifelong.plugins.replay.generative_replay",),
    "_gradients": ("lifelong.plugins.replay._gradients",),
    "ewc": ("lifelong.plugins.regularization.ewc",),
    "si": ("lifelong.plugins.regularization.si",),
    "lwf": ("lifelong.plugins.regularization.lwf",),
    "mas": ("lifelong.plugins.regularization.mas",),
    "_regularization": ("lifelong.plugins.regularization._common",),
    "plateau": ("lifelong.plugins.boundaries.plateau",),
    "every_n": ("lifelong.plugins.boundaries.every_n",),
    "drift": ("lifelong.plugins.boundaries.adwin", "lifelong.plugins.boundaries.page_hinkley",
              "lifelong.plugins.boundaries.kswin", "lifelong.plugins.boundaries._signal"),
}


class _MovedModule(ModuleType):
    """Stands in for an old flat module: attributes come from the new modules."""

    _targets: tuple[str, ...]

    def __getattr__(self, attr: str) -> Any:
        for target in self._targets:
            mod = importlib.import_module(target)
            if hasattr(mod, attr):
                return getattr(mod, attr)
        raise AttributeError(f"{self.__name__!r} has no attribute {attr!r}; it moved to "
                             f"{' / '.join(self._targets)}")


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    prefix = __name__ + "."

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.startswith(self.prefix) and fullname[len(self.prefix):] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> ModuleType:
        mod = _MovedModule(spec.name)
        mod._targets = MOVED[spec.name[len(self.prefix):]]
        return mod

    def exec_module(self, module: ModuleType) -> None:
        targets = MOVED[module.__name__[len(self.prefix):]]
        warnings.warn(f"{module.__name__} moved to {' / '.join(targets)}; import it from there",
                      DeprecationWarning, stacklevel=2)


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
