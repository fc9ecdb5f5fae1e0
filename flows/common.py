"""What the flows share: the store root default and turning library errors into one-line failures."""

from __future__ import annotations

import base64
import inspect
import io
import os

from prefect.logging import get_run_logger
from prefect.states import Failed, State

from facegan.config import all_options, option_type, shown_default
from facegan.errors import INPUT_ERRORS, ConfigError, StorageError
from facegan.storage import Store


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


def inline_picture(store: Store, key: str, alt: str, max_side: int = 768, budget: int = 160 * 1024) -> str:
    """Markdown showing picture `key` of `store` inside a report, as a data: URI: the Prefect UI
    shows it from the artifact itself, for as long as the artifact lives. A link could not: a
    presigned URL dies with the credentials that signed it (hours, for an ECS task role), and a
    browser refuses a file:// picture on an http(s) page. A PNG within `budget` bytes (a loss
    curve, a small grid) goes in as it is; a heavier picture goes in as a JPEG (quality 90),
    scaled to fit `max_side` pixels. A picture that cannot be read is said in words instead."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = store.get_bytes(key)
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "PNG" and len(data) <= budget:
                return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"
            im = im.convert("RGB")
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            im.save(out, "JPEG", quality=90)
    except (StorageError, UnidentifiedImageError, OSError) as exc:
        return f"*{alt}: not shown ({str(exc).splitlines()[0]})*"
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(out.getvalue()).decode()})"


def check_run_name(run_name: str) -> None:
    """A run name is a single safe path part, or a ConfigError naming it."""
    if not run_name or not all(c.isalnum() or c in "-_." for c in run_name) or run_name.startswith("."):
        raise ConfigError(f"run_name={run_name!r} must be non-empty letters, digits, '-', '_', '.'")


def with_option_parameters(fn, *classes: type) -> inspect.Signature:
    """Give flow function `fn(..., **options)` its parameters: the fixed ones it declares, then
    one keyword per option of the run config `classes` (facegan.config's option table; an option
    several have appears once, as the first declares it), typed, defaulting to None (= not given);
    its docstring gains their help. Prefect reads this signature for the deployment's parameter
    schema and binds run parameters against it. Returns the signature."""
    fixed = list(inspect.signature(fn).parameters.values())[:-1]
    order = list(dict.fromkeys(f.name for cls in classes for f in all_options(cls)))
    first = {f.name: f for cls in reversed(classes) for f in all_options(cls)}  # the first class's wins
    table = [first[name] for name in order]
    signature = inspect.Signature([
        *fixed,
        *[inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option_type(f) | None)
          for f in table],
    ])
    fn.__signature__ = signature
    fn.__doc__ += "\n    Args:\n" + "".join(
        f"        {f.name}: {f.metadata['help']} (default: {shown_default(f)})\n" for f in table)
    return signature
