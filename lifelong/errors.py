"""One error hierarchy for everything a user can cause.

Every message names the culprit (a config key, a plugin, a hook, a batch
index) and, where there is one, the fix. The CLI prints ``str(error)`` on
one line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class LifelongError(Exception):
    """Base class: a problem the user can fix."""


class ConfigError(LifelongError):
    """A YAML/config value is unknown, mistyped or out of range."""


class RegistryError(ConfigError):
    """A name (stream, backbone, plugin, strategy) is not registered."""


class CompositionError(LifelongError):
    """Plugins that cannot work together, or a plugin the stream cannot serve."""


class DataError(LifelongError):
    """Bad data: wrong shape or dtype, labels out of range, NaN/inf inputs, empty data."""


class NonFiniteLossError(LifelongError):
    """The training loss became NaN or infinite."""


class CheckpointError(LifelongError):
    """A checkpoint cannot be written, read, or does not match the run."""
