"""The error types user input can raise; light to import (no torch), so the CLI can catch them.

Every message is one line meant for the user: what was expected and what was found.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "CheckpointError", "RunDirError", "TrainingError", "USER_ERRORS"]


class ConfigError(ValueError):
    """A config that cannot be used (unknown key, wrong type, value out of range)."""


class DataError(ValueError):
    """A data file or folder that cannot be used."""


class CheckpointError(ValueError):
    """A checkpoint or run folder that is missing, corrupt or does not fit the model."""


class RunDirError(ValueError):
    """The output folder cannot hold a new run, or a file in it cannot be written (a full disk)."""


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, say); the last good checkpoint is kept."""


#: What the CLI reports as ``error: ...`` with exit code 2 (ValueError covers argument checks).
USER_ERRORS = (ConfigError, DataError, CheckpointError, RunDirError, TrainingError, ValueError, FileNotFoundError)
