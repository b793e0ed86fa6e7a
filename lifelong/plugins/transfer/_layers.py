"""Helpers the transfer presets share: the model's layers in order, and their parameters."""

from __future__ import annotations

from torch import nn

__all__ = ["parameter_layers", "params_up_to"]


def parameter_layers(model: nn.Module) -> list[tuple[str, list[str]]]:
    """``(module name, its own parameter names)`` for every module that holds parameters
    directly, in ``named_modules()`` order (registration order: the forward order of the
    built-in backbones)."""
    out = []
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if own:
            out.append((name, own))
    return out


def params_up_to(model: nn.Module, layer: str) -> list[str]:
    """Names of every parameter of the modules registered before ``layer``, and of ``layer``'s."""
    names = [n for n, _ in model.named_modules()]
    stop = names.index(layer)
    inside = [n for n in names if n == layer or n.startswith(layer + ".")]
    keep = set(names[: stop + 1]) | set(inside)
    out = []
    for name, module in model.named_modules():
        if name in keep:
            out += [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
    return out
