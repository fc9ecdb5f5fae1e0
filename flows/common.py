"""What the flows share: the store root default and turning library errors into one-line failures."""

from __future__ import annotations

import os

from prefect.logging import get_run_logger
from prefect.states import Failed, State

from facegan.errors import INPUT_ERRORS, ConfigError, StorageError


def retry_transient(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    """Retry condition for I/O tasks: retry unless the error is bad input a retry cannot fix."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result: retry as before
        return True
    if isinstance(exc, StorageError):
        return exc.transient
    return not isinstance(exc, INPUT_ERRORS)


def store_root(store: str | None) -> str:
    """The store root URI: the parameter, else $FACEGAN_STORE; a missing one is a ConfigError."""
    root = store or os.environ.get("FACEGAN_STORE", "")
    if not root:
        raise ConfigError("store is empty; pass store=s3://bucket (or a folder) or set FACEGAN_STORE")
    return root.rstrip("/")


def fail(exc: Exception) -> State:
    """A Failed state whose message is the error's one line; also logged."""
    message = f"{type(exc).__name__}: {exc}".splitlines()[0]
    get_run_logger().error(message)
    return Failed(message=message)


def artifact_key(*parts: str) -> str:
    """An artifact key from free text: lowercase letters, digits and dashes."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:100] or "facegan"
