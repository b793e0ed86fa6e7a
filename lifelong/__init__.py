"""lifelong: continual learning on data streams.

An event-driven :class:`Learner` trains one backbone on a :class:`Stream`;
every method (replay, regularization, expansion, distillation, drift
detection, evaluation) is a plugin implementing hooks from
:mod:`lifelong.hookspecs`, and plugins compose.
"""

from lifelong.api import Fitted, fit
from lifelong.errors import (
    CheckpointError,
    CompositionError,
    ConfigError,
    DataError,
    LifelongError,
    NonFiniteLossError,
    RegistryError,
)
from lifelong.hookspecs import hookimpl
from lifelong.learner import EvalReport, Learner, Step
from lifelong.registry import Registry, get_registry
from lifelong.run import build, execute, run_config
from lifelong.stream.base import Batch, EvalSet, Experience, Stream

__version__ = "0.1.0"

__all__ = [
    "Batch", "CheckpointError", "CompositionError", "ConfigError", "DataError", "EvalReport",
    "EvalSet", "Experience", "Fitted", "Learner", "LifelongError", "NonFiniteLossError", "Registry",
    "RegistryError", "Step", "Stream", "build", "execute", "fit", "get_registry", "hookimpl",
    "run_config", "__version__",
]
