"""Every error facegan reports as a one-line message (no traceback), importable without torch.

Entry points catch `INPUT_ERRORS` and print or fail with the message; each class is also
exported by the module that raises it (`facegan.storage.StorageError`, ...).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI.

    `transient` is True for failures worth retrying (endpoint unreachable, throttling, 5xx),
    False for ones a retry cannot fix (missing bucket or key, no credentials, access denied).
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class DatasetError(ValueError):
    """The dataset (input, manifest or shard) is unusable; the message names it."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not a facegan checkpoint; the message names it."""


class FIDError(RuntimeError):
    """FID cannot be computed (weights missing or wrong, bad input); one-line message."""


class GalleryError(RuntimeError):
    """Nothing to publish (no checkpoint) or a bad request; one-line message."""


class LeaseError(RuntimeError):
    """Another process holds (or took over) the run's lease: one trainer per run."""


class ExportError(RuntimeError):
    """A generator could not be exported in a format (the other files were written), or the
    destination is not an export's folder; one-line message naming what."""


class DivergedError(RuntimeError):
    """Training losses became NaN or infinite; nothing from that point on was saved."""


class CollapsedError(RuntimeError):
    """The collapse watchdog stopped the run (`facegan.watchdog`), or refuses to resume a run it
    stopped; its checkpoint and verdict were written first. One line: what fired, where."""


# Errors that mean "bad input" (or, for StorageError, an unreachable store; for DivergedError,
# settings under which training blows up or collapses): a CLI prints the one line and exits 2, a flow ends
# Failed with it (retrying would only repeat it).
INPUT_ERRORS = (ConfigError, DatasetError, StorageError, CheckpointError, GalleryError, FIDError, DivergedError,
                CollapsedError, LeaseError, ExportError)


def foreign_files(folder: str, foreign: list[str], whose: str, marker: str, instead: str) -> str:
    """The one-line refusal of a folder that holds files of another kind and not the `marker` file
    that would make it ours: "<folder>: holds N file(s) <whose> (<first>, ...) and no <marker>:
    <instead>" (prepare's, export's and training's check of their output folder)."""
    return (f"{folder}: holds {len(foreign)} file(s) {whose} ({foreign[0]}{', ...' if len(foreign) > 1 else ''}) "
            f"and no {marker}: {instead}")
