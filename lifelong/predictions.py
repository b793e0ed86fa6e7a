"""Test-then-train predictions on the stream: one definition for every scorer.

Prequential accuracy (``plugins/evaluation/prequential.py``) and the drift
detectors' ``signal: error`` (``plugins/boundaries/_signal.py``) score the
model on each stream batch *before* it trains on it, as a deployed model
would predict: in evaluation mode, before the update. The training forward
runs in train mode (dropout on; batch norm normalizing the stream + replay
batch with that batch's own statistics and updating its running ones), so
its logits are a different model's predictions. They are reused only when
the model provably has no module whose forward depends on ``training``:
every module must be of a type in :data:`MODE_FREE` (checked by exact type,
so a subclass that overrides ``forward`` is not trusted). Otherwise the
learner runs one extra eval-mode forward of the stream rows, under
``no_grad``, before the training forward, but only in runs where a plugin
declares ``scores_stream = True``.

A plugin that scores the stream declares ``scores_stream`` (a class
attribute or a property) and reads :func:`prequential_logits`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

__all__ = ["MODE_FREE", "mode_dependent_modules", "wants_eval_logits", "prequential_logits"]

#: Module types whose forward is the same in train and eval mode (their code was read:
#: none of them reads ``self.training``). Anything else counts as mode-dependent.
MODE_FREE: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Sequential, nn.ModuleList, nn.ModuleDict,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.LayerNorm, nn.GroupNorm, nn.Embedding,
)


def _own_mode_free() -> tuple[type, ...]:
    # lifelong's own containers whose forward does not read ``training`` (imported late:
    # backbones imports nothing from here, but keep this module import-light)
    from lifelong.backbones import MLP, SmallCNN
    return (MLP, SmallCNN)


def mode_dependent_modules(model: nn.Module) -> list[str]:
    """Names (``""`` for the root) of the modules not known to be mode-free."""
    safe = MODE_FREE + _own_mode_free()
    return [name for name, m in model.named_modules() if type(m) not in safe]


def wants_eval_logits(model: nn.Module, plugins: Iterable[Any]) -> bool:
    """True when a plugin scores the stream and the training logits cannot stand in."""
    if not any(getattr(p, "scores_stream", False) for p in plugins):
        return False
    return bool(mode_dependent_modules(model))


def prequential_logits(step: Any) -> Tensor:
    """The stream rows' logits as the model predicted them before this step's update.

    The eval-mode logits the learner computed before the training forward
    (``step.eval_logits``) when the model has a mode-dependent module; the
    training forward's stream rows, detached, when it provably has none.
    """
    eval_logits = getattr(step, "eval_logits", None)
    if eval_logits is not None:
        return eval_logits
    return step.stream_logits.detach()
