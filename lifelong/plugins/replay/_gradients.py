"""Flat gradient vectors for the plugins that own the gradient stage (GEM, A-GEM)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["trainable", "flat_grad", "set_flat_grad", "flat_grad_of"]


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer updates."""
    return [p for p in model.parameters() if p.requires_grad]


def _flat(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(grads, params)])


def flat_grad(params: Sequence[nn.Parameter]) -> Tensor:
    """``p.grad`` of every parameter, concatenated (zeros where there is none)."""
    return _flat([p.grad for p in params], params)


def flat_grad_of(loss: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
    """Gradient of ``loss`` as one vector, without touching ``p.grad``."""
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return _flat(grads, params)


def set_flat_grad(params: Sequence[nn.Parameter], vec: Tensor) -> None:
    """Write the flat vector ``vec`` back into ``p.grad``."""
    offset = 0
    for p in params:
        n = p.numel()
        g = vec[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n
