"""``train.compile``: the training forward (and its backward) through ``torch.compile``.

What runs compiled: the model's forward pass of each training step and the
backward of that graph (TorchDynamo + AOTAutograd + Inductor, one graph with
a dynamic batch dimension, so the stream batch, the stream + replay batch and
a short last batch share it after at most one recompilation). What runs
eager: the loss and every plugin's loss terms, gradients hooks and updates
(they are pluggy hooks with Python control flow and buffer bookkeeping; each
plugin stays exactly as without compile), evaluation and prediction (other
batch sizes, no gradient), and the optimizer. On CUDA the compiled graph is
replayed through CUDA graphs (``mode="reduce-overhead"``); that path has not
been run on a GPU here.

If ``torch.compile`` is not available or fails on the model (no C++
compiler for Inductor on CPU, an untraceable module), the run says so in
one line and trains eager.

Determinism and resume: a compiled run is deterministic (same seed, same
result) and a resumed compiled run equals the uninterrupted compiled run
(``benchmarks/compile.py`` checks both), but a compiled run does not equal
the eager run bit for bit: Inductor fuses and reorders floating-point
operations, so weights differ by rounding (``benchmarks/compile.py``
reports the largest difference). Resume with the same ``train.compile`` as
the run that wrote the checkpoint to continue it exactly.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CompiledForward"]

# one compiled callable per module: a new learner on the same model reuses its compiled code
_CACHE: weakref.WeakKeyDictionary[nn.Module, Callable[..., Tensor]] = weakref.WeakKeyDictionary()


class CompiledForward:
    """The model's training forward, compiled on first use, eager if compiling fails.

    :param model: the module to run.
    :param device: the learner's device (CUDA: CUDA graphs via ``reduce-overhead``).
    :param compiler: ``torch.compile`` (replaceable in tests).
    :param say: where the one-line notes go.
    """

    def __init__(self, model: nn.Module, device: torch.device, *,
                 compiler: Callable[..., Any] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.device = device
        self.compiler = compiler if compiler is not None else getattr(torch, "compile", None)
        self.say = say if say is not None else (lambda m: print(m, file=sys.stderr))
        self.fn: Callable[..., Tensor] | None = None
        self.eager = self.compiler is None
        if self.eager:
            self.say("train.compile: this torch has no torch.compile; the training step runs eager")

    def _build(self) -> Callable[..., Tensor]:
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        assert self.compiler is not None
        fn = _CACHE.get(self.model)
        if fn is None:
            fn = self.compiler(self.model, dynamic=True, mode=mode)
            _CACHE[self.model] = fn
        self.say(f"train.compile: the model's forward and backward run compiled (torch.compile"
                 f"{', CUDA graphs' if mode else ''}); the loss, plugins' terms and hooks, the "
                 "optimizer and evaluation run eager")
        return fn

    def __call__(self, *args: Tensor) -> Tensor:
        if self.eager:
            return self.model(*args)
        try:
            if self.fn is None:
                self.fn = self._build()
            return self.fn(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back, once, loudly
            cause = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self.say(f"train.compile: torch.compile failed on {type(self.model).__name__} "
                     f"({type(exc).__name__}: {cause}); the training step runs eager")
            self.eager = True
            return self.model(*args)
