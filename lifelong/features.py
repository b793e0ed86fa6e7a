"""Features by layer name: activations of named modules, captured during the forward pass.

One mechanism serves every method that reads intermediate features
(distillation, L2T-ww, domain adaptation): a :class:`FeatureCapture` puts a
forward hook with a removable handle on each module that some plugin asked
for, by its path in ``model.named_modules()`` (``"body.1"``,
``"blocks.2.conv"``). Plugins asking for the same layer share one hook. The
captured value is the module's output in the most recent forward pass, with
its autograd graph (the student's features carry gradient; a teacher run
under ``torch.no_grad`` gives plain tensors).

The learner owns one capture on its model (:attr:`lifelong.Learner.features`):
a plugin requests its layers in ``before_training`` and reads them in
``loss_terms``, after the learner's single training forward over stream and
replay rows (the stream rows are the first ``step.n_stream``). Every hook is
removed when ``fit`` returns or raises, and moved to the new model when
``expand_model`` replaces it. Teachers get a capture of their own.

Examples
--------
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> cap = FeatureCapture(model)
>>> cap.request("0")
>>> _ = model(torch.ones(5, 4))
>>> tuple(cap["0"].shape)
(5, 3)
>>> cap.close()
>>> len(model[0]._forward_hooks)
0
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lifelong.errors import ConfigError, DataError

__all__ = ["FeatureCapture", "module_names", "check_layer"]


def module_names(model: nn.Module) -> list[str]:
    """Every addressable module path of ``model`` (the root, ``""``, excluded)."""
    return [n for n, _ in model.named_modules() if n]


def check_layer(model: nn.Module, name: str, *, owner: str = "", key: str = "layer",
                what: str = "model") -> nn.Module:
    """The module at ``name``, or a :class:`ConfigError` that lists the module names."""
    modules = dict(model.named_modules())
    if isinstance(name, str) and name and name in modules:
        return modules[name]
    names = module_names(model)
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    who = f"plugin {owner!r}: " if owner else ""
    listing = ", ".join(names[:60]) + (" ..." if len(names) > 60 else "")
    raise ConfigError(f"{who}{key} {name!r} is not a module of the {what}{hint}; "
                      f"its modules are: {listing}")


class FeatureCapture:
    """Forward hooks on named modules of one model; ``capture[name]`` is the latest output.

    :param model: the network whose modules are captured.
    :param what: how error messages name it (``"model"``, ``"teacher"``).
    """

    def __init__(self, model: nn.Module, *, what: str = "model") -> None:
        self.model = model
        self.what = what
        self._refs: Counter[str] = Counter()
        self._handles: dict[str, RemovableHandle] = {}
        self._store: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ requests
    def request(self, name: str, *, owner: str = "", key: str = "layer") -> None:
        """Capture the output of module ``name`` from now on (shared with other requesters)."""
        module = check_layer(self.model, name, owner=owner, key=key, what=self.what)
        self._refs[name] += 1
        if name not in self._handles:
            self._handles[name] = module.register_forward_hook(self._hook(name))

    def request_all(self, names: Iterable[str], *, owner: str = "", key: str = "layer") -> None:
        for n in names:
            self.request(n, owner=owner, key=key)

    def release(self, name: str) -> None:
        """Drop one request for ``name``; the hook goes when nobody asks for it any more."""
        if self._refs[name] <= 0:
            return
        self._refs[name] -= 1
        if self._refs[name] == 0:
            del self._refs[name]
            self._handles.pop(name).remove()
            self._store.pop(name, None)

    @property
    def names(self) -> list[str]:
        """The layers captured now."""
        return sorted(self._handles)

    def _hook(self, name: str) -> Any:
        store = self._store

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            store[name] = output

        return hook

    # ------------------------------------------------------------------ reading
    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._store[name]
        except KeyError:
            if name not in self._handles:
                raise ConfigError(f"layer {name!r} of the {self.what} was never requested; "
                                  "call request() in before_training") from None
            raise DataError(f"layer {name!r} of the {self.what} produced no output in the last "
                            "forward pass (is it on the path the model takes?)") from None

    def __contains__(self, name: object) -> bool:
        return name in self._store

    def clear(self) -> None:
        """Forget the captured values (the hooks stay)."""
        self._store.clear()

    # ------------------------------------------------------------------ lifetime
    def rebind(self, model: nn.Module) -> None:
        """Move every hook to ``model`` (after ``expand_model`` replaced the network)."""
        refs = dict(self._refs)
        self.close()
        self.model = model
        for name, count in refs.items():
            for _ in range(count):
                self.request(name)

    def close(self) -> None:
        """Remove every hook and forget every request; nothing stays attached."""
        for h in self._handles.values():
            h.remove()
        self._handles.clear()
        self._refs.clear()
        self._store.clear()

    def __len__(self) -> int:
        return len(self._handles)
